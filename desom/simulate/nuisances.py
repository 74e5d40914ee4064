"""What real exposures carry whatever their quality: the nuisances of a survey "with real sky".

The plain simulator makes some things exact that real data never are: one round PSF for every
CCD of a Good exposure, one trail angle for the whole mosaic, a sky that is flat unless it is a
pattern, and an exposure time that tells a low-exposure frame by itself. With nuisances on
(``simulate_exposure(..., nuisances=True)``), every kind, Good included, also carries:

- wind shake: a small ellipticity shared by the whole mosaic (|e| ~ 0.03, up to 0.10);
- an optics ellipticity pattern, tangential, growing as the square of the distance from the
  optical axis (|e| 0.02-0.07 at the field's corner, depending on the exposure's focus);
- moonlight: a sky gradient of up to 3% across the mosaic on about half the exposures;
- thin cirrus on a fifth of the normal exposures (transparency 0.55-1);
- fringing in i and z: the band's fixed fringe pattern at 0.3-1.5% of the sky;
- satellite trails (about one exposure in eight), cosmic rays (as before), ghost halos around
  bright stars, and bad columns (hot or cold, part of a column);
- Good exposures of short exposure time (standards, twilight fields: 15% of Good at 20-80 s),
  while a low-exposure frame is low in *signal*: half of them are short (2-20 s), the other half
  of normal length through thick cloud (the same 2-20 s of effective exposure).

The draws use their own random stream (spawned from the exposure's seed), so the base draws of
an exposure are the same with and without nuisances.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .params import NORMAL_EXPTIME_RANGE

WIND_E_SIGMA = 0.03
WIND_E_MAX = 0.10
OPTICS_E_EDGE = (0.02, 0.07)        # tangential ellipticity at the field's corner
MOON_UP_SHARE = 0.5
MOON_GRADIENT = (0.0, 0.03)         # fraction of the sky across the mosaic
CIRRUS_SHARE = 0.2
CIRRUS_TRANSPARENCY = (0.55, 1.0)
FRINGE_BANDS = ("i", "z")
FRINGE_AMPLITUDE = (0.003, 0.015)   # fraction of the sky
FRINGE_SCALE_PX = 90.0
SATELLITE_RATE = 0.13               # mean trails per exposure (Poisson)
SATELLITE_PEAK_SIGMA = (3.0, 30.0)  # peak in units of the sky noise
HALO_MAG = 14.5                     # stars brighter than this show a ghost halo
HALO_RADIUS_PX = (45.0, 80.0)
HALO_FLUX_SHARE = 0.004             # of the star's flux, spread over the ring
HALO_MAX_PER_CCD = 40
BAD_COLUMNS_PER_CCD = 0.6           # Poisson mean
SHORT_GOOD_SHARE = 0.15
SHORT_GOOD_EXPTIME = (20.0, 80.0)
LOW_EFFECTIVE_EXPTIME = (20.0, 2.0)  # effective seconds at severity 0 and 1
LOW_CLOUD_SHARE = 0.5


@dataclass
class Nuisances:
    """One exposure's nuisances (all zero: the plain simulator)."""

    wind_e: float = 0.0
    wind_angle_deg: float = 0.0
    optics_e_edge: float = 0.0
    moon_gradient: float = 0.0
    moon_angle_deg: float = 0.0
    transparency: float = 1.0
    fringe_amplitude: float = 0.0
    satellites: tuple = ()              # ((x0, y0, angle_deg, peak_sigma), ...) in focal-plane units
    halo_radius_px: float = 0.0
    bad_column_rate: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n_satellites"] = len(d.pop("satellites"))
        return d


def nuisance_rng(seed: int) -> np.random.Generator:
    """The stream the nuisances are drawn from: its own, so the base draws do not move."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(10_001,)))


def draw_nuisances(kind: str, band: str, rng: np.random.Generator) -> Nuisances:
    """The nuisances of one science exposure (every kind alike: they are not its quality)."""
    n = Nuisances()
    n.wind_e = float(min(abs(rng.normal(0.0, WIND_E_SIGMA)), WIND_E_MAX))
    n.wind_angle_deg = float(rng.uniform(0.0, 180.0))
    n.optics_e_edge = float(rng.uniform(*OPTICS_E_EDGE))
    if rng.uniform() < MOON_UP_SHARE:
        n.moon_gradient = float(rng.uniform(*MOON_GRADIENT))
    n.moon_angle_deg = float(rng.uniform(0.0, 360.0))
    if rng.uniform() < CIRRUS_SHARE:
        n.transparency = float(rng.uniform(*CIRRUS_TRANSPARENCY))
    if band in FRINGE_BANDS:
        n.fringe_amplitude = float(rng.uniform(*FRINGE_AMPLITUDE))
    n.satellites = tuple((float(rng.uniform(0, 1)), float(rng.uniform(0, 1)), float(rng.uniform(0, 180)),
                          float(rng.uniform(*SATELLITE_PEAK_SIGMA)))
                         for _ in range(int(rng.poisson(SATELLITE_RATE))))
    n.halo_radius_px = float(rng.uniform(*HALO_RADIUS_PX))
    n.bad_column_rate = BAD_COLUMNS_PER_CCD
    return n


def exposure_time_with_nuisances(kind: str, severity: float, exptime: float,
                                 rng: np.random.Generator) -> tuple[float, float | None]:
    """(EXPTIME, transparency or None to keep the drawn one) for a survey with nuisances: some
    Good exposures are short, and a low-exposure frame is low in signal, short or clouded."""
    if kind == "good" and rng.uniform() < SHORT_GOOD_SHARE:
        lo, hi = SHORT_GOOD_EXPTIME
        return float(round(math.exp(rng.uniform(math.log(lo), math.log(hi))), 1)), 1.0
    if kind == "bgp_low_exposure":
        hi, lo = LOW_EFFECTIVE_EXPTIME
        effective = hi * (lo / hi) ** severity
        if rng.uniform() < LOW_CLOUD_SHARE:
            # a normal EXPTIME, through thick cloud
            normal = float(round(math.exp(rng.uniform(math.log(NORMAL_EXPTIME_RANGE[0]), math.log(NORMAL_EXPTIME_RANGE[1])))))
            return normal, effective / normal
        return float(round(effective, 1)), 1.0
    return exptime, None


def ccd_ellipticity(n: Nuisances, origin, shape, fp_shape) -> tuple[float, float]:
    """(e1, e2) of the PSF at a CCD's centre: the wind's, plus the optics' tangential pattern,
    growing as the square of the distance from the optical axis (1 at the field's corner)."""
    ny, nx = shape
    cy = (origin[0] + ny / 2.0 - fp_shape[0] / 2.0)
    cx = (origin[1] + nx / 2.0 - fp_shape[1] / 2.0)
    corner = math.hypot(fp_shape[0] / 2.0, fp_shape[1] / 2.0)
    r = math.hypot(cy, cx) / corner
    w = math.radians(2 * n.wind_angle_deg)
    e1, e2 = n.wind_e * math.cos(w), n.wind_e * math.sin(w)
    if r > 0:
        # tangential: the major axis at right angles to the radius
        phi = 2 * (math.atan2(cy, cx) + math.pi / 2)
        eo = n.optics_e_edge * r * r
        e1 += eo * math.cos(phi)
        e2 += eo * math.sin(phi)
    return e1, e2


def _focal_coords(ny, nx, origin):
    y = (np.arange(ny, dtype=np.float32) + origin[0])[:, None]
    x = (np.arange(nx, dtype=np.float32) + origin[1])[None, :]
    return y, x


def sky_factor(n: Nuisances, band: str, ny: int, nx: int, origin, fp_shape) -> np.ndarray | None:
    """The sky's relative structure over one CCD (1 = flat): moonlight gradient and fringes,
    in focal-plane coordinates so that both run coherently across CCDs."""
    if n.moon_gradient == 0 and n.fringe_amplitude == 0:
        return None
    y, x = _focal_coords(ny, nx, origin)
    fy, fx = float(fp_shape[0]), float(fp_shape[1])
    out = np.ones((ny, nx), np.float32)
    if n.moon_gradient:
        a = math.radians(n.moon_angle_deg)
        proj = ((x - fx / 2) * math.cos(a) + (y - fy / 2) * math.sin(a)) / math.hypot(fy, fx)
        out += (2.0 * n.moon_gradient * proj).astype(np.float32)
    if n.fringe_amplitude:
        out += (n.fringe_amplitude * band_fringes(band, y, x)).astype(np.float32)
    return out


def band_fringes(band: str, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The band's fringe pattern in [-1, 1]: fixed in detector coordinates, as fringes are (the
    thin-film interference of the CCDs), the same for every exposure of the band."""
    prng = np.random.default_rng(sum(map(ord, band)) * 7919)
    phase = np.zeros(np.broadcast_shapes(y.shape, x.shape), np.float32)
    for _ in range(3):
        k = prng.uniform(0.4, 1.0) / FRINGE_SCALE_PX
        ang = prng.uniform(0, 2 * math.pi)
        wobble = prng.uniform(150.0, 400.0)
        phase += (k * (x * math.cos(ang) + y * math.sin(ang))
                  + 0.8 * np.sin((x * math.sin(ang) - y * math.cos(ang)) / wobble + prng.uniform(0, 6.3))
                  ).astype(np.float32)
    return np.sin(math.pi * phase)


def add_satellites(image: np.ndarray, n: Nuisances, sky_noise: float, fwhm_px: float, origin,
                   fp_shape) -> int:
    """Straight trails across the mosaic (in place); returns how many cross this CCD."""
    if not n.satellites:
        return 0
    ny, nx = image.shape
    y, x = _focal_coords(ny, nx, origin)
    sigma = max(fwhm_px, 2.0) / 2.355
    crossing = 0
    for x0, y0, angle, peak in n.satellites:
        a = math.radians(angle)
        px, py = x0 * fp_shape[1], y0 * fp_shape[0]
        d = np.abs(-(x - px) * math.sin(a) + (y - py) * math.cos(a))
        if float(d.min()) > 6 * sigma:
            continue
        near = d < 6 * sigma
        image += np.where(near, peak * sky_noise * np.exp(-0.5 * (d / sigma) ** 2), 0.0).astype(np.float32)
        crossing += 1
    return crossing


def add_halos(image: np.ndarray, n: Nuisances, star_y: np.ndarray, star_x: np.ndarray,
              star_flux: np.ndarray, bright_flux: float, pad: int, origin, fp_shape) -> int:
    """Ghost halos (in place): a faint ring around each bright star, pushed away from the optical
    axis as reflections between the filter and the window are. Returns how many were drawn."""
    if n.halo_radius_px <= 0:
        return 0
    ny, nx = image.shape
    bright = np.flatnonzero(star_flux > bright_flux)
    if bright.size == 0:
        return 0
    bright = bright[np.argsort(-star_flux[bright])][:HALO_MAX_PER_CCD]
    radius = n.halo_radius_px
    width = 0.25 * radius
    half = int(radius + 3 * width) + 1
    g = np.arange(-half, half + 1, dtype=np.float32)
    drawn = 0
    for i in bright:
        sy, sx = float(star_y[i]) - pad, float(star_x[i]) - pad
        # shift outwards by 10% of the distance to the axis (in focal-plane pixels)
        fy, fx = sy + origin[0] - fp_shape[0] / 2, sx + origin[1] - fp_shape[1] / 2
        cy, cx = sy + 0.1 * fy * radius / max(fp_shape), sx + 0.1 * fx * radius / max(fp_shape)
        iy, ix = int(round(cy)), int(round(cx))
        y0, y1 = max(0, iy - half), min(ny, iy + half + 1)
        x0, x1 = max(0, ix - half), min(nx, ix + half + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = g[y0 - iy + half:y1 - iy + half, None]
        dx = g[None, x0 - ix + half:x1 - ix + half]
        r = np.sqrt(dy * dy + dx * dx)
        ring = np.exp(-0.5 * ((r - radius) / width) ** 2)
        norm = 2 * math.pi * radius * width * math.sqrt(2 * math.pi)
        image[y0:y1, x0:x1] += (HALO_FLUX_SHARE * float(star_flux[i]) / norm * ring).astype(np.float32)
        drawn += 1
    return drawn


def add_bad_columns(light: np.ndarray, n: Nuisances, rng: np.random.Generator, sky: float) -> int:
    """Hot or cold partial columns (in place), as a CCD's charge traps leave them."""
    if n.bad_column_rate <= 0:
        return 0
    ny, nx = light.shape
    k = int(rng.poisson(n.bad_column_rate))
    for _ in range(k):
        col = int(rng.integers(0, nx))
        start = int(rng.integers(0, ny))
        if rng.uniform() < 0.6:
            light[start:, col] += float(rng.uniform(0.3, 3.0)) * max(sky, 50.0)   # hot, to the readout
        else:
            light[start:, col] *= float(rng.uniform(0.05, 0.5))                    # cold
    return k
