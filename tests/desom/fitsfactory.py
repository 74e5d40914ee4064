"""Write small FITS exposures laid out as CFHT MegaCam archive files lay them out.

Independent of desom.simulate on purpose: the reader must cope with files as the archive
holds them. Raw CCDs are int16 + BZERO 32768 (astropy writes uint16 that way), larger than
their science area: a 32-column prescan/overscan strip for each of the two amplifiers (A on
the left, B on the right) and 32 overscan rows on top, with the IRAF section keywords of the
real headers (DATASEC, DETSEC, BSECA/BSECB, DSECA/DSECB, CSECA/CSECB). Processed CCDs are
float32, trimmed and bias-subtracted. Compression: None, "fz" (RICE tile compression) or "gz".

The sky of a CCD is a pure function of (seed, ccd index), so the same sky can be written raw
and processed and compared.
"""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

OVERSCAN = 32


@dataclass
class CCDTruth:
    x: np.ndarray      # 0-based column in the trimmed science area
    y: np.ndarray      # 0-based row
    flux: np.ndarray


def primary_header(expnum=1234567, obstype="OBJECT", n_ccds=36, *, ra="9:01:38.26",
                   dec="-2:24:00.0", ra_deg=135.409417, dec_deg=-2.4, filter_name="i.MP9702",
                   rel_date="2011-03-15", drop=(), extra=None) -> fits.Header:
    """A primary header with the keywords (and value styles) of a real MegaCam one."""
    h = fits.Header()
    cards = [
        ("EXTEND", True, "Extensions are present"),
        ("NEXTEND", n_ccds, "Number of extensions"),
        ("FILENAME", f"{expnum}o", "Base filename at acquisition"),
        ("PATHNAME", "/data/megacam/", ""),
        ("EXPNUM", expnum, "Exposure number"),
        ("OBSTYPE", obstype, "Observation / Exposure type"),
        ("EXPTYPE", obstype, "Exposure type"),
        ("OBJECT", "D3_1", "Object name"),
        ("RUNID", "10AQ01", "CFHT Run ID"),
        ("INSTRUME", "MegaPrime", "Instrument"),
        ("DETECTOR", "MegaCam", "Science Detector"),
        ("TELESCOP", "CFHT 3.6m", ""),
        ("RA", ra, "Object right ascension (hours)"),
        ("DEC", dec, "Object declination (degrees)"),
        ("RA_DEG", ra_deg, "Object right ascension in degrees"),
        ("DEC_DEG", dec_deg, "Object declination in degrees"),
        ("EQUINOX", 2000.0, ""),
        ("DATE-OBS", "2010-03-15", "Date at start of observation (UTC)"),
        ("UTC-OBS", "08:12:34.56", "Time at start of observation (UTC)"),
        ("MJD-OBS", 55270.34206667, "Modified Julian Date at start of observation"),
        ("EXPTIME", 300.0, "Integration time (seconds)"),
        ("FILTER", filter_name, "Filter"),
        ("AIRMASS", 1.182, "Airmass at start of observation"),
        ("REL_DATE", rel_date, "Date of data release"),
        ("IMAGESWV", "DetCom v3.70.02", ""),
    ]
    for key, value, comment in cards:
        if key not in drop and value is not None:
            h[key] = (value, comment)
    for key, value in (extra or {}).items():
        h[key] = value
    return h


def ccd_sky(index, shape, seed=0, *, n_sources=120, sky=1200.0, noise=20.0, fwhm=3.5,
            flux_range=(3e3, 6e4), margin=0, positions=None, fluxes=None):
    """Float32 sky (sky level + Gaussian sources + Gaussian noise) of one CCD's science area,
    and the truth. Same (index, seed) -> same sky."""
    ny, nx = shape
    rng = np.random.default_rng([seed, index])
    if positions is None:
        x = rng.uniform(margin, nx - 1 - margin, n_sources)
        y = rng.uniform(margin, ny - 1 - margin, n_sources)
    else:
        x, y = (np.asarray(v, float) for v in positions)
    flux = (np.asarray(fluxes, float) if fluxes is not None else
            np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), x.size)))
    img = np.full(shape, sky, np.float32)
    add_gaussians(img, x, y, flux, fwhm)
    img += rng.normal(0.0, noise, shape).astype(np.float32)
    return img, CCDTruth(x, y, flux)


def add_gaussians(img, x, y, flux, fwhm, half=10):
    """Add circular Gaussian sources (vectorised over a (2*half+1)^2 window per source)."""
    sigma = fwhm / 2.3548
    ny, nx = img.shape
    offs = np.arange(-half, half + 1)
    ix = np.rint(x).astype(int)
    iy = np.rint(y).astype(int)
    cols = ix[:, None, None] + offs[None, None, :]
    rows = iy[:, None, None] + offs[None, :, None]
    prof = np.exp(-(((cols - x[:, None, None]) ** 2 + (rows - y[:, None, None]) ** 2)
                    / (2 * sigma ** 2)))
    prof *= (flux / (2 * np.pi * sigma ** 2))[:, None, None]
    rows, cols = np.broadcast_arrays(rows, cols)
    ok = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    np.add.at(img, (rows[ok], cols[ok]), prof[ok].astype(np.float32))


def raw_ccd(science: np.ndarray, index: int, *, bias=(1000.0, 1150.0), bias_slope=0.0,
            saturate=65535, rng_seed=0, overscan_noise=5.0):
    """Embed a science area in a raw MegaCam-like CCD: prescan/overscan columns for amps A
    (left) and B (right), overscan rows on top, a different bias per amplifier (optionally
    varying along rows by ``bias_slope`` ADU per row), stored uint16 (int16 + BZERO)."""
    ny, nx = science.shape
    half = nx // 2
    rng = np.random.default_rng([rng_seed, index, 7])
    full = np.zeros((ny + OVERSCAN, nx + 2 * OVERSCAN), np.float32)
    rows = np.arange(ny + OVERSCAN, dtype=np.float32)[:, None]
    bias_a = bias[0] + bias_slope * rows
    bias_b = bias[1] + bias_slope * rows
    full[:, :OVERSCAN + half] = bias_a
    full[:, OVERSCAN + half:] = bias_b
    full += rng.normal(0, overscan_noise, full.shape).astype(np.float32)
    full[:ny, OVERSCAN:OVERSCAN + nx] += science
    data = np.clip(np.rint(full), 0, saturate).astype(np.uint16)
    x0 = OVERSCAN + 1
    h = fits.Header()
    h["EXTNAME"] = f"ccd{index:02d}"
    h["CCDNAME"] = f"CCD{index:02d}"
    h["AMPLIST"] = "AB"
    h["CCDSIZE"] = f"[1:{nx},1:{ny}]"
    h["DATASEC"] = (f"[{x0}:{x0 + nx - 1},1:{ny}]", "Imaging area of the CCD")
    h["DETSEC"] = f"[{index * nx + 1}:{(index + 1) * nx},1:{ny}]"
    h["BSECA"] = (f"[1:{OVERSCAN},1:{ny + OVERSCAN}]", "Overscan (bias) area amp A")
    h["BSECB"] = (f"[{x0 + nx}:{nx + 2 * OVERSCAN},1:{ny + OVERSCAN}]", "Overscan area amp B")
    h["CSECA"] = f"[1:{half},1:{ny}]"
    h["CSECB"] = f"[{half + 1}:{nx},1:{ny}]"
    h["DSECA"] = (f"[{x0}:{x0 + half - 1},1:{ny}]", "Data section amp A")
    h["DSECB"] = (f"[{x0 + half}:{x0 + nx - 1},1:{ny}]", "Data section amp B")
    h["GAINA"] = 1.6
    h["GAINB"] = 1.7
    h["RDNOISEA"] = 5.0
    h["RDNOISEB"] = 5.0
    h["SATURATE"] = (saturate, "Saturation level (ADU)")
    return data, h


def processed_ccd(science: np.ndarray, index: int):
    h = fits.Header()
    h["EXTNAME"] = f"ccd{index:02d}"
    h["CCDNAME"] = f"CCD{index:02d}"
    ny, nx = science.shape
    h["DATASEC"] = f"[1:{nx},1:{ny}]"
    h["SATURATE"] = 60000.0
    return science.astype(np.float32), h


PIXEL_SCALE_DEG = 0.185 / 3600.0


def ccd_wcs_cards(index, shape, ra, dec, *, x_offset=0, gap=100):
    """A TAN WCS for CCD `index` of a row of CCDs centred on (ra, dec), north up and east left,
    at MegaCam's pixel scale; `x_offset` is the number of stored columns before the science
    area (raw files count their overscan in the WCS, as MegaPrime's do)."""
    ny, nx = shape
    return {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": ra, "CRVAL2": dec,
            "CRPIX1": float(-index * (nx + gap) + x_offset + 1), "CRPIX2": float(ny / 2),
            "CD1_1": -PIXEL_SCALE_DEG, "CD1_2": 0.0, "CD2_1": 0.0, "CD2_2": PIXEL_SCALE_DEG,
            "RADESYS": "ICRS", "EQUINOX": 2000.0}


def write_exposure(path, n_ccds=4, shape=(512, 256), *, layout="raw", compression=None,
                   seed=0, sky_kw=None, bias=(1000.0, 1150.0), bias_slope=0.0,
                   dead_ccds=(), nan_ccds=(), empty_ccds=(), header_kw=None,
                   strip_sections=False, extra_hdus=(), wcs_at=None):
    """Write an exposure; returns {ccd index: CCDTruth}. ``layout`` 'raw' | 'processed'.
    dead: a flat CCD (constant value); nan: all NaN (processed) / all BLANK; empty: no sources.
    ``strip_sections`` removes DATASEC and the overscan keywords (a raw file whose header lost
    them), to exercise the fallback. ``wcs_at=(ra, dec)`` gives every CCD a WCS (ccd_wcs_cards)."""
    sky_kw = dict(sky_kw or {})
    hdus = [fits.PrimaryHDU(header=primary_header(n_ccds=n_ccds + len(extra_hdus),
                                                  **(header_kw or {})))]
    truth = {}
    for i in range(n_ccds):
        kw = dict(sky_kw)
        if i in empty_ccds:
            kw["n_sources"] = 0
        science, t = ccd_sky(i, shape, seed, **kw)
        truth[i] = t
        if layout == "raw":
            data, h = raw_ccd(science, i, bias=bias, bias_slope=bias_slope, rng_seed=seed)
            if i in dead_ccds:
                data[:] = 1000
            if i in nan_ccds:   # int data have no NaN: the BLANK value marks missing pixels
                h["BLANK"] = -32768     # a stored value: physical 0 with BZERO 32768
                data[:] = 0
            if strip_sections:
                for key in ("DATASEC", "BSECA", "BSECB", "DSECA", "DSECB"):
                    del h[key]
        else:
            data, h = processed_ccd(science, i)
            if i in dead_ccds:
                data[:] = 0.0
            if i in nan_ccds:
                data[:] = np.nan
        if wcs_at is not None:
            for key, value in ccd_wcs_cards(i, shape, *wcs_at, x_offset=OVERSCAN if layout == "raw" else 0).items():
                h[key] = value
        if compression == "fz":
            hdus.append(fits.CompImageHDU(data, header=h, compression_type="RICE_1"))
        else:
            hdus.append(fits.ImageHDU(data, header=h))
    hdus.extend(extra_hdus)
    path = str(path)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return truth


def truncate(path, fraction=0.6):
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        fh.write(data[:int(len(data) * fraction)])


# --- hostile uploads (tests/serving/test_uploads.py, benchmarks/bench_uploads.py) ----------

def gzip_bomb(side: int = 40_000) -> bytes:
    """Under a megabyte of .fits.gz whose one image declares side x side int16 pixels (3.2 GB
    at the default) of zeros, and really holds them."""
    header = fits.ImageHDU(np.zeros((2, 2), np.int16)).header
    header["NAXIS1"], header["NAXIS2"], header["EXTNAME"] = side, side, "ccd00"
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as out:
        out.write(fits.PrimaryHDU(header=primary_header(n_ccds=1)).header.tostring().encode())
        out.write(header.tostring().encode())
        left, block = min(side * side * 2, 800 * 2 ** 20), bytes(1 << 24)
        while left > 0:              # up to 800 MB of the declared zeros follow
            out.write(block[:left])
            left -= len(block)
    return buffer.getvalue()


def many_extensions(n: int = 200) -> bytes:
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(header=primary_header(n_ccds=n))]
                 + [fits.ImageHDU(np.zeros((8, 8), np.int16), name=f"ccd{i:02d}") for i in range(n)]).writeto(buffer)
    return buffer.getvalue()


def absurd_header() -> bytes:
    """A plain FITS file of a few kB whose extension declares 10^6 x 10^6 float64 pixels."""
    header = fits.ImageHDU(np.zeros((2, 2), np.float64)).header
    header["NAXIS1"] = header["NAXIS2"] = 1_000_000
    return (fits.PrimaryHDU(header=primary_header(n_ccds=1)).header.tostring().encode()
            + header.tostring().encode() + bytes(2880))
