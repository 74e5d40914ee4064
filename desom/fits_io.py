"""Reading CFHT MegaCam exposures: metadata, and one CCD at a time, ready for detection.

An exposure is a FITS file with a primary header and 36 or 40 CCD image extensions. Archives
hold it in several forms, all handled here:

* raw: 16-bit data stored as int16 with BZERO=32768, each CCD larger than its science area
  (2112 x 4644 around 2048 x 4612) with per-amplifier overscan strips (BSECA/BSECB, DSECA/DSECB,
  DATASEC in IRAF 1-based inclusive ``[x1:x2,y1:y2]`` notation);
* processed: float32, already trimmed and bias-subtracted;
* compressed: tile-compressed ``.fits.fz`` (CompImageHDU) or gzip ``.fits.gz``.

Memory: a full exposure is ~0.7 GB (int16) to 1.4 GB (float32); only one CCD is ever held.
Plain files are memory-mapped one extension at a time (a private ``np.memmap`` over that HDU's
data span, dropped after the CCD, so resident pages never pile up across CCDs); compressed ones
are decoded one extension at a time and the decoded array is released. Data are always opened
with ``do_not_scale_image_data=True`` and scaled here (BSCALE/BZERO/BLANK), because astropy
refuses memory-mapped scaled images and because the raw integers are needed for saturation.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
import warnings
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import numpy as np
from astropy.io import fits

__all__ = [
    "ExposureMetadata", "ExposureReadError", "CCDInfo", "CCDImage", "ExposureReader",
    "open_exposure", "read_metadata", "metadata_from_headers", "parse_section", "prepare_ccd",
    "layout_from_header", "file_checksum", "band_from_filter", "FitsLimits", "FitsLimitError",
    "FitsStructure", "scan_structure",
]

_BITPIX_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


# Four raw MegaCam CCDs (2112 x 4644 each): larger declared images are refused unread.
MAX_CCD_PIXELS = 4 * 2112 * 4644


class ExposureReadError(Exception):
    """The file cannot be read as an exposure. The message names the file and, where it
    applies, the extension (HDU index and EXTNAME)."""

    def __init__(self, path, problem: str, extension: str | None = None):
        self.path = str(path)
        self.problem = problem
        self.extension = extension
        where = f" (extension {extension})" if extension else ""
        super().__init__(f"{self.path}{where}: {problem}")

    def __reduce__(self):  # picklable across Dask workers
        return (ExposureReadError, (self.path, self.problem, self.extension))


@dataclass
class ExposureMetadata:
    expnum: int | None = None
    filename: str | None = None
    object: str | None = None
    obstype: str | None = None
    ra_deg: float | None = None
    dec_deg: float | None = None
    mjd_obs: float | None = None
    date_obs: datetime | None = None        # UTC, timezone-aware
    exptime: float | None = None
    filter_name: str | None = None
    band: str | None = None
    airmass: float | None = None
    instrument: str | None = None
    n_ccds: int | None = None
    release_date: date | None = None
    runid: str | None = None
    layout: str = "unknown"                 # "raw" | "processed" | "unknown"

    @property
    def is_science(self) -> bool:
        """Science frames are OBJECT; a missing obstype is taken as science (simulated or
        stripped files), calibration frames (BIAS, FLAT, DARK...) are not."""
        return self.obstype is None or self.obstype == "OBJECT"

    def to_dict(self) -> dict:
        """JSON-friendly dict (dates as ISO strings)."""
        out = dataclasses.asdict(self)
        for key in ("date_obs", "release_date"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


@dataclass
class CCDInfo:
    """Where one CCD lives in the file (headers only; no pixel read)."""
    index: int          # HDU index in the file
    extname: str
    shape: tuple        # (ny, nx) of the stored array, overscan included
    bitpix: int
    compressed: bool
    data_offset: int = -1   # byte offset of the data in the file, from the scan (uncompressed files)


@dataclass
class CCDImage:
    """One CCD, scaled to float32, trimmed to its science area and bias-subtracted if raw."""
    index: int
    extname: str
    data: np.ndarray                       # (ny, nx) float32, C-contiguous, native endian
    saturated: np.ndarray | None           # bool mask (same shape) or None if none saturated
    header: fits.Header
    layout: str                            # "raw" | "processed" | "unknown"
    raw_shape: tuple
    bias_levels: dict = field(default_factory=dict)   # amplifier -> median overscan (ADU)
    warnings: list = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Header helpers: every parser returns None on a missing or malformed value, never raises.
# --------------------------------------------------------------------------------------------
def _get(header, key):
    try:
        value = header.get(key)
    except Exception:   # a malformed card can raise on access
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if value is None or isinstance(value, fits.card.Undefined):
        return None
    return value


def _float(header, key):
    value = _get(header, key)
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _int(header, key):
    value = _get(header, key)
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if np.isfinite(f) and f == int(f) else None


def _str(header, key):
    value = _get(header, key)
    return None if value is None else str(value).strip() or None


def band_from_filter(filter_name: str | None) -> str | None:
    """'i.MP9702' -> 'i', 'r.MP9602' -> 'r', 'i2.MP9703' -> 'i', 'Ha.MP9603' -> 'Ha'."""
    if not filter_name:
        return None
    prefix = str(filter_name).strip().split(".")[0].strip()
    if not prefix:
        return None
    m = re.fullmatch(r"([ugrizyUGRIZY])\d?", prefix)
    return m.group(1).lower() if m else prefix


def _parse_date(text) -> date | None:
    if text is None:
        return None
    m = re.match(r"\s*(\d{4})-(\d{1,2})-(\d{1,2})", str(text))
    if not m:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def _parse_time_of_day(text):
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{1,2}):(\d{1,2}(?:\.\d*)?)\s*", str(text))
    if not m:
        return None
    h, mi, s = int(m.group(1)), int(m.group(2)), float(m.group(3))
    if h > 23 or mi > 59 or s >= 61:
        return None
    return h, mi, s


def _observation_time(header):
    """(mjd, datetime UTC) from MJD-OBS, or DATE-OBS (+ UTC-OBS / TIME-OBS)."""
    from astropy.time import Time

    mjd = _float(header, "MJD-OBS")
    when = None
    date_text = _str(header, "DATE-OBS")
    if date_text is not None:
        day = _parse_date(date_text)
        if day is not None:
            tod = None
            if "T" in date_text:
                tod = _parse_time_of_day(date_text.split("T", 1)[1])
            if tod is None:
                for key in ("UTC-OBS", "TIME-OBS", "UT"):
                    t = _str(header, key)
                    if t is not None and (tod := _parse_time_of_day(t)) is not None:
                        break
            h, mi, s = tod if tod is not None else (0, 0, 0.0)
            sec = int(s)
            when = datetime(day.year, day.month, day.day, h, mi, min(sec, 59),
                            int(round((s - sec) * 1e6)) % 1_000_000, tzinfo=timezone.utc)
            if mjd is None and tod is not None:
                try:
                    mjd = float(Time(when).mjd)
                except Exception:
                    mjd = None
    if when is None and mjd is not None:
        try:
            when = Time(mjd, format="mjd", scale="utc").to_datetime(timezone=timezone.utc)
        except Exception:
            when = None
    return mjd, when


def _coordinates(primary, extension):
    """RA/Dec in degrees from RA_DEG/DEC_DEG, RA/DEC (sexagesimal strings: RA in hours; or
    plain numbers: degrees), or CRVAL1/CRVAL2 (primary, then the first CCD)."""
    def valid(ra, dec):
        if ra is None or dec is None or not (-90.0 <= dec <= 90.0):
            return None
        return float(ra) % 360.0, float(dec)

    out = valid(_float(primary, "RA_DEG"), _float(primary, "DEC_DEG"))
    if out:
        return out
    ra, dec = _get(primary, "RA"), _get(primary, "DEC")
    if ra is not None and dec is not None:
        if isinstance(ra, (int, float)) and isinstance(dec, (int, float)):
            out = valid(float(ra), float(dec))
        else:
            out = _sexagesimal(str(ra), str(dec))
        if out:
            return out
    for header in (primary, extension):
        if header is None:
            continue
        out = valid(_float(header, "CRVAL1"), _float(header, "CRVAL2"))
        if out:
            return out
    return None, None


def _sexagesimal(ra: str, dec: str):
    from astropy import units as u
    from astropy.coordinates import Angle

    try:
        if ":" in ra or " " in ra.strip() or "h" in ra:
            ra_deg = Angle(ra, unit=u.hourangle).degree
        else:   # a bare number in a string: degrees by FITS convention
            ra_deg = float(ra)
        dec_deg = Angle(dec, unit=u.deg).degree
    except Exception:
        return None
    if not (np.isfinite(ra_deg) and np.isfinite(dec_deg)) or not (-90 <= dec_deg <= 90):
        return None
    return float(ra_deg) % 360.0, float(dec_deg)


def parse_section(text, shape=None):
    """IRAF section '[x1:x2,y1:y2]' (1-based, inclusive) -> (row slice, column slice) for numpy.
    Reversed ranges are accepted. None if malformed or (given ``shape``) outside the array."""
    if not isinstance(text, str):
        return None
    m = re.fullmatch(r"\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*", text)
    if not m:
        return None
    x1, x2, y1, y2 = (int(g) for g in m.groups())
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    if x1 < 1 or y1 < 1:
        return None
    if shape is not None and (y2 > shape[0] or x2 > shape[1]):
        return None
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def _amplifier_sections(header, shape):
    """[(amp, overscan section, data section)] from BSEC<amp>/DSEC<amp> pairs, else from a
    single BIASSEC with DATASEC (or the whole array outside the overscan)."""
    amps = []
    for key in sorted(k for k in header.keys() if re.fullmatch(r"BSEC[A-Z0-9]", k)):
        amp = key[-1]
        bsec = parse_section(_str(header, key), shape)
        dsec = parse_section(_str(header, "DSEC" + amp), shape)
        if bsec is not None and dsec is not None and not _overlap(bsec, dsec):
            amps.append((amp, bsec, dsec))
    if amps:
        return amps
    bsec = parse_section(_str(header, "BIASSEC"), shape)
    if bsec is not None:
        dsec = parse_section(_str(header, "DATASEC"), shape)
        if dsec is None:
            dsec = (slice(0, shape[0]), slice(0, shape[1]))
        if not _overlap(bsec, dsec) or dsec == (slice(0, shape[0]), slice(0, shape[1])):
            return [("", bsec, dsec)]
    return []


def _overlap(a, b) -> bool:
    return (a[0].start < b[0].stop and b[0].start < a[0].stop and
            a[1].start < b[1].stop and b[1].start < a[1].stop)


def _section_shape(section):
    return (section[0].stop - section[0].start, section[1].stop - section[1].start)


def layout_from_header(header) -> str:
    """'raw': overscan sections present, or integer data larger than its science area
    (DATASEC, else CCDSIZE); 'processed': float data without overscan, or integer data whose
    array is exactly its science area (already trimmed, stored scaled); 'unknown': integer data
    without any of these keywords."""
    bitpix = _int(header, "BITPIX")
    shape = (_int(header, "NAXIS2") or 0, _int(header, "NAXIS1") or 0)
    if not all(shape):
        return "unknown"
    if _amplifier_sections(header, shape):
        return "raw"
    if bitpix is not None and bitpix < 0:
        return "processed"
    datasec = parse_section(_str(header, "DATASEC"), shape)
    if datasec is not None:
        return "processed" if _section_shape(datasec) == shape else "raw"
    ccdsize = parse_section(_str(header, "CCDSIZE"))
    if ccdsize is not None:
        size = _section_shape(ccdsize)
        if size == shape:
            return "processed"
        if size[0] <= shape[0] and size[1] <= shape[1]:
            return "raw"
    return "unknown"


# MegaCam archive names are the exposure number plus a one-letter suffix: 1234567o.fits.fz, or
# FILENAME's bare "1234567o". Anchored, so that a date or a counter in another name is not taken.
_MEGACAM_NAME = re.compile(r"^(\d{5,9})[a-z]?(\.|$)")


def expnum_from_filename(*names: str | None) -> int | None:
    """The exposure number in the first of `names` (file names, no folders) that is a MegaCam
    archive name, else None. The one rule for a file without EXPNUM (reading and ingest)."""
    for name in names:
        match = _MEGACAM_NAME.match(name or "")
        if match:
            return int(match.group(1))
    return None


def metadata_from_headers(primary, first_ccd=None, path=None, n_ccds=None) -> ExposureMetadata:
    """The typed record from a primary header (and the first CCD's header for the layout and
    as a coordinate fallback). Missing or malformed keywords give None."""
    primary = primary if primary is not None else fits.Header()
    filename = os.path.basename(str(path)) if path is not None else _str(primary, "FILENAME")
    expnum = _int(primary, "EXPNUM")
    if expnum is None:
        expnum = expnum_from_filename(filename, _str(primary, "FILENAME"))
    obstype = _str(primary, "OBSTYPE") or _str(primary, "EXPTYPE")
    ra, dec = _coordinates(primary, first_ccd)
    mjd, when = _observation_time(primary)
    filter_name = _str(primary, "FILTER")
    airmass = _float(primary, "AIRMASS")
    exptime = _float(primary, "EXPTIME")
    return ExposureMetadata(
        expnum=expnum,
        filename=filename,
        object=_str(primary, "OBJECT"),
        obstype=obstype.upper() if obstype else None,
        ra_deg=ra, dec_deg=dec,
        mjd_obs=mjd, date_obs=when,
        exptime=exptime if exptime is None or exptime >= 0 else None,
        filter_name=filter_name,
        band=band_from_filter(filter_name),
        airmass=airmass if airmass is None or airmass > 0 else None,
        instrument=_str(primary, "INSTRUME") or _str(primary, "DETECTOR"),
        n_ccds=n_ccds,
        release_date=_parse_date(_str(primary, "REL_DATE")),
        runid=_str(primary, "RUNID"),
        layout=layout_from_header(first_ccd) if first_ccd is not None else "unknown",
    )


# --------------------------------------------------------------------------------------------
# Pixel preparation
# --------------------------------------------------------------------------------------------
def _scale(raw: np.ndarray, header) -> np.ndarray:
    """float32 physical values from stored values (BSCALE, BZERO, BLANK)."""
    data = raw.astype(np.float32)         # native-endian copy; the memmap can then go
    if np.issubdtype(raw.dtype, np.integer):
        bscale = _float(header, "BSCALE")
        bzero = _float(header, "BZERO")
        if bscale is not None and bscale != 1.0:
            data *= np.float32(bscale)
        if bzero:
            data += np.float32(bzero)
        blank = _int(header, "BLANK")
        if blank is not None:
            data[raw == blank] = np.nan
    return data


def _saturation_level(header, stored_dtype):
    level = _float(header, "SATURATE")
    if level is not None and level > 0:
        return level
    if np.issubdtype(stored_dtype, np.integer):
        # The converter's ceiling: e.g. 65535 for int16 + BZERO 32768.
        info = np.iinfo(stored_dtype)
        return info.max * (_float(header, "BSCALE") or 1.0) + (_float(header, "BZERO") or 0.0)
    return None


def prepare_ccd(raw: np.ndarray, header, overscan_smooth_rows: int = 31,
                index: int = 0, extname: str | None = None) -> CCDImage:
    """Scale, subtract each amplifier's overscan bias (raw layout), trim to DATASEC.

    The bias of an amplifier is the median over its overscan columns, row by row, smoothed
    along rows with a running median (robust to cosmic rays and bleed trails crossing the
    overscan), so row-dependent bias structure is removed too. Processed float data pass
    through (trimmed to DATASEC only if that is smaller than the array). Only the science
    area and the overscan strips are converted to float, so the peak memory is one float32
    science area plus the stored array.
    """
    extname = extname or f"HDU{index}"
    raw_shape = tuple(raw.shape)
    notes = []
    if raw.ndim != 2:
        raise ValueError(f"CCD {extname} is not a 2-D image (shape {raw_shape})")
    layout = layout_from_header(header)
    is_int = np.issubdtype(raw.dtype, np.integer)
    if layout == "unknown" and not is_int:
        layout = "processed"
    full = (slice(0, raw_shape[0]), slice(0, raw_shape[1]))
    datasec = parse_section(_str(header, "DATASEC"), raw_shape)
    if datasec is None:
        if layout == "raw":
            notes.append(f"{extname}: no valid DATASEC keyword; using the untrimmed array "
                         f"{raw_shape[1]}x{raw_shape[0]}")
        datasec = full
    amps = _amplifier_sections(header, raw_shape)

    # Bias per amplifier and row, from the overscan strips alone.
    corrections = []
    biases = {}
    for amp, bsec, dsec in amps:
        level, rows_bias = _overscan_bias(_scale(raw[bsec], header), bsec, dsec,
                                          overscan_smooth_rows)
        biases[amp or "single"] = level
        corrections.append((dsec, rows_bias))
    if not amps and layout == "raw":
        notes.append(f"{extname}: no overscan keywords (BSECA/BSECB+DSECA/DSECB or BIASSEC); "
                     "bias not subtracted")
    elif layout == "unknown" and is_int:
        notes.append(f"{extname}: integer data without DATASEC, CCDSIZE or overscan keywords; "
                     "used as stored (untrimmed, bias not subtracted)")

    data = _scale(raw[datasec], header)   # a fresh C-contiguous float32 array
    level = _saturation_level(header, raw.dtype)
    saturated = None
    if level is not None:
        with np.errstate(invalid="ignore"):
            saturated = data >= np.float32(level)
        if not saturated.any():
            saturated = None
    r0, c0 = datasec[0].start, datasec[1].start
    for dsec, rows_bias in corrections:
        # The amplifier's data section, clipped to DATASEC, in trimmed coordinates.
        ra, rb = max(dsec[0].start, r0), min(dsec[0].stop, datasec[0].stop)
        ca, cb = max(dsec[1].start, c0), min(dsec[1].stop, datasec[1].stop)
        if ra >= rb or ca >= cb or rows_bias is None:
            continue
        bias = rows_bias[ra - dsec[0].start:rb - dsec[0].start]
        data[ra - r0:rb - r0, ca - c0:cb - c0] -= bias[:, None]
    return CCDImage(index=index, extname=extname, data=data, saturated=saturated, header=header,
                    layout=layout, raw_shape=raw_shape, bias_levels=biases, warnings=notes)


def _overscan_bias(overscan, bsec, dsec, smooth_rows):
    """(median level, bias for each row of ``dsec`` (float32) or None if unusable)."""
    from scipy.ndimage import median_filter

    n_rows = dsec[0].stop - dsec[0].start
    # NaN only where BLANK pixels were: without them the plain median is the same and several
    # times faster (nanmedian along rows goes through masked arrays).
    median = np.nanmedian if np.isnan(overscan).any() else np.median
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # an all-BLANK overscan is handled
        level = float(median(overscan)) if overscan.size else float("nan")
        if not np.isfinite(level):
            return float("nan"), None
        per_row = median(overscan, axis=1)
    rows0 = bsec[0].start
    covered = dsec[0].start >= rows0 and dsec[0].stop <= bsec[0].stop
    if overscan.shape[1] >= 3 and overscan.shape[0] >= 2 and covered:
        per_row = np.where(np.isfinite(per_row), per_row, level)
        size = max(1, min(int(smooth_rows), per_row.size))
        smooth = median_filter(per_row, size=size, mode="nearest")
        return level, smooth[dsec[0].start - rows0:dsec[0].stop - rows0].astype(np.float32)
    return level, np.full(n_rows, level, np.float32)


# --------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------
def _compression_of(path) -> str | None:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic[:2] == b"\x1f\x8b":
        return "gzip"
    if magic[:3] == b"BZh":
        return "bzip2"
    if magic[:2] == b"PK":
        return "zip"
    return None


def _gzip_length_ok(path, expected: int) -> bool:
    """A gzip stream records its uncompressed length (mod 2**32) in its last 4 bytes; when it
    disagrees (truncated file, or a multi-member stream) decompress fully to be sure."""
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        isize = int.from_bytes(fh.read(4), "little")
    if isize == expected % 2 ** 32:
        return True
    total = 0
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                total += len(chunk)
    except (EOFError, OSError, zlib.error):
        return False
    return total >= expected


class ExposureReader:
    """An open exposure: headers now, pixels one CCD at a time. Use as a context manager."""

    def __init__(self, path):
        self.path = str(path)
        if not os.path.exists(self.path):
            raise ExposureReadError(self.path, "file does not exist")
        if os.path.isdir(self.path):
            raise ExposureReadError(self.path, "is a directory, not a FITS file")
        self.file_size = os.path.getsize(self.path)
        if self.file_size == 0:
            raise ExposureReadError(self.path, "file is empty")
        self.compression = _compression_of(self.path)
        self.warnings: list[str] = []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # truncation is checked and reported below
                self._hdul = fits.open(self.path, memmap=False, do_not_scale_image_data=True,
                                       lazy_load_hdus=True)
                n_hdu = len(self._hdul)   # reads every header (not the data)
        except ExposureReadError:
            raise
        except Exception as exc:
            raise ExposureReadError(self.path, f"not a readable FITS file ({exc})") from None
        try:
            with warnings.catch_warnings():
                # astropy verifies (and warns about) odd cards as headers are touched; a
                # malformed keyword becomes None in the metadata instead.
                warnings.simplefilter("ignore")
                self._scan(n_hdu)
        except ExposureReadError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise ExposureReadError(self.path, f"unreadable FITS structure ({type(exc).__name__}: "
                                    f"{exc})") from None

    def _scan(self, n_hdu):
        self.primary_header = self._hdul[0].header
        ccds, tables = [], []
        end = 0
        for i in range(n_hdu):
            hdu = self._hdul[i]
            # The HDU's own fileinfo: HDUList.fileinfo re-serialises every header to check for
            # resizing, which made scanning a 36-CCD file quadratic (a second per exposure).
            info = hdu.fileinfo() or self._hdul.fileinfo(i)
            end = max(end, info["datLoc"] + info["datSpan"])
            name = _str(hdu.header, "EXTNAME") or (f"HDU{i}" if i else "PRIMARY")
            label = f"{i} '{name}'"
            if self.compression is None and info["datLoc"] + info["datSpan"] > self.file_size:
                raise ExposureReadError(
                    self.path, f"file truncated: data need {info['datLoc'] + info['datSpan']} "
                    f"bytes, file has {self.file_size}", label)
            if isinstance(hdu, (fits.ImageHDU, fits.PrimaryHDU, fits.CompImageHDU)):
                naxis = _int(hdu.header, "NAXIS") or 0
                shape = tuple(_int(hdu.header, f"NAXIS{k}") or 0 for k in range(naxis, 0, -1))
                if naxis == 0 or (i == 0 and n_hdu > 1):
                    continue
                if naxis != 2 or 0 in shape:
                    self.warnings.append(f"extension {label}: not a 2-D image (shape {shape}); skipped")
                    continue
                if shape[0] * shape[1] > MAX_CCD_PIXELS:
                    # A few hundred kB of .gz can declare gigabytes of pixels: refuse before reading.
                    raise ExposureReadError(
                        self.path, f"image of {shape[0]}x{shape[1]} pixels is larger than any CCD "
                        f"this archive reads (at most {MAX_CCD_PIXELS} pixels)", label)
                ccds.append(CCDInfo(index=i, extname=name if i else "PRIMARY", shape=shape,
                                    bitpix=_int(hdu.header, "BITPIX") or 0,
                                    compressed=isinstance(hdu, fits.CompImageHDU),
                                    data_offset=int(info["datLoc"])))
            else:
                tables.append((label, type(hdu).__name__))
        if self.compression == "gzip" and not _gzip_length_ok(self.path, end):
            raise ExposureReadError(self.path, "gzip stream truncated or corrupt "
                                    f"(found {n_hdu} HDUs before it ended)")
        nextend = _int(self.primary_header, "NEXTEND")
        if nextend is not None and n_hdu - 1 < nextend:
            raise ExposureReadError(self.path, f"file truncated or incomplete: NEXTEND={nextend} "
                                    f"but only {n_hdu - 1} extensions found")
        if not ccds:
            if tables:
                label, kind = tables[0]
                raise ExposureReadError(self.path, f"is a {kind} (table), not an image; the file "
                                        "has no image extensions", label)
            skipped = "; ".join(self.warnings[-3:])
            raise ExposureReadError(self.path, "no image extensions (no CCD data in the file)"
                                    + (f": {skipped}" if skipped else ""))
        for label, kind in tables:
            self.warnings.append(f"extension {label}: {kind} (table), not an image; skipped")
        self.ccds: list[CCDInfo] = ccds

    # -- access -------------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        hdul = getattr(self, "_hdul", None)
        if hdul is not None:
            hdul.close()
            self._hdul = None

    def __len__(self):
        return len(self.ccds)

    def header(self, ccd: CCDInfo | int) -> fits.Header:
        info = self._info(ccd)
        return self._hdul[info.index].header

    def _info(self, ccd) -> CCDInfo:
        if isinstance(ccd, CCDInfo):
            return ccd
        return self.ccds[int(ccd)]

    def read_raw(self, ccd: CCDInfo | int) -> np.ndarray:
        """The stored array of one CCD (unscaled), as it is in the file."""
        info = self._info(ccd)
        label = f"{info.index} '{info.extname}'"
        hdu = self._hdul[info.index]
        try:
            if self.compression is None and not info.compressed:
                dtype = _BITPIX_DTYPES.get(info.bitpix)
                if dtype is None:
                    raise ExposureReadError(self.path, f"unsupported BITPIX {info.bitpix}", label)
                # The offset the scan found: HDUList.fileinfo here re-serialised every header
                # again for each CCD read (5 ms a CCD, a fifth of a small CCD's imaging).
                offset = info.data_offset if info.data_offset >= 0 else self._hdul.fileinfo(info.index)["datLoc"]
                # A private map of this HDU only: released with the array, so resident pages
                # never accumulate across the 36-40 CCDs of a 1.4 GB file.
                return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=info.shape)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = hdu.data
            try:
                del hdu.data          # do not keep the decoded CCD cached in the HDU list
            except Exception:
                pass
            if data is None or data.shape != info.shape:
                raise ExposureReadError(self.path, f"image data missing or of shape "
                                        f"{None if data is None else data.shape}, header says "
                                        f"{info.shape}", label)
            return data
        except ExposureReadError:
            raise
        except Exception as exc:
            raise ExposureReadError(self.path, f"cannot read image data ({type(exc).__name__}: "
                                    f"{exc})", label) from None

    def read_ccd(self, ccd: CCDInfo | int, overscan_smooth_rows: int = 31) -> CCDImage:
        """One CCD scaled to float32, bias-subtracted and trimmed (see prepare_ccd)."""
        info = self._info(ccd)
        raw = self.read_raw(info)
        try:
            return prepare_ccd(raw, self.header(info), overscan_smooth_rows,
                               index=info.index, extname=info.extname)
        except ValueError as exc:
            raise ExposureReadError(self.path, str(exc), f"{info.index} '{info.extname}'") from None
        finally:
            del raw

    def metadata(self) -> ExposureMetadata:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # card verification noise; bad values -> None
            return metadata_from_headers(self.primary_header, self.header(self.ccds[0]),
                                         path=self.path, n_ccds=len(self.ccds))


def open_exposure(path) -> ExposureReader:
    """Open an exposure for reading (raises ExposureReadError naming the problem)."""
    return ExposureReader(path)


def read_metadata(path) -> ExposureMetadata:
    """The exposure's metadata from its headers (no pixel is read)."""
    with open_exposure(path) as reader:
        return reader.metadata()


def file_checksum(path, chunk_size: int = 1 << 22) -> str:
    """sha256 hex digest of the file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Bounding a file before reading it (uploads)
# --------------------------------------------------------------------------------------------
_BLOCK = 2880
_MAX_HEADER_BLOCKS = 2000          # 72 000 cards: far beyond any real header


@dataclass(frozen=True)
class FitsLimits:
    """What an untrusted FITS file may hold: HDUs, pixels over all images (tile-compressed
    ones at their decompressed size), and bytes of the (decompressed) stream."""

    max_hdus: int
    max_pixels: int
    max_bytes: int


@dataclass
class FitsStructure:
    compression: str | None
    n_hdus: int = 0
    n_images: int = 0
    pixels: int = 0
    stream_bytes: int = 0
    images: list = field(default_factory=list)   # (hdu index, shape)


class FitsLimitError(ExposureReadError):
    """The file declares more than the limits allow; raised from its headers, before the data."""


def _card_value(card: str):
    value = card[10:].split("/", 1)[0].strip()
    if value.startswith("'"):
        return value.strip("'").strip()
    if value in ("T", "F"):
        return value == "T"
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return None


def _read_header(stream, path, index):
    """Cards of the next header as {keyword: value} (only those with a value), or None at the
    end of the file."""
    cards: dict[str, object] = {}
    for block_number in range(_MAX_HEADER_BLOCKS):
        block = stream.read(_BLOCK)
        if not block and block_number == 0:
            return None
        if len(block) < _BLOCK:
            if block_number == 0 and not block.strip(b"\0 "):
                return None              # padding after the last HDU
            raise ExposureReadError(path, "file truncated inside a header", f"HDU {index}")
        text = block.decode("ascii", errors="replace")
        for start in range(0, _BLOCK, 80):
            card = text[start:start + 80]
            keyword = card[:8].strip()
            if keyword == "END":
                return cards
            if card[8:10] == "= " and keyword not in cards:
                cards[keyword] = _card_value(card)
        if block_number == 0 and index > 0 and "XTENSION" not in cards:
            raise ExposureReadError(path, "data after the last HDU is not a FITS extension", f"HDU {index}")
    raise ExposureReadError(path, f"a header longer than {_MAX_HEADER_BLOCKS} blocks", f"HDU {index}")


def _as_int(value, what, path, label) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ExposureReadError(path, f"{what} is {value!r}, not a count", label)
    return value


def scan_structure(path, limits: FitsLimits) -> FitsStructure:
    """Walk a (possibly gzip-compressed) FITS file header by header and refuse it, from what
    its headers declare and before a byte of the declared data is decoded, when it holds more
    HDUs, image pixels or stream bytes than `limits` allow.

    Memory stays at one header block and a 1 MB read buffer whatever the file claims; time is
    bounded by `limits.max_bytes` of decompression. Raises FitsLimitError (a limit) or
    ExposureReadError (not a FITS file, truncated); returns what was found otherwise."""
    path = os.fspath(path)
    compression = _compression_of(path)
    if compression not in (None, "gzip"):
        raise ExposureReadError(path, f"{compression} compression is not accepted here (send .fits, .fits.gz "
                                "or .fits.fz)")
    found = FitsStructure(compression=compression)
    opener = _GzipStream if compression == "gzip" else open
    try:
        with opener(path, "rb") as stream:
            index = 0
            while True:
                cards = _read_header(stream, path, index)
                if cards is None:
                    break
                label = f"HDU {index}"
                if index == 0 and cards.get("SIMPLE") is not True:
                    raise ExposureReadError(path, "not a FITS file (no SIMPLE = T card)")
                found.n_hdus = index + 1
                if found.n_hdus > limits.max_hdus:
                    raise FitsLimitError(path, f"more than {limits.max_hdus} HDUs (extensions); "
                                         "this archive takes at most that many")
                naxis = _as_int(cards.get("NAXIS", 0), "NAXIS", path, label)
                if naxis > 999:
                    raise ExposureReadError(path, f"NAXIS = {naxis}", label)
                axes = [_as_int(cards.get(f"NAXIS{k}", 0), f"NAXIS{k}", path, label) for k in range(1, naxis + 1)]
                bitpix = cards.get("BITPIX")
                if bitpix not in _BITPIX_DTYPES:
                    raise ExposureReadError(path, f"BITPIX = {bitpix!r}", label)
                pcount = _as_int(cards.get("PCOUNT", 0), "PCOUNT", path, label)
                gcount = _as_int(cards.get("GCOUNT", 1), "GCOUNT", path, label)
                data_bytes = (abs(bitpix) // 8) * gcount * (pcount + int(np.prod(axes, dtype=object))) if naxis else 0
                if cards.get("XTENSION") == "BINTABLE" and cards.get("ZIMAGE") is True:
                    znaxis = _as_int(cards.get("ZNAXIS", 0), "ZNAXIS", path, label)
                    shape = [_as_int(cards.get(f"ZNAXIS{k}", 0), f"ZNAXIS{k}", path, label)
                             for k in range(1, znaxis + 1)]
                elif cards.get("XTENSION", "IMAGE") == "IMAGE" or index == 0:
                    shape = axes
                else:
                    shape = []           # a table: its bytes count, it has no pixels
                pixels = int(np.prod(shape, dtype=object)) if shape else 0
                if pixels:
                    found.n_images += 1
                    found.images.append((index, tuple(reversed(shape))))
                found.pixels += pixels
                if found.pixels > limits.max_pixels:
                    raise FitsLimitError(path, f"the images hold more than {limits.max_pixels} pixels in all "
                                         f"(HDU {index} declares {'x'.join(map(str, shape))})")
                padded = -(-data_bytes // _BLOCK) * _BLOCK
                found.stream_bytes += padded
                if found.stream_bytes > limits.max_bytes:
                    raise FitsLimitError(path, f"the file's data would take more than {limits.max_bytes} bytes "
                                         "once decompressed")
                _skip(stream, padded, compression, path, label)
                index += 1
    except (EOFError, OSError, zlib.error) as exc:
        raise ExposureReadError(path, f"unreadable compressed stream ({type(exc).__name__}: {exc})") from None
    if found.n_hdus == 0:
        raise ExposureReadError(path, "empty FITS file")
    return found


def _skip(stream, n: int, compression, path, label) -> None:
    if n == 0:
        return
    if compression is None:
        position = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        if position + n > end:
            raise ExposureReadError(path, f"file truncated: the data need {position + n} bytes, the file has {end}",
                                    label)
        stream.seek(position + n)
        return
    left = n
    while left:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            raise ExposureReadError(path, f"file truncated: {n - left} of {n} data bytes", label)
        left -= len(chunk)


class _GzipStream:
    """Sequential reads of a gzip file (multi-member included) straight through zlib: no CRC
    pass and no read-ahead buffer, about twice as fast as `gzip.open` for skipping data."""

    _RAW = 1 << 20

    def __init__(self, path, mode="rb"):
        self._file = open(path, "rb")
        self._inflate = zlib.decompressobj(31)
        self._pending = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def read(self, n: int) -> bytes:
        out, wanted = [], n
        while wanted > 0:
            if self._inflate.eof:
                # The member ended: another may follow (zero padding between members is skipped).
                rest = self._inflate.unused_data.lstrip(b"\0")
                while not rest:
                    more = self._file.read(self._RAW)
                    if not more:
                        return b"".join(out)
                    rest = more.lstrip(b"\0")
                self._inflate = zlib.decompressobj(31)
                self._pending = rest
            if not self._pending:
                self._pending = self._file.read(self._RAW)
                if not self._pending:
                    raise EOFError("the gzip stream ends before its end-of-stream marker")
            data = self._inflate.decompress(self._pending, wanted)
            self._pending = self._inflate.unconsumed_tail
            out.append(data)
            wanted -= len(data)
        return b"".join(out)
