"""FAISS index core of the recommender: vector transforms, one persistent index per (model
version, kind), a per-process store of loaded indexes, and node queries over the DESOM-1 map.

This module needs numpy and faiss only (no Django), so benchmarks and batch jobs can use it.

Two kinds of index, both keyed by int64 exposure ids:

``"histo"``
    "Find exposures like this one". Histo-vectors (625 weighted source counts per DESOM-1 node)
    are compared as distributions: each is divided by its sum and square-rooted (Hellinger
    transform), so the L2 distance between two transformed vectors is sqrt(2) times their
    Hellinger distance and a crowded field compares fairly with a sparse one of the same shape.
    An exposure without sources (an all-zero vector) has no distribution; the transform appends
    one extra coordinate that is 1 for such exposures and 0 otherwise. Every transformed vector
    then has unit norm, empty exposures are at Hellinger distance 0 from each other and at the
    maximum distance 1 from every exposure with sources: they match only each other. Searches
    return Hellinger distances in [0, 1], nearest first.

``"activation"``
    "Find exposures whose sources look like this" / "exposures crowded in the bad-focus nodes".
    Vectors (an exposure's share of sources per node, or its mean soft prototype activations)
    are L1-normalised to shares; a query is a weight per node (see ``node_query_vector``) and
    the score is sum_j weight_j * share_j, highest first. An all-zero vector stays zero and
    scores 0 against every query.

Index files are memory-mapped by default (``IndexStore(mmap=True)``): N server processes
searching one million exposures share one copy of the vectors through the page cache instead
of holding N private copies; a process that must change a mapped index first takes a private
copy of it (``VectorIndex.make_private``), and a newer file written by another process (ingest,
rebuild) is noticed on the next ``IndexStore.get`` and mapped in place of the old one.

Small archives use exact search (IndexFlat); past ``approximate_threshold`` vectors the index is
an IVF-Flat (chosen over HNSW because exposures are deleted and IVF supports ``remove_ids``; see
benchmarks/bench_faiss.py for the measurements behind the defaults).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import struct
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import faiss
import numpy as np

log = logging.getLogger(__name__)

KINDS = ("histo", "activation")
TRANSFORMS = {"histo": "hellinger+empty", "activation": "l1-share"}

# Defaults chosen by benchmarks/bench_faiss.py (see benchmarks/results/faiss.json).
# Exact search below these sizes. Inner-product search of node queries is much harder for IVF
# (recall about 0.87 at nprobe 16 on 100k synthetic exposures against 0.97 for histo L2 at
# nprobe 8), so the activation kind stays exact longer and probes more lists once approximate.
DEFAULT_APPROXIMATE_THRESHOLDS = {"histo": 50_000, "activation": 200_000}
DEFAULT_NPROBES = {"histo": 8, "activation": 32}
DEFAULT_APPROXIMATE_THRESHOLD = DEFAULT_APPROXIMATE_THRESHOLDS["histo"]
DEFAULT_NLIST_PER_SQRT_N = 1.0      # nlist = round(factor * sqrt(n)), clamped below
DEFAULT_MIN_NLIST = 64
DEFAULT_MAX_NLIST = 4096
DEFAULT_NPROBE = DEFAULT_NPROBES["histo"]
DEFAULT_TRAIN_POINTS_PER_LIST = 40  # k-means sample size = nlist * this (capped at n)
DEFAULT_KMEANS_ITERATIONS = 10
# An IVF index trained on n vectors keeps its lists balanced while it holds up to this many
# times n; beyond that ``should_rebuild`` says so (the store then rebuilds from the DB).
OVERGROWN_FACTOR = 4.0

FILE_MAGIC = b"DESOMFX2"
FORMAT_VERSION = 2
# The trailer closing a file: header length, sha256 of the header, magic. The FAISS index comes
# first in the file, so FAISS can memory-map it in place (see VectorIndex.load).
_TRAILER_STRUCT = struct.Struct("<Q32s8s")
# FAISS flags of a memory-mapped load: the vectors (flat codes, IVF lists) stay in the file's
# pages, shared by every process that maps the same file, and are never written.
MMAP_FLAGS = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY


class IndexFileError(Exception):
    """Base class of the errors raised when an index file cannot be used."""


class IndexCorruptError(IndexFileError):
    """The file is truncated, garbled or not an index file at all."""


class IndexStaleError(IndexFileError):
    """The file is intact but describes another model version, kind or set of exposures."""


# ----------------------------------------------------------------------------- transforms

def _as_matrix(vectors, name: str = "vectors") -> np.ndarray:
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


def _check_nonnegative(arr: np.ndarray, name: str) -> None:
    if (arr < 0).any():
        bad = int(np.flatnonzero((arr < 0).any(axis=1))[0])
        raise ValueError(f"{name} must be nonnegative counts or shares (row {bad} has a negative value)")


def empty_rows(vectors) -> np.ndarray:
    """Boolean mask of the all-zero rows (exposures without sources)."""
    arr = _as_matrix(vectors)
    return ~(arr != 0).any(axis=1)


def hellinger_transform(vectors) -> np.ndarray:
    """Histo-vectors (n, d) -> unit vectors (n, d + 1), float32, never NaN.

    Row i becomes sqrt(x_i / sum(x_i)) followed by a 0; an all-zero row becomes (0, ..., 0, 1).
    ||h(x) - h(y)||_2 = sqrt(2) * Hellinger(x, y) for nonempty x and y.
    """
    arr = _as_matrix(vectors, "histo-vectors")
    _check_nonnegative(arr, "histo-vectors")
    totals = arr.sum(axis=1, dtype=np.float64)
    empty = totals <= 0
    out = np.zeros((arr.shape[0], arr.shape[1] + 1), dtype=np.float32)
    nonempty = ~empty
    if nonempty.any():
        out[nonempty, :-1] = np.sqrt(arr[nonempty] / totals[nonempty, None]).astype(np.float32)
    out[empty, -1] = 1.0
    return out


def share_transform(vectors) -> np.ndarray:
    """Counts or activations (n, d) -> shares (n, d) summing to 1; all-zero rows stay zero."""
    arr = _as_matrix(vectors, "activation vectors")
    _check_nonnegative(arr, "activation vectors")
    totals = arr.sum(axis=1, dtype=np.float64)
    out = np.zeros_like(arr)
    nonempty = totals > 0
    out[nonempty] = (arr[nonempty] / totals[nonempty, None]).astype(np.float32)
    return out


def transform_vectors(kind: str, vectors) -> np.ndarray:
    """The stored form of raw vectors for an index of this kind."""
    _check_kind(kind)
    return hellinger_transform(vectors) if kind == "histo" else share_transform(vectors)


def transform_queries(kind: str, queries) -> np.ndarray:
    """The searched form of raw queries: histo queries are transformed like the stored vectors;
    activation queries are node weights used as given (any real weights)."""
    _check_kind(kind)
    if kind == "histo":
        return hellinger_transform(queries)
    return _as_matrix(queries, "activation queries")


def hellinger_from_squared_l2(squared: np.ndarray) -> np.ndarray:
    """Hellinger distance from the squared L2 distance between Hellinger-transformed vectors."""
    return np.sqrt(np.clip(np.asarray(squared, dtype=np.float32) * 0.5, 0.0, 1.0))


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"index kind must be one of {KINDS}, got {kind!r}")


def _as_ids(ids, name: str = "ids") -> np.ndarray:
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
    arr = np.unique(_as_ids(ids)).astype("<i8")
    return hashlib.sha256(arr.tobytes()).hexdigest()


def choose_nlist(n: int) -> int:
    """Number of IVF lists for an index of n vectors (the benchmarked rule)."""
    nlist = int(round(DEFAULT_NLIST_PER_SQRT_N * math.sqrt(max(n, 1))))
    return int(min(max(nlist, DEFAULT_MIN_NLIST), DEFAULT_MAX_NLIST, max(n // 39, 1)))


# ----------------------------------------------------------------------------- locking

class _ReadWriteLock:
    """Many concurrent searches, or one mutation (add, remove, build) at a time. A waiting
    mutation holds back new searches, so a steady stream of searches cannot starve it."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire_read(self):
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self):
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def acquire_write(self):
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True

    def release_write(self):
        with self._cond:
            self._writer = False
            self._cond.notify_all()

    class _Guard:
        def __init__(self, acquire, release):
            self._acquire, self._release = acquire, release

        def __enter__(self):
            self._acquire()

        def __exit__(self, *exc):
            self._release()

    def read(self):
        return self._Guard(self.acquire_read, self.release_read)

    def write(self):
        return self._Guard(self.acquire_write, self.release_write)


# ----------------------------------------------------------------------------- the index

def gpu_available() -> bool:
    """True when this faiss is a GPU build (faiss-gpu) and sees at least one GPU."""
    return gpu_status() is None


def gpu_status() -> str | None:
    """None when FAISS can search on a GPU here, else why not (for logs and test skips)."""
    if not (hasattr(faiss, "index_cpu_to_all_gpus") and hasattr(faiss, "get_num_gpus")
            and hasattr(faiss, "StandardGpuResources")):
        return f"faiss {getattr(faiss, '__version__', '?')} is a CPU build (install faiss-gpu: requirements-gpu.txt)"
    try:
        n = faiss.get_num_gpus()
    except Exception as exc:   # a GPU build whose CUDA runtime or driver is missing
        return f"faiss could not count GPUs ({exc})"
    return None if n > 0 else "faiss is a GPU build but sees no GPU (no device or driver)"


def parse_gpu_setting(value) -> bool | None:
    """ARCHIVE_FAISS_GPU: "auto" (or unset/None) -> None: the GPU when FAISS has one;
    "1"/"true"/"yes"/"on" -> True: the GPU, asked for (a warning and the CPU where there is
    none); "0"/"false"/"no"/"off" -> False: always the CPU."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "auto"):
        return None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"ARCHIVE_FAISS_GPU must be auto, 1 or 0, not {value!r}")


_gpu_resources = None
_gpu_resources_lock = threading.Lock()


def gpu_resources():
    """The process's one StandardGpuResources (its scratch memory and streams), shared by every
    index copied to GPU 0, so each copy does not reserve scratch space of its own."""
    global _gpu_resources
    with _gpu_resources_lock:
        if _gpu_resources is None:
            _gpu_resources = faiss.StandardGpuResources()
        return _gpu_resources


def to_gpu(cpu_index):
    """A GPU copy of a CPU index (IndexIDMap2 over a flat index, or an IVF-Flat): on one GPU
    through the shared StandardGpuResources, over all of them (sharded by
    index_cpu_to_all_gpus) when there are several."""
    if faiss.get_num_gpus() == 1:
        return faiss.index_cpu_to_gpu(gpu_resources(), 0, cpu_index)
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True
    return faiss.index_cpu_to_all_gpus(cpu_index, co=options)


_warned_no_gpu = False


def _warn_no_gpu() -> None:
    global _warned_no_gpu
    if not _warned_no_gpu:
        _warned_no_gpu = True
        log.warning("FAISS on the GPU was asked for (ARCHIVE_FAISS_GPU), but %s; searching on the CPU",
                    gpu_status())


class VectorIndex:
    """One FAISS index of transformed vectors keyed by int64 exposure ids.

    ``build``, ``add`` and ``remove`` take raw vectors (histo-vectors or activations); the index
    applies its kind's transform. Searches may run from many threads, concurrently with each
    other; mutations wait for running searches and block new ones while they run.
    """

    def __init__(self, kind: str, model_version: str, dim: int = 625, *,
                 approximate_threshold: int | None = None,
                 nprobe: int | None = None, nlist: int | None = None,
                 use_gpu: bool | None = None):
        _check_kind(kind)
        if not isinstance(model_version, str) or not model_version:
            raise ValueError("model_version must be a nonempty string")
        if int(dim) < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.kind = kind
        self.model_version = model_version
        self.dim = int(dim)
        self.approximate_threshold = int(DEFAULT_APPROXIMATE_THRESHOLDS[kind] if approximate_threshold is None
                                         else approximate_threshold)
        self.nprobe = int(DEFAULT_NPROBES[kind] if nprobe is None else nprobe)
        if self.nprobe < 1 or self.approximate_threshold < 0:
            raise ValueError(f"nprobe must be >= 1 and approximate_threshold >= 0 "
                             f"(got {self.nprobe}, {self.approximate_threshold})")
        self.nlist_override = nlist
        self.created_at = _now()
        self.trained_size = 0        # n at the last build of an IVF index
        self._ids = np.zeros(0, dtype=np.int64)   # sorted
        self._cpu = self._new_flat()
        self._lock = _ReadWriteLock()
        # use_gpu None: the GPU when FAISS has one; True: asked for (CPU, with a warning, when
        # FAISS has none); False: the CPU. Searches then run on a GPU copy of the CPU index,
        # refreshed after each change; the CPU index stays the one saved and mutated.
        if use_gpu and not gpu_available():
            _warn_no_gpu()
        self._use_gpu = gpu_available() if use_gpu is None else bool(use_gpu and gpu_available())
        self._gpu = None
        self._gpu_dirty = True
        self._gpu_lock = threading.Lock()
        self.mapped = False          # True while the vectors are pages of a memory-mapped file
        self._mapping = None         # the mmap behind _ids when mapped

    # -- properties
    @property
    def transform(self) -> str:
        return TRANSFORMS[self.kind]

    @property
    def stored_dim(self) -> int:
        return self.dim + 1 if self.kind == "histo" else self.dim

    @property
    def metric(self) -> int:
        return faiss.METRIC_L2 if self.kind == "histo" else faiss.METRIC_INNER_PRODUCT

    @property
    def index_type(self) -> str:
        return "ivf_flat" if isinstance(self._cpu, faiss.IndexIVF) else "flat"

    @property
    def nlist(self) -> int | None:
        return int(self._cpu.nlist) if isinstance(self._cpu, faiss.IndexIVF) else None

    @property
    def ids(self) -> np.ndarray:
        """Sorted copy of the exposure ids held."""
        return self._ids.copy()

    @property
    def on_gpu(self) -> bool:
        return self._use_gpu

    def __len__(self) -> int:
        return int(self._ids.size)

    def __contains__(self, exposure_id) -> bool:
        try:
            key = int(exposure_id)
        except (TypeError, ValueError):
            return False
        pos = np.searchsorted(self._ids, key)
        return bool(pos < self._ids.size and self._ids[pos] == key)

    def contains(self, ids) -> np.ndarray:
        """Boolean mask: which of ``ids`` the index holds."""
        arr = _as_ids(np.atleast_1d(ids))
        return np.isin(arr, self._ids)

    def __repr__(self):
        return (f"VectorIndex(kind={self.kind!r}, model_version={self.model_version!r}, "
                f"n={len(self)}, type={self.index_type}, nlist={self.nlist}, nprobe={self.nprobe})")

    # -- construction
    def _new_flat(self):
        flat = faiss.IndexFlatL2(self.stored_dim) if self.kind == "histo" else faiss.IndexFlatIP(self.stored_dim)
        return faiss.IndexIDMap2(flat)

    def _new_ivf(self, transformed: np.ndarray):
        n = transformed.shape[0]
        nlist = int(self.nlist_override) if self.nlist_override else choose_nlist(n)
        quantizer = (faiss.IndexFlatL2(self.stored_dim) if self.kind == "histo"
                     else faiss.IndexFlatIP(self.stored_dim))
        ivf = faiss.IndexIVFFlat(quantizer, self.stored_dim, nlist, self.metric)
        ivf.cp.niter = DEFAULT_KMEANS_ITERATIONS
        ivf.cp.seed = 1234
        n_train = min(n, nlist * DEFAULT_TRAIN_POINTS_PER_LIST)
        ivf.cp.max_points_per_centroid = DEFAULT_TRAIN_POINTS_PER_LIST
        rng = np.random.default_rng(0)
        sample = transformed if n_train >= n else transformed[np.sort(rng.choice(n, n_train, replace=False))]
        ivf.train(sample)
        # A hashtable direct map makes remove_ids and reconstruct cost O(1) per id.
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        return ivf

    def _check_raw(self, ids, vectors):
        ids = _as_ids(ids)
        arr = _as_matrix(vectors)
        if arr.shape[1] != self.dim:
            raise ValueError(f"vectors have {arr.shape[1]} dimensions, the {self.kind} index expects {self.dim}")
        if arr.shape[0] != ids.size:
            raise ValueError(f"{ids.size} ids for {arr.shape[0]} vectors")
        if np.unique(ids).size != ids.size:
            raise ValueError("ids contain duplicates")
        return ids, arr

    def make_private(self) -> None:
        """Turn a memory-mapped index into an ordinary one held in this process's memory, so it
        can be changed (mapped pages are read-only, and shared with other processes)."""
        if not self.mapped:
            return
        with self._lock.write():
            if self.mapped:
                self._cpu = faiss.deserialize_index(faiss.serialize_index(self._cpu))
                self._ids = np.array(self._ids, dtype=np.int64)
                self.mapped = False
                self._mapping = None
                self._gpu_dirty = True

    def build(self, ids, vectors) -> "VectorIndex":
        """Replace the whole content: exact below ``approximate_threshold`` vectors, IVF-Flat above."""
        ids, arr = self._check_raw(ids, vectors)
        transformed = transform_vectors(self.kind, arr)
        del arr
        if ids.size >= self.approximate_threshold and ids.size > 0:
            index = self._new_ivf(transformed)
            trained = int(ids.size)
        else:
            index = self._new_flat()
            trained = 0
        if ids.size:
            index.add_with_ids(transformed, ids)
        with self._lock.write():
            self._cpu = index
            self.mapped = False
            self._mapping = None
            self._ids = np.sort(ids)
            self.trained_size = trained
            self.created_at = _now()
            self._gpu_dirty = True
            self._gpu = None
        return self

    def add(self, ids, vectors, *, replace: bool = True) -> None:
        """Add exposures without a rebuild. Ids already held are replaced (``replace=True``) or
        rejected with ValueError."""
        ids, arr = self._check_raw(ids, vectors)
        if ids.size == 0:
            return
        transformed = transform_vectors(self.kind, arr)
        self.make_private()
        with self._lock.write():
            present = np.isin(ids, self._ids)
            if present.any():
                if not replace:
                    raise ValueError(f"{int(present.sum())} ids already in the index (e.g. {int(ids[present][0])})")
                self._cpu.remove_ids(ids[present])
            self._cpu.add_with_ids(transformed, ids)
            self._ids = np.union1d(self._ids, ids)
            self._gpu_dirty = True

    def remove(self, ids) -> int:
        """Remove exposures (ids not held are ignored); returns how many were removed."""
        ids = np.unique(_as_ids(np.atleast_1d(ids)))
        if not np.isin(ids, self._ids).any():
            return 0
        self.make_private()
        with self._lock.write():
            held = ids[np.isin(ids, self._ids)]
            if held.size == 0:
                return 0
            removed = int(self._cpu.remove_ids(held))
            self._ids = np.setdiff1d(self._ids, held, assume_unique=True)
            self._gpu_dirty = True
        if removed != held.size:
            raise IndexCorruptError(f"FAISS removed {removed} vectors for {held.size} held ids")
        return removed

    @property
    def should_rebuild(self) -> bool:
        """True when the index type no longer suits its size: an exact index past the threshold
        (searches get slow) or an IVF index that grew far past the size it was trained on."""
        n = len(self)
        if self.index_type == "flat":
            return n >= self.approximate_threshold * 2
        return n > OVERGROWN_FACTOR * max(self.trained_size, 1) or n < self.approximate_threshold // 4

    # -- search
    def _search_params(self, nprobe):
        if isinstance(self._cpu, faiss.IndexIVF):
            return faiss.SearchParametersIVF(nprobe=int(nprobe or self.nprobe))
        return None

    def _gpu_index(self):
        """GPU copy of the CPU index, refreshed after mutations; None when unusable."""
        if not self._use_gpu:
            return None
        with self._gpu_lock:
            if self._gpu is None or self._gpu_dirty:
                try:
                    self._gpu = None     # free the old copy's GPU memory before making the new one
                    self._gpu = to_gpu(self._cpu)
                    self._gpu_dirty = False
                except Exception as exc:   # keep serving from the CPU copy
                    log.warning("FAISS GPU copy failed (%s); searching on the CPU", exc)
                    self._use_gpu = False
                    self._gpu = None
            return self._gpu

    def _raw_search(self, transformed: np.ndarray, k: int, nprobe):
        k = int(min(k, len(self)))
        if k <= 0:
            n = transformed.shape[0]
            return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
        gpu = self._gpu_index()
        if gpu is not None:
            with self._gpu_lock:
                if isinstance(self._cpu, faiss.IndexIVF):
                    space = faiss.GpuParameterSpace() if hasattr(faiss, "GpuParameterSpace") else faiss.ParameterSpace()
                    space.set_index_parameter(gpu, "nprobe", int(nprobe or self.nprobe))
                # GPU k is limited (2048 on current builds).
                return gpu.search(transformed, min(k, 2048))
        params = self._search_params(nprobe)
        if params is None:
            return self._cpu.search(transformed, k)
        return self._cpu.search(transformed, k, params=params)

    def search(self, queries, k: int = 10, *, nprobe: int | None = None,
               exclude: Iterable[int] | None = None):
        """Nearest exposures for raw queries.

        ``queries``: one vector (dim,) or a batch (n, dim): histo-vectors for a "histo" index
        (transformed here), node weights for an "activation" index (used as given).
        Returns, for one vector, ``(ids, values)`` as 1-D arrays; for a batch, two lists of
        such arrays, one per query. Values are Hellinger distances (ascending) for "histo" and
        inner-product scores (descending) for "activation". FAISS's -1 padding is removed, so
        fewer than k results come back when the index holds fewer. ``exclude``: ids to drop
        from the results (e.g. the query exposure itself); k results are still returned when
        the index holds enough.
        """
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        single = np.ndim(queries) == 1
        raw = _as_matrix(queries, "queries")
        if raw.shape[1] != self.dim:
            raise ValueError(f"queries have {raw.shape[1]} dimensions, the {self.kind} index expects {self.dim}")
        q = transform_queries(self.kind, raw)
        excluded = np.unique(_as_ids(np.fromiter(exclude, dtype=np.int64))) if exclude is not None else None
        return self._search_transformed(q, int(k), nprobe, excluded, single)

    def _search_transformed(self, q, k, nprobe, excluded, single):
        extra = int(excluded.size) if excluded is not None else 0
        with self._lock.read():
            values, labels = self._raw_search(np.ascontiguousarray(q, dtype=np.float32), k + extra, nprobe)
        ids_out, values_out = [], []
        for row_ids, row_values in zip(labels, values):
            keep = row_ids >= 0
            if extra:
                keep &= ~np.isin(row_ids, excluded)
            row_ids, row_values = row_ids[keep][:k], row_values[keep][:k]
            if self.kind == "histo":
                row_values = hellinger_from_squared_l2(row_values)
            ids_out.append(row_ids.astype(np.int64))
            values_out.append(row_values.astype(np.float32))
        if single:
            return ids_out[0], values_out[0]
        return ids_out, values_out

    def stored_vector(self, exposure_id: int) -> np.ndarray:
        """The transformed vector held for an exposure (KeyError if not held)."""
        if exposure_id not in self:
            raise KeyError(f"exposure {exposure_id} is not in the {self.kind} index")
        with self._lock.read():
            return self._cpu.reconstruct(int(exposure_id))

    def search_like(self, exposure_id: int, k: int = 10, *, nprobe: int | None = None):
        """Exposures most like one already in the index, itself excluded: (ids, values)."""
        stored = self.stored_vector(exposure_id)[None, :]   # already transformed
        return self._search_transformed(stored, int(k), nprobe, np.array([int(exposure_id)], np.int64), True)

    # -- staleness
    def staleness(self, model_version: str, ids) -> str | None:
        """Why this index does not match what the DB says (None when it matches)."""
        if model_version != self.model_version:
            return f"index holds model version {self.model_version!r}, the DB expects {model_version!r}"
        expected = np.unique(_as_ids(np.asarray(ids).ravel() if np.size(ids) else np.zeros(0, np.int64)))
        if expected.size != self._ids.size:
            return f"index holds {self._ids.size} exposures, the DB has {expected.size}"
        if not np.array_equal(expected, self._ids):
            n_diff = int(np.setdiff1d(expected, self._ids, assume_unique=True).size)
            return f"{n_diff} exposures in the DB are missing from the index (and as many extra)"
        return None

    def is_stale(self, model_version: str, ids) -> bool:
        return self.staleness(model_version, ids) is not None

    # -- persistence
    def metadata(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "transform": self.transform,
            "model_version": self.model_version,
            "dim": self.dim,
            "stored_dim": self.stored_dim,
            "index_type": self.index_type,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "approximate_threshold": self.approximate_threshold,
            "trained_size": self.trained_size,
            "count": len(self),
            "ids_sha256": ids_checksum(self._ids),
            "faiss_version": faiss.__version__,
            "created_at": self.created_at,
        }

    def save(self, path) -> Path:
        """Write the index and its metadata to one file, atomically (a temporary file renamed
        over the old one: a process that mapped the old file keeps reading it unharmed).

        Layout: the serialized FAISS index (first, so it can be memory-mapped in place), the
        sorted ids (int64 LE), the JSON header, and a trailer (header length, header sha256,
        magic). The header records both sections' lengths and sha256, so a truncated or garbled
        file is detected before FAISS parses a byte of it.
        """
        path = Path(path)
        with self._lock.read():
            payload_ids = np.ascontiguousarray(self._ids, dtype="<i8").tobytes()
            payload_index = faiss.serialize_index(self._cpu)
            meta = self.metadata()
        index_bytes = memoryview(payload_index)
        meta.update({
            "ids_bytes": len(payload_ids),
            "index_bytes": index_bytes.nbytes,
            "ids_payload_sha256": hashlib.sha256(payload_ids).hexdigest(),
            "index_payload_sha256": hashlib.sha256(index_bytes).hexdigest(),
            "saved_at": _now(),
        })
        header = json.dumps(meta, sort_keys=True).encode("utf-8")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(index_bytes)
                fh.write(payload_ids)
                fh.write(header)
                fh.write(_TRAILER_STRUCT.pack(len(header), hashlib.sha256(header).digest(), FILE_MAGIC))
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        _fsync_dir(path.parent)
        return path

    @classmethod
    def load(cls, path, *, model_version: str | None = None, kind: str | None = None,
             expected_ids=None, use_gpu: bool | None = None, mmap: bool = False) -> "VectorIndex":
        """Read an index file. Raises FileNotFoundError when it does not exist,
        IndexCorruptError when it cannot be trusted byte for byte, IndexStaleError when it is
        intact but does not match the model version, kind or ids given.

        With ``mmap`` the vectors are not copied: FAISS maps the file's pages (shared with every
        other process mapping the same file) and the ids are a view of the mapped file; the
        file is still verified byte for byte first (read through the page cache, not copied)."""
        path = Path(path)
        meta, mapping, payload_ids, payload_index = _read_index_file(path)
        try:
            if mmap:
                index = faiss.read_index(str(path), MMAP_FLAGS)
            else:
                index = faiss.deserialize_index(np.frombuffer(payload_index, dtype=np.uint8))
        except Exception as exc:
            raise IndexCorruptError(f"{path}: FAISS could not read the index ({exc})") from exc
        # deserialize_index already returns the concrete type; a second downcast_index proxy
        # would leave the owning proxy to be collected and free the index under us.
        ids = np.frombuffer(payload_ids, dtype="<i8")
        if not mmap or ids.dtype != np.int64:
            ids = ids.astype(np.int64)
        if index.ntotal != ids.size or index.ntotal != meta["count"]:
            raise IndexCorruptError(f"{path}: header says {meta['count']} vectors, the ids section holds "
                                    f"{ids.size} and the FAISS index {index.ntotal}")
        if ids.size > 1 and not (np.diff(ids) > 0).all():
            raise IndexCorruptError(f"{path}: stored ids are not sorted and unique")
        if ids_checksum(ids) != meta["ids_sha256"]:
            raise IndexCorruptError(f"{path}: ids checksum does not match the header")
        obj = cls(meta["kind"], meta["model_version"], meta["dim"],
                  approximate_threshold=meta["approximate_threshold"], nprobe=meta["nprobe"],
                  use_gpu=use_gpu)
        if index.d != obj.stored_dim or index.metric_type != obj.metric:
            raise IndexCorruptError(f"{path}: FAISS index has d={index.d}, metric={index.metric_type}; "
                                    f"a {obj.kind} index needs d={obj.stored_dim}, metric={obj.metric}")
        if meta["transform"] != obj.transform:
            raise IndexStaleError(f"{path}: vectors were transformed with {meta['transform']!r}, "
                                  f"this code uses {obj.transform!r}")
        obj._cpu = index
        obj._ids = ids
        obj.mapped = bool(mmap)
        obj._mapping = mapping if mmap else None
        obj.trained_size = int(meta.get("trained_size") or 0)
        obj.created_at = meta["created_at"]
        obj.nlist_override = None
        if kind is not None and kind != obj.kind:
            raise IndexStaleError(f"{path}: holds a {obj.kind!r} index, expected {kind!r}")
        if model_version is not None and model_version != obj.model_version:
            raise IndexStaleError(f"{path}: built for model version {obj.model_version!r}, expected {model_version!r}")
        if expected_ids is not None:
            reason = obj.staleness(obj.model_version, expected_ids)
            if reason:
                raise IndexStaleError(f"{path}: {reason}")
        return obj


def _read_index_file(path: Path):
    """(header, mapping, ids section, FAISS section) of a verified index file; the sections
    are memoryviews of a read-only mmap of the file (nothing is copied)."""
    import mmap as _mmap

    with open(path, "rb") as fh:   # FileNotFoundError propagates: missing is not corrupt
        size = os.fstat(fh.fileno()).st_size
        if size < _TRAILER_STRUCT.size:
            raise IndexCorruptError(f"{path}: {size} bytes, too short to be an index file")
        mapping = _mmap.mmap(fh.fileno(), 0, access=_mmap.ACCESS_READ)
    data = memoryview(mapping)
    header_len, header_digest, magic = _TRAILER_STRUCT.unpack_from(data, size - _TRAILER_STRUCT.size)
    if magic != FILE_MAGIC:
        if bytes(data[:8]) == b"DESOMFX1":
            raise IndexStaleError(f"{path}: file format 1 (before memory mapping); it is rebuilt")
        raise IndexCorruptError(f"{path}: not a recommender index file (bad magic {magic!r})")
    header_start = size - _TRAILER_STRUCT.size - header_len
    if header_start < 0:
        raise IndexCorruptError(f"{path}: truncated header ({header_len} bytes announced)")
    header = bytes(data[header_start:header_start + header_len])
    if hashlib.sha256(header).digest() != header_digest:
        raise IndexCorruptError(f"{path}: header checksum mismatch (truncated or garbled file)")
    try:
        meta = json.loads(header.decode("utf-8"))
        ids_len, index_len = int(meta["ids_bytes"]), int(meta["index_bytes"])
        for key in ("format", "dim", "count", "approximate_threshold", "nprobe", "trained_size"):
            meta[key] = int(meta[key])
        for key in ("kind", "transform", "model_version", "ids_sha256", "ids_payload_sha256",
                    "index_payload_sha256", "created_at"):
            if not isinstance(meta[key], str):
                raise TypeError(f"{key} is not a string")
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise IndexCorruptError(f"{path}: unreadable header ({exc})") from exc
    if meta["format"] != FORMAT_VERSION:
        raise IndexStaleError(f"{path}: file format {meta['format']}, this code reads {FORMAT_VERSION}")
    if meta["kind"] not in KINDS:
        raise IndexCorruptError(f"{path}: unknown index kind {meta['kind']!r}")
    if index_len + ids_len != header_start:
        raise IndexCorruptError(f"{path}: {size} bytes, the header announces "
                                f"{index_len + ids_len + header_len + _TRAILER_STRUCT.size} (truncated or appended to)")
    payload_index = data[:index_len]
    payload_ids = data[index_len:index_len + ids_len]
    if hashlib.sha256(payload_ids).hexdigest() != meta["ids_payload_sha256"]:
        raise IndexCorruptError(f"{path}: ids section checksum mismatch (garbled file)")
    if hashlib.sha256(payload_index).hexdigest() != meta["index_payload_sha256"]:
        raise IndexCorruptError(f"{path}: FAISS section checksum mismatch (garbled file)")
    return meta, mapping, payload_ids, payload_index


class _file_lock:
    """An exclusive lock between processes (flock on `<path>.lock`), held while one process
    builds the index file the others are waiting for."""

    def __init__(self, path: Path):
        self.path = Path(f"{path}.lock")

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- the store

IdsLoader = Callable[[], "np.ndarray | Sequence[int]"]
VectorsLoader = Callable[[], "tuple[np.ndarray | Sequence[int], np.ndarray]"]


class IndexStore:
    """One loaded index per (model_version, kind) per process, kept in ``directory``.

    ``get`` loads lazily and rebuilds from the DB (through the caller's callbacks) when the file
    is missing, corrupt or stale. ``add``/``remove`` keep the loaded index (and, with
    ``autosave``, its file) in step with the DB without a rebuild. Another process that saves
    the same file is noticed on the next ``get`` (the file's size and mtime changed) and the
    file is reloaded and verified.
    """

    def __init__(self, directory, *, autosave: bool = True, dim: int = 625,
                 index_options: Mapping | None = None, mmap: bool = False, use_gpu: bool | None = None):
        self.directory = Path(directory)
        self.autosave = autosave
        self.mmap = bool(mmap)
        # Every index this store loads or builds searches on the GPU per use_gpu (see VectorIndex).
        self.use_gpu = use_gpu
        self.dim = dim
        self.index_options = dict(index_options or {})
        self._indexes: dict[tuple[str, str], VectorIndex] = {}
        self._signatures: dict[tuple[str, str], tuple | None] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._locks: dict[tuple[str, str], threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self.rebuilds = 0   # how many times a callback rebuilt an index (for logs and tests)

    def path_for(self, model_version: str, kind: str) -> Path:
        _check_kind(kind)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_version).strip("._") or "model"
        digest = hashlib.sha256(model_version.encode("utf-8")).hexdigest()[:8]
        return self.directory / f"{kind}-{safe}-{digest}.faiss"

    def _lock_for(self, key):
        with self._locks_guard:
            return self._locks.setdefault(key, threading.RLock())

    def _signature(self, path: Path):
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def is_dirty(self, model_version: str) -> bool:
        """Whether an index of this model version has changes not yet saved."""
        return any(key[0] == model_version for key in self._dirty)

    def loaded(self) -> list[tuple[str, str]]:
        return sorted(self._indexes)

    def peek(self, model_version: str, kind: str) -> VectorIndex | None:
        """The loaded index, if any, without touching disk or DB."""
        return self._indexes.get((model_version, kind))

    def get(self, model_version: str, kind: str, expected_ids_loader: IdsLoader,
            vectors_loader: VectorsLoader, *, verify: bool = False) -> VectorIndex:
        """The index for (model_version, kind), loaded or rebuilt as needed.

        ``expected_ids_loader()`` returns the ids the DB holds for this model version (asked
        when the index is first loaded, when the file changed on disk, or when ``verify``);
        ``vectors_loader()`` returns ``(ids, raw_vectors)`` and is called only to rebuild.
        """
        key = (model_version, kind)
        path = self.path_for(model_version, kind)
        with self._lock_for(key):
            index = self._indexes.get(key)
            if index is not None and not verify and self._signature(path) == self._signatures.get(key):
                if not index.should_rebuild:
                    return index
            expected = _as_ids(np.asarray(expected_ids_loader(), dtype=np.int64).ravel())
            previous = index
            signature = self._signature(path)   # taken before reading: a later write is seen next time
            if index is not None and key not in self._dirty and signature != self._signatures.get(key):
                index = None   # the file changed on disk (another process saved it): reload it
            if index is None:
                try:
                    index = VectorIndex.load(path, model_version=model_version, kind=kind,
                                             expected_ids=expected, mmap=self.mmap, use_gpu=self.use_gpu)
                except FileNotFoundError:
                    log.info("no %s index for model %s on disk; building it", kind, model_version)
                except IndexFileError as exc:
                    log.warning("%s index for model %s unusable: %s", kind, model_version, exc)
            if index is None and previous is not None and not previous.is_stale(model_version, expected):
                index = previous                    # the file went bad, ours is still right: rewrite it
                index.save(path)
                signature = self._signature(path)
                self._dirty.discard(key)
            if index is not None and not index.is_stale(model_version, expected) and not index.should_rebuild:
                self._indexes[key] = index
                if key not in self._dirty:
                    self._signatures[key] = signature
                return index
            return self._rebuild(key, path, vectors_loader, expected)

    def _rebuild(self, key, path, vectors_loader, expected=None):
        """Build from the database, one process at a time per file: processes that want the
        same index wait on a lock file, and those that waited load the file the first one
        wrote instead of building it again."""
        with _file_lock(path):
            if expected is not None:
                try:
                    ready = VectorIndex.load(path, model_version=key[0], kind=key[1], expected_ids=expected,
                                             mmap=self.mmap, use_gpu=self.use_gpu)
                except (FileNotFoundError, IndexFileError):
                    ready = None
                if ready is not None and not ready.should_rebuild:
                    self._indexes[key] = ready
                    self._signatures[key] = self._signature(path)
                    self._dirty.discard(key)
                    return ready
            return self._build_and_save(key, path, vectors_loader)

    def _remap(self, key, path, index):
        """After this process saved `index`, map the file it wrote instead of keeping a
        private copy (with mmap on)."""
        if not self.mmap:
            return index
        try:
            mapped = VectorIndex.load(path, model_version=key[0], kind=key[1], mmap=True, use_gpu=self.use_gpu)
        except (FileNotFoundError, IndexFileError) as exc:
            log.warning("could not map %s after saving it (%s); keeping the private copy", path, exc)
            return index
        self._indexes[key] = mapped
        return mapped

    def _build_and_save(self, key, path, vectors_loader):
        model_version, kind = key
        ids, vectors = vectors_loader()
        ids = _as_ids(np.asarray(ids, dtype=np.int64).ravel())
        vectors = np.asarray(vectors, dtype=np.float32).reshape(ids.size, -1) if ids.size else \
            np.zeros((0, self.dim), np.float32)
        options = {"use_gpu": self.use_gpu, **self.index_options}
        index = VectorIndex(kind, model_version, self.dim, **options).build(ids, vectors)
        index.save(path)
        self._indexes[key] = index
        self._signatures[key] = self._signature(path)
        self._dirty.discard(key)
        self.rebuilds += 1
        return self._remap(key, path, index)

    def _loaded_or_file(self, key) -> VectorIndex | None:
        index = self._indexes.get(key)
        if index is not None:
            return index
        path = self.path_for(*key)
        try:
            index = VectorIndex.load(path, model_version=key[0], kind=key[1], mmap=self.mmap, use_gpu=self.use_gpu)
        except FileNotFoundError:
            return None
        except IndexFileError as exc:
            log.warning("discarding unusable index file %s: %s", path, exc)
            return None
        self._indexes[key] = index
        self._signatures[key] = self._signature(path)
        return index

    def add(self, model_version: str, kind: str, ids, vectors) -> bool:
        """Add (or replace) exposures in the index if one is loaded or on disk; returns whether
        an index was updated. With no index yet, nothing is done: the first ``get`` builds it."""
        key = (model_version, kind)
        with self._lock_for(key):
            index = self._loaded_or_file(key)
            if index is None:
                return False
            index.add(ids, vectors, replace=True)
            self._after_mutation(key, index)
            return True

    def remove(self, model_version: str, kind: str, ids) -> int:
        """Remove exposures from the index if one is loaded or on disk; returns how many."""
        key = (model_version, kind)
        with self._lock_for(key):
            index = self._loaded_or_file(key)
            if index is None:
                return 0
            removed = index.remove(ids)
            if removed:
                self._after_mutation(key, index)
            return removed

    def remove_everywhere(self, ids) -> int:
        """Remove exposures from every loaded index (exposures deleted from the archive)."""
        return sum(self.remove(mv, kind, ids) for mv, kind in self.loaded())

    def _after_mutation(self, key, index):
        if self.autosave:
            index.save(self.path_for(*key))
            self._signatures[key] = self._signature(self.path_for(*key))
            self._dirty.discard(key)
            self._remap(key, self.path_for(*key), index)
        else:
            self._dirty.add(key)

    def flush(self) -> list[Path]:
        """Save every index changed since its last save."""
        saved = []
        for key in sorted(self._dirty):
            with self._lock_for(key):
                index = self._indexes.get(key)
                if index is not None and key in self._dirty:
                    path = index.save(self.path_for(*key))
                    self._signatures[key] = self._signature(path)
                    self._dirty.discard(key)
                    self._remap(key, path, index)
                    saved.append(path)
        return saved

    def evict(self, model_version: str | None = None, kind: str | None = None,
              *, delete_files: bool = False) -> None:
        """Forget loaded indexes (all, one model version, or one kind of it)."""
        for key in list(self._indexes):
            if (model_version is None or key[0] == model_version) and (kind is None or key[1] == kind):
                with self._lock_for(key):
                    self._indexes.pop(key, None)
                    self._signatures.pop(key, None)
                    self._dirty.discard(key)
                    if delete_files:
                        self.path_for(*key).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- node queries

def map_distances(map_shape: tuple[int, int], topology: str = "manhattan") -> np.ndarray:
    """(K, K) distances between nodes of a rows x cols map, node = row * cols + col."""
    rows, cols = _check_map_shape(map_shape)
    r, c = np.divmod(np.arange(rows * cols), cols)
    dr = np.abs(r[:, None] - r[None, :]).astype(np.float64)
    dc = np.abs(c[:, None] - c[None, :]).astype(np.float64)
    if topology == "manhattan":
        return dr + dc
    if topology == "euclidean":
        return np.sqrt(dr ** 2 + dc ** 2)
    raise ValueError(f"topology must be 'manhattan' or 'euclidean', got {topology!r}")


def _check_map_shape(map_shape) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in map_shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"map_shape must be (rows, cols), got {map_shape!r}") from exc
    if rows < 1 or cols < 1:
        raise ValueError(f"map_shape must be positive, got {map_shape!r}")
    return rows, cols


def node_query_vector(nodes_with_weights, n_nodes: int, *, map_shape=None, spread: float = 0.0,
                      topology: str = "manhattan") -> np.ndarray:
    """A weighted query over DESOM-1 nodes for an "activation" index, float32 (n_nodes,).

    ``nodes_with_weights``: a dict node -> weight, a sequence of (node, weight) pairs, a sequence
    of nodes (weight 1 each) or a dense vector of n_nodes weights. Negative weights mean "few
    sources there". With ``spread`` > 0 (needs ``map_shape``) each weight is spread to the
    node's grid neighbours with the SOM's Gaussian kernel exp(-d^2 / spread^2). The result is
    scaled so its absolute values sum to 1: a score is then the weighted mean share.
    """
    n_nodes = int(n_nodes)
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be positive, got {n_nodes}")
    weights = np.zeros(n_nodes, dtype=np.float64)
    if isinstance(nodes_with_weights, Mapping):
        items = list(nodes_with_weights.items())
    else:
        arr = np.asarray(nodes_with_weights)
        if arr.ndim == 1 and arr.size == n_nodes and np.issubdtype(arr.dtype, np.floating):
            items = list(enumerate(arr.astype(np.float64)))     # dense weights
        elif arr.ndim == 2 and arr.shape[1] == 2:
            items = [(node, w) for node, w in arr]               # (node, weight) pairs
        elif arr.ndim == 1 and (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
            items = [(node, 1.0) for node in arr]                # plain nodes
        else:
            raise ValueError("nodes_with_weights must be a dict node->weight, (node, weight) pairs, "
                             f"integer nodes or {n_nodes} float weights; got shape {arr.shape}, dtype {arr.dtype}")
    for node, w in items:
        try:
            node_i = int(node)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"node {node!r} is not an integer node index") from exc
        if node_i != node or not 0 <= node_i < n_nodes:
            raise ValueError(f"node {node!r} outside the map's {n_nodes} nodes")
        w = float(w)
        if not math.isfinite(w):
            raise ValueError(f"weight of node {node_i} is not finite ({w})")
        weights[node_i] += w
    if spread and spread > 0:
        if map_shape is None:
            raise ValueError("spread needs map_shape (rows, cols)")
        rows, cols = _check_map_shape(map_shape)
        if rows * cols != n_nodes:
            raise ValueError(f"map_shape {map_shape} has {rows * cols} nodes, n_nodes is {n_nodes}")
        kernel = np.exp(-(map_distances((rows, cols), topology) ** 2) / float(spread) ** 2)
        weights = kernel @ weights
    elif spread < 0:
        raise ValueError(f"spread must be >= 0, got {spread}")
    total = np.abs(weights).sum()
    if total == 0:
        raise ValueError("node query has no nonzero weight")
    return (weights / total).astype(np.float32)


def neighbourhood_query(bmu: int, map_shape, radius: float, *, topology: str = "manhattan") -> np.ndarray:
    """Query around one BMU (e.g. of an uploaded cutout): weight exp(-d^2 / radius^2) on every
    node at grid distance d, normalised to sum 1; radius 0 puts all the weight on the BMU."""
    rows, cols = _check_map_shape(map_shape)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    return node_query_vector({int(bmu): 1.0}, rows * cols, map_shape=(rows, cols), spread=float(radius),
                             topology=topology)
