"""Building an index a chunk at a time (VectorIndex.build_from_chunks, services.index_vector_chunks)
gives the index a one-shot build gives: the same FAISS bytes, the same answers, exact and IVF,
whether the training sample is fetched by position or picked out of a pass over the chunks."""
import faiss
import numpy as np
import pytest

from archive.models import ModelVersion
from recommender import services
from recommender.indexes import ACTIVATION, HISTO, VectorChunks, VectorIndex
from tests import factories


def counts(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    profiles = rng.dirichlet(np.full(dim, 0.3), size=6)
    p = profiles[rng.integers(6, size=n)] * rng.lognormal(0, 0.4, size=(n, dim))
    x = rng.poisson(p / p.sum(1, keepdims=True) * rng.lognormal(np.log(300), 0.5, size=(n, 1))).astype(np.float32)
    x[:3] = 0                                       # exposures without sources
    return x


def streamed(ids, vectors, chunk_size):
    """A source with no rows_at: the training sample is picked out of a pass over the chunks."""
    return VectorChunks(len(ids), lambda: ((ids[i:i + chunk_size], vectors[i:i + chunk_size])
                                           for i in range(0, len(ids), chunk_size)))


def same_index(a: VectorIndex, b: VectorIndex, queries):
    assert a.index_type == b.index_type and a.nlist == b.nlist and a.trained_size == b.trained_size
    assert a.ids.tolist() == b.ids.tolist()
    assert bytes(faiss.serialize_index(a._cpu)) == bytes(faiss.serialize_index(b._cpu))
    nprobe = a.nlist          # every list for IVF: the answers are then exact as well
    for (ids_a, values_a), (ids_b, values_b) in ((a.search(q, 15, nprobe=nprobe), b.search(q, 15, nprobe=nprobe))
                                                 for q in queries):
        assert ids_a.tolist() == ids_b.tolist() and values_a.tolist() == values_b.tolist()


@pytest.mark.parametrize("kind", [HISTO.name, ACTIVATION.name])
@pytest.mark.parametrize("threshold", [None, 0], ids=["flat", "ivf"])
def test_a_chunked_build_is_the_one_shot_build(kind, threshold):
    dim, n = 49, 2_600
    x = counts(n, dim, seed=1)
    ids = np.random.default_rng(2).permutation(50_000)[:n].astype(np.int64)   # unsorted, sparse
    queries = counts(6, dim, seed=3) if kind == HISTO.name else np.random.default_rng(4).random((6, dim))

    def fresh():
        return VectorIndex(kind, "v1", dim, approximate_threshold=threshold)

    one_shot = fresh().build(ids, x)
    assert one_shot.index_type == ("flat" if threshold is None else "ivf_flat")
    # 2 600 rows and nlist 64: k-means trains on a 2 560-row sample, drawn from rows of many chunks
    same_index(one_shot, fresh().build_from_chunks(VectorChunks.from_arrays(ids, x, chunk_size=97)), queries)
    same_index(one_shot, fresh().build_from_chunks(streamed(ids, x, 250)), queries)


def test_a_bad_row_in_a_later_chunk_is_named_by_its_place_in_the_build():
    x = counts(30, 9, seed=5)
    x[24, 2] = np.nan
    with pytest.raises(ValueError, match="rows 20 to 29: .*row 4"):
        VectorIndex(HISTO.name, "v1", 9).build_from_chunks(VectorChunks.from_arrays(np.arange(30), x, chunk_size=10))
    with pytest.raises(ValueError, match="duplicates"):
        VectorIndex(HISTO.name, "v1", 9).build_from_chunks(
            VectorChunks.from_arrays(np.r_[np.arange(15), np.arange(15)], counts(30, 9), chunk_size=10))


@pytest.fixture
def archive_rows(db, settings, tmp_path):
    """An active 4x4 DESOM-1, 90 exposures with histo-vectors, a third with activations too."""
    settings.ARCHIVE_DATA_DIR = tmp_path / "data"
    desom1 = factories.model_version(ModelVersion.DESOM1, rows=4, cols=4)
    histos = counts(90, 16, seed=6)
    for i, histo in enumerate(histos):
        row = factories.vector(factories.exposure(), desom1, histo)
        if i % 3 == 0:
            row.activations = np.random.default_rng(i).random(16).astype("<f4").tobytes()
            row.save(update_fields=["activations"])
    return desom1


@pytest.mark.parametrize("kind", [HISTO, ACTIVATION], ids=lambda k: k.name)
def test_a_build_read_from_the_database_in_chunks_is_the_one_shot_build(archive_rows, monkeypatch, kind):
    monkeypatch.setattr(services, "SAMPLE_QUERY_IDS", 7)      # the sample comes in several queries
    desom1 = archive_rows
    source = services.index_vector_chunks(desom1, kind, chunk_size=13)
    assert source.count == 90 and [len(ids) for ids, _ in source.read()] == [13] * 6 + [12]
    ids, vectors = services.index_vectors(desom1, kind)
    queries = vectors[:4] + 1.0

    def fresh():   # nlist 1: k-means trains on a 40-row sample of the 90
        return VectorIndex(kind.name, desom1.version_id, 16, approximate_threshold=0, nlist=1)

    same_index(fresh().build(ids, vectors), fresh().build_from_chunks(source), queries)
    flat = VectorIndex(kind.name, desom1.version_id, 16)
    same_index(flat.build(ids, vectors), VectorIndex(kind.name, desom1.version_id, 16).build_from_chunks(source),
               queries)
