"""Vector transforms of the index kinds: what is stored and searched instead of the raw
histo-vectors and activations (see ``kinds.py`` for which kind uses which)."""
from __future__ import annotations

import numpy as np

from .arrays import as_matrix, check_nonnegative


def empty_rows(vectors) -> np.ndarray:
    """Boolean mask of the all-zero rows (exposures without sources)."""
    arr = as_matrix(vectors)
    return ~(arr != 0).any(axis=1)


def hellinger_transform(vectors) -> np.ndarray:
    """Histo-vectors (n, d) -> unit vectors (n, d + 1), float32, never NaN.

    Row i becomes sqrt(x_i / sum(x_i)) followed by a 0; an all-zero row becomes (0, ..., 0, 1).
    ||h(x) - h(y)||_2 = sqrt(2) * Hellinger(x, y) for nonempty x and y.
    """
    arr = as_matrix(vectors, "histo-vectors")
    check_nonnegative(arr, "histo-vectors")
    totals = arr.sum(axis=1, dtype=np.float64)
    empty = totals <= 0
    out = np.zeros((arr.shape[0], arr.shape[1] + 1), dtype=np.float32)
    nonempty = ~empty
    if nonempty.any():
        # One float64 temporary, square-rooted in place (builds transform a chunk at a time, and
        # this is most of a chunk's memory); the float32 assignment rounds as astype would.
        shares = (arr if nonempty.all() else arr[nonempty]) / totals[nonempty, None]
        out[nonempty, :-1] = np.sqrt(shares, out=shares)
    out[empty, -1] = 1.0
    return out


def share_transform(vectors) -> np.ndarray:
    """Counts or activations (n, d) -> shares (n, d) summing to 1; all-zero rows stay zero."""
    arr = as_matrix(vectors, "activation vectors")
    check_nonnegative(arr, "activation vectors")
    totals = arr.sum(axis=1, dtype=np.float64)
    out = np.zeros_like(arr)
    nonempty = totals > 0
    out[nonempty] = (arr if nonempty.all() else arr[nonempty]) / totals[nonempty, None]
    return out



def finite_transform(vectors) -> np.ndarray:
    """Vectors stored and searched as they are: a finite float32 matrix (as_matrix refuses
    NaN and inf)."""
    return as_matrix(vectors, "latent vectors")


def l2_from_squared(squared: np.ndarray) -> np.ndarray:
    """Euclidean distance from FAISS's squared L2 distance."""
    return np.sqrt(np.clip(np.asarray(squared, dtype=np.float32), 0.0, None))


def hellinger_from_squared_l2(squared: np.ndarray) -> np.ndarray:
    """Hellinger distance from the squared L2 distance between Hellinger-transformed vectors."""
    return np.sqrt(np.clip(np.asarray(squared, dtype=np.float32) * 0.5, 0.0, 1.0))

