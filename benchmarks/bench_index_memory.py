"""Resident memory of server workers holding the find-similar index, at 100k and 1M exposures:
memory-mapped index files (what the server does) against a private copy per process.

For each size, a synthetic histo index (625-node DESOM-1, Poisson source counts, IVF-Flat as
the archive builds past 50k) is written once with recommender.indexes; then WORKERS separate
processes each open it through IndexStore (mmap on or off), verify it, answer QUERIES
find-similar searches, and report their memory from /proc/self/smaps_rollup: RSS, PSS (shared
pages divided among the processes that map them), anonymous (private) memory, plus the load
time. A process's baseline (Python, numpy, FAISS imported, no index) is measured the same way.

    .venv/bin/python -m benchmarks.bench_index_memory                  # 100k and 1M, 2 workers
    .venv/bin/python -m benchmarks.bench_index_memory --sizes 100000 --workers 4

Writes benchmarks/results/index_memory.json. Needs about 8 GB of memory and a few minutes per
million vectors to build the file (kept under --data-dir for reruns).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "index_memory.json"
DIM = 625
MODEL = "bench-desom1"

WORKER = r"""
import json, os, sys, time
import numpy as np
from recommender.indexes import IndexStore

def memory():
    out = {}
    for line in open("/proc/self/smaps_rollup"):
        parts = line.split()
        if parts[0] in ("Rss:", "Pss:", "Anonymous:", "Pss_File:", "Pss_Anon:"):
            out[parts[0][:-1].lower()] = int(parts[1]) * 1024
    return out

directory, n, mmap, queries, barrier = sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5]), sys.argv[6]
baseline = memory()
store = IndexStore(directory, dim=625, mmap=mmap)
ids = np.arange(n, dtype=np.int64)
t0 = time.perf_counter()
index = store.get("bench-desom1", "histo", lambda: ids, None)
load_s = time.perf_counter() - t0
rng = np.random.default_rng(os.getpid())
t0 = time.perf_counter()
for q in rng.integers(0, n, queries):
    index.search_like(int(q), 10)
search_s = time.perf_counter() - t0
# Every worker has searched before any measures: shared pages are then counted once among all.
open(barrier + f".{os.getpid()}", "w").close()
while len([p for p in os.listdir(os.path.dirname(barrier)) if p.startswith(os.path.basename(barrier) + ".")]) < int(sys.argv[7]):
    time.sleep(0.05)
print(json.dumps({"pid": os.getpid(), "mapped": index.mapped, "index_type": index.index_type, "n": len(index),
                  "load_s": round(load_s, 2), "search_ms_mean": round(1000 * search_s / queries, 2),
                  "baseline": baseline, "after": memory()}))
sys.stdout.flush()
time.sleep(1.0)
"""


def build(directory: Path, n: int, seed: int = 0) -> dict:
    from recommender.indexes import IndexStore, VectorIndex, choose_nlist

    store = IndexStore(directory, dim=DIM)
    path = store.path_for(MODEL, "histo")
    if path.exists():
        return {"path": str(path), "bytes": path.stat().st_size, "built_s": None}
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    chunk = 100_000
    first = min(n, 250_000)
    index = VectorIndex("histo", MODEL, DIM, nlist=choose_nlist(n))
    index.build(np.arange(first), rng.poisson(rng.uniform(0.05, 3.0, (first, 1)), (first, DIM)).astype(np.float32))
    for start in range(first, n, chunk):
        stop = min(n, start + chunk)
        index.add(np.arange(start, stop), rng.poisson(rng.uniform(0.05, 3.0, (stop - start, 1)),
                                                      (stop - start, DIM)).astype(np.float32))
    index.save(path)
    return {"path": str(path), "bytes": path.stat().st_size, "built_s": round(time.perf_counter() - started, 1),
            "index_type": index.index_type, "nlist": index.nlist}


def run_workers(directory: Path, n: int, mmap: bool, workers: int, queries: int) -> list[dict]:
    barrier = Path(tempfile.mkdtemp(prefix="barrier-")) / "ready"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(ROOT), str(directory), str(n), "1" if mmap else "0",
                               str(queries), str(barrier), str(workers)], stdout=subprocess.PIPE, text=True, env=env,
                              cwd=ROOT)
             for _ in range(workers)]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"worker failed ({proc.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def mib(value: int) -> float:
    return round(value / 2 ** 20, 1)


def summarise(rows: list[dict]) -> dict:
    def mean(key, part="after"):
        return mib(sum(r[part][key] for r in rows) / len(rows))

    return {"workers": len(rows), "mapped": rows[0]["mapped"], "index_type": rows[0]["index_type"],
            "load_s": [r["load_s"] for r in rows], "search_ms_mean": [r["search_ms_mean"] for r in rows],
            "baseline_rss_mib": mean("rss", "baseline"),
            "rss_mib_per_worker": mean("rss"), "pss_mib_per_worker": mean("pss"),
            "anonymous_mib_per_worker": mean("anonymous"),
            "index_private_mib_per_worker": mib(sum(r["after"]["anonymous"] - r["baseline"]["anonymous"]
                                                    for r in rows) / len(rows)),
            "pss_mib_all_workers": mib(sum(r["after"]["pss"] for r in rows))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--data-dir", default=str(ROOT / "var" / "bench-index-memory"))
    args = parser.parse_args()
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        directory = Path(args.data_dir) / f"n{n}"
        directory.mkdir(parents=True, exist_ok=True)
        print(f"building {n} vectors in {directory} ...", flush=True)
        built = build(directory, n)
        row = {"vectors": n, "file": built}
        for mmap in (True, False):
            subprocess.run(["sync"], check=False)
            row["mmap" if mmap else "private"] = summarise(run_workers(directory, n, mmap, args.workers, args.queries))
            print(json.dumps({n: row["mmap" if mmap else "private"]}), flush=True)
        results.append(row)
        write(args, results)           # after every size: a run cut short keeps what it measured


def write(args, results):
    document = {
        "benchmark": "resident memory of worker processes holding the histo index (recommender.indexes)",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "note": "PSS divides shared pages among the processes mapping them; 'index_private' is the anonymous "
                "memory a worker gained by loading the index and searching it",
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
