"""Rendering the light that falls on one CCD: PSF, stars, galaxies, sky, patterns, cosmic rays.

Sources are placed on an over-sized canvas (so sources near the border spill in from outside,
as on a real detector), stars as bilinear point splats and galaxies as intrinsic Sersic stamps,
and the whole canvas is convolved once with the exposure's PSF kernel by FFT. Seeing, trailing
and defocus are properties of the exposure, so one kernel serves every CCD.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.signal import fftconvolve

from .nuisances import HALO_MAG, add_bad_columns, add_halos, add_satellites, sky_factor
from .params import PIXEL_SCALE, OBSCURATION, ExposureParams

MOFFAT_BETA = 3.5
STAR_MAG_RANGE = (13.0, 25.0)
STAR_MAG_SLOPE = 0.12  # dlog10 N / dm for stars
GALAXY_MAG_RANGE = (18.0, 25.5)
GALAXY_MAG_SLOPE = 0.35
COSMIC_RATE = 1.5e-7  # hits per pixel per second (~700 per full CCD in 500 s)
MAX_KERNEL_HALF = 160


def psf_kernel(fwhm_px: float, trail_px: float = 0.0, trail_angle_deg: float = 0.0,
               defocus_px: float = 0.0, obscuration: float = OBSCURATION,
               e1: float = 0.0, e2: float = 0.0) -> np.ndarray:
    """Normalised PSF kernel: Moffat seeing (elliptical where (e1, e2) is not zero: wind shake and
    the optics), convolved with a pupil annulus (defocus, outer diameter defocus_px) and with a
    line segment (tracking error, length trail_px)."""
    if fwhm_px <= 0:
        raise ValueError(f"PSF FWHM must be positive, got {fwhm_px}")
    e = math.hypot(e1, e2)
    if e >= 0.9:
        raise ValueError(f"PSF ellipticity must be below 0.9, got {e}")
    half = int(math.ceil(4.0 * fwhm_px * (1 + e) + trail_px / 2 + defocus_px / 2 + 3))
    half = min(half, MAX_KERNEL_HALF)
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    alpha = fwhm_px / (2.0 * math.sqrt(2.0 ** (1.0 / MOFFAT_BETA) - 1.0))
    if e > 0:
        # second moments stretched by 1+e and 1-e along the major and minor axes, area kept
        t = 0.5 * math.atan2(e2, e1)
        u = x * math.cos(t) + y * math.sin(t)
        v = -x * math.sin(t) + y * math.cos(t)
        r2 = (u * u / (1 + e) + v * v / (1 - e)) * math.sqrt(1 - e * e)
    else:
        r2 = x * x + y * y
    kernel = (1.0 + r2 / alpha**2) ** (-MOFFAT_BETA)
    kernel /= kernel.sum()
    if defocus_px > 0:
        # Pupil image: a uniformly lit annulus, supersampled 5x5 for smooth edges.
        r_out = defocus_px / 2.0
        sub = (np.arange(5) - 2) / 5.0
        annulus = np.zeros_like(kernel)
        for dy in sub:
            for dx in sub:
                r = np.hypot(x + dx, y + dy)
                annulus += (r <= r_out) & (r >= obscuration * r_out)
        if annulus.sum() == 0:
            annulus[half, half] = 1.0
        kernel = fftconvolve(kernel, annulus / annulus.sum(), mode="same")
    if trail_px > 0:
        n = max(int(math.ceil(trail_px * 4)), 2)
        t = np.linspace(-trail_px / 2, trail_px / 2, n)
        a = math.radians(trail_angle_deg)
        line = np.zeros_like(kernel)
        _splat(line, half + t * math.sin(a), half + t * math.cos(a), np.full(n, 1.0 / n))
        kernel = fftconvolve(kernel, line, mode="same")
    kernel = np.clip(kernel, 0.0, None)
    return (kernel / kernel.sum()).astype(np.float32)


def _splat_terms(ny: int, nx: int, y: np.ndarray, x: np.ndarray, flux: np.ndarray):
    """Flat indices and weights that share point fluxes bilinearly among 4 pixels."""
    y0 = np.floor(y).astype(np.int64)
    x0 = np.floor(x).astype(np.int64)
    fy, fx = y - y0, x - x0
    idx, wts = [], []
    for dy, dx, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                      (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        idx.append(yy[ok] * nx + xx[ok])
        wts.append((flux * w)[ok])
    return np.concatenate(idx), np.concatenate(wts)


def _splat(image: np.ndarray, y: np.ndarray, x: np.ndarray, flux: np.ndarray) -> None:
    """Add point fluxes at sub-pixel positions, shared bilinearly among 4 pixels (in place)."""
    idx, w = _splat_terms(*image.shape, y, x, flux)
    np.add.at(image.reshape(-1), idx, w.astype(image.dtype))


def _power_law_mags(rng, n, lo, hi, slope):
    """n magnitudes in [lo, hi] with dN/dm proportional to 10**(slope * m)."""
    u = rng.uniform(size=n)
    a, b = 10 ** (slope * lo), 10 ** (slope * hi)
    return np.log10(a + u * (b - a)) / slope


def _galaxy_terms(shape, y, x, flux, re_px, q, theta, sersic_n):
    """Intrinsic (pre-seeing) Sersic galaxies as flat indices and weights on a canvas of
    `shape`, rendered in groups of equal stamp size."""
    halves = np.clip(np.ceil(5 * re_px), 4, 40).astype(int)
    bins = np.array([4, 8, 16, 24, 40])
    group = np.searchsorted(bins, halves)
    ny, nx = shape
    idx_all, w_all = [], []
    for gi, h in enumerate(bins):
        sel = np.flatnonzero(group == gi)
        if sel.size == 0:
            continue
        g = np.arange(-h, h + 1, dtype=np.float32)
        iy = np.floor(y[sel]).astype(np.int64)
        ix = np.floor(x[sel]).astype(np.int64)
        fy = (y[sel] - iy).astype(np.float32)[:, None, None]
        fx = (x[sel] - ix).astype(np.float32)[:, None, None]
        dy = g[None, :, None] - fy
        dx = g[None, None, :] - fx
        c = np.cos(theta[sel]).astype(np.float32)[:, None, None]
        s = np.sin(theta[sel]).astype(np.float32)[:, None, None]
        u = dx * c + dy * s
        v = (-dx * s + dy * c) / q[sel].astype(np.float32)[:, None, None]
        r = np.sqrt(u * u + v * v) / re_px[sel].astype(np.float32)[:, None, None]
        r = np.maximum(r, 0.05)
        # r**(1/n) for n = 1 (exponential) or 4 (de Vaucouleurs) without a general power.
        dev = (sersic_n[sel] == 4.0)[:, None, None]
        root = np.where(dev, np.sqrt(np.sqrt(r)), r)
        bn = np.where(dev, np.float32(7.669), np.float32(1.678))
        prof = np.exp(-bn * (root - 1.0))
        prof *= (flux[sel] / prof.sum(axis=(1, 2)))[:, None, None]
        yy = iy[:, None, None] + g.astype(np.int64)[None, :, None]
        xx = ix[:, None, None] + g.astype(np.int64)[None, None, :]
        yy, xx = np.broadcast_to(yy, prof.shape), np.broadcast_to(xx, prof.shape)
        ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        idx_all.append((yy * nx + xx)[ok])
        w_all.append(prof[ok])
    if not idx_all:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(idx_all), np.concatenate(w_all)


def pattern_field(p: ExposureParams, ny: int, nx: int, origin: tuple[int, int],
                  fp_shape: tuple[int, int]) -> np.ndarray:
    """Non-astrophysical background pattern (fraction of the sky level) over one CCD, computed
    in focal-plane pixel coordinates so that it runs coherently across CCDs."""
    y = (np.arange(ny, dtype=np.float32) + origin[0])[:, None]
    x = (np.arange(nx, dtype=np.float32) + origin[1])[None, :]
    fy, fx = float(fp_shape[0]), float(fp_shape[1])
    amp = p.pattern_amplitude
    e = p.extras
    if p.pattern == "gradient":
        a = math.radians(e["pattern_angle_deg"])
        diag = math.hypot(fy, fx)
        proj = ((x - fx / 2) * math.cos(a) + (y - fy / 2) * math.sin(a)) / diag
        return (amp * 2.0 * proj).astype(np.float32)  # spans about +-amp across the mosaic
    if p.pattern == "fringes":
        # Wavy interference bands: sine of a smooth random phase field.
        prng = np.random.default_rng(e["pattern_phase_seed"])
        phase = np.zeros((ny, nx), np.float32)
        spacing = e["pattern_scale_px"]
        for _ in range(4):
            k = prng.uniform(0.3, 1.0) / spacing
            ang = prng.uniform(0, 2 * math.pi)
            wobble = prng.uniform(200.0, 600.0)
            phase += (k * (x * math.cos(ang) + y * math.sin(ang))
                      + 0.6 * np.sin((x * math.sin(ang) - y * math.cos(ang)) / wobble
                                     + prng.uniform(0, 6.3))).astype(np.float32)
        return (amp * np.sin(2 * math.pi * phase / 2.0)).astype(np.float32)
    if p.pattern == "scattered_light":
        cy, cx = e["pattern_center_y"] * fy, e["pattern_center_x"] * fx
        radius = e["pattern_radius"] * max(fy, fx)
        width = 0.12 * radius
        r = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
        ring = np.exp(-0.5 * ((r - radius) / width) ** 2)
        glow = 0.4 * np.exp(-r / radius)
        return (amp * (ring + glow)).astype(np.float32)
    return np.zeros((ny, nx), np.float32)


def render_ccd(p: ExposureParams, rng: np.random.Generator, shape: tuple[int, int],
               kernel: np.ndarray, capacity: float, origin=(0, 0), fp_shape=None) -> tuple[np.ndarray, dict]:
    """Noise-free light (ADU) on the science area of one CCD, with cosmic rays and bleed trails.

    `capacity` is the signal (above bias) at which a pixel saturates; bleed trails run along
    columns from stars whose light overflows it. Returns the image and per-CCD counts.
    """
    ny, nx = shape
    khalf = kernel.shape[0] // 2
    pad = khalf + 40
    cy, cx = ny + 2 * pad, nx + 2 * pad
    area_arcmin2 = cy * cx * PIXEL_SCALE**2 / 3600.0

    n_stars = int(rng.poisson(p.star_density * area_arcmin2))
    smag = _power_law_mags(rng, n_stars, *STAR_MAG_RANGE, STAR_MAG_SLOPE)
    sflux = p.flux_adu(smag)
    sy = rng.uniform(1, cy - 2, n_stars)
    sx = rng.uniform(1, cx - 2, n_stars)
    s_idx, s_w = _splat_terms(cy, cx, sy, sx, sflux)

    n_gal = int(rng.poisson(p.galaxy_density * area_arcmin2))
    gmag = _power_law_mags(rng, n_gal, *GALAXY_MAG_RANGE, GALAXY_MAG_SLOPE)
    gflux = p.flux_adu(gmag)
    re_arcsec = 0.9 * 10 ** (-0.12 * (gmag - 20.0)) * np.exp(rng.normal(0.0, 0.3, n_gal))
    re_px = np.clip(re_arcsec / PIXEL_SCALE, 0.4, 30.0)
    is_dev = rng.uniform(size=n_gal) < 0.35
    sersic_n = np.where(is_dev, 4.0, 1.0)
    q = np.where(is_dev, rng.uniform(0.55, 1.0, n_gal), rng.uniform(0.2, 1.0, n_gal))
    theta = rng.uniform(0, math.pi, n_gal)
    gy = rng.uniform(1, cy - 2, n_gal)
    gx = rng.uniform(1, cx - 2, n_gal)
    g_idx, g_w = _galaxy_terms((cy, cx), gy, gx, gflux, re_px, q, theta, sersic_n)
    # One accumulation for every source on the canvas.
    canvas = np.bincount(np.concatenate([s_idx, g_idx]),
                         weights=np.concatenate([s_w, g_w.astype(np.float64)]),
                         minlength=cy * cx).astype(np.float32).reshape(cy, cx)

    image = fftconvolve(canvas, kernel, mode="same")[pad:pad + ny, pad:pad + nx].astype(np.float32)
    np.maximum(image, 0.0, out=image)  # FFT round-off

    sky = p.sky_adu
    nuisances = p.nuisances
    sky_structure = (None if nuisances is None
                     else sky_factor(nuisances, p.filter_band, ny, nx, origin, fp_shape or shape))
    if p.pattern:
        structure = 1.0 + pattern_field(p, ny, nx, origin, fp_shape or shape)
        if sky_structure is not None:
            structure += sky_structure - 1.0
        image += sky * structure
    elif sky_structure is not None:
        image += sky * sky_structure
    else:
        image += sky
    n_halos = n_satellites = n_bad_columns = 0
    if nuisances is not None:
        bright_flux = float(p.flux_adu(np.array([HALO_MAG]))[0])
        n_halos = add_halos(image, nuisances, sy, sx, sflux, bright_flux, pad, origin, fp_shape or shape)
        n_satellites = add_satellites(image, nuisances, math.sqrt(max(sky, 1.0) / 1.6), p.fwhm_px, origin,
                                      fp_shape or shape)

    # Bleed trails: overflow charge of saturated stars runs up and down the column.
    n_bleed = 0
    kpeak = float(kernel.max())
    bright = np.flatnonzero(sflux * kpeak + sky > capacity)
    if bright.size:
        kflat = kernel.reshape(-1).astype(np.float64)
        for i in bright:
            y0, x0 = int(sy[i]) - pad, int(sx[i]) - pad
            if not (-khalf <= y0 < ny + khalf and 0 <= x0 < nx):
                continue
            overflow = float(np.maximum(sflux[i] * kflat + sky - capacity, 0.0).sum())
            length = int(min(overflow / capacity, 2 * ny))
            if length < 1:
                continue
            lo, hi = max(0, y0 - length // 2), min(ny, y0 + length - length // 2 + 1)
            if lo >= hi:
                continue
            width = 1 if overflow < 200 * capacity else 3
            xs = slice(max(0, x0 - width // 2), min(nx, x0 + width // 2 + 1))
            image[lo:hi, xs] = capacity * 1.5
            n_bleed += 1

    # Cosmic rays: sharp hits of 1-5 pixels, not blurred by the PSF.
    n_cr = int(rng.poisson(COSMIC_RATE * ny * nx * p.exptime))
    if n_cr:
        length = rng.geometric(0.45, n_cr).clip(1, 5)
        total = int(length.sum())
        start_y = np.repeat(rng.integers(0, ny, n_cr), length)
        start_x = np.repeat(rng.integers(0, nx, n_cr), length)
        ang = np.repeat(rng.uniform(0, 2 * math.pi, n_cr), length)
        step = np.arange(total) - np.repeat(np.cumsum(length) - length, length)
        yy = np.clip(np.round(start_y + step * np.sin(ang)).astype(np.int64), 0, ny - 1)
        xx = np.clip(np.round(start_x + step * np.cos(ang)).astype(np.int64), 0, nx - 1)
        amp = rng.uniform(300.0, 6000.0, total).astype(np.float32)
        np.add.at(image, (yy, xx), amp)

    if nuisances is not None:
        # last, as the detector adds them: charge traps make hot or cold partial columns
        n_bad_columns = add_bad_columns(image, nuisances, rng, sky)
    stats = {"n_stars": n_stars, "n_galaxies": n_gal, "n_bleed": n_bleed, "n_cosmics": n_cr,
             "n_saturated_stars": int(bright.size), "n_halos": n_halos, "n_satellites": n_satellites,
             "n_bad_columns": n_bad_columns}
    return image, stats
