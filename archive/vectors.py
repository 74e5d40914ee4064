"""Portable vector storage: float32 little-endian bytes in the database, numpy arrays in code."""
import numpy as np

DTYPE = np.dtype("<f4")


def to_blob(array) -> bytes:
    values = np.asarray(array, dtype=DTYPE)
    if values.ndim != 1:
        raise ValueError(f"expected a 1-D vector, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("vector holds NaN or infinite values")
    return values.tobytes()


def from_blob(blob) -> np.ndarray:
    return np.frombuffer(bytes(blob), dtype=DTYPE).copy()


def stack(blobs, length: int | None = None) -> np.ndarray:
    """Stack many stored vectors into one (N, D) float32 array in a single allocation."""
    blobs = [bytes(b) for b in blobs]
    if not blobs:
        return np.zeros((0, length or 0), dtype=np.float32)
    joined = np.frombuffer(b"".join(blobs), dtype=DTYPE)
    width = len(blobs[0]) // DTYPE.itemsize
    if joined.size != width * len(blobs):
        raise ValueError("stored vectors have different lengths")
    return joined.reshape(len(blobs), width).astype(np.float32)
