"""Quality measures of a (deep) SOM: quantization error, topographic error, purity and NMI.

All take plain arrays so they score any map the same way (our DESOM, our SOM, MiniSom): the
vectors (inputs or latent codes) and the prototypes in the same space, and the map shape with
units in row-major order (k = row * cols + col).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from desom.som import grid_coordinates


def _as2d(a, name: str) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        a = a.reshape(a.shape[0], -1) if a.ndim > 2 else a
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def nearest_units(vectors, prototypes, k: int = 2, chunk: int = 8192):
    """Indices (n, k) of the k closest prototypes and their squared distances (n, k)."""
    x, p = _as2d(vectors, "vectors"), _as2d(prototypes, "prototypes")
    if x.shape[1] != p.shape[1]:
        raise ValueError(f"vectors have dimension {x.shape[1]}, prototypes {p.shape[1]}")
    k = min(k, p.shape[0])
    pp = (p * p).sum(axis=1)
    idx_out, d_out = [], []
    for s in range(0, x.shape[0], chunk):
        xb = x[s:s + chunk]
        d2 = np.maximum((xb * xb).sum(axis=1)[:, None] + pp[None, :] - 2.0 * xb @ p.T, 0.0)
        idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
        idx_out.append(idx)
        d_out.append(np.take_along_axis(d2, idx, axis=1))
    if not idx_out:
        return np.zeros((0, k), np.int64), np.zeros((0, k))
    return np.concatenate(idx_out), np.concatenate(d_out)


def quantization_error(vectors, prototypes) -> float:
    """Mean Euclidean distance from each vector to its best-matching prototype."""
    _, d2 = nearest_units(vectors, prototypes, k=1)
    return float(np.sqrt(d2[:, 0]).mean()) if len(d2) else float("nan")


def topographic_error_from_units(first, second, map_shape, neighbourhood: int = 4) -> float:
    """Fraction of samples whose best and second-best units are not neighbours on the grid.

    neighbourhood=4: neighbours share an edge (Manhattan distance 1, the strict convention);
    neighbourhood=8: diagonal units count too (MiniSom's convention).
    """
    if neighbourhood not in (4, 8):
        raise ValueError(f"neighbourhood must be 4 or 8, got {neighbourhood}")
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"first/second units must be 1-D of equal length, got {first.shape}, {second.shape}")
    rows, cols = map_shape
    k = rows * cols
    if len(first) and (min(first.min(), second.min()) < 0 or max(first.max(), second.max()) >= k):
        raise ValueError(f"unit indices must lie in [0, {k}) for a {rows}x{cols} map")
    if len(first) == 0:
        return float("nan")
    coords = grid_coordinates(rows, cols)
    diff = np.abs(coords[first] - coords[second])
    near = diff.sum(axis=1) == 1 if neighbourhood == 4 else diff.max(axis=1) == 1
    return float(1.0 - near.mean())


def topographic_error(vectors, prototypes, map_shape, neighbourhood: int = 4) -> float:
    rows, cols = map_shape
    p = _as2d(prototypes, "prototypes")
    if p.shape[0] != rows * cols:
        raise ValueError(f"{p.shape[0]} prototypes do not fill a {rows}x{cols} map")
    idx, _ = nearest_units(vectors, p, k=2)
    return topographic_error_from_units(idx[:, 0], idx[:, 1], map_shape, neighbourhood)


def _labels(labels_true, clusters):
    y, c = np.asarray(labels_true), np.asarray(clusters)
    if y.ndim != 1 or c.ndim != 1 or y.shape != c.shape:
        raise ValueError(f"labels and clusters must be 1-D of equal length, got {y.shape}, {c.shape}")
    if len(y) == 0:
        raise ValueError("labels and clusters are empty")
    return y, c


def purity(labels_true, clusters) -> float:
    """Fraction of samples that carry the majority label of their cluster (map unit)."""
    y, c = _labels(labels_true, clusters)
    _, yi = np.unique(y, return_inverse=True)
    _, ci = np.unique(c, return_inverse=True)
    table = np.zeros((ci.max() + 1, yi.max() + 1), np.int64)
    np.add.at(table, (ci, yi), 1)
    return float(table.max(axis=1).sum() / len(y))


def nmi(labels_true, clusters) -> float:
    """Normalized mutual information between labels and clusters (arithmetic mean norm)."""
    y, c = _labels(labels_true, clusters)
    return float(normalized_mutual_info_score(y, c))


def som_scores(vectors, prototypes, map_shape, labels=None) -> dict:
    """QE, topographic error (4- and 8-neighbourhood) and, with labels, purity and NMI."""
    idx, d2 = nearest_units(vectors, prototypes, k=2)
    out = {"quantization_error": float(np.sqrt(d2[:, 0]).mean()),
           "topographic_error": topographic_error_from_units(idx[:, 0], idx[:, 1], map_shape, 4),
           "topographic_error_8": topographic_error_from_units(idx[:, 0], idx[:, 1], map_shape, 8)}
    if labels is not None:
        out["purity"] = purity(labels, idx[:, 0])
        out["nmi"] = nmi(labels, idx[:, 0])
    return out
