"""FAISS index core of the recommender: vector transforms, one persistent index per (model
version, kind), a per-process store of loaded indexes, and node queries over the DESOM-1 map.

This package needs numpy and faiss only (no Django), so benchmarks and batch jobs can use it.

Index kinds (what an index stores, how it searches, what its values mean) are declared once
each in ``kinds.py``: "histo" (find exposures like this one: Hellinger distance between
histo-vectors), "activation" (find exposures whose sources crowd into these DESOM-1 nodes) and
"desom2" (find exposures like this one in DESOM-2's latent space, keyed by the DESOM-2 version);
``register_index_kind`` adds one.

Index files are memory-mapped by default (``IndexStore(mmap=True)``): N server processes
searching one million exposures share one copy of the vectors through the page cache instead
of holding N private copies; a process that must change a mapped index first takes a private
copy of it (``VectorIndex.make_private``), and a newer file written by another process (ingest,
rebuild) is noticed on the next ``IndexStore.get`` and mapped in place of the old one.

Small archives use exact search (IndexFlat); past ``approximate_threshold`` vectors the index is
an IVF-Flat (chosen over HNSW because exposures are deleted and IVF supports ``remove_ids``; see
benchmarks/bench_faiss.py for the measurements behind the defaults).

One concern a module: ``arrays`` (checked vectors and ids), ``transforms``, ``kinds`` (the index
kinds and their registry), ``locks``, ``gpu``, ``vector_index`` (``VectorIndex``),
``fileformat`` (the index file), ``store`` (``IndexStore``), ``nodes`` (node queries). Callers
import from the package: ``from recommender.indexes import IndexStore``.
"""
from .fileformat import IndexCorruptError, IndexFileError, IndexStaleError
from .gpu import gpu_available, gpu_status, parse_gpu_setting
from .kinds import (
    ACTIVATION,
    DEFAULT_APPROXIMATE_THRESHOLDS,
    DEFAULT_NPROBES,
    DESOM2,
    HISTO,
    IndexKind,
    UnknownIndexKind,
    index_kind,
    index_kind_names,
    index_kinds,
    register_index_kind,
)
from .nodes import map_distances, neighbourhood_query, node_query_vector
from .store import IndexStore
from .transforms import empty_rows, hellinger_transform, share_transform
from .vector_index import (
    DEFAULT_BUILD_CHUNK,
    DEFAULT_KMEANS_ITERATIONS,
    DEFAULT_MAX_NLIST,
    DEFAULT_MIN_NLIST,
    DEFAULT_NLIST_PER_SQRT_N,
    DEFAULT_TRAIN_POINTS_PER_LIST,
    VectorChunks,
    VectorIndex,
    choose_nlist,
)

__all__ = [
    "ACTIVATION", "DEFAULT_APPROXIMATE_THRESHOLDS", "DEFAULT_BUILD_CHUNK", "DEFAULT_KMEANS_ITERATIONS",
    "DEFAULT_MAX_NLIST", "DEFAULT_MIN_NLIST", "DEFAULT_NLIST_PER_SQRT_N", "DEFAULT_NPROBES",
    "DEFAULT_TRAIN_POINTS_PER_LIST", "DESOM2", "HISTO", "IndexCorruptError", "IndexFileError", "IndexKind", "IndexStaleError",
    "IndexStore", "UnknownIndexKind", "VectorChunks", "VectorIndex", "choose_nlist", "empty_rows", "gpu_available",
    "gpu_status", "hellinger_transform", "index_kind", "index_kind_names", "index_kinds", "map_distances",
    "neighbourhood_query", "node_query_vector", "parse_gpu_setting", "register_index_kind", "share_transform",
]
