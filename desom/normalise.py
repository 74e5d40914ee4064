"""Normalisation of histo-vectors before DESOM-2 (paper section 3.6).

``minmax`` (default, the paper): every bin is scaled to [0, 1] with its minimum and maximum over
the training histo-vectors. ``authors``: the variant in the authors' code - each vector is clipped
above its own mean + 3 sigma and z-scored, then every bin is standardised over the training set.
Bins that are constant in training get a unit scale, so they map to 0 instead of NaN/inf.
"""
from __future__ import annotations

import numpy as np

METHODS = ("minmax", "authors")


class HistoNormaliser:
    def __init__(self, method: str = "minmax"):
        if method not in METHODS:
            raise ValueError(f"unknown normaliser method {method!r}; expected one of {METHODS}")
        self.method = method
        self.offset: np.ndarray | None = None   # per-bin value subtracted (min or mean)
        self.scale: np.ndarray | None = None    # per-bin divisor (max-min or std), never 0

    @property
    def fitted(self) -> bool:
        return self.offset is not None

    @property
    def n_bins(self) -> int | None:
        return None if self.offset is None else int(self.offset.shape[0])

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

    @staticmethod
    def _per_vector(X: np.ndarray) -> np.ndarray:
        """Authors' per-vector step: clip above mean + 3 sigma, then z-score the vector."""
        mean = X.mean(axis=1, keepdims=True)
        std = X.std(axis=1, keepdims=True)
        X = np.minimum(X, mean + 3.0 * std)
        mean = X.mean(axis=1, keepdims=True)
        std = X.std(axis=1, keepdims=True)
        return (X - mean) / np.where(std > 0, std, 1.0)

    def fit(self, X) -> "HistoNormaliser":
        X = self._check(X, fitting=True)
        if self.method == "minmax":
            lo, hi = X.min(axis=0), X.max(axis=0)
            self.offset, span = lo, hi - lo
        else:
            X = self._per_vector(X)
            self.offset, span = X.mean(axis=0), X.std(axis=0)
        self.scale = np.where(span > 0, span, 1.0)
        return self

    def transform(self, X) -> np.ndarray:
        """Normalised float32 copy of X, shape (n_vectors, n_bins). Not clipped: a new vector
        beyond the training range maps outside [0, 1]."""
        X = self._check(X, fitting=False)
        if self.method == "authors":
            X = self._per_vector(X)
        return ((X - self.offset) / self.scale).astype(np.float32)

    def fit_transform(self, X) -> np.ndarray:
        return self.fit(X).transform(X)

    def to_dict(self) -> dict:
        if not self.fitted:
            raise ValueError("cannot serialise an unfitted HistoNormaliser")
        return {"method": self.method, "offset": self.offset.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "HistoNormaliser":
        try:
            norm = cls(d["method"])
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
        return norm

    def __repr__(self) -> str:
        return f"HistoNormaliser(method={self.method!r}, n_bins={self.n_bins})"
