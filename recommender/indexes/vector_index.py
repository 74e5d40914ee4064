"""One FAISS index of transformed vectors keyed by int64 exposure ids: exact search (IndexFlat)
on small archives, IVF-Flat past its kind's ``approximate_threshold`` (chosen over HNSW because
exposures are deleted and IVF supports ``remove_ids``; see benchmarks/bench_faiss.py for the
measurements behind the defaults)."""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import faiss
import numpy as np

from .arrays import as_ids, as_matrix, ids_checksum
from .fileformat import (FORMAT_VERSION, MMAP_FLAGS, IndexCorruptError, IndexStaleError, now, read_index_file,
                         write_index_file)
from .gpu import gpu_available, to_gpu, warn_no_gpu
from .kinds import index_kind
from .locks import ReadWriteLock

log = logging.getLogger(__name__)

# IVF construction, chosen by benchmarks/bench_faiss.py (see benchmarks/results/faiss.json).
DEFAULT_NLIST_PER_SQRT_N = 1.0      # nlist = round(factor * sqrt(n)), clamped below
DEFAULT_MIN_NLIST = 64
DEFAULT_MAX_NLIST = 4096
DEFAULT_TRAIN_POINTS_PER_LIST = 40  # k-means sample size = nlist * this (capped at n)
DEFAULT_KMEANS_ITERATIONS = 10
# An IVF index trained on n vectors keeps its lists balanced while it holds up to this many
# times n; beyond that ``should_rebuild`` says so (the store then rebuilds from the DB).
OVERGROWN_FACTOR = 4.0
# Rows a build transforms and adds at a time: 10 000 x 625 float32 is 25 MB, the transform's
# float64 temporary twice that; the index itself is the build's only large allocation.
DEFAULT_BUILD_CHUNK = 10_000


def choose_nlist(n: int) -> int:
    """Number of IVF lists for an index of n vectors (the benchmarked rule)."""
    nlist = int(round(DEFAULT_NLIST_PER_SQRT_N * math.sqrt(max(n, 1))))
    return int(min(max(nlist, DEFAULT_MIN_NLIST), DEFAULT_MAX_NLIST, max(n // 39, 1)))



@dataclass(frozen=True)
class VectorChunks:
    """Raw vectors to build an index from, read a chunk at a time (from the database, say).

    ``read()`` yields ``(ids, raw vectors)`` chunks in one fixed order and may be called again;
    ``count`` is how many rows it yields. ``rows_at(positions)`` returns the rows at those
    sorted positions of that order (an IVF build's training sample); without it the sample is
    picked out of one extra pass of ``read()``.
    """

    count: int
    read: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
    rows_at: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None

    @classmethod
    def from_arrays(cls, ids, vectors, chunk_size: int | None = None) -> "VectorChunks":
        """Vectors already in memory, read as views of ``chunk_size`` rows."""
        ids = as_ids(np.asarray(ids).ravel() if np.size(ids) else np.zeros(0, np.int64))
        arr = np.asarray(vectors)
        if arr.ndim == 1 and arr.size:
            arr = arr[None, :]
        if ids.size == 0:
            return cls(0, lambda: iter(()))
        if arr.ndim != 2:
            raise ValueError(f"vectors must be a 1-D vector or a 2-D (n, dim) array, got shape {arr.shape}")
        if arr.shape[0] != ids.size:
            raise ValueError(f"{ids.size} ids for {arr.shape[0]} vectors")
        step = int(chunk_size or DEFAULT_BUILD_CHUNK)
        return cls(int(ids.size), lambda: ((ids[i:i + step], arr[i:i + step]) for i in range(0, ids.size, step)),
                   lambda positions: (ids[positions], arr[positions]))

    def rows(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows at these sorted positions of ``read()``'s order."""
        if self.rows_at is not None:
            return self.rows_at(positions)
        wanted, ids, parts, start = np.asarray(positions, dtype=np.int64), [], [], 0
        for chunk_ids, raw in self.read():
            stop = start + len(chunk_ids)
            inside = wanted[(wanted >= start) & (wanted < stop)] - start
            if inside.size:
                ids.append(np.asarray(chunk_ids)[inside])
                parts.append(np.asarray(raw)[inside])
            start = stop
        if not parts:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return np.concatenate(ids), np.concatenate(parts)


class VectorIndex:
    """One FAISS index of transformed vectors keyed by int64 exposure ids.

    ``build``, ``add`` and ``remove`` take raw vectors (histo-vectors or activations); the index
    applies its kind's transform (``spec``, the kind's declaration in ``kinds.py``). Searches may run from many threads, concurrently with each
    other; mutations wait for running searches and block new ones while they run.
    """

    def __init__(self, kind: str, model_version: str, dim: int = 625, *,
                 approximate_threshold: int | None = None,
                 nprobe: int | None = None, nlist: int | None = None,
                 use_gpu: bool | None = None):
        self.spec = index_kind(kind)
        if not isinstance(model_version, str) or not model_version:
            raise ValueError("model_version must be a nonempty string")
        if int(dim) < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.kind = kind
        self.model_version = model_version
        self.dim = int(dim)
        self.approximate_threshold = int(self.spec.approximate_threshold if approximate_threshold is None
                                         else approximate_threshold)
        self.nprobe = int(self.spec.nprobe if nprobe is None else nprobe)
        if self.nprobe < 1 or self.approximate_threshold < 0:
            raise ValueError(f"nprobe must be >= 1 and approximate_threshold >= 0 "
                             f"(got {self.nprobe}, {self.approximate_threshold})")
        self.nlist_override = nlist
        self.created_at = now()
        self.trained_size = 0        # n at the last build of an IVF index
        self._ids = np.zeros(0, dtype=np.int64)   # sorted
        self._cpu = self._new_flat()
        self._lock = ReadWriteLock()
        # use_gpu None: the GPU when FAISS has one; True: asked for (CPU, with a warning, when
        # FAISS has none); False: the CPU. Searches then run on a GPU copy of the CPU index,
        # refreshed after each change; the CPU index stays the one saved and mutated.
        if use_gpu and not gpu_available():
            warn_no_gpu()
        self._use_gpu = gpu_available() if use_gpu is None else bool(use_gpu and gpu_available())
        self._gpu = None
        self._gpu_dirty = True
        self._gpu_lock = threading.Lock()
        self.mapped = False          # True while the vectors are pages of a memory-mapped file
        self._mapping = None         # the mmap behind _ids when mapped

    # -- properties
    @property
    def transform(self) -> str:
        return self.spec.transform

    @property
    def stored_dim(self) -> int:
        return self.dim + self.spec.extra_dims

    @property
    def metric(self) -> int:
        return self.spec.metric

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
        arr = as_ids(np.atleast_1d(ids))
        return np.isin(arr, self._ids)

    def __repr__(self):
        return (f"VectorIndex(kind={self.kind!r}, model_version={self.model_version!r}, "
                f"n={len(self)}, type={self.index_type}, nlist={self.nlist}, nprobe={self.nprobe})")

    # -- construction
    def _new_flat(self):
        return faiss.IndexIDMap2(faiss.IndexFlat(self.stored_dim, self.metric))

    def _new_ivf(self, source: "VectorChunks"):
        """An IVF-Flat trained (k-means) on a sample of ``source``: nlist * DEFAULT_TRAIN_POINTS_PER_LIST
        rows drawn with a fixed seed, all that training uses, so the rest is never held at once."""
        n = source.count
        nlist = int(self.nlist_override) if self.nlist_override else choose_nlist(n)
        quantizer = faiss.IndexFlat(self.stored_dim, self.metric)
        ivf = faiss.IndexIVFFlat(quantizer, self.stored_dim, nlist, self.metric)
        ivf.cp.niter = DEFAULT_KMEANS_ITERATIONS
        ivf.cp.seed = 1234
        n_train = min(n, nlist * DEFAULT_TRAIN_POINTS_PER_LIST)
        ivf.cp.max_points_per_centroid = DEFAULT_TRAIN_POINTS_PER_LIST
        rng = np.random.default_rng(0)
        positions = np.arange(n) if n_train >= n else np.sort(rng.choice(n, n_train, replace=False))
        _, raw = source.rows(positions)
        ivf.train(self.spec.transform_vectors(self._check_vectors(raw)))
        # A hashtable direct map makes remove_ids and reconstruct cost O(1) per id.
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        return ivf

    def _check_vectors(self, vectors) -> np.ndarray:
        arr = as_matrix(vectors)
        if arr.shape[1] != self.dim:
            raise ValueError(f"vectors have {arr.shape[1]} dimensions, the {self.kind} index expects {self.dim}")
        return arr

    def _check_raw(self, ids, vectors):
        ids = as_ids(ids)
        arr = self._check_vectors(vectors)
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
        """Replace the whole content: exact below ``approximate_threshold`` vectors, IVF-Flat above.
        The vectors are transformed and added a chunk at a time (``build_from_chunks``)."""
        return self.build_from_chunks(VectorChunks.from_arrays(ids, vectors))

    def build_from_chunks(self, source: "VectorChunks") -> "VectorIndex":
        """Replace the whole content with the raw vectors ``source`` gives a chunk at a time:
        an IVF index is trained on a sample (``source.rows``), then every chunk is transformed
        and added, so the build holds the index, one chunk and the training sample, never all
        the raw or transformed vectors at once. Gives the index ``build`` gives for the same
        vectors in the same order, byte for byte."""
        if source.count >= self.approximate_threshold and source.count > 0:
            index = self._new_ivf(source)
        else:
            index = self._new_flat()
        held, start = [], 0
        for chunk_ids, raw in source.read():
            try:
                chunk_ids, arr = self._check_raw(chunk_ids, raw)
                transformed = self.spec.transform_vectors(arr)
            except ValueError as exc:
                raise ValueError(f"rows {start} to {start + len(chunk_ids) - 1}: {exc}" if start else str(exc)) \
                    from None
            if chunk_ids.size:
                index.add_with_ids(transformed, chunk_ids)
            held.append(chunk_ids)
            start += chunk_ids.size
            del arr, transformed
        ids = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
        if ids.size > 1 and not (np.diff(ids) > 0).all():
            raise ValueError("ids contain duplicates")
        if ids.size != source.count:
            log.warning("a build was told of %d vectors and given %d (the database changed meanwhile?)",
                        source.count, ids.size)
        trained = int(ids.size) if isinstance(index, faiss.IndexIVF) else 0
        with self._lock.write():
            self._cpu = index
            self.mapped = False
            self._mapping = None
            self._ids = ids
            self.trained_size = trained
            self.created_at = now()
            self._gpu_dirty = True
            self._gpu = None
        return self

    def add(self, ids, vectors, *, replace: bool = True) -> None:
        """Add exposures without a rebuild. Ids already held are replaced (``replace=True``) or
        rejected with ValueError."""
        ids, arr = self._check_raw(ids, vectors)
        if ids.size == 0:
            return
        transformed = self.spec.transform_vectors(arr)
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
        ids = np.unique(as_ids(np.atleast_1d(ids)))
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

        ``queries``: one vector (dim,) or a batch (n, dim), turned into the searched form by the
        kind's ``transform_queries`` (histo-vectors for "histo", node weights for "activation").
        Returns, for one vector, ``(ids, values)`` as 1-D arrays; for a batch, two lists of
        such arrays, one per query. Values are the kind's ``postprocess`` of FAISS's: distances
        ascending for an L2 kind (Hellinger distances for "histo"), scores descending for an
        inner-product kind ("activation"). FAISS's -1 padding is removed, so
        fewer than k results come back when the index holds fewer. ``exclude``: ids to drop
        from the results (e.g. the query exposure itself); k results are still returned when
        the index holds enough.
        """
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        single = np.ndim(queries) == 1
        raw = as_matrix(queries, "queries")
        if raw.shape[1] != self.dim:
            raise ValueError(f"queries have {raw.shape[1]} dimensions, the {self.kind} index expects {self.dim}")
        q = self.spec.transform_queries(raw)
        excluded = np.unique(as_ids(np.fromiter(exclude, dtype=np.int64))) if exclude is not None else None
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
            if self.spec.postprocess is not None:
                row_values = self.spec.postprocess(row_values)
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
        expected = np.unique(as_ids(np.asarray(ids).ravel() if np.size(ids) else np.zeros(0, np.int64)))
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
        """Write the index and its metadata to one file, atomically (see ``fileformat``).
        Searches go on meanwhile; changes wait until the file is written."""
        with self._lock.read():
            payload_ids = np.ascontiguousarray(self._ids, dtype="<i8").tobytes()
            return write_index_file(path, self._cpu, payload_ids, self.metadata())

    @classmethod
    def load(cls, path, *, model_version: str | None = None, kind: str | None = None,
             expected_ids=None, use_gpu: bool | None = None, mmap: bool = False,
             check_payload: bool = True) -> "VectorIndex":
        """Read an index file. Raises FileNotFoundError when it does not exist,
        IndexCorruptError when it cannot be trusted byte for byte, IndexStaleError when it is
        intact but does not match the model version, kind or ids given.

        With ``mmap`` the vectors are not copied: FAISS maps the file's pages (shared with every
        other process mapping the same file) and the ids are a view of the mapped file; the
        file is still verified byte for byte first (read through the page cache, not copied),
        unless ``check_payload`` is False (a file this process has just written: see
        ``fileformat.read_index_file``)."""
        path = Path(path)
        meta, mapping, payload_ids, payload_index = read_index_file(path, check_payload=check_payload)
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


