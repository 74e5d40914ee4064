"""Quality kinds, their severity scales and the physical parameters drawn for one exposure.

Every kind has a severity in [0, 1] that moves its defining parameter continuously, so the
classes touch at their borders as they do in a real archive: a 'good' exposure at severity 1
has a seeing just under the bad-seeing threshold, a 'bt' exposure at severity 0 a trail that
is barely visible, a 'bgp_low_exposure' exposure at severity 0 the shortest normal exposure time.
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, dataclass, field

import numpy as np

KINDS = (
    "good",
    "bt",
    "rbt",
    "bad_seeing",
    "bad_focus",
    "bgp_crowded",
    "bgp_low_exposure",
    "bgp_pattern",
)
CALIBRATION_KINDS = ("bias", "flat")
FIVE_CLASS_LABELS = ("Good", "BT", "RBT", "B-Seeing", "BGP")
# Bad focus sits under B-Seeing: the paper's five-class scheme (T20) hid it there.
FIVE_CLASS = {
    "good": "Good",
    "bt": "BT",
    "rbt": "RBT",
    "bad_seeing": "B-Seeing",
    "bad_focus": "B-Seeing",
    "bgp_crowded": "BGP",
    "bgp_low_exposure": "BGP",
    "bgp_pattern": "BGP",
}

PIXEL_SCALE = 0.185  # arcsec per pixel (MegaCam)
SATURATE = 65535
SEEING_THRESHOLD_ARCSEC = 1.3  # good below, bad seeing from here up
NORMAL_EXPTIME_RANGE = (80.0, 900.0)  # seconds; low exposure runs from 80 s down
LOW_EXPTIME_MIN = 2.0
BT_TRAIL_ARCSEC = (0.4, 2.0)  # slight tracking error: barely visible .. clearly elongated
RBT_TRAIL_ARCSEC = (2.0, 10.0)
BAD_SEEING_ARCSEC = (SEEING_THRESHOLD_ARCSEC, 2.5)
GOOD_SEEING_ARCSEC = (0.45, 1.25)
DEFOCUS_ARCSEC = (1.5, 6.0)  # outer diameter of the donut (pupil image)
GALAXY_DENSITY = 45.0  # galaxies per arcmin^2 to GALAXY_MAG_RANGE's faint end, away from dust
CROWDED_STAR_DENSITY = (30.0, 600.0)  # stars per arcmin^2, geometric in severity
PATTERN_AMPLITUDE = (0.03, 0.40)  # fraction of the sky level
ORDINARY_MIN_LATITUDE = 10.0  # degrees; fields nearer the plane are the crowded kind's
PATTERN_TYPES = ("gradient", "fringes", "scattered_light")
OBSCURATION = 0.45  # central hole of the donut relative to its outer radius

# filter name -> (header value with serial, zero point [mag giving 1 ADU/s], dark sky mag/arcsec^2)
FILTERS = {
    "u": ("u.MP9301", 25.7, 22.6),
    "g": ("g.MP9401", 26.5, 22.0),
    "r": ("r.MP9601", 26.2, 21.2),
    "i": ("i.MP9702", 26.0, 20.3),
    "z": ("z.MP9801", 24.9, 19.4),
}
FILTER_SHARES = {"u": 0.1, "g": 0.2, "r": 0.25, "i": 0.3, "z": 0.15}
EXTINCTION = {"u": 0.35, "g": 0.15, "r": 0.10, "i": 0.05, "z": 0.04}  # mag per airmass

# Equatorial (ICRS) -> galactic rotation; rows are the galactic axes in equatorial coordinates.
_GAL_FROM_EQ = np.array(
    [
        [-0.0548755604, -0.8734370902, -0.4838350155],
        [0.4941094279, -0.4448296300, 0.7469822445],
        [-0.8676661490, -0.1980763734, 0.4559837762],
    ]
)


def good_bad(kind: str) -> str:
    """'Good' for the good kind, 'Bad' for every other science kind."""
    if kind not in FIVE_CLASS:
        raise ValueError(f"unknown science kind {kind!r}; expected one of {KINDS}")
    return "Good" if kind == "good" else "Bad"


def galactic_to_equatorial(l_deg: float, b_deg: float) -> tuple[float, float]:
    """(l, b) in degrees -> (ra, dec) in degrees, J2000."""
    lon, b = math.radians(l_deg), math.radians(b_deg)
    g = np.array([math.cos(b) * math.cos(lon), math.cos(b) * math.sin(lon), math.sin(b)])
    e = _GAL_FROM_EQ.T @ g
    ra = math.degrees(math.atan2(e[1], e[0])) % 360.0
    dec = math.degrees(math.asin(max(-1.0, min(1.0, e[2]))))
    return ra, dec


def star_density_at(b_deg: float) -> float:
    """Stars per arcmin^2 (to mag 25) at galactic latitude b: rises steeply towards the plane."""
    s = max(abs(math.sin(math.radians(b_deg))), 1e-3)
    return 2.5 / s**1.3


def latitude_for_density(density: float) -> float:
    """Inverse of star_density_at (degrees, positive)."""
    s = min(1.0, (2.5 / density) ** (1 / 1.3))
    return math.degrees(math.asin(s))


def sexagesimal(value: float, hours: bool) -> str:
    """'9:01:38.26' for RA (hours, 2 decimals), '-2:24:00.0' for Dec (degrees, 1 decimal)."""
    v = value / 15.0 if hours else value
    sign = "-" if v < 0 else ""
    v = abs(v)
    decimals = 2 if hours else 1
    total = round(v * 3600, decimals)
    d = int(total // 3600)
    m = int((total - d * 3600) // 60)
    s = total - d * 3600 - m * 60
    width = 3 + decimals
    return f"{sign}{d}:{m:02d}:{s:0{width}.{decimals}f}"


MJD_EPOCH = _dt.datetime(1858, 11, 17)


def mjd_to_datetime(mjd: float) -> _dt.datetime:
    return MJD_EPOCH + _dt.timedelta(days=mjd)


def date_to_mjd(date: str) -> float:
    d = _dt.datetime.strptime(date, "%Y-%m-%d")
    return (d - MJD_EPOCH).total_seconds() / 86400.0


def night_time(mjd: float, rng: np.random.Generator) -> float:
    """Move an MJD to the Hawaiian night of its day (05:00-15:30 UTC)."""
    return math.floor(mjd) + float(rng.uniform(5.0 / 24, 15.5 / 24))


def runid_for(when: _dt.datetime, queue_number: int) -> str:
    """CFHT run id such as '08BQ01': semester A runs Feb-Jul, B Aug-Jan."""
    year, month = when.year, when.month
    if month == 1:
        year -= 1
    semester = "A" if 2 <= month <= 7 else "B"
    return f"{year % 100:02d}{semester}Q{queue_number:02d}"


@dataclass
class ExposureParams:
    """Everything that defines one exposure's appearance; also the bulk of its truth record."""

    kind: str
    severity: float
    filter_band: str
    exptime: float
    seeing_arcsec: float
    trail_arcsec: float = 0.0
    trail_angle_deg: float = 0.0
    defocus_arcsec: float = 0.0
    pattern: str = ""
    pattern_amplitude: float = 0.0
    star_density: float = 0.0  # per arcmin^2
    galaxy_density: float = 0.0  # per arcmin^2
    galactic_b: float = 90.0
    galactic_l: float = 0.0
    ra_deg: float = 0.0
    dec_deg: float = 0.0
    airmass: float = 1.0
    sky_mag: float = 21.0  # mag/arcsec^2 including moon
    mjd_obs: float = 54771.0
    proprietary_years: int = 1
    extras: dict = field(default_factory=dict)  # pattern geometry and the like
    transparency: float = 1.0  # clouds: the share of the light that gets through
    nuisances: object = None   # desom.simulate.nuisances.Nuisances, or None (the plain simulator)

    @property
    def fwhm_px(self) -> float:
        return self.seeing_arcsec / PIXEL_SCALE

    @property
    def trail_px(self) -> float:
        return self.trail_arcsec / PIXEL_SCALE

    @property
    def defocus_px(self) -> float:
        return self.defocus_arcsec / PIXEL_SCALE

    @property
    def zero_point(self) -> float:
        return FILTERS[self.filter_band][1]

    def flux_adu(self, mag: np.ndarray) -> np.ndarray:
        """Total counts (ADU) of sources of the given magnitudes in this exposure."""
        ext = EXTINCTION[self.filter_band] * (self.airmass - 1.0)
        return self.transparency * self.exptime * 10.0 ** (-0.4 * (mag + ext - self.zero_point))

    @property
    def sky_adu(self) -> float:
        """Sky level per pixel (ADU) over the whole exposure."""
        per_arcsec2 = 10.0 ** (-0.4 * (self.sky_mag - self.zero_point))
        return float(self.transparency * self.exptime * per_arcsec2 * PIXEL_SCALE**2)

    def to_dict(self) -> dict:
        nuisances = self.nuisances
        self.nuisances = None
        try:
            d = asdict(self)
        finally:
            self.nuisances = nuisances
        d.update(d.pop("extras"))
        d.pop("nuisances")
        if nuisances is not None:
            d.update(nuisances.to_dict())
        return d


def _log_uniform(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _lerp(rng_pair, t):
    lo, hi = rng_pair
    return lo + (hi - lo) * t


def draw_parameters(kind: str, rng: np.random.Generator, severity: float | None = None,
                    mjd_range: tuple[float, float] = (52700.0, 61340.0),
                    overrides: dict | None = None) -> ExposureParams:
    """Draw the physical parameters of one exposure of `kind` (science or calibration).

    Severity None draws one: uniform in [0, 1], except 'good' where Beta(2, 3) puts most good
    exposures at ordinary seeing (~0.75") and fewer near the bad-seeing threshold.
    `overrides` replaces any drawn field afterwards (e.g. {"exptime": 300, "seeing_arcsec": 0.7})
    and is applied before the quantities derived from it.
    """
    if kind not in KINDS and kind not in CALIBRATION_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS + CALIBRATION_KINDS}")
    if severity is None:
        severity = float(rng.beta(2.0, 3.0)) if kind == "good" else float(rng.uniform())
    severity = float(severity)
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must lie in [0, 1], got {severity}")

    bands = list(FILTER_SHARES)
    band = str(rng.choice(bands, p=[FILTER_SHARES[b] for b in bands]))
    exptime = round(_log_uniform(rng, *NORMAL_EXPTIME_RANGE))
    seeing = 0.55 + 0.45 * float(rng.beta(2.0, 2.0))  # ordinary seeing for non-seeing kinds
    airmass = round(1.0 + min(float(rng.exponential(0.25)), 1.4), 3)
    # Sky: dark sky of the band, brightened by moon and twilight by 0..1.5 mag.
    sky_mag = FILTERS[band][2] - float(rng.uniform(0.0, 1.5))
    # Latitude: uniform on the sphere away from the plane for ordinary fields; |b| >= 10 deg
    # gives up to ~25 stars/arcmin^2, where the crowded kind takes over (30 and up).
    b = math.degrees(math.asin(rng.uniform(math.sin(math.radians(ORDINARY_MIN_LATITUDE)), 1.0)))
    b = b if rng.uniform() < 0.5 else -b
    lon = float(rng.uniform(0.0, 360.0))
    p = ExposureParams(kind=kind, severity=severity, filter_band=band, exptime=float(exptime),
                       seeing_arcsec=seeing, airmass=airmass, sky_mag=sky_mag, galactic_b=b,
                       galactic_l=lon)
    p.mjd_obs = night_time(float(rng.uniform(*mjd_range)), rng)
    p.proprietary_years = int(rng.choice([1, 2], p=[0.7, 0.3]))
    trail_angle = float(rng.uniform(0.0, 180.0))

    if kind == "good":
        p.seeing_arcsec = _lerp(GOOD_SEEING_ARCSEC, severity)
    elif kind == "bt":
        p.trail_arcsec, p.trail_angle_deg = _lerp(BT_TRAIL_ARCSEC, severity), trail_angle
    elif kind == "rbt":
        p.trail_arcsec, p.trail_angle_deg = _lerp(RBT_TRAIL_ARCSEC, severity), trail_angle
    elif kind == "bad_seeing":
        p.seeing_arcsec = _lerp(BAD_SEEING_ARCSEC, severity)
    elif kind == "bad_focus":
        p.defocus_arcsec = _lerp(DEFOCUS_ARCSEC, severity)
    elif kind == "bgp_crowded":
        lo, hi = CROWDED_STAR_DENSITY
        density = lo * (hi / lo) ** severity
        p.galactic_b = math.copysign(latitude_for_density(density), p.galactic_b)
    elif kind == "bgp_low_exposure":
        p.exptime = round(NORMAL_EXPTIME_RANGE[0] * (LOW_EXPTIME_MIN / NORMAL_EXPTIME_RANGE[0]) ** severity, 1)
    elif kind == "bgp_pattern":
        p.pattern = str(rng.choice(PATTERN_TYPES))
        p.pattern_amplitude = _lerp(PATTERN_AMPLITUDE, severity)
        p.extras = {
            "pattern_angle_deg": float(rng.uniform(0, 360)),
            "pattern_scale_px": float(rng.uniform(50.0, 140.0)),  # fringe spacing
            "pattern_phase_seed": int(rng.integers(0, 2**31 - 1)),
            "pattern_center_x": float(rng.uniform(-0.3, 1.3)),  # scattered light, focal-plane units
            "pattern_center_y": float(rng.uniform(-0.3, 1.3)),
            "pattern_radius": float(rng.uniform(0.4, 0.9)),
        }
    elif kind == "bias":
        p.exptime, p.seeing_arcsec = 0.0, 0.0
    elif kind == "flat":
        p.exptime = float(round(_log_uniform(rng, 2.0, 30.0), 1))
        p.extras = {"flat_level": float(rng.uniform(15000.0, 30000.0))}

    for key, value in (overrides or {}).items():
        if not hasattr(p, key):
            raise ValueError(f"unknown exposure parameter {key!r} in overrides")
        setattr(p, key, value)

    p.star_density = star_density_at(p.galactic_b)
    # Dust in the plane thins the background galaxies.
    dust_mag = min(0.1 / max(abs(math.sin(math.radians(p.galactic_b))), 1e-3), 3.0)
    # An override of galaxy_density is the dust-free density; dust thins it like the default.
    base = float((overrides or {}).get("galaxy_density", GALAXY_DENSITY))
    if not (base >= 0 and math.isfinite(base)):
        raise ValueError(f"galaxy_density must be a finite number >= 0, got {base}")
    p.galaxy_density = base * 10 ** (-0.35 * dust_mag)
    if overrides and "star_density" in overrides:
        p.star_density = float(overrides["star_density"])
    # Pointing follows the latitude; keep Dec within what CFHT (latitude +19.8) observes.
    for _ in range(100):
        ra, dec = galactic_to_equatorial(p.galactic_l, p.galactic_b)
        if -30.0 <= dec <= 75.0:
            break
        p.galactic_l = float(rng.uniform(0.0, 360.0))
    p.ra_deg, p.dec_deg = round(ra, 6), round(dec, 6)
    return p
