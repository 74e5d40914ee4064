"""The index kinds: everything that differs between two kinds of index, declared once per kind.

An ``IndexKind`` says what an index of that kind stores (the transform of the raw vectors and
its extra dimensions), how it searches (the transform of a query, the FAISS metric), what a
result's value means (the post-processing of FAISS's values), its defaults (where exact search
gives way to IVF, how many lists a search probes), and which field of the archive's
``ExposureVector`` rows feeds it. ``VectorIndex``, the index file, the recommender's services,
``manage.py build_index`` and the API read these declarations; none of them names a kind.

A new kind is one ``register_index_kind(IndexKind(...))`` call, here or in any module imported
before the first search (see docs/ARCHITECTURE.md, "Adding an index kind").

The three kinds of the archive, all keyed by int64 exposure ids:

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

``"desom2"``
    "Find exposures like this one" as DESOM-2 sees them: each exposure's latent code under the
    active DESOM-2 (its histo-vector and source statistics through DESOM-2's encoder), compared
    by Euclidean distance. Its rows come from the DESOM-2's cell assignments, so the index is
    keyed by the DESOM-2 version (``model="desom2"``). On the science study's held-out
    exposures it finds the same kind of exposure far more often than the histo-vectors do
    (benchmarks/README.md, "Science": precision@10 0.915 against 0.795).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import faiss
import numpy as np

from desom.errors import UserError

from .arrays import as_matrix
from .transforms import finite_transform, hellinger_from_squared_l2, hellinger_transform, l2_from_squared, share_transform

Transform = Callable[[np.ndarray], np.ndarray]
METRICS = {faiss.METRIC_L2: "L2 (nearest first)", faiss.METRIC_INNER_PRODUCT: "inner product (highest first)"}
MODELS = ("desom1", "desom2")     # whose vectors an index holds (IndexKind.model)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")   # it names files and appears in URLs


class UnknownIndexKind(UserError):
    """An index kind that nobody registered; the message lists the registered ones."""


@dataclass(frozen=True)
class IndexKind:
    """One kind of index, declared once.

    ``transform_vectors`` maps raw vectors (a checked float32 (n, dim) matrix) to the stored
    ones (n, dim + extra_dims), float32, row by row (a row's result depends on that row alone:
    builds transform a chunk at a time); ``transform_queries`` maps raw queries (n, dim) to the
    searched ones. ``postprocess`` turns FAISS's values (squared L2 distances
    or inner products) into the values a search reports (None: as FAISS gives them).
    ``transform`` names the stored transform and is written in every index file: a file whose
    name differs is stale and rebuilt, so rename it when the transform changes.
    ``model``: whose rows feed the index, and so which model version keys it: "desom1" (the
    ``archive.models.ExposureVector`` rows of the active DESOM-1) or "desom2" (the
    ``archive.models.CellAssignment`` rows of the active DESOM-2). ``vector_fields``: the fields
    of those rows that feed the index, the first one that is not null for a row. ``score`` says what a result's value is (shown with
    each match); ``description`` what a search of this kind answers (API docs, commands).
    """

    name: str
    transform: str
    transform_vectors: Transform
    transform_queries: Transform
    metric: int
    score: str
    description: str
    extra_dims: int = 0
    postprocess: Transform | None = None
    approximate_threshold: int = 50_000
    nprobe: int = 8
    vector_fields: tuple[str, ...] = ("histo",)
    model: str = "desom1"

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"an index kind's name is 1-32 lower-case letters, digits or _, not {self.name!r}")
        if self.metric not in METRICS:
            raise ValueError(f"index kind {self.name!r}: metric must be faiss.METRIC_L2 or METRIC_INNER_PRODUCT")
        if self.extra_dims < 0 or self.approximate_threshold < 0 or self.nprobe < 1:
            raise ValueError(f"index kind {self.name!r}: extra_dims and approximate_threshold must be >= 0, "
                             "nprobe >= 1")
        if not self.vector_fields or not all(isinstance(f, str) and f for f in self.vector_fields):
            raise ValueError(f"index kind {self.name!r}: vector_fields names at least one field of its rows")
        if self.model not in MODELS:
            raise ValueError(f"index kind {self.name!r}: model must be one of {MODELS}, not {self.model!r}")


_REGISTRY: dict[str, IndexKind] = {}


def register_index_kind(kind: IndexKind) -> IndexKind:
    """Make a kind known to every index, store, service and command; returns it."""
    if not isinstance(kind, IndexKind):
        raise TypeError(f"register an IndexKind, not {type(kind).__name__}")
    if kind.name in _REGISTRY:
        raise ValueError(f"index kind {kind.name!r} is already registered")
    _REGISTRY[kind.name] = kind
    return kind


def index_kind(name: str) -> IndexKind:
    """The registered kind of this name (UnknownIndexKind, a UserError, for any other)."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownIndexKind(f"index kind must be one of {index_kind_names()}, not {name!r}") from None


def index_kinds() -> tuple[IndexKind, ...]:
    """Every registered kind, in the order of registration."""
    return tuple(_REGISTRY.values())


def index_kind_names() -> list[str]:
    return list(_REGISTRY)


def _node_weights(queries) -> np.ndarray:
    # Node weights are used as given: any real weights, negative for "few sources there".
    return as_matrix(queries, "activation queries")


HISTO = register_index_kind(IndexKind(
    name="histo",
    transform="hellinger+empty",
    transform_vectors=hellinger_transform,
    transform_queries=hellinger_transform,
    metric=faiss.METRIC_L2,
    extra_dims=1,                          # the "no sources" coordinate
    postprocess=hellinger_from_squared_l2,
    score="Hellinger distance between histo-vectors",
    description="exposures whose sources fall on the DESOM-1 map in the same proportions "
                "(Hellinger distance between histo-vectors, nearest first)",
    # Defaults chosen by benchmarks/bench_faiss.py (see benchmarks/results/faiss.json).
    approximate_threshold=50_000,
    nprobe=8,
    vector_fields=("histo",),
))

ACTIVATION = register_index_kind(IndexKind(
    name="activation",
    transform="l1-share",
    transform_vectors=share_transform,
    transform_queries=_node_weights,
    metric=faiss.METRIC_INNER_PRODUCT,
    score="inner product of prototype activations",
    description="exposures whose sources activate the same DESOM-1 prototypes "
                "(inner product of mean prototype activations, highest first)",
    # Inner-product search of node queries is much harder for IVF (recall about 0.87 at nprobe
    # 16 on 100k synthetic exposures against 0.97 for histo L2 at nprobe 8), so this kind stays
    # exact longer and probes more lists once approximate (benchmarks/bench_faiss.py).
    approximate_threshold=200_000,
    nprobe=32,
    # An exposure stored without activations is searched by its histo-vector.
    vector_fields=("activations", "histo"),
))

DESOM2 = register_index_kind(IndexKind(
    name="desom2",
    transform="latent",
    transform_vectors=finite_transform,
    transform_queries=finite_transform,
    metric=faiss.METRIC_L2,
    postprocess=l2_from_squared,
    score="distance in DESOM-2's latent space",
    description="exposures that DESOM-2 sees alike: its latent code of their histo-vectors and source "
                "statistics (Euclidean distance, nearest first; needs an active DESOM-2 and assigned cells)",
    # Exact search of 100-number codes takes about 100 ms at a million exposures; an IVF at
    # nprobe 32 about 2.5 ms with recall@10 0.98-1.00 on archives drawn around the science
    # survey's codes (benchmarks/bench_desom2_index.py; nprobe 8 fell to 0.88 where codes overlap).
    approximate_threshold=50_000,
    nprobe=32,
    vector_fields=("latent",),
    model="desom2",
))

# The built-in kinds' defaults by name (benchmarks/bench_faiss.py records them).
DEFAULT_APPROXIMATE_THRESHOLDS = {k.name: k.approximate_threshold for k in (HISTO, ACTIVATION, DESOM2)}
DEFAULT_NPROBES = {k.name: k.nprobe for k in (HISTO, ACTIVATION, DESOM2)}
