"""FAISS on the GPU (recommender.indexes): the setting, the copy to the GPU and its refresh after
changes, the fallback to the CPU. With a CPU build of faiss the GPU calls are stood in for by a
CPU clone, so the same code paths run here; with faiss-gpu and a GPU (benchmarks/gpu_check.sh)
the real ones run and must give the CPU's answers."""
import logging

import faiss
import numpy as np
import pytest

from recommender.indexes import gpu as faiss_gpu
from recommender.indexes import IndexStore, VectorIndex, gpu_available, gpu_status, parse_gpu_setting

DIM = 625
NO_GPU = gpu_status()


def histos(n, seed=0, families=10):
    rng = np.random.default_rng(seed)
    profiles = np.random.default_rng(99).dirichlet(np.full(DIM, 0.2), size=families)
    p = profiles[rng.integers(families, size=n)] * rng.lognormal(0, 0.3, size=(n, DIM))
    p /= p.sum(1, keepdims=True)
    return rng.poisson(p * rng.lognormal(np.log(800), 0.5, size=(n, 1))).astype(np.float32)


@pytest.fixture
def fake_gpu(monkeypatch):
    """faiss as a GPU build with one GPU, whose 'GPU copy' is a CPU clone; counts the copies."""
    copies = []

    def index_cpu_to_gpu(resources, device, index):
        copies.append(device)
        return faiss.clone_index(index)

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object(), raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", index_cpu_to_gpu, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index, co=None: index, raising=False)
    monkeypatch.setattr(faiss_gpu, "_gpu_resources", None)
    return copies


def test_setting_values():
    assert parse_gpu_setting(None) is None and parse_gpu_setting("auto") is None and parse_gpu_setting("") is None
    assert parse_gpu_setting("1") is True and parse_gpu_setting("ON") is True and parse_gpu_setting(True) is True
    assert parse_gpu_setting("0") is False and parse_gpu_setting("off") is False
    with pytest.raises(ValueError, match="ARCHIVE_FAISS_GPU"):
        parse_gpu_setting("maybe")


def test_without_a_gpu_the_cpu_answers_and_says_why():
    if not NO_GPU:
        pytest.skip("faiss sees a GPU here")
    assert not gpu_available() and isinstance(NO_GPU, str) and NO_GPU
    index = VectorIndex("histo", "v", use_gpu=True).build(np.arange(50), histos(50))
    assert not index.on_gpu
    ids, dist = index.search(histos(1, seed=5)[0], k=5)
    assert len(ids) == 5 and (np.diff(dist) >= 0).all()


@pytest.mark.parametrize("kind,n,threshold", [("histo", 400, None), ("histo", 3000, 1000), ("activation", 400, None)])
def test_gpu_copy_answers_as_the_cpu_index(fake_gpu, kind, n, threshold):
    data, queries = histos(n, seed=1), histos(20, seed=2)
    ids = np.arange(10, 10 + n)
    options = {} if threshold is None else {"approximate_threshold": threshold}
    cpu = VectorIndex(kind, "v", use_gpu=False, **options).build(ids, data)
    gpu = VectorIndex(kind, "v", use_gpu=True, **options).build(ids, data)
    assert gpu.on_gpu and not cpu.on_gpu and gpu.index_type == cpu.index_type
    got, want = gpu.search(queries, k=10), cpu.search(queries, k=10)
    assert fake_gpu == [0]          # one copy, made on the first search
    for a, b in zip(got[0], want[0]):
        assert a.tolist() == b.tolist()
    gpu.search(queries, k=10, nprobe=4)
    assert fake_gpu == [0]          # no change, no new copy


def test_gpu_copy_is_refreshed_after_changes(fake_gpu):
    data = histos(300, seed=3)
    index = VectorIndex("histo", "v", use_gpu=True).build(np.arange(300), data)
    index.search(data[0], k=3)
    index.add([1000], data[:1] * 2)
    ids, _ = index.search(data[0], k=2, exclude=[0])
    assert fake_gpu == [0, 0] and ids[0] == 1000
    index.remove([1000])
    ids, _ = index.search(data[0], k=2, exclude=[0])
    assert fake_gpu == [0, 0, 0] and 1000 not in ids.tolist()


def test_a_failed_copy_falls_back_to_the_cpu(fake_gpu, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("out of GPU memory")

    monkeypatch.setattr(faiss, "index_cpu_to_gpu", broken)
    data = histos(100, seed=4)
    index = VectorIndex("histo", "v", use_gpu=True).build(np.arange(100), data)
    with caplog.at_level(logging.WARNING, logger="recommender.indexes"):
        ids, _ = index.search(data[7], k=1)
    assert ids.tolist() == [7] and not index.on_gpu
    assert "out of GPU memory" in caplog.text


def test_store_passes_the_setting_to_every_index(fake_gpu, tmp_path):
    data = histos(200, seed=6)
    ids = np.arange(200)

    def loaders():
        return (lambda: ids), (lambda: (ids, data))

    off = IndexStore(tmp_path / "off", use_gpu=False)
    assert not off.get("v", "histo", *loaders()).on_gpu                   # built
    assert not IndexStore(tmp_path / "off", use_gpu=False).get("v", "histo", *loaders()).on_gpu   # loaded
    on = IndexStore(tmp_path / "on", use_gpu=True, mmap=True)
    built = on.get("v", "histo", *loaders())
    assert built.on_gpu
    loaded = IndexStore(tmp_path / "on", use_gpu=True, mmap=True).get("v", "histo", *loaders())
    assert loaded.on_gpu and loaded.mapped
    assert loaded.search(data[3], k=1)[0].tolist() == [3]
    assert IndexStore(tmp_path / "auto").get("v", "histo", *loaders()).on_gpu   # auto: a GPU is there


@pytest.mark.django_db
def test_archive_setting_reaches_the_process_store(settings, tmp_path, fake_gpu):
    from recommender import services

    settings.ARCHIVE_DATA_DIR = tmp_path
    for value, expected in (("0", False), ("auto", None), ("1", True)):
        settings.ARCHIVE_FAISS_GPU = value
        services.reset_store()
        assert services.store().use_gpu is expected
    services.reset_store()


@pytest.mark.skipif(NO_GPU is not None, reason=str(NO_GPU))
@pytest.mark.parametrize("kind,threshold", [("histo", None), ("histo", 5000), ("activation", None)])
def test_real_gpu_search_matches_the_cpu(kind, threshold):
    """On a GPU with faiss-gpu: exact and IVF indexes copied to the device find what the CPU finds."""
    n = 20_000
    data, queries = histos(n, seed=7), histos(200, seed=8)
    ids = np.arange(n) * 3 + 1
    options = {} if threshold is None else {"approximate_threshold": threshold}
    cpu = VectorIndex(kind, "v", use_gpu=False, **options).build(ids, data)
    gpu = VectorIndex(kind, "v", use_gpu=True, **options).build(ids, data)
    got, want = gpu.search(queries, k=10), cpu.search(queries, k=10)
    assert gpu.on_gpu and gpu._gpu is not None
    overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(got[0], want[0])])
    assert overlap >= 0.99
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(np.sort(a), np.sort(b), rtol=1e-3, atol=1e-4)
    gpu.add([10**9], data[:1])
    assert gpu.search(data[0], k=2)[0].tolist()[:2] in ([ids[0], 10**9], [10**9, ids[0]])
