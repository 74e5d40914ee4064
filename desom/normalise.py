"""Normalisation of histo-vectors before DESOM-2 (paper section 3.6).

``minmax`` (default, the paper): every bin is scaled to [0, 1] with its minimum and maximum over
the training histo-vectors. ``authors``: the variant in the authors' code - each vector is clipped
above its own mean + 3 sigma and z-scored, then every bin is standardised over the training set.
Bins that are constant in training get a unit scale, so they map to 0 instead of NaN/inf.
``hellinger``: the square root of each vector's shares, sqrt(h / sum(h)), with no per-bin
scaling. Euclidean distance there is the Hellinger distance between the exposures' source
distributions (what the find-similar index uses); the square root steadies Poisson counts, and
rare bins are not blown up to the full [0, 1] range as min-max does. An exposure's number of
sources is left out: the shape of its distribution is what DESOM-2 sees.

``sqrt_counts``: sqrt(h / c), c the median number of sources of the training vectors. Like
Hellinger it steadies Poisson counts and leaves every bin its own scale, but it keeps the number
of sources (||x||^2 = N / c): a crowded field, or a short exposure with few sources, stands apart
even when the shape of its distribution is ordinary.

``smooth_sigma`` (optional, before any method): soft assignment. Every source's count is spread
over its node's neighbourhood on the DESOM-1 map with the map's own kernel, exp(-d^2 / T^2) of
the Manhattan grid distance d (``desom.som.gaussian_kernel``) at T = sqrt(2) * smooth_sigma,
normalised per node so the vector's sum (the number of sources) is kept. On an ordered map
neighbouring prototypes look alike, so this tames the shot noise of an exposure's few thousand
sources over 625 bins (benchmarks/bench_science.py measures it).

Statistics beside the histo-vector (FEATURES): "histo+stats" reads the exposure's five source
statistics (``desom.baseline.FEATURE_NAMES``), "histo+stats+coherent" those and the two coherent
ones (``desom.baseline.STATISTIC_NAMES``). The normaliser then carries a
``desom.baseline.FeatureScaler`` fitted with it (median fill, standardisation) and
``transform(histos, statistics=...)`` returns [normalised histo | weight x scaled statistics]; a
missing statistic (NaN) takes the training median. ``statistics_weight`` sets the statistics'
share of DESOM-2's input beside 625 bins; the science study chooses it on its validation split
(benchmarks/README.md, "Science").
"""
from __future__ import annotations

import math

import numpy as np

from desom.baseline import FEATURE_NAMES, STATISTIC_NAMES, FeatureScaler

METHODS = ("minmax", "authors", "hellinger", "sqrt_counts")
CHUNK = 8192   # rows per block in fit and transform: float64 temporaries of 40 MB at 625 bins
# What DESOM-2 reads: the histo-vector alone, or with source statistics beside it.
FEATURE_STATISTICS = {"histo": (), "histo+stats": FEATURE_NAMES, "histo+stats+coherent": STATISTIC_NAMES}
FEATURES = tuple(FEATURE_STATISTICS)


def map_smoothing_kernel(map_shape, sigma: float) -> np.ndarray:
    """(K, K) row-stochastic soft-assignment kernel of a rows x cols map: the SOM's own
    neighbourhood kernel at T = sqrt(2) sigma, each row normalised. histos @ kernel spreads every
    count over its node's neighbours and keeps each vector's sum."""
    from desom.som import gaussian_kernel, grid_distances

    rows, cols = (int(v) for v in map_shape)
    if rows < 1 or cols < 1 or sigma <= 0:
        raise ValueError(f"need a positive map shape and sigma, got {map_shape} and {sigma}")
    kernel = gaussian_kernel(grid_distances(rows, cols), math.sqrt(2.0) * sigma)
    return kernel / kernel.sum(axis=1, keepdims=True)


class HistoNormaliser:
    def __init__(self, method: str = "minmax", smooth_sigma: float = 0.0, map_shape=None,
                 statistics: bool | tuple = False, statistics_weight: float = 1.0):
        if method not in METHODS:
            raise ValueError(f"unknown normaliser method {method!r}; expected one of {METHODS}")
        if not (smooth_sigma >= 0 and math.isfinite(smooth_sigma)):
            raise ValueError(f"smooth_sigma must be >= 0, got {smooth_sigma}")
        self.method = method
        self.smooth_sigma = float(smooth_sigma)
        self.map_shape = None if map_shape is None else tuple(int(v) for v in map_shape)
        self._kernel = None
        self.offset: np.ndarray | None = None   # per-bin value subtracted (min or mean)
        self.scale: np.ndarray | None = None    # per-bin divisor (max-min or std), never 0
        # True: the five FEATURE_NAMES; or the names themselves, one of FEATURE_STATISTICS' sets.
        names = FEATURE_NAMES if statistics is True else tuple(statistics or ())
        if names and names not in FEATURE_STATISTICS.values():
            raise ValueError(f"unknown statistics {names}; expected one of {[v for v in FEATURE_STATISTICS.values() if v]}")
        if not (statistics_weight > 0 and math.isfinite(statistics_weight)):
            raise ValueError(f"statistics_weight must be positive, got {statistics_weight}")
        self.statistics_names: tuple = names
        self.statistics_weight = float(statistics_weight)
        self.statistics: FeatureScaler | None = None   # fitted with the histo part when used

    @classmethod
    def for_features(cls, features: str, method: str = "minmax", **kwargs) -> "HistoNormaliser":
        """A normaliser for one of FEATURES ("histo", "histo+stats", "histo+stats+coherent")."""
        if features not in FEATURES:
            raise ValueError(f"unknown DESOM-2 features {features!r}; expected one of {FEATURES}")
        return cls(method, statistics=FEATURE_STATISTICS[features], **kwargs)

    @property
    def uses_statistics(self) -> bool:
        return bool(self.statistics_names)

    @property
    def features(self) -> str:
        return next(k for k, v in FEATURE_STATISTICS.items() if v == self.statistics_names)

    @property
    def fitted(self) -> bool:
        return self.offset is not None

    @property
    def n_bins(self) -> int | None:
        return None if self.offset is None else int(self.offset.shape[0])

    @property
    def n_outputs(self) -> int | None:
        """Columns of the DESOM-2 input: the bins, plus the statistics when used."""
        if self.offset is None:
            return None
        return self.n_bins + len(self.statistics_names)

    def _check_statistics(self, statistics, n_rows: int):
        """The (n_rows, len(statistics_names)) matrix this normaliser needs, or None when it reads none."""
        if not self.uses_statistics:
            if statistics is not None:
                raise ValueError("this normaliser reads histo-vectors only (features 'histo'); "
                                 "it was given source statistics")
            return None
        if statistics is None:
            raise ValueError("this normaliser reads the source statistics beside the histo-vectors "
                             f"(features {self.features!r}): pass statistics=")
        stats = np.asarray(statistics, np.float64)
        if stats.ndim == 1:
            stats = stats[None, :]
        names = self.statistics_names
        if stats.shape != (n_rows, len(names)):
            raise ValueError(f"statistics must be ({n_rows}, {len(names)}) ({', '.join(names)}), got {stats.shape}")
        return stats

    def _check(self, X, fitting: bool) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2:
            raise ValueError(f"histo-vectors must be a 2-D array (n_vectors, n_bins), got shape {X.shape}")
        if fitting and X.shape[0] < 1:
            raise ValueError("cannot fit a normaliser on zero histo-vectors")
        if not fitting:
            if not self.fitted:
                raise ValueError("HistoNormaliser is not fitted; call fit() first")
            if X.shape[1] != self.n_bins:
                raise ValueError(f"histo-vectors have {X.shape[1]} bins, the normaliser was "
                                 f"fitted on {self.n_bins}")
        if not np.isfinite(X).all():
            raise ValueError("histo-vectors contain NaN or infinite values")
        return X

    def _smooth(self, X: np.ndarray) -> np.ndarray:
        if self.smooth_sigma == 0:
            return X
        if self._kernel is None or self._kernel.shape[0] != X.shape[1]:
            shape = self.map_shape
            if shape is None:   # DESOM-1 maps are square unless told otherwise
                side = math.isqrt(X.shape[1])
                if side * side != X.shape[1]:
                    raise ValueError(f"{X.shape[1]} bins are not a square map: give map_shape to smooth")
                shape = (side, side)
            if shape[0] * shape[1] != X.shape[1]:
                raise ValueError(f"map_shape {shape} does not hold {X.shape[1]} bins")
            self.map_shape = tuple(shape)
            self._kernel = map_smoothing_kernel(shape, self.smooth_sigma)
        return X @ self._kernel

    @staticmethod
    def _root_shares(X: np.ndarray) -> np.ndarray:
        """sqrt(h / sum(h)) per vector; an empty vector (no sources) stays all zeros."""
        total = X.sum(axis=1, keepdims=True)
        return np.sqrt(np.clip(X, 0.0, None) / np.where(total > 0, total, 1.0))

    @staticmethod
    def _per_vector(X: np.ndarray) -> np.ndarray:
        """Authors' per-vector step: clip above mean + 3 sigma, then z-score the vector."""
        mean = X.mean(axis=1, keepdims=True)
        std = X.std(axis=1, keepdims=True)
        X = np.minimum(X, mean + 3.0 * std)
        mean = X.mean(axis=1, keepdims=True)
        std = X.std(axis=1, keepdims=True)
        return (X - mean) / np.where(std > 0, std, 1.0)

    def _chunks(self, X, chunk: int):
        """X in row blocks, each checked (finite, float64) and smoothed: the float64 copies of a
        large archive's vectors are never made all at once."""
        for start in range(0, X.shape[0], chunk):
            yield start, self._smooth(self._check(X[start:start + chunk], fitting=True))

    def fit(self, X, chunk: int = CHUNK, *, statistics=None) -> "HistoNormaliser":
        """Fit on X (N, bins), read in blocks of `chunk` rows (any array-like that slices,
        e.g. a memory-mapped one), and on the (N, len(statistics_names)) source statistics when it uses them
        (NaN where unmeasured)."""
        X = _as_matrix(X)
        if X.shape[0] < 1:
            raise ValueError("cannot fit a normaliser on zero histo-vectors")
        n, bins = X.shape
        stats = self._check_statistics(statistics, n)
        if stats is not None:
            self.statistics = FeatureScaler().fit(stats)
        if self.method == "hellinger":
            for _ in self._chunks(X, chunk):   # only checked
                pass
            self.offset, span = np.zeros(bins), np.ones(bins)
        elif self.method == "sqrt_counts":
            # One scale for every bin (the median number of sources), kept in `scale` squared.
            totals = np.concatenate([block.sum(axis=1) for _, block in self._chunks(X, chunk)])
            total = float(np.median(totals))
            self.offset = np.zeros(bins)
            span = np.full(bins, math.sqrt(total) if total > 0 else 1.0)
        elif self.method == "minmax":
            lo, hi = np.full(bins, np.inf), np.full(bins, -np.inf)
            for _, block in self._chunks(X, chunk):
                lo, hi = np.minimum(lo, block.min(axis=0)), np.maximum(hi, block.max(axis=0))
            self.offset, span = lo, hi - lo
        else:   # two passes: the mean, then the spread about it
            total = np.zeros(bins)
            for _, block in self._chunks(X, chunk):
                total += self._per_vector(block).sum(axis=0)
            mean = total / n
            squares = np.zeros(bins)
            for _, block in self._chunks(X, chunk):
                squares += ((self._per_vector(block) - mean) ** 2).sum(axis=0)
            self.offset, span = mean, np.sqrt(squares / n)
        self.scale = np.where(span > 0, span, 1.0)
        return self

    def transform(self, X, out: np.ndarray | None = None, chunk: int = CHUNK, *, statistics=None) -> np.ndarray:
        """The DESOM-2 input of X: float32, shape (n_vectors, n_outputs), computed in blocks of
        `chunk` rows. The normalised bins; then, with statistics (required when the normaliser
        uses them), the weighted scaled statistics in the last columns.
        out: where to write it (a float32 array of that shape; for histo only, X itself
        normalises in place). Not clipped: a new vector beyond the training range maps outside
        [0, 1]."""
        if not self.fitted:
            raise ValueError("HistoNormaliser is not fitted; call fit() first")
        X = _as_matrix(X)
        stats = self._check_statistics(statistics, X.shape[0])
        shape = (X.shape[0], X.shape[1] + (0 if stats is None else stats.shape[1]))
        if out is None:
            out = np.empty(shape, np.float32)
        elif out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"out must be a float32 array of shape {shape}, got {out.dtype} {out.shape}")
        bins = X.shape[1]
        for start in range(0, X.shape[0], chunk):
            out[start:start + chunk, :bins] = self._transform_block(X[start:start + chunk])
        if stats is not None:
            out[:, bins:] = self.statistics.transform(stats) * np.float32(self.statistics_weight)
        return out

    def _transform_block(self, X) -> np.ndarray:
        X = self._smooth(self._check(X, fitting=False))
        if self.method == "authors":
            X = self._per_vector(X)
        elif self.method == "hellinger":
            X = self._root_shares(X)
        elif self.method == "sqrt_counts":
            X = np.sqrt(np.clip(X, 0.0, None))
        return ((X - self.offset) / self.scale).astype(np.float32)

    def fit_transform(self, X, *, statistics=None) -> np.ndarray:
        return self.fit(X, statistics=statistics).transform(X, statistics=statistics)

    def to_dict(self) -> dict:
        if not self.fitted:
            raise ValueError("cannot serialise an unfitted HistoNormaliser")
        out = {"method": self.method, "offset": self.offset.tolist(), "scale": self.scale.tolist(),
               "smooth_sigma": self.smooth_sigma,
               "map_shape": None if self.map_shape is None else list(self.map_shape)}
        if self.uses_statistics:
            # The names travel with the scaler: a checkpoint read by a library whose statistics
            # differ is refused rather than fed the wrong columns.
            out["statistics"] = {"names": list(self.statistics_names), "weight": self.statistics_weight,
                                 **self.statistics.to_dict()}
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "HistoNormaliser":
        try:
            norm = cls(d["method"], smooth_sigma=float(d.get("smooth_sigma") or 0.0),
                       map_shape=d.get("map_shape"))
            offset = np.asarray(d["offset"], dtype=np.float64)
            scale = np.asarray(d["scale"], dtype=np.float64)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a HistoNormaliser dict: {exc!r}") from None
        if offset.ndim != 1 or offset.shape != scale.shape:
            raise ValueError(f"normaliser offset/scale shapes differ or are not 1-D: "
                             f"{offset.shape} vs {scale.shape}")
        if not (np.isfinite(offset).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError("normaliser offset/scale must be finite with positive scale")
        norm.offset, norm.scale = offset, scale
        stats = d.get("statistics")
        if stats is not None:
            names = tuple(stats.get("names") or ())
            if names not in FEATURE_STATISTICS.values() or not names:
                raise ValueError(f"the normaliser's statistics {stats.get('names')} are none of this library's "
                                 f"{[list(v) for v in FEATURE_STATISTICS.values() if v]}")
            weight = float(stats.get("weight", 1.0))
            if not (weight > 0 and math.isfinite(weight)):
                raise ValueError(f"the normaliser's statistics weight must be positive, got {weight}")
            norm.statistics_names, norm.statistics_weight = names, weight
            norm.statistics = FeatureScaler.from_dict(stats)
            if norm.statistics.n_features != len(names):
                raise ValueError(f"the normaliser's scaler holds {norm.statistics.n_features} statistics, "
                                 f"not {len(names)}")
        return norm

    def __repr__(self) -> str:
        smooth = f", smooth_sigma={self.smooth_sigma:g}" if self.smooth_sigma else ""
        stats = f", features={self.features!r}" if self.uses_statistics else ""
        return f"HistoNormaliser(method={self.method!r}{smooth}{stats}, n_bins={self.n_bins})"


def _as_matrix(X):
    """X as a 2-D (n_vectors, n_bins) array: a single vector becomes one row; an ndarray (a
    memory-mapped one too) is kept as it is, anything else read as float64."""
    if not isinstance(X, np.ndarray):
        X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise ValueError(f"histo-vectors must be a 2-D array (n_vectors, n_bins), got shape {X.shape}")
    return X
