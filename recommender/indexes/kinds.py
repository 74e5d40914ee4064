"""The index kinds and their per-kind settings."""
from __future__ import annotations

import numpy as np

from .arrays import as_matrix
from .transforms import hellinger_transform, share_transform

KINDS = ("histo", "activation")
TRANSFORMS = {"histo": "hellinger+empty", "activation": "l1-share"}

# Defaults chosen by benchmarks/bench_faiss.py (see benchmarks/results/faiss.json).
# Exact search below these sizes. Inner-product search of node queries is much harder for IVF
# (recall about 0.87 at nprobe 16 on 100k synthetic exposures against 0.97 for histo L2 at
# nprobe 8), so the activation kind stays exact longer and probes more lists once approximate.
DEFAULT_APPROXIMATE_THRESHOLDS = {"histo": 50_000, "activation": 200_000}
DEFAULT_NPROBES = {"histo": 8, "activation": 32}
DEFAULT_APPROXIMATE_THRESHOLD = DEFAULT_APPROXIMATE_THRESHOLDS["histo"]
DEFAULT_NPROBE = DEFAULT_NPROBES["histo"]


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"index kind must be one of {KINDS}, got {kind!r}")


def transform_vectors(kind: str, vectors) -> np.ndarray:
    """The stored form of raw vectors for an index of this kind."""
    check_kind(kind)
    return hellinger_transform(vectors) if kind == "histo" else share_transform(vectors)


def transform_queries(kind: str, queries) -> np.ndarray:
    """The searched form of raw queries: histo queries are transformed like the stored vectors;
    activation queries are node weights used as given (any real weights)."""
    check_kind(kind)
    if kind == "histo":
        return hellinger_transform(queries)
    return as_matrix(queries, "activation queries")

