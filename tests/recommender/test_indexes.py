"""Tests of recommender/indexes.py: transforms, exact and approximate search, mutations,
persistence (atomic, corruption and staleness detection), the per-process store, node queries.

Data: synthetic histo-vectors shaped like the archive's (625 nonnegative counts, a few families
with their own sparse profile over the DESOM-1 nodes, blended and Poisson-sampled)."""
import threading

import faiss
import numpy as np
import pytest

from recommender.indexes import (
    DEFAULT_APPROXIMATE_THRESHOLDS,
    IndexCorruptError,
    IndexStaleError,
    IndexStore,
    VectorIndex,
    choose_nlist,
    empty_rows,
    hellinger_transform,
    map_distances,
    neighbourhood_query,
    node_query_vector,
    share_transform,
)

DIM = 625


def make_histos(n, seed=0, families=12, empty=0):
    """Counts from a few families (sparse Dirichlet profiles), half of them blended with another
    family, lognormal source counts, Poisson noise; the first ``empty`` rows have no sources."""
    rng = np.random.default_rng(seed)
    profiles = np.random.default_rng(99).dirichlet(np.full(DIM, 0.2), size=families)
    fam = rng.integers(families, size=n)
    other = rng.integers(families, size=n)
    blend = np.where(rng.random(n) < 0.5, rng.uniform(0, 0.5, n), 0.0)[:, None]
    p = (1 - blend) * profiles[fam] + blend * profiles[other]
    p *= rng.lognormal(0, 0.3, size=p.shape)           # exposure-to-exposure variation
    p /= p.sum(1, keepdims=True)
    totals = rng.lognormal(np.log(800), 0.8, size=n)
    counts = rng.poisson(p * totals[:, None]).astype(np.float32)
    counts[:empty] = 0
    return counts


def hellinger_reference(x, y):
    """Hellinger distance between two count vectors from its definition, in float64."""
    p = x / x.sum()
    q = y / y.sum()
    return np.sqrt(0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum())


def brute_force_hellinger(base, queries, k):
    b = np.sqrt(base / base.sum(1, keepdims=True))
    q = np.sqrt(queries / queries.sum(1, keepdims=True))
    d = np.stack([np.sqrt(0.5 * ((b - row) ** 2).sum(1)) for row in q])
    order = np.argsort(d, axis=1)[:, :k]
    return order, np.take_along_axis(d, order, 1)


@pytest.fixture(scope="module")
def data():
    base = make_histos(3000, seed=1).astype(np.float64)
    queries = make_histos(40, seed=2).astype(np.float64)
    return base, queries


# ----------------------------------------------------------------------------- transforms

def test_hellinger_transform_gives_unit_vectors_whose_l2_is_sqrt2_hellinger():
    x = make_histos(50, seed=3, empty=2)
    h = hellinger_transform(x)
    assert h.shape == (50, DIM + 1) and h.dtype == np.float32
    assert np.isfinite(h).all()
    np.testing.assert_allclose(np.linalg.norm(h, axis=1), 1.0, rtol=1e-5)
    for i, j in [(2, 3), (5, 40), (10, 11)]:
        l2 = np.linalg.norm(h[i].astype(np.float64) - h[j])
        assert l2 == pytest.approx(np.sqrt(2) * hellinger_reference(x[i], x[j]), rel=1e-4)


def test_hellinger_ignores_how_crowded_an_exposure_is():
    x = make_histos(5, seed=4)
    np.testing.assert_allclose(hellinger_transform(x), hellinger_transform(x * 37.0), atol=1e-6)


def test_empty_exposures_match_each_other_and_nothing_else():
    x = make_histos(6, seed=5, empty=2)
    assert empty_rows(x).tolist() == [True, True, False, False, False, False]
    h = hellinger_transform(x).astype(np.float64)
    assert (h[:2, :-1] == 0).all() and (h[:2, -1] == 1).all() and (h[2:, -1] == 0).all()
    assert np.linalg.norm(h[0] - h[1]) == 0
    # sqrt(2) is the largest L2 distance between Hellinger vectors: Hellinger distance 1
    np.testing.assert_allclose(np.linalg.norm(h[2:] - h[0], axis=1), np.sqrt(2), rtol=1e-6)


def test_transforms_reject_bad_input_with_a_clear_message():
    with pytest.raises(ValueError, match="negative"):
        hellinger_transform(-np.ones((2, DIM)))
    bad = np.ones((3, DIM))
    bad[1, 7] = np.nan
    with pytest.raises(ValueError, match="row 1"):
        hellinger_transform(bad)
    with pytest.raises(ValueError, match="2-D"):
        share_transform(np.ones((2, 3, 4)))


def test_share_transform_sums_to_one_and_keeps_empty_rows_zero():
    x = make_histos(10, seed=6, empty=1)
    s = share_transform(x)
    assert (s[0] == 0).all()
    np.testing.assert_allclose(s[1:].sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(s[3] / s[3].max(), x[3] / x[3].max(), rtol=1e-5)


# ----------------------------------------------------------------------------- search

def test_exact_search_returns_the_true_nearest_neighbours(data):
    base, queries = data
    ids = np.arange(len(base)) * 3 + 1000          # ids are not positions
    index = VectorIndex("histo", "v1").build(ids, base)
    assert index.index_type == "flat" and len(index) == len(base)
    truth, truth_d = brute_force_hellinger(base, queries, 10)
    found_ids, found_d = index.search(queries, k=10)
    for row in range(len(queries)):
        np.testing.assert_array_equal(found_ids[row], ids[truth[row]])
        np.testing.assert_allclose(found_d[row], truth_d[row], atol=2e-4)
    one_ids, one_d = index.search(queries[0], k=10)      # a single vector gives flat arrays
    assert one_ids.shape == (10,) and np.array_equal(one_ids, found_ids[0])


def test_activation_search_ranks_by_weighted_share(data):
    base, _ = data
    crowded = [5, 17, 200]
    base = base.copy()
    base[crowded, 42] += base[crowded].sum(1) * np.array([3.0, 2.0, 1.0])   # node 42 dominates these
    index = VectorIndex("activation", "v1").build(np.arange(len(base)), base)
    ids, scores = index.search(node_query_vector({42: 1.0}, DIM), k=5)
    assert ids[:3].tolist() == crowded
    shares = base / base.sum(1, keepdims=True)
    np.testing.assert_allclose(scores, np.sort(shares[:, 42])[::-1][:5], rtol=1e-5)
    # a spread query: the same inner product, computed by numpy
    q = neighbourhood_query(42, (25, 25), radius=1.5)
    ids, scores = index.search(q, k=10)
    expected = shares @ q
    np.testing.assert_array_equal(ids, np.argsort(-expected, kind="stable")[:10])


def test_approximate_index_recall_at_10_is_at_least_095(data):
    base, queries = data
    base = np.concatenate([base, make_histos(1000, seed=7)])
    queries = make_histos(100, seed=8)
    ids = np.arange(len(base))
    exact = VectorIndex("histo", "v1").build(ids, base)
    approx = VectorIndex("histo", "v1", approximate_threshold=1000).build(ids, base)
    assert approx.index_type == "ivf_flat" and approx.nlist == choose_nlist(len(base))
    truth, _ = exact.search(queries, k=10)
    found, _ = approx.search(queries, k=10)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    assert recall >= 0.95, recall
    # probing every list is exact
    found_all, _ = approx.search(queries, k=10, nprobe=approx.nlist)
    assert all(np.array_equal(f, t) for f, t in zip(found_all, truth))


def test_search_pads_nothing_and_can_exclude_the_query_itself():
    x = make_histos(5, seed=9)
    index = VectorIndex("histo", "v1").build([10, 11, 12, 13, 14], x)
    ids, dist = index.search(x[2], k=10)
    assert len(ids) == 5 and ids[0] == 12 and dist[0] == pytest.approx(0, abs=1e-3)
    assert (ids >= 0).all() and (np.diff(dist) >= 0).all()
    ids, _ = index.search(x[2], k=3, exclude=[12])
    assert 12 not in ids.tolist() and len(ids) == 3
    like_ids, like_d = index.search_like(12, k=4)
    assert like_ids.tolist() == ids.tolist() + [i for i in like_ids.tolist() if i not in ids][:1]
    with pytest.raises(ValueError, match="624 dimensions"):
        index.search(np.ones(624), k=3)


@pytest.mark.parametrize("threshold", [10**9, 500], ids=["flat", "ivf"])
def test_add_and_remove_keep_ids_consistent(threshold):
    x = make_histos(1500, seed=10)
    index = VectorIndex("histo", "v1", approximate_threshold=threshold).build(np.arange(1000), x[:1000])
    removed = np.arange(0, 1000, 7)
    assert index.remove(np.concatenate([removed, [5000]])) == removed.size    # unknown ids ignored
    assert len(index) == 1000 - removed.size
    assert 7 not in index and 8 in index
    assert index.contains([0, 1, 5000]).tolist() == [False, True, False]
    # removed ids never come back, even searched with their own vectors and all lists probed
    found, _ = index.search(x[removed], k=30, nprobe=4096)
    assert not np.isin(np.concatenate(found), removed).any()
    index.add(np.arange(1000, 1500), x[1000:])
    assert len(index) == 1500 - removed.size
    found, dist = index.search(x[1000:1010], k=1, nprobe=4096)
    assert [f[0] for f in found] == list(range(1000, 1010))
    np.testing.assert_allclose(np.concatenate(dist), 0, atol=2e-3)
    assert np.array_equal(index.ids, np.setdiff1d(np.arange(1500), removed))
    # replacing an exposure's vector
    index.add([1], x[1200:1201])
    found, _ = index.search(x[1200], k=2, nprobe=4096)
    assert set(found.tolist()) == {1, 1200} and len(index) == 1500 - removed.size
    with pytest.raises(ValueError, match="already in the index"):
        index.add([1], x[:1], replace=False)
    with pytest.raises(ValueError, match="duplicates"):
        index.add([3000, 3000], x[:2])


def test_an_empty_index_answers_with_no_results(tmp_path):
    index = VectorIndex("histo", "v1").build([], np.zeros((0, DIM)))
    ids, dist = index.search(make_histos(1, seed=19)[0], k=5)
    assert len(index) == 0 and ids.size == 0 and dist.size == 0
    store = IndexStore(tmp_path)
    db = FakeDB([], np.zeros((0, DIM)))
    assert len(store.get("v1", "histo", db.ids, db.vectors)) == 0


# ----------------------------------------------------------------------------- persistence

@pytest.mark.parametrize("threshold", [10**9, 500], ids=["flat", "ivf"])
def test_save_load_round_trip_gives_identical_results(tmp_path, data, threshold):
    base, queries = data
    index = VectorIndex("histo", "model-7", approximate_threshold=threshold).build(np.arange(len(base)), base)
    index.remove([3, 4, 5])
    path = index.save(tmp_path / "histo.faiss")
    assert [p.name for p in tmp_path.iterdir()] == ["histo.faiss"]       # no temporary file left
    loaded = VectorIndex.load(path, model_version="model-7", kind="histo", expected_ids=index.ids)
    assert loaded.index_type == index.index_type and loaded.nprobe == index.nprobe
    assert np.array_equal(loaded.ids, index.ids)
    a_ids, a_d = index.search(queries, k=10)
    b_ids, b_d = loaded.search(queries, k=10)
    for a, b, ad, bd in zip(a_ids, b_ids, a_d, b_d):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ad, bd)
    meta = loaded.metadata()
    assert meta["model_version"] == "model-7" and meta["count"] == len(base) - 3
    assert meta["faiss_version"] == faiss.__version__ and meta["transform"] == "hellinger+empty"


def test_save_replaces_the_previous_file_atomically(tmp_path):
    x = make_histos(20, seed=11)
    path = tmp_path / "a.faiss"
    VectorIndex("histo", "v1").build(np.arange(10), x[:10]).save(path)
    VectorIndex("histo", "v1").build(np.arange(20), x).save(path)
    assert len(VectorIndex.load(path)) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.faiss"]


def test_truncated_or_garbled_files_raise_index_corrupt_error(tmp_path, data):
    base, _ = data
    path = VectorIndex("histo", "v1", approximate_threshold=500).build(np.arange(len(base)), base).save(
        tmp_path / "good.faiss")
    raw = path.read_bytes()
    cases = {
        "empty": b"",
        "header-cut": raw[:20],
        "ids-cut": raw[:len(raw) - 400],
        "index-cut": raw[:-1000],
        "appended": raw + b"\0",
        "not-an-index": b"hello world" * 100,
    }
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF
    cases["byte-flipped-in-faiss-section"] = bytes(flipped)
    start = raw.index(b'{"')
    header_flip = raw.replace(b'"model_version": "v1"', b'"model_version": "v2"', 1)
    assert header_flip != raw and header_flip.index(b'{"') == start
    cases["garbled-header"] = header_flip        # still valid JSON: only the checksum tells
    for name, content in cases.items():
        bad = tmp_path / f"{name}.faiss"
        bad.write_bytes(content)
        with pytest.raises(IndexCorruptError, match=name + ".faiss"):
            VectorIndex.load(bad)
    with pytest.raises(FileNotFoundError):
        VectorIndex.load(tmp_path / "missing.faiss")


def test_metadata_mismatch_is_detected_as_stale(tmp_path):
    x = make_histos(30, seed=12)
    index = VectorIndex("activation", "v1").build(np.arange(30), x)
    path = index.save(tmp_path / "a.faiss")
    with pytest.raises(IndexStaleError, match="model version"):
        VectorIndex.load(path, model_version="v2")
    with pytest.raises(IndexStaleError, match="'histo'"):
        VectorIndex.load(path, kind="histo")
    with pytest.raises(IndexStaleError, match="31"):
        VectorIndex.load(path, expected_ids=np.arange(31))
    with pytest.raises(IndexStaleError, match="missing"):
        VectorIndex.load(path, expected_ids=np.arange(1, 31))
    assert not index.is_stale("v1", np.arange(30)[::-1])
    assert index.is_stale("v2", np.arange(30))
    assert index.is_stale("v1", np.arange(29))
    assert "model version" in index.staleness("v2", np.arange(30))


# ----------------------------------------------------------------------------- the store

class FakeDB:
    """What the Django services hand the store: ids and vectors of one model version."""

    def __init__(self, ids, vectors):
        self.rows = dict(zip(np.asarray(ids).tolist(), np.asarray(vectors)))
        self.vector_loads = 0

    def ids(self):
        return np.array(sorted(self.rows), dtype=np.int64)

    def vectors(self):
        self.vector_loads += 1
        ids = self.ids()
        if ids.size == 0:
            return ids, np.zeros((0, DIM), np.float32)
        return ids, np.stack([self.rows[i] for i in ids.tolist()])


def test_store_loads_lazily_and_rebuilds_via_the_callback(tmp_path):
    x = make_histos(200, seed=13)
    db = FakeDB(np.arange(150), x[:150])
    store = IndexStore(tmp_path)
    index = store.get("v1", "histo", db.ids, db.vectors)
    assert db.vector_loads == 1 and len(index) == 150 and store.path_for("v1", "histo").exists()
    assert store.get("v1", "histo", db.ids, db.vectors) is index and db.vector_loads == 1

    # a new process finds the file intact and up to date: no rebuild
    other = IndexStore(tmp_path)
    assert len(other.get("v1", "histo", db.ids, db.vectors)) == 150 and db.vector_loads == 1

    # the DB changed behind the file's back: the next process rebuilds
    db.rows.update(zip(range(150, 160), x[150:160]))
    third = IndexStore(tmp_path)
    assert len(third.get("v1", "histo", db.ids, db.vectors)) == 160 and db.vector_loads == 2

    # a corrupt file is rebuilt too
    path = store.path_for("v1", "histo")
    path.write_bytes(path.read_bytes()[:-10])
    fourth = IndexStore(tmp_path)
    assert len(fourth.get("v1", "histo", db.ids, db.vectors)) == 160 and db.vector_loads == 3
    # another model version is another index
    assert store.path_for("v2", "histo") != path
    store.get("v2", "histo", db.ids, db.vectors)
    assert db.vector_loads == 4 and store.loaded() == [("v1", "histo"), ("v2", "histo")]


def test_store_add_remove_keep_the_file_in_step_with_the_db(tmp_path):
    x = make_histos(120, seed=14)
    db = FakeDB(np.arange(100), x[:100])
    a = IndexStore(tmp_path)
    a.get("v1", "histo", db.ids, db.vectors)
    db.rows.update(zip(range(100, 120), x[100:]))
    assert a.add("v1", "histo", np.arange(100, 120), x[100:])
    for i in range(10):
        del db.rows[i]
    assert a.remove("v1", "histo", np.arange(10)) == 10
    assert a.add("v9", "histo", [1], x[:1]) is False       # no index yet: nothing to update
    # another process (or a restart) finds the saved file consistent with the DB
    b = IndexStore(tmp_path)
    index = b.get("v1", "histo", db.ids, db.vectors)
    assert db.vector_loads == 1 and np.array_equal(index.ids, np.arange(10, 120))
    # b sees a's later writes on its next get
    del db.rows[50]
    a.remove("v1", "histo", [50])
    assert 50 not in b.get("v1", "histo", db.ids, db.vectors) and db.vector_loads == 1


def test_store_rewrites_a_deleted_or_damaged_file_from_its_loaded_index(tmp_path):
    x = make_histos(50, seed=20)
    db = FakeDB(np.arange(50), x)
    store = IndexStore(tmp_path)
    index = store.get("v1", "histo", db.ids, db.vectors)
    path = store.path_for("v1", "histo")
    path.unlink()
    assert store.get("v1", "histo", db.ids, db.vectors) is index and path.exists()
    path.write_bytes(b"garbage")
    assert store.get("v1", "histo", db.ids, db.vectors) is index
    assert len(VectorIndex.load(path)) == 50 and db.vector_loads == 1


def test_store_without_autosave_writes_on_flush(tmp_path):
    x = make_histos(40, seed=15)
    db = FakeDB(np.arange(30), x[:30])
    store = IndexStore(tmp_path, autosave=False)
    store.get("v1", "activation", db.ids, db.vectors)
    store.add("v1", "activation", np.arange(30, 40), x[30:])
    assert len(VectorIndex.load(store.path_for("v1", "activation"))) == 30
    assert store.flush() == [store.path_for("v1", "activation")]
    assert len(VectorIndex.load(store.path_for("v1", "activation"))) == 40


def test_concurrent_searches_from_threads_are_safe(tmp_path):
    x = make_histos(2000, seed=16)
    queries = make_histos(64, seed=17)
    db = FakeDB(np.arange(2000), x)
    store = IndexStore(tmp_path, index_options={"approximate_threshold": 1000})
    index = store.get("v1", "histo", db.ids, db.vectors)
    expected = index.search(queries, k=10)[0]
    errors, mismatches = [], []
    stop = threading.Event()

    def searcher(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(60):
                i = int(rng.integers(len(queries)))
                got = store.get("v1", "histo", db.ids, db.vectors).search(queries[i], k=10)[0]
                if not np.array_equal(got, expected[i]):
                    mismatches.append(i)
        except Exception as exc:   # pragma: no cover - reported below
            errors.append(exc)

    def writer():
        # exposures without sources are at the largest distance from everything: adding and
        # removing them must not change any result, however the threads interleave
        empty = np.zeros((5, DIM), np.float32)
        try:
            while not stop.is_set():
                index.add(np.arange(5000, 5005), empty)
                index.remove(np.arange(5000, 5005))
        except Exception as exc:   # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=searcher, args=(s,)) for s in range(6)]
    w = threading.Thread(target=writer)
    w.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    w.join()
    assert not errors and not mismatches
    assert len(index) == 2000 and db.vector_loads == 1


# ----------------------------------------------------------------------------- node queries

def test_node_query_vector_accepts_dicts_pairs_nodes_and_dense_weights():
    a = node_query_vector({3: 2.0, 10: 1.0}, 25)
    b = node_query_vector([(3, 2.0), (10, 1.0)], 25)
    assert np.array_equal(a, b) and a[3] == pytest.approx(2 / 3) and a.sum() == pytest.approx(1)
    c = node_query_vector([3, 10], 25)
    assert c[3] == c[10] == pytest.approx(0.5)
    dense = np.zeros(25)
    dense[7] = 4.0
    assert node_query_vector(dense, 25)[7] == pytest.approx(1.0)
    for bad, msg in [({25: 1.0}, "outside"), ({3: np.nan}, "not finite"), ({}, "no nonzero")]:
        with pytest.raises(ValueError, match=msg):
            node_query_vector(bad, 25)
    with pytest.raises(ValueError, match="map_shape"):
        node_query_vector({3: 1.0}, 25, spread=1.0)


def test_neighbourhood_query_spreads_with_the_som_gaussian():
    q0 = neighbourhood_query(12, (5, 5), radius=0)
    assert q0[12] == 1.0 and q0.sum() == 1.0
    q = neighbourhood_query(12, (5, 5), radius=1.0).reshape(5, 5)
    assert q.sum() == pytest.approx(1.0) and q.argmax() == 12
    # exp(-d^2 / r^2) with the map's Manhattan distance: ratio to the centre
    assert q[2, 3] / q[2, 2] == pytest.approx(np.exp(-1.0), rel=1e-5)
    assert q[3, 3] / q[2, 2] == pytest.approx(np.exp(-4.0), rel=1e-5)
    assert np.allclose(q, q.T) and np.allclose(q, q[::-1, ::-1])
    corner = neighbourhood_query(0, (5, 5), radius=1.0).reshape(5, 5)
    assert corner[0, 1] == pytest.approx(corner[1, 0]) and corner[0, 0] == corner.max()
    assert map_distances((2, 3))[0].tolist() == [0, 1, 2, 1, 2, 3]


def test_defaults_and_gpu_guard():
    # the defaults are the benchmarked ones (benchmarks/results/faiss.json)
    assert VectorIndex("histo", "v").approximate_threshold == DEFAULT_APPROXIMATE_THRESHOLDS["histo"]
    # asking for the GPU on a machine without one keeps the CPU path
    index = VectorIndex("histo", "v", use_gpu=True).build([1, 2], make_histos(2, seed=18))
    assert index.on_gpu == (faiss.get_num_gpus() > 0)
    assert index.search(make_histos(1, seed=18)[0], k=1)[0].tolist() in ([1], [2])
    with pytest.raises(ValueError, match="kind"):
        VectorIndex("colour", "v")
