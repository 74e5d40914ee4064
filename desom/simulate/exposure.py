"""One simulated MegaPrime exposure: detector readout, FITS layout and the truth record.

Raw ('o') files follow the MegaPrime raw layout: each CCD extension is uint16 on disk as int16
with BZERO=32768, with 32 overscan columns on each side (amplifier A reads the left half of the
columns and has its overscan on the left, amplifier B the right half with its overscan on the
right) and 32 overscan rows at the top. Processed ('p') files are what a detrending pipeline
leaves: float32, trimmed to the science area, bias removed with each amplifier's overscan,
divided by the flat field; the SKY IS KEPT (header SKYSUB = F), as in Elixir-processed files.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
from dataclasses import dataclass, asdict
from pathlib import Path

import numpy as np
from astropy.io import fits

from .params import (FILTERS, FIVE_CLASS, KINDS, NORMAL_EXPTIME_RANGE, PIXEL_SCALE, SATURATE,
                     ExposureParams, draw_parameters, good_bad, mjd_to_datetime, runid_for,
                     sexagesimal)
from .nuisances import ccd_ellipticity, draw_nuisances, exposure_time_with_nuisances, nuisance_rng
from .render import psf_kernel, render_ccd

OVERSCAN_COLS = 32
OVERSCAN_ROWS = 32
LAYOUTS = ("raw", "processed")
DEAD_MODES = ("bias_only", "constant")
FULL_CCD_SHAPE = (4612, 2048)
STREAM_ABOVE_PIXELS = 40_000_000  # write CCD by CCD above this many raw pixels


@dataclass
class ExposureTruth:
    """What the simulator knows about an exposure (one row of truth.csv)."""

    file: str
    expnum: int
    kind: str
    label: str  # five-class label; 'Calibration' for bias and flat frames
    good_bad: str  # 'Good' | 'Bad'; '' for calibration frames
    severity: float
    obstype: str
    layout: str
    filter: str
    exptime: float
    seeing_arcsec: float
    fwhm_px: float
    trail_arcsec: float
    trail_px: float
    trail_angle_deg: float
    defocus_arcsec: float
    pattern: str
    pattern_amplitude: float
    star_density: float
    galaxy_density: float
    galactic_b: float
    ra_deg: float
    dec_deg: float
    airmass: float
    sky_adu: float
    mjd_obs: float
    date_obs: str
    rel_date: str
    n_ccds: int
    ccd_ny: int
    ccd_nx: int
    n_stars: int
    n_galaxies: int
    n_saturated_stars: int
    n_cosmics: int
    dead_ccds: str  # ';'-separated CCD indices, '' when none
    seed: int
    # the nuisances (desom.simulate.nuisances; zero for the plain simulator)
    nuisances: int = 0  # 1 when the exposure was simulated with them
    transparency: float = 1.0
    wind_e: float = 0.0
    optics_e_edge: float = 0.0
    moon_gradient: float = 0.0
    fringe_amplitude: float = 0.0
    n_satellites: int = 0  # trails drawn across the mosaic
    n_halos: int = 0
    n_bad_columns: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _section(x0, x1, y0, y1) -> str:
    """IRAF section: 1-based inclusive, x (columns) first."""
    return f"[{x0}:{x1},{y0}:{y1}]"


def _focal_plane_grid(n_ccds: int) -> tuple[int, int]:
    """Rows and columns of CCDs on the focal plane (MegaCam: 4 rows of 9, 40 with the 'ears')."""
    rows = 4 if n_ccds >= 8 else (2 if n_ccds >= 2 else 1)
    return rows, int(math.ceil(n_ccds / rows))


def _primary_header(p: ExposureParams, kind: str, expnum: int, layout: str, n_ccds: int,
                    object_name: str) -> tuple[fits.Header, str, str]:
    when = mjd_to_datetime(p.mjd_obs)
    date_obs = when.strftime("%Y-%m-%d")
    rel = when.date()
    try:
        rel = rel.replace(year=rel.year + p.proprietary_years)
    except ValueError:  # 29 February
        rel = (rel + _dt.timedelta(days=1)).replace(year=rel.year + p.proprietary_years)
    obstype = {"bias": "BIAS", "flat": "FLAT"}.get(kind, "OBJECT")
    h = fits.Header()
    h["SIMPLE"] = True
    h["BITPIX"] = 8
    h["NAXIS"] = 0
    h["EXTEND"] = True
    h["NEXTEND"] = (n_ccds, "Number of extensions")
    h["FILENAME"] = (f"{expnum}{'o' if layout == 'raw' else 'p'}", "Base filename at acquisition")
    h["EXPNUM"] = (expnum, "Exposure number (odometer)")
    h["ORIGIN"] = ("desom.simulate", "Simulated exposure, not a CFHT observation")
    h["TELESCOP"] = ("CFHT 3.6m", "Canada-France-Hawaii Telescope")
    h["INSTRUME"] = ("MegaPrime", "Instrument")
    h["DETECTOR"] = ("MegaCam", "Detector")
    h["OBSTYPE"] = (obstype, "Observation / Exposure type")
    h["EXPTYPE"] = (obstype, "Exposure type")
    h["OBJECT"] = (object_name, "Object name")
    h["EXPTIME"] = (float(p.exptime), "Integration time (seconds)")
    h["FILTER"] = (FILTERS[p.filter_band][0], "MegaPrime filter with serial")
    h["RUNID"] = (runid_for(when, 1 + expnum % 9), "CFHT queue run id")
    h["DATE-OBS"] = (date_obs, "Date at start of observation (UTC)")
    h["UTC-OBS"] = (when.strftime("%H:%M:%S.") + f"{when.microsecond // 10000:02d}",
                    "Time at start of observation (UTC)")
    h["MJD-OBS"] = (round(p.mjd_obs, 6), "Modified Julian Date at start of observation")
    h["REL_DATE"] = (rel.isoformat(), "UTC date at which the proprietary period ends")
    h["RA"] = (sexagesimal(p.ra_deg, hours=True), "Object right ascension")
    h["DEC"] = (sexagesimal(p.dec_deg, hours=False), "Object declination")
    h["RA_DEG"] = (round(p.ra_deg, 6), "Object right ascension in degrees")
    h["DEC_DEG"] = (round(p.dec_deg, 6), "Object declination in degrees")
    h["EQUINOX"] = (2000.0, "Equinox of coordinates")
    h["RADECSYS"] = ("FK5", "Coordinate system")
    h["AIRMASS"] = (float(p.airmass), "Airmass at start of observation")
    h["NCCDS"] = (n_ccds, "Number of CCDs in the mosaic")
    h["PIXSCAL1"] = (PIXEL_SCALE, "Pixel scale axis 1 (arcsec/pixel)")
    h["PIXSCAL2"] = (PIXEL_SCALE, "Pixel scale axis 2 (arcsec/pixel)")
    h["SATURATE"] = (SATURATE, "Saturation level (ADU)")
    return h, date_obs, rel.isoformat()


def _ccd_wcs(h: fits.Header, p: ExposureParams, grid_pos, shape, x_offset: int) -> None:
    """A plain TAN WCS placing the CCD at its spot on the focal plane."""
    (row, col), (n_rows, n_cols) = grid_pos
    ny, nx = shape
    gap = 80
    # Pixel of the pointing centre in this CCD's frame.
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = round(p.ra_deg, 6), round(p.dec_deg, 6)
    h["CRPIX1"] = float((n_cols / 2.0 - col) * (nx + gap) + x_offset)
    h["CRPIX2"] = float((n_rows / 2.0 - row) * (ny + gap))
    scale = PIXEL_SCALE / 3600.0
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -scale, 0.0, 0.0, scale


def _flat_field(shape, origin, fp_shape, amp_gain_ratio: float) -> np.ndarray:
    """Relative sensitivity: vignetting towards the mosaic edge and a gain step between amps."""
    ny, nx = shape
    y = (np.arange(ny, dtype=np.float32) + origin[0] - fp_shape[0] / 2) / fp_shape[0]
    x = (np.arange(nx, dtype=np.float32) + origin[1] - fp_shape[1] / 2) / fp_shape[1]
    fx = (0.5 - 0.08 * x * x).astype(np.float32)
    fx[nx // 2:] = (fx[nx // 2:] + 0.5) * amp_gain_ratio - 0.5  # fold the amp step into x
    fy = (0.5 - 0.08 * y * y).astype(np.float32)
    flat = np.add.outer(fy, fx)
    return flat.astype(np.float32, copy=False)


def check_geometry(n_ccds, ccd_shape) -> tuple[int, tuple[int, int]]:
    """Validate the mosaic: 1-40 CCDs of (ny, nx) science pixels, nx even (two amplifiers)."""
    try:
        ny, nx = (int(v) for v in ccd_shape)
    except (TypeError, ValueError):
        raise ValueError(f"ccd_shape must be (ny, nx), got {ccd_shape!r}") from None
    if ny < 16 or nx < 16 or nx % 2:
        raise ValueError(f"ccd_shape must be (ny, nx) with both >= 16 and nx even, got {ccd_shape}")
    if not 1 <= int(n_ccds) <= 40:
        raise ValueError(f"n_ccds must be between 1 and 40, got {n_ccds}")
    return int(n_ccds), (ny, nx)


def simulate_exposure(kind: str, seed: int, path, n_ccds: int = 36,
                      ccd_shape: tuple[int, int] = FULL_CCD_SHAPE, layout: str = "raw",
                      severity: float | None = None, expnum: int | None = None,
                      mjd_obs: float | None = None, dead_ccd_prob: float = 0.03,
                      overrides: dict | None = None, object_name: str | None = None,
                      overwrite: bool = True, nuisances: bool = False) -> ExposureTruth:
    """Write one simulated MegaPrime exposure to `path` and return its truth record.

    kind: a science kind of KINDS or a calibration kind ('bias', 'flat').
    ccd_shape: (ny, nx) of each CCD's science area; nx must be even (two amplifiers).
    layout: 'raw' (int16 + BZERO, overscan) or 'processed' (float32, trimmed, bias removed,
    flat-fielded, sky kept). severity: in [0, 1], drawn when None. overrides: replace drawn
    physical parameters (see ExposureParams). A path ending in '.fz' writes tile-compressed
    (RICE) extensions, as CFHT distributes them. nuisances: add what real exposures of every
    kind carry (desom.simulate.nuisances: wind shake, an optics ellipticity pattern, moonlight,
    cirrus, fringing, satellites, ghost halos, bad columns, short Good exposures, clouded
    low-exposure frames). Same arguments, same bytes.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    n_ccds, (ny, nx) = check_geometry(n_ccds, ccd_shape)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)))
    p = draw_parameters(kind, rng, severity, overrides=overrides)
    is_science = kind in KINDS
    if nuisances and is_science:
        _add_nuisances(p, kind, seed, overrides or {})
    if mjd_obs is not None:
        p.mjd_obs = float(mjd_obs)
    if expnum is None:
        expnum = 700000 + int(rng.integers(0, 1_300_000))
    expnum = int(expnum)
    if object_name is None:
        if is_science:
            object_name = f"F{int(p.ra_deg // 15):02d}{int(p.ra_deg % 15 * 4):02d}{p.dec_deg:+03.0f}"  # hhmm+dd
        else:
            object_name = {"bias": "BIAS", "flat": "TWILIGHT FLAT"}[kind]
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists and overwrite=False")
    path.parent.mkdir(parents=True, exist_ok=True)

    primary, date_obs, rel_date = _primary_header(p, kind, expnum, layout, n_ccds, object_name)
    n_rows, n_cols = _focal_plane_grid(n_ccds)
    fp_shape = (n_rows * ny, n_cols * nx)
    dead = []
    if is_science and dead_ccd_prob > 0 and rng.uniform() < dead_ccd_prob:
        dead = [int(rng.integers(0, n_ccds))]
    dead_mode = str(rng.choice(DEAD_MODES))

    kernel = None
    if is_science:
        kernel = psf_kernel(p.fwhm_px, p.trail_px, p.trail_angle_deg, p.defocus_px)
    totals = {"n_stars": 0, "n_galaxies": 0, "n_saturated_stars": 0, "n_cosmics": 0, "n_halos": 0,
              "n_bad_columns": 0}
    compress = path.name.endswith(".fz")
    tmp = path.with_name(path.name + ".part")
    # Small exposures are written in one go; big ones CCD by CCD so that a full 36-CCD raw
    # exposure (~700 MB) never sits in memory whole.
    stream = n_ccds * (ny + OVERSCAN_ROWS) * (nx + 2 * OVERSCAN_COLS) > STREAM_ABOVE_PIXELS
    pending = [fits.PrimaryHDU(header=primary)]
    try:
        for ccd in range(n_ccds):
            crng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(ccd + 1,)))
            row, col = divmod(ccd, n_cols)
            origin = (row * ny, col * nx)
            bias_a = float(crng.uniform(300.0, 1300.0))
            bias_b = bias_a + float(crng.choice([-1, 1])) * float(crng.uniform(100.0, 400.0))
            if bias_b < 150.0:
                bias_b = bias_a + abs(bias_b - bias_a)
            gain_a = float(crng.uniform(1.5, 1.8))
            gain_b = gain_a * float(crng.uniform(0.95, 1.05))
            rdn_a, rdn_b = float(crng.uniform(2.8, 4.5)), float(crng.uniform(2.8, 4.5))
            capacity = SATURATE - max(bias_a, bias_b)
            flat = _flat_field((ny, nx), origin, fp_shape, gain_a / gain_b)  # ADU = e- / gain
            if kind == "bias" or (ccd in dead and dead_mode == "bias_only"):
                light = np.zeros((ny, nx), np.float32)
            elif kind == "flat":
                light = np.full((ny, nx), p.extras["flat_level"], np.float32)
            else:
                ccd_kernel = kernel
                if p.nuisances is not None:
                    # the PSF's ellipticity at this CCD: the wind's and the optics' pattern
                    e1, e2 = ccd_ellipticity(p.nuisances, origin, (ny, nx), fp_shape)
                    ccd_kernel = psf_kernel(p.fwhm_px, p.trail_px, p.trail_angle_deg, p.defocus_px, e1=e1, e2=e2)
                light, stats = render_ccd(p, crng, (ny, nx), ccd_kernel, capacity, origin, fp_shape)
                for k in totals:
                    totals[k] += stats[k]
            # Detector: sensitivity, shot noise (Gaussian approximation), then bias and read
            # noise over the whole readout (overscan included), then the ADC.
            # In-place arithmetic: full CCDs are 10 Mpx, temporaries cost more than the maths.
            signal = light
            signal *= flat
            half = nx // 2
            var = np.maximum(signal, 0.0)
            var[:, :half] *= 1.0 / gain_a
            var[:, half:] *= 1.0 / gain_b
            np.sqrt(var, out=var)
            var *= crng.standard_normal((ny, nx), dtype=np.float32)
            signal += var
            del var
            raw = np.empty((ny + OVERSCAN_ROWS, nx + 2 * OVERSCAN_COLS), np.float32)
            crng.standard_normal(raw.shape, dtype=np.float32, out=raw)
            raw[:, : OVERSCAN_COLS + half] *= rdn_a
            raw[:, OVERSCAN_COLS + half:] *= rdn_b
            raw[:, : OVERSCAN_COLS + half] += bias_a
            raw[:, OVERSCAN_COLS + half:] += bias_b
            raw[:ny, OVERSCAN_COLS:OVERSCAN_COLS + nx] += signal
            if ccd in dead and dead_mode == "constant":
                raw[:] = float(crng.choice([0.0, bias_a, float(SATURATE)]))
            np.clip(np.rint(raw), 0, SATURATE, out=raw)
            raw16 = raw.astype(np.uint16)

            h = fits.Header()
            h["EXTNAME"] = f"ccd{ccd:02d}"
            h["CCDNUM"] = (ccd, "CCD number in the mosaic")
            h["AMPLIST"] = ("AB", "Amplifiers read out")
            h["GAIN"] = (round((gain_a + gain_b) / 2, 4), "Mean gain (e-/ADU)")
            h["GAINA"] = (round(gain_a, 4), "Amplifier A gain (e-/ADU)")
            h["GAINB"] = (round(gain_b, 4), "Amplifier B gain (e-/ADU)")
            h["RDNOISE"] = (round((rdn_a + rdn_b) / 2, 3), "Mean read noise (ADU)")
            h["RDNOISEA"] = (round(rdn_a, 3), "Amplifier A read noise (ADU)")
            h["RDNOISEB"] = (round(rdn_b, 3), "Amplifier B read noise (ADU)")
            if layout == "raw":
                ny_raw, nx_raw = raw16.shape
                c0 = OVERSCAN_COLS
                h["SATURATE"] = (SATURATE, "Saturation level (ADU)")
                h["DETSIZE"] = (_section(1, nx_raw, 1, ny_raw), "Raw array size")
                h["DATASEC"] = (_section(c0 + 1, c0 + nx, 1, ny), "Science area (both amplifiers)")
                h["BIASSEC"] = (_section(1, c0, 1, ny_raw), "Overscan of amplifier A")
                h["BSECA"] = (_section(1, c0, 1, ny_raw), "Overscan of amplifier A")
                h["BSECB"] = (_section(c0 + nx + 1, nx_raw, 1, ny_raw), "Overscan of amplifier B")
                h["DSECA"] = (_section(c0 + 1, c0 + nx // 2, 1, ny), "Data section of amplifier A")
                h["DSECB"] = (_section(c0 + nx // 2 + 1, c0 + nx, 1, ny), "Data section of amplifier B")
                h["TSECA"] = (_section(1, nx // 2, 1, ny), "Trimmed section of amplifier A")
                h["TSECB"] = (_section(nx // 2 + 1, nx, 1, ny), "Trimmed section of amplifier B")
                _ccd_wcs(h, p, ((row, col), (n_rows, n_cols)), (ny, nx), c0)
                hdu = fits.ImageHDU(data=raw16, header=h)  # uint16 -> int16 + BZERO 32768
            else:
                # Detrend as a pipeline would: overscan median per amplifier, then flat.
                data = raw[:ny, OVERSCAN_COLS:OVERSCAN_COLS + nx].copy()
                ov_a = float(np.median(raw[:, :OVERSCAN_COLS]))
                ov_b = float(np.median(raw[:, OVERSCAN_COLS + nx:]))
                data[:, : nx // 2] -= ov_a
                data[:, nx // 2:] -= ov_b
                data /= flat
                h["SATURATE"] = (round(float(capacity), 1), "Saturation level after bias removal")
                h["DATASEC"] = (_section(1, nx, 1, ny), "Science area")
                h["BUNIT"] = ("ADU", "Pixel unit")
                h["SKYSUB"] = (False, "Sky background kept (not subtracted)")
                h["BIASSUB"] = (True, "Bias removed (overscan of each amplifier)")
                h["FLATCOR"] = (True, "Flat-field applied")
                _ccd_wcs(h, p, ((row, col), (n_rows, n_cols)), (ny, nx), 0)
                hdu = fits.ImageHDU(data=data.astype(np.float32), header=h)
            if compress:
                # Tile compression as CFHT ships .fz files: RICE is lossless on the raw integers;
                # floats are quantised with a fixed dither seed so the bytes stay reproducible.
                hdu = fits.CompImageHDU(hdu.data, hdu.header, compression_type="RICE_1",
                                        quantize_level=16.0, dither_seed=1 + ccd)
            if not stream or ccd == 0:
                # The primary goes out with the first CCD, so astropy keeps EXTEND = T.
                pending.append(hdu)
                if stream:
                    fits.HDUList(pending).writeto(tmp, overwrite=True)
                    pending = []
            elif compress:
                with fits.open(tmp, mode="append") as hdul:
                    hdul.append(hdu)
            else:
                fits.append(tmp, hdu.data, hdu.header)
        if not stream:
            fits.HDUList(pending).writeto(tmp, overwrite=True)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

    truth = ExposureTruth(
        file=path.name, expnum=expnum, kind=kind,
        label=FIVE_CLASS.get(kind, "Calibration"),
        good_bad=good_bad(kind) if is_science else "",
        severity=round(p.severity, 4) if is_science else 0.0, obstype=primary["OBSTYPE"], layout=layout,
        filter=FILTERS[p.filter_band][0], exptime=float(p.exptime),
        seeing_arcsec=round(p.seeing_arcsec, 4) if is_science else 0.0,
        fwhm_px=round(p.fwhm_px, 3) if is_science else 0.0,
        trail_arcsec=round(p.trail_arcsec, 4), trail_px=round(p.trail_px, 3),
        trail_angle_deg=round(p.trail_angle_deg, 2), defocus_arcsec=round(p.defocus_arcsec, 4),
        pattern=p.pattern, pattern_amplitude=round(p.pattern_amplitude, 4),
        star_density=round(p.star_density, 3) if is_science else 0.0,
        galaxy_density=round(p.galaxy_density, 3) if is_science else 0.0,
        galactic_b=round(p.galactic_b, 3), ra_deg=round(p.ra_deg, 6), dec_deg=round(p.dec_deg, 6),
        airmass=float(p.airmass), sky_adu=round(p.sky_adu, 2) if is_science else 0.0,
        mjd_obs=round(p.mjd_obs, 6), date_obs=date_obs, rel_date=rel_date, n_ccds=n_ccds,
        ccd_ny=ny, ccd_nx=nx, n_stars=totals["n_stars"], n_galaxies=totals["n_galaxies"],
        n_saturated_stars=totals["n_saturated_stars"], n_cosmics=totals["n_cosmics"],
        dead_ccds=";".join(str(d) for d in dead), seed=int(seed),
        n_halos=totals["n_halos"], n_bad_columns=totals["n_bad_columns"],
    )
    if p.nuisances is not None:
        n = p.nuisances
        truth.nuisances, truth.transparency = 1, round(p.transparency, 4)
        truth.wind_e, truth.optics_e_edge = round(n.wind_e, 4), round(n.optics_e_edge, 4)
        truth.moon_gradient, truth.fringe_amplitude = round(n.moon_gradient, 4), round(n.fringe_amplitude, 4)
        truth.n_satellites = len(n.satellites)
    return truth


def _add_nuisances(p: ExposureParams, kind: str, seed: int, overrides: dict) -> None:
    """Draw the exposure's nuisances from their own stream and apply them to its parameters:
    the exposure time (short Good, clouded or short low exposure) and the transparency."""
    nrng = nuisance_rng(seed)
    p.nuisances = draw_nuisances(kind, p.filter_band, nrng)
    exptime, transparency = exposure_time_with_nuisances(kind, p.severity, p.exptime, nrng)
    if "exptime" not in overrides:
        p.exptime = exptime
    if "transparency" in overrides:
        return
    if transparency is not None:
        p.transparency = transparency
    elif p.exptime >= NORMAL_EXPTIME_RANGE[0]:
        p.transparency = p.nuisances.transparency   # thin cirrus on an exposure of normal length
