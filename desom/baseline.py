"""The plain baseline the deep pipeline must beat: a handful of source statistics per exposure,
measured by hand, clustered with k-means.

Per exposure (from the same detections the imaging path makes, so both methods see the same
sources):

    log_density          log10(1 + sources per megapixel away from the edges)
    fwhm_px              median FWHM of the brightest unsaturated sources, from the flux-weighted
                         second moments of their pixels above 2 sigma: 2.355 (l1 l2)^(1/4)
    elongation           median sqrt(l1 / l2) of the same moments (1 round, > 1 trailed)
    donut                median central-hole score: 1 - (mean within 1.5 px of the centre) /
                         (peak of the azimuthal profile); near 0 for a star, near 1 for a donut
    background_structure mean over CCDs of the (90th - 10th percentile) spread of 64x64-pixel
                         block medians of the sky, relative to its median level

Beside them, two statistics of what the sources share in direction (COHERENT_NAMES, measured
on the sampled sources' stamps with the sky kept: ``coherent_statistics``):

    log_coherent_ellipticity log10(0.001 + |(median e1, median e2)|) of the brightest quarter:
                         a trail elongates every star the same way, noise and galaxies do not
    log_coherent_sky_slope   log10(0.0001 + |(median x, median y) slope|) of the sky under the
                         sources, in noise units per stamp: a gradient tilts it the same way

The "plain baseline" of the science study is k-means over the first five; the seven together
are STATISTIC_NAMES, which DESOM-2 can read beside the histo-vector (features
"histo+stats+coherent").

A statistic that cannot be measured (an exposure with no sources, every CCD dead) is NaN;
``FeatureScaler`` fills it with the training median before standardising, for k-means
(``BaselineClusterer``) and for DESOM-2 when it reads the statistics beside the histo-vector
(``desom.normalise.HistoNormaliser(statistics=True)``). Stored as JSON, an exposure's statistics
are a dict keyed by STATISTIC_NAMES with null for NaN (``statistics_to_dict`` / ``statistics_matrix``).
"""
from __future__ import annotations

import numpy as np

from desom.cutouts import extract_stamps

FEATURE_NAMES = ("log_density", "fwhm_px", "elongation", "donut", "background_structure")
# Two exposure-level statistics beside the plain five: what the sources share in direction.
# Logs, like log_density: they span decades, and a log keeps strong trails and gradients from
# dominating a standardised column. The floors sit below the Good exposures' spread.
COHERENT_NAMES = ("log_coherent_ellipticity", "log_coherent_sky_slope")
COHERENT_FLOORS = (1e-3, 1e-4)
STATISTIC_NAMES = FEATURE_NAMES + COHERENT_NAMES
BRIGHT_SHARE = 0.25      # the brightest quarter of the sampled stamps enter the coherent ellipticity
N_BRIGHT = 40            # brightest sources per CCD that enter the shape statistics
STAMP = 32
MOMENT_RADIUS = 12.0     # px: holds trails and the larger donuts of the simulated survey
BLOCK = 64               # px: the detection's background mesh
SHARP_RATIO = 0.25       # neighbours / peak below this: a cosmic-ray hit, not a source
SATURATION_BOX = 9       # px: a source with a saturated pixel this near its centre is not measured


def _ring_operators(size: int = STAMP, core_radius: float = 1.5):
    """Matrices that turn flattened stamps into azimuthal ring means and the core mean."""
    c = size // 2
    yy, xx = np.indices((size, size))
    r = np.hypot(yy - c, xx - c).ravel()
    rings = np.floor(r).astype(int)
    n_rings = int(rings.max()) + 1
    ring_op = np.zeros((n_rings, size * size))
    ring_op[rings, np.arange(size * size)] = 1.0
    ring_op /= ring_op.sum(axis=1, keepdims=True)
    core = (r <= core_radius).astype(float)
    core /= core.sum()
    inside = (r <= MOMENT_RADIUS).reshape(size, size)
    return ring_op, core, inside, yy, xx


_RING_OP, _CORE, _INSIDE, _YY, _XX = _ring_operators()


def stamp_shapes(stamps: np.ndarray, noise: float) -> dict:
    """FWHM, elongation and central-hole score of background-subtracted stamps (N, 32, 32)
    whose source sits at the centre pixel. Pixels below 2 sigma (noise) weigh nothing."""
    s = np.nan_to_num(np.asarray(stamps, np.float64), nan=0.0)
    n = s.shape[0]
    if n == 0:
        empty = np.zeros(0)
        return {"fwhm_px": empty, "elongation": empty, "donut": empty, "e1": empty, "e2": empty}
    # Cosmic-ray hits rank among the brightest "sources" but are one or two pixels wide: the
    # four neighbours of a star's peak hold over half its level at any seeing we image.
    c = STAMP // 2
    core = s[:, c - 1:c + 2, c - 1:c + 2]
    peak = core.reshape(n, -1).max(axis=1)
    cross = (s[:, c - 1, c] + s[:, c + 1, c] + s[:, c, c - 1] + s[:, c, c + 1]) / 4.0
    sharp = cross < SHARP_RATIO * np.where(peak > 0, peak, 1.0)
    w = np.where((s > 2.0 * max(noise, 1e-12)) & _INSIDE, s, 0.0)
    total = w.sum(axis=(1, 2))
    ok = total > 0
    tot = np.where(ok, total, 1.0)
    cy = (w * _YY).sum(axis=(1, 2)) / tot
    cx = (w * _XX).sum(axis=(1, 2)) / tot
    dy = _YY[None] - cy[:, None, None]
    dx = _XX[None] - cx[:, None, None]
    iyy = (w * dy * dy).sum(axis=(1, 2)) / tot
    ixx = (w * dx * dx).sum(axis=(1, 2)) / tot
    ixy = (w * dx * dy).sum(axis=(1, 2)) / tot
    half_trace = 0.5 * (ixx + iyy)
    root = np.sqrt(np.maximum(0.25 * (ixx - iyy) ** 2 + ixy ** 2, 0.0))
    l1 = half_trace + root
    l2 = np.maximum(half_trace - root, 1e-6)
    fwhm = 2.3548 * (l1 * l2) ** 0.25
    elong = np.sqrt(l1 / l2)
    # The ellipticity with its direction: noise and galaxies elongate sources every which way,
    # a trail all the same way (see coherent_ellipticity).
    trace = np.maximum(ixx + iyy, 1e-6)
    e1, e2 = (ixx - iyy) / trace, 2.0 * ixy / trace
    flat = np.clip(s, 0.0, None).reshape(n, -1)
    profile = flat @ _RING_OP.T
    core = flat @ _CORE
    peak = np.maximum(profile.max(axis=1), core)
    donut = np.where(peak > 0, 1.0 - core / np.where(peak > 0, peak, 1.0), 0.0)
    ok &= ((w > 0).sum(axis=(1, 2)) >= 5) & ~sharp   # fewer than 5 pixels: not measurable
    nan = np.nan
    return {"fwhm_px": np.where(ok, fwhm, nan), "elongation": np.where(ok, elong, nan),
            "donut": np.where(ok, np.clip(donut, 0.0, 1.0), nan),
            "e1": np.where(ok, e1, nan), "e2": np.where(ok, e2, nan)}


MIN_COHERENCE_SOURCES = 10


def _shared_direction(x, y) -> float:
    """|(median x, median y)| over the pairs where both are finite; NaN with too few."""
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < MIN_COHERENCE_SOURCES:
        return float("nan")
    return float(np.hypot(np.median(x[keep]), np.median(y[keep])))


def coherent_ellipticity(e1, e2) -> float:
    """|(median e1, median e2)| over an exposure's measured sources: the ellipticity they share.
    Each source's own ellipticity is mostly noise and galaxy shape, in every direction, so it
    averages away; a trail (or any anisotropic PSF) elongates every star the same way and
    survives. On the 2 000 exposures of the science survey the Good ones reach 0.023 at most
    and every slight trail lies above that, where the median elongation of the same sources
    cannot tell the mildest from Good (benchmarks/results/separability.json). NaN with fewer
    than 10 measured sources."""
    return _shared_direction(e1, e2)


def coherent_sky_slope(slope_x, slope_y, noise) -> float:
    """|(median x slope, median y slope)| of the sky under an exposure's sources, in units of
    the sky noise across one 32-pixel stamp. Each source's local slope is mostly noise, in every
    direction, and averages away; a gradient across the focal plane tilts the sky the same way
    under every source and survives. On the science survey the Good exposures reach 0.0081 at
    most and 77% of the background-pattern exposures lie above that (every gradient; scattered
    light, being radial, partly cancels). NaN with fewer than 10 sources."""
    noise = np.asarray(noise, np.float64).ravel()
    return _shared_direction(np.asarray(slope_x, np.float64).ravel() / noise,
                             np.asarray(slope_y, np.float64).ravel() / noise) * STAMP


def _plane_design(size: int = STAMP):
    yy, xx = np.indices((size, size), dtype=np.float64)
    c = (size - 1) / 2.0
    return xx - c, yy - c


_DX, _DY = _plane_design()


def plane_fit(back_stamps: np.ndarray) -> np.ndarray:
    """(N, 3) least-squares plane (centre value, x slope, y slope) of each (N, 32, 32) stamp;
    the design is centred, so the three coefficients are independent sums."""
    b = np.asarray(back_stamps, np.float64)
    c = b.mean(axis=(1, 2))
    gx = (b * _DX).sum(axis=(1, 2)) / (_DX ** 2).sum()
    gy = (b * _DY).sum(axis=(1, 2)) / (_DY ** 2).sum()
    return np.stack([c, gx, gy], axis=1).astype(np.float32)


def plane_stamps(plane: np.ndarray) -> np.ndarray:
    """(N, 32, 32) float32 background planes from plane_fit's coefficients."""
    p = np.asarray(plane, np.float32)
    return (p[:, 0, None, None] + p[:, 1, None, None] * _DX.astype(np.float32)
            + p[:, 2, None, None] * _DY.astype(np.float32))


def sampled_stamps(ccd, result, x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the coherent statistics read of a CCD's sampled sources: (stamps, planes, noise).
    stamps (N, 32, 32) float32: the pixels minus the CCD's sky level (the median of sep's
    background map), so the sky's structure is kept; planes (N, 3): sep's background under each
    stamp, minus the same level, as a plane (plane_fit); noise (N,): the CCD's sky noise."""
    sky = float(result.background) if np.isfinite(result.background) else 0.0
    rms = result.background_rms
    noise = float(rms) if rms and np.isfinite(rms) else 1.0
    data = extract_stamps(ccd.data, x, y, STAMP)
    subtracted = extract_stamps(result.subtracted, x, y, STAMP)
    sky32 = np.float32(sky)
    return data - sky32, plane_fit(data - subtracted - sky32), np.full(len(x), noise, np.float32)


def coherent_statistics(stamps, planes, noise) -> np.ndarray:
    """(2,) an exposure's COHERENT_NAMES from its sampled stamps (as sampled_stamps gives them):
    the coherent ellipticity of the brightest quarter (by the flux of the central 5x5 pixels,
    background plane removed) and the coherent sky slope of the planes under every stamp, each
    as log10(value + its COHERENT_FLOORS floor). NaN where there are too few sources."""
    stamps = np.asarray(stamps, np.float32)
    planes = np.asarray(planes, np.float32)
    noise = np.asarray(noise, np.float64).ravel()
    if len(stamps) == 0:
        return np.full(2, np.nan)
    sub = stamps - plane_stamps(planes)
    c = STAMP // 2
    centre = sub[:, c - 2:c + 3, c - 2:c + 3].sum(axis=(1, 2))
    finite = np.isfinite(centre)     # a stamp touching masked (NaN) pixels is not ranked
    bright = finite & (centre >= np.quantile(centre[finite], 1.0 - BRIGHT_SHARE)) if finite.any() else finite
    shapes = stamp_shapes(sub[bright], float(np.median(noise)))
    ellipticity = coherent_ellipticity(shapes["e1"], shapes["e2"])
    slope = coherent_sky_slope(planes[:, 1], planes[:, 2], noise)
    return np.log10(np.array([ellipticity, slope]) + np.array(COHERENT_FLOORS))


def background_structure(image: np.ndarray, block: int = BLOCK) -> float:
    """(90th - 10th percentile) of the block medians of a CCD's sky, over their median level.
    Gradients, fringes and scattered light raise it; a flat sky with stars keeps it small."""
    # Every 4th pixel of each block: 256 samples give the block's median well enough, 16x cheaper.
    img = np.asarray(image, np.float32)[::4, ::4]
    block = max(block // 4, 1)
    ny, nx = (img.shape[0] // block) * block, (img.shape[1] // block) * block
    if ny == 0 or nx == 0:
        return float("nan")
    blocks = img[:ny, :nx].reshape(ny // block, block, nx // block, block).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(blocks.shape[0], blocks.shape[1], -1)
    medians = (np.median(blocks, axis=2) if np.isfinite(blocks).all()
               else np.nanmedian(blocks, axis=2)).ravel()
    medians = medians[np.isfinite(medians)]
    if medians.size < 4:
        return float("nan")
    level = float(np.median(medians))
    if level <= 0:
        return float("nan")
    p10, p90 = np.percentile(medians, [10, 90])
    return float((p90 - p10) / level)


class SourceStatistics:
    """Collects the baseline's statistics CCD by CCD; pass ``collector.on_detection`` to
    ``desom.pipeline.exposure_cutouts`` (or ``process_ccd``) and read ``features()`` after."""

    def __init__(self, edge_margin: int = 37, n_bright: int = N_BRIGHT):
        self.edge_margin = int(edge_margin)
        self.n_bright = int(n_bright)
        self.n_sources = 0
        self.area_px = 0
        self.shapes = {"fwhm_px": [], "elongation": [], "donut": []}
        self.structure = []
        self.samples = []      # (stamps, planes, noise) of each CCD's sampled sources

    def on_detection(self, ccd, result, inside) -> None:
        ny, nx = ccd.data.shape
        m = self.edge_margin
        self.area_px += max(ny - 2 * m, 0) * max(nx - 2 * m, 0)
        self.n_sources += int(np.count_nonzero(inside))
        self.structure.append(background_structure(ccd.data))
        idx = np.flatnonzero(inside)
        if ccd.saturated is not None and idx.size:
            # A saturated star's flat top says nothing about the seeing: drop every source with
            # a saturated pixel within 4 px of its centre.
            near = extract_stamps(ccd.saturated, result.x[idx], result.y[idx], SATURATION_BOX, fill=0)
            idx = idx[~near.any(axis=(1, 2))]
        if idx.size == 0 or result.subtracted is None:
            return
        bright = idx[np.argsort(result.flux[idx])[::-1][: self.n_bright]]
        stamps = extract_stamps(result.subtracted, result.x[bright], result.y[bright], STAMP, fill=0.0)
        shapes = stamp_shapes(stamps, float(result.background_rms or 0.0))
        for key in self.shapes:
            self.shapes[key].append(shapes[key])

    def on_sample(self, ccd, result, x, y, weight) -> None:
        """Keeps the sampled sources' stamps for the coherent statistics (pass as on_sample)."""
        if len(x) and result.subtracted is not None:
            self.samples.append(sampled_stamps(ccd, result, x, y))

    def coherent(self) -> np.ndarray:
        """The COHERENT_NAMES values of the exposure (NaN where unmeasurable)."""
        if not self.samples:
            return np.full(len(COHERENT_NAMES), np.nan)
        stamps, planes, noise = (np.concatenate(part) for part in zip(*self.samples))
        return coherent_statistics(stamps, planes, noise)

    def statistics(self) -> np.ndarray:
        """Every STATISTIC_NAMES value: the five features, then the coherent ones."""
        return np.concatenate([self.features(), self.coherent()])

    def features(self) -> np.ndarray:
        """The FEATURE_NAMES values of the exposure (float64, NaN where unmeasurable)."""
        def median(key):
            values = np.concatenate(self.shapes[key]) if self.shapes[key] else np.zeros(0)
            values = values[np.isfinite(values)]
            return float(np.median(values)) if values.size else float("nan")

        density = self.n_sources / (self.area_px / 1e6) if self.area_px else float("nan")
        structure = [v for v in self.structure if np.isfinite(v)]
        return np.array([np.log10(1.0 + density) if np.isfinite(density) else np.nan,
                         median("fwhm_px"), median("elongation"), median("donut"),
                         float(np.mean(structure)) if structure else np.nan])


def statistics_to_dict(values) -> dict:
    """The FEATURE_NAMES values (five) or every STATISTIC_NAMES value (seven) as a JSON-friendly
    dict: NaN (unmeasurable) becomes None."""
    values = np.asarray(values, np.float64).ravel()
    if values.shape[0] not in (len(FEATURE_NAMES), len(STATISTIC_NAMES)):
        raise ValueError(f"expected {len(FEATURE_NAMES)} or {len(STATISTIC_NAMES)} statistics, got {values.shape[0]}")
    return {name: (float(v) if np.isfinite(v) else None) for name, v in zip(STATISTIC_NAMES, values)}


def statistics_matrix(rows, names=FEATURE_NAMES) -> np.ndarray:
    """(n, len(names)) float64 from stored statistics dicts; None (a row never measured) or a
    missing or null value becomes NaN, which FeatureScaler fills with its training median."""
    out = np.full((len(rows), len(names)), np.nan)
    for i, row in enumerate(rows):
        if row:
            for j, name in enumerate(names):
                value = row.get(name)
                if value is not None:
                    out[i, j] = float(value)
    return out


def unmeasured(row, names) -> bool:
    """True when a stored statistics dict lacks one of `names` altogether: the exposure was
    measured before the archive measured that statistic (null is measured: unmeasurable)."""
    return row is None or any(name not in row for name in names)


class FeatureScaler:
    """Median fill and standardisation of the source statistics, fitted on training rows: a NaN
    (unmeasurable) takes the column's training median, then every column has mean 0 and unit
    spread over the training rows (a constant column keeps scale 1). The one implementation for
    the baseline's k-means, DESOM-2's statistics columns and the science study."""

    def __init__(self):
        self.fill: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        return self.fill is not None

    @property
    def n_features(self) -> int | None:
        return None if self.fill is None else int(self.fill.shape[0])

    @staticmethod
    def _matrix(x) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise ValueError(f"statistics must be a 2-D array (n, features), got shape {x.shape}")
        return x

    def fit(self, x) -> "FeatureScaler":
        x = self._matrix(x)
        if x.shape[0] < 1:
            raise ValueError("cannot fit a FeatureScaler on zero rows")
        with np.errstate(all="ignore"):
            median = np.nanmedian(x, axis=0)
        self.fill = np.where(np.isfinite(median), median, 0.0)   # a column never measured: 0
        filled = np.where(np.isfinite(x), x, self.fill)
        self.mean, std = filled.mean(axis=0), filled.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)
        return self

    def transform(self, x, dtype=np.float32) -> np.ndarray:
        if not self.fitted:
            raise ValueError("FeatureScaler is not fitted; call fit() first")
        x = self._matrix(x)
        if x.shape[1] != self.n_features:
            raise ValueError(f"statistics have {x.shape[1]} columns, the scaler was fitted on {self.n_features}")
        return ((np.where(np.isfinite(x), x, self.fill) - self.mean) / self.std).astype(dtype)

    def to_dict(self) -> dict:
        if not self.fitted:
            raise ValueError("cannot serialise an unfitted FeatureScaler")
        return {"fill": self.fill.tolist(), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureScaler":
        try:
            parts = [np.asarray(d[key], np.float64) for key in ("fill", "mean", "std")]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a FeatureScaler dict: {exc!r}") from None
        if any(p.ndim != 1 or p.shape != parts[0].shape for p in parts):
            raise ValueError("FeatureScaler fill/mean/std must be 1-D arrays of one length")
        if not all(np.isfinite(p).all() for p in parts) or not (parts[2] > 0).all():
            raise ValueError("FeatureScaler fill/mean/std must be finite with a positive std")
        scaler = cls()
        scaler.fill, scaler.mean, scaler.std = parts
        return scaler


class BaselineClusterer:
    """k-means over standardised source statistics: fit on the training exposures, then give
    any exposure a cluster, used exactly as a DESOM-2 cell by the evaluation protocols.

    The columns are the five or seven statistics, with header descriptors (log EXPTIME, airmass,
    ...) beside them where a study gives k-means the same search as DESOM-2; `weights` scales
    each standardised column (1 by default), so a search can weigh a block of columns."""

    def __init__(self, n_clusters: int, seed: int = 0, n_init: int = 10, weights=None):
        if n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
        self.n_clusters = int(n_clusters)
        self.seed = int(seed)
        self.n_init = int(n_init)
        self.weights = None if weights is None else np.asarray(weights, np.float64)
        if self.weights is not None and (self.weights.ndim != 1 or not np.all(self.weights > 0)):
            raise ValueError("weights must be one positive number per column")

    def _check(self, features) -> np.ndarray:
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] < 1:
            raise ValueError(f"features must be (n, columns) with the statistics first, got {x.shape}")
        if self.weights is None and x.shape[1] not in (len(FEATURE_NAMES), len(STATISTIC_NAMES)):
            raise ValueError(f"features must be (n, {len(FEATURE_NAMES)}) or (n, {len(STATISTIC_NAMES)}) "
                             f"without weights, got {x.shape}")
        if self.weights is not None and x.shape[1] != self.weights.size:
            raise ValueError(f"features have {x.shape[1]} columns, the weights {self.weights.size}")
        if hasattr(self, "scaler_") and x.shape[1] != self.scaler_.n_features:
            raise ValueError(f"features have {x.shape[1]} columns, the clusterer was fitted on {self.scaler_.n_features}")
        return x

    def _scaled(self, x) -> np.ndarray:
        z = self.scaler_.transform(x, dtype=np.float64)
        return z if self.weights is None else z * self.weights

    def fit(self, features) -> "BaselineClusterer":
        from sklearn.cluster import KMeans

        x = self._check(features)
        if x.shape[0] < self.n_clusters:
            raise ValueError(f"{x.shape[0]} exposures are fewer than {self.n_clusters} clusters")
        self.scaler_ = FeatureScaler().fit(x)
        self.kmeans_ = KMeans(self.n_clusters, n_init=self.n_init, random_state=self.seed)
        self.kmeans_.fit(self._scaled(x))
        return self

    def predict(self, features) -> np.ndarray:
        return self.kmeans_.predict(self._scaled(self._check(features))).astype(np.int64)

    def transform(self, features) -> np.ndarray:
        """Standardised (and weighted) features: the space find-similar and the nearest-neighbour
        verdict search for the baseline."""
        return self._scaled(self._check(features))
