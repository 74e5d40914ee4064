"""FAISS index core of the recommender: vector transforms, one persistent index per (model
version, kind), a per-process store of loaded indexes, and node queries over the DESOM-1 map.

This package needs numpy and faiss only (no Django), so benchmarks and batch jobs can use it.

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

One concern a module: ``arrays`` (checked vectors and ids), ``transforms``, ``kinds`` (what each
kind stores, searches and reports), ``locks``, ``gpu``, ``vector_index`` (``VectorIndex``),
``fileformat`` (the index file), ``store`` (``IndexStore``), ``nodes`` (node queries). Callers
import from the package: ``from recommender.indexes import IndexStore``.
"""
from .arrays import ids_checksum
from .fileformat import FILE_MAGIC, FORMAT_VERSION, MMAP_FLAGS, IndexCorruptError, IndexFileError, IndexStaleError
from .gpu import gpu_available, gpu_resources, gpu_status, parse_gpu_setting, to_gpu
from .kinds import (
    DEFAULT_APPROXIMATE_THRESHOLD,
    DEFAULT_APPROXIMATE_THRESHOLDS,
    DEFAULT_NPROBE,
    DEFAULT_NPROBES,
    KINDS,
    TRANSFORMS,
    transform_queries,
    transform_vectors,
)
from .nodes import map_distances, neighbourhood_query, node_query_vector
from .store import IdsLoader, IndexStore, VectorsLoader
from .transforms import empty_rows, hellinger_from_squared_l2, hellinger_transform, share_transform
from .vector_index import (
    DEFAULT_KMEANS_ITERATIONS,
    DEFAULT_MAX_NLIST,
    DEFAULT_MIN_NLIST,
    DEFAULT_NLIST_PER_SQRT_N,
    DEFAULT_TRAIN_POINTS_PER_LIST,
    OVERGROWN_FACTOR,
    VectorIndex,
    choose_nlist,
)

__all__ = [
    "DEFAULT_APPROXIMATE_THRESHOLD", "DEFAULT_APPROXIMATE_THRESHOLDS", "DEFAULT_KMEANS_ITERATIONS",
    "DEFAULT_MAX_NLIST", "DEFAULT_MIN_NLIST", "DEFAULT_NLIST_PER_SQRT_N", "DEFAULT_NPROBE", "DEFAULT_NPROBES",
    "DEFAULT_TRAIN_POINTS_PER_LIST", "FILE_MAGIC", "FORMAT_VERSION", "KINDS", "MMAP_FLAGS", "OVERGROWN_FACTOR",
    "TRANSFORMS", "IdsLoader", "IndexCorruptError", "IndexFileError", "IndexStaleError", "IndexStore",
    "VectorIndex", "VectorsLoader", "choose_nlist", "empty_rows", "gpu_available", "gpu_resources", "gpu_status",
    "hellinger_from_squared_l2", "hellinger_transform", "ids_checksum", "map_distances", "neighbourhood_query",
    "node_query_vector", "parse_gpu_setting", "share_transform", "to_gpu", "transform_queries",
    "transform_vectors",
]
