"""Indexes shared by worker processes: a store with mmap maps the index file (its vectors are
file pages, not the process's own memory), notices a newer file written by another process on
its next get, takes a private copy only to change an index, and processes that need the same
missing index build it once between them."""
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np

from recommender.indexes import IndexStore, VectorIndex

DIM = 16
ROOT = Path(__file__).resolve().parents[2]


def histos(n, seed):
    return np.random.default_rng(seed).poisson(3.0, (n, DIM)).astype(np.float32)


class DB:
    def __init__(self, n, seed=0):
        self.x = histos(n, seed)
        self.ids_ = np.arange(n, dtype=np.int64) * 7
        self.loads = 0
        self.lock = threading.Lock()

    def ids(self):
        return self.ids_

    def vectors(self):
        with self.lock:
            self.loads += 1
        return self.ids_, self.x


def test_a_mapped_index_answers_like_a_private_one_and_lives_in_the_file(tmp_path):
    db = DB(300)
    writer = IndexStore(tmp_path, dim=DIM, index_options={"approximate_threshold": 100})
    private = writer.get("v1", "histo", db.ids, db.vectors)
    reader = IndexStore(tmp_path, dim=DIM, mmap=True)
    mapped = reader.get("v1", "histo", db.ids, db.vectors)
    assert mapped.mapped and not private.mapped and mapped.index_type == private.index_type == "ivf_flat"
    query = db.x[:5]
    for a, b in zip(mapped.search(query, 10)[0], private.search(query, 10)[0]):
        assert np.array_equal(a, b)
    assert np.array_equal(mapped.search_like(7, 5)[0], private.search_like(7, 5)[0])
    # In another process: the index file appears among the process's memory mappings.
    script = textwrap.dedent(f"""
        from recommender.indexes import IndexStore
        store = IndexStore({str(tmp_path)!r}, dim={DIM}, mmap=True)
        index = store.get("v1", "histo", lambda: list(range(0, 2100, 7)), None)
        index.search([1.0] * {DIM}, 3)
        path = str(store.path_for("v1", "histo"))
        print(index.mapped, any(line.rstrip().endswith(path) for line in open("/proc/self/maps")))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.stdout.split() == ["True", "True"], out.stderr[-2000:]


def test_a_worker_sees_a_newer_index_file_without_a_restart(tmp_path):
    db = DB(120)
    worker = IndexStore(tmp_path, dim=DIM, mmap=True, autosave=False)
    first = worker.get("v1", "histo", db.ids, db.vectors)
    assert len(first) == 120 and first.mapped
    # Another process (ingest) adds exposures and saves the file.
    ingest = IndexStore(tmp_path, dim=DIM, autosave=True)
    new_x = histos(5, 9)
    ingest.add("v1", "histo", np.arange(2000, 2005), new_x)
    db.ids_ = np.concatenate([db.ids_, np.arange(2000, 2005)])
    seen = worker.get("v1", "histo", db.ids, db.vectors)
    assert seen is not first and len(seen) == 125 and seen.mapped and 2003 in seen
    assert db.loads == 1                       # re-mapped, not rebuilt
    assert seen.search(new_x[3], 1)[0][0] == 2003
    # The old mapping stays valid for a search still holding it.
    assert len(first.search(db.x[0], 3)[0]) == 3


def test_changing_a_mapped_index_takes_a_private_copy(tmp_path):
    db = DB(50)
    store = IndexStore(tmp_path, dim=DIM, mmap=True, autosave=False)
    index = store.get("v1", "activation", db.ids, db.vectors)
    assert index.mapped
    before = Path(store.path_for("v1", "activation")).read_bytes()
    store.remove("v1", "activation", [0, 7])
    store.add("v1", "activation", [5000], histos(1, 3))
    assert not index.mapped and len(index) == 49 and 5000 in index and 0 not in index
    assert Path(store.path_for("v1", "activation")).read_bytes() == before   # the file is untouched
    store.flush()
    assert store.peek("v1", "activation").mapped and len(store.peek("v1", "activation")) == 49
    assert len(VectorIndex.load(store.path_for("v1", "activation"))) == 49


def test_processes_missing_the_same_index_build_it_once(tmp_path):
    db = DB(200)
    stores = [IndexStore(tmp_path, dim=DIM, mmap=True) for _ in range(4)]
    results = [None] * 4

    def work(i):
        results[i] = stores[i].get("v1", "histo", db.ids, db.vectors)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert db.loads == 1 and all(len(r) == 200 for r in results)
