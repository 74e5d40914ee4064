"""Checked numpy arrays: raw vectors (a finite real (n, dim) matrix) and exposure ids (nonnegative
int64), with the clear errors every entry point of the index package gives on bad input."""
from __future__ import annotations

import hashlib

import numpy as np


def as_matrix(vectors, name: str = "vectors") -> np.ndarray:
    arr = np.asarray(vectors)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 1-D vector or a 2-D (n, dim) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise ValueError(f"{name} contains NaN or infinite values (first in row {bad})")
    return arr


def check_nonnegative(arr: np.ndarray, name: str) -> None:
    if (arr < 0).any():
        bad = int(np.flatnonzero((arr < 0).any(axis=1))[0])
        raise ValueError(f"{name} must be nonnegative counts or shares (row {bad} has a negative value)")



def as_ids(ids, name: str = "ids") -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of exposure ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if (arr < 0).any():
        raise ValueError(f"{name} must be nonnegative (FAISS uses -1 as 'no result')")
    return arr


def ids_checksum(ids) -> str:
    """sha256 of the sorted unique ids as little-endian int64."""
    arr = np.unique(as_ids(ids)).astype("<i8")
    return hashlib.sha256(arr.tobytes()).hexdigest()

