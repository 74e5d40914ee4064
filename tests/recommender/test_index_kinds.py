"""The index-kind registry (recommender/indexes/kinds.py): a kind declared once is built, saved,
loaded and searched by the store, read from the database by the services, built by
`manage.py build_index` and accepted by the API, with no other module touched.

The third kind here, cosine similarity over histo-vectors, lives in this file only: registering
it is all it takes (the registry is copied per test, so it leaves with the test)."""
import faiss
import numpy as np
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from archive.models import ModelVersion
from desom.errors import UserError
from recommender import services
from recommender.indexes import (
    IndexKind,
    IndexStore,
    UnknownIndexKind,
    VectorIndex,
    index_kind,
    index_kind_names,
    kinds,
    register_index_kind,
)
from tests import factories

DIM = 625


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (an all-zero row stays zero): inner product = cosine."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0).astype(np.float32)


def cosine_kind(**overrides) -> IndexKind:
    return IndexKind(**{
        "name": "cosine_histo", "transform": "l2-unit", "transform_vectors": unit_rows,
        "transform_queries": unit_rows, "metric": faiss.METRIC_INNER_PRODUCT,
        "score": "cosine similarity of histo-vectors",
        "description": "exposures whose histo-vectors point the same way (cosine, highest first)",
        "approximate_threshold": 1_000, "nprobe": 4, "vector_fields": ("histo",), **overrides})


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry for one test: what the test registers leaves with it."""
    monkeypatch.setattr(kinds, "_REGISTRY", dict(kinds._REGISTRY))
    return kinds._REGISTRY


@pytest.fixture
def cosine(registry):
    return register_index_kind(cosine_kind())


def counts(n, seed=0, dim=DIM):
    rng = np.random.default_rng(seed)
    profiles = rng.dirichlet(np.full(dim, 0.2), size=8)
    p = profiles[rng.integers(8, size=n)] * rng.lognormal(0, 0.4, size=(n, dim))
    return rng.poisson(p / p.sum(1, keepdims=True) * rng.lognormal(np.log(500), 0.5, size=(n, 1))).astype(np.float32)


def brute_force_cosine(base, queries, k):
    similarity = unit_rows(queries.astype(np.float64)) @ unit_rows(base.astype(np.float64)).T
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(similarity, order, 1)


@pytest.mark.parametrize("n,index_type", [(300, "flat"), (3_000, "ivf_flat")])
def test_a_registered_kind_is_built_saved_loaded_and_searched_by_the_store(tmp_path, cosine, n, index_type):
    base, queries = counts(n, seed=1), counts(5, seed=2)
    ids = np.arange(n, dtype=np.int64) * 7 + 3        # not positions: the ids must come back
    loads = []

    def vectors():
        loads.append(1)
        return ids, base

    store = IndexStore(tmp_path, dim=DIM)
    index = store.get("v1", "cosine_histo", lambda: ids, vectors)
    assert loads == [1] and index.index_type == index_type and index.stored_dim == DIM
    path = store.path_for("v1", "cosine_histo")
    assert path.name.startswith("cosine_histo-") and path.exists()

    # another process finds the file and maps it: no rebuild, the kind's transform is recorded
    mapped = IndexStore(tmp_path, dim=DIM, mmap=True).get("v1", "cosine_histo", lambda: ids, vectors)
    assert loads == [1] and mapped.mapped and mapped.metadata()["transform"] == "l2-unit"

    _, want_sim = brute_force_cosine(base, queries, 10)
    got_ids, got_sim = mapped.search(queries, k=10, nprobe=mapped.nlist)   # every list: exact
    for row, query in enumerate(queries):
        # the true 10 best similarities, each reported for an exposure that truly has it (near
        # ties may swap places between float32 and float64)
        np.testing.assert_allclose(got_sim[row], want_sim[row], atol=1e-5)
        truth = brute_force_cosine(base[(got_ids[row] - 3) // 7], query[None], 10)[1][0]
        np.testing.assert_allclose(np.sort(got_sim[row]), np.sort(truth), atol=1e-5)
        assert (np.diff(got_sim[row]) <= 1e-6).all()      # inner product: highest first

    # a change of the kind's transform makes the old files stale: they are rebuilt, not trusted
    kinds._REGISTRY.pop("cosine_histo")
    register_index_kind(cosine_kind(transform="l2-unit-v2"))
    again = IndexStore(tmp_path, dim=DIM).get("v1", "cosine_histo", lambda: ids, vectors)
    assert loads == [1, 1] and again.metadata()["transform"] == "l2-unit-v2"


def test_the_registry_refuses_what_it_cannot_serve(registry):
    register_index_kind(cosine_kind())
    with pytest.raises(ValueError, match="already registered"):
        register_index_kind(cosine_kind())
    with pytest.raises(ValueError, match="lower-case"):
        cosine_kind(name="Cosine-Histo")
    with pytest.raises(ValueError, match="metric"):
        cosine_kind(metric=faiss.METRIC_L1)
    with pytest.raises(ValueError, match="vector_fields"):
        cosine_kind(vector_fields=())
    with pytest.raises(UnknownIndexKind, match="cosine_histo") as caught:
        index_kind("colour")
    assert isinstance(caught.value, UserError)
    with pytest.raises(ValueError, match="colour"):
        VectorIndex("colour", "v")
    with pytest.raises(ValueError, match="model must be one of"):
        cosine_kind(model="desom3")
    assert index_kind_names() == ["histo", "activation", "desom2", "cosine_histo"]


def test_a_kind_outside_the_registry_leaves_with_its_test():
    # the tests above registered cosine_histo in their own copies of the registry
    assert index_kind_names() == ["histo", "activation", "desom2"]


@pytest.fixture
def archive_rows(db, settings, tmp_path):
    """An active 5x5 DESOM-1 and 40 public exposures with histo-vectors: rows, no model; the
    index files in this test's own data directory."""
    settings.ARCHIVE_DATA_DIR = tmp_path / "data"
    desom1 = factories.model_version(ModelVersion.DESOM1, rows=5, cols=5)
    histos = counts(40, seed=3, dim=25)
    exposures = [factories.exposure() for _ in histos]
    for row, histo in zip(exposures, histos):
        factories.vector(row, desom1, histo)
    services.reset_store()
    yield desom1, exposures, histos
    services.reset_store()


def test_services_command_and_api_serve_a_registered_kind(archive_rows, cosine):
    desom1, exposures, histos = archive_rows
    assert "cosine_histo" in services.index_readiness()["missing"]

    call_command("build_index", verbosity=0)
    assert services.index_readiness()["missing"] is None     # one file per registered kind
    assert len(services.get_index("cosine_histo")) == len(exposures)

    response = APIClient().get(f"/api/exposures/{exposures[0].pk}/similar/?index=cosine_histo&k=5")
    assert response.status_code == 200, response.content
    body = response.json()
    order, similarity = brute_force_cosine(histos[1:], histos[:1], 5)
    assert [m["id"] for m in body["results"]] == [exposures[1 + i].pk for i in order[0]]
    assert [m["score"] for m in body["results"]] == pytest.approx(similarity[0].tolist(), abs=1e-4)
    assert body["results"][0]["reason"].startswith("cosine similarity of histo-vectors")

    refused = APIClient().get(f"/api/exposures/{exposures[0].pk}/similar/?index=colour")
    assert refused.status_code == 400 and "cosine_histo" in refused.json()["detail"]
