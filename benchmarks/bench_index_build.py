"""Peak memory of building a find-similar index of N synthetic histo-vectors: the one-shot build
of recommender/indexes.py as it was before the package (every raw vector in memory, then
transformed, sampled, added and serialized whole) against today's build a chunk at a time
(``VectorChunks``: the IVF quantizer trained on its sample, then transformed chunks added, the
file written by FAISS straight to disk).

Each build runs in its own child process through ``IndexStore.get`` with memory-mapping on, as
``manage.py build_index`` does, and reports its peak resident memory (``ru_maxrss``), its
resident memory before the build (Python, numpy and FAISS imported) and its wall time. The
vectors are Poisson counts over 625 nodes generated 10 000 rows at a time from a seed per
chunk, so both builds index the same vectors; the benchmark checks that they wrote the same
FAISS index (the sha256 of its section of the file). The old build's vectors are generated
straight into one float32 array: a lower bound of what the old database loader held (it also
kept every row's bytes and a joined copy while stacking them).

    nice -n 15 env OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_index_build
    ... -m benchmarks.bench_index_build --sizes 200000,1000000 --old-max 200000

Writes benchmarks/results/index_build.json. A size whose estimated peak does not fit in the
memory available now is skipped and said so; ``--old-max`` skips the old build above that size.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "index_build.json"
DIM = 625
CHUNK = 10_000         # rows the database loader hands the build at a time (DEFAULT_BUILD_CHUNK)
MODEL = "bench-desom1"
OLD_MODULE = "recommender/indexes.py"


def chunk_vectors(chunk: int, rows: int, seed: int = 0) -> np.ndarray:
    """Rows chunk * CHUNK ... of the synthetic archive: Poisson counts, 1 in 500 without sources
    (drawn 1 000 rows at a time, so the generator's int64 draws stay small beside the build)."""
    rng = np.random.default_rng([seed, chunk])
    out = np.empty((rows, DIM), np.float32)
    for start in range(0, rows, 1_000):
        stop = min(rows, start + 1_000)
        out[start:stop] = rng.poisson(rng.uniform(0.05, 3.0, (stop - start, 1)), (stop - start, DIM))
    out[rng.random(rows) < 0.002] = 0
    return out


def chunk_sizes(n: int):
    return [(c, min(CHUNK, n - c * CHUNK)) for c in range((n + CHUNK - 1) // CHUNK)]


def rss_now() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def old_way(n: int, directory: Path, old_module: Path) -> dict:
    spec = importlib.util.spec_from_file_location("old_indexes", old_module)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    ids = np.arange(n, dtype=np.int64)

    def all_vectors():          # what the old services.index_vectors handed the store: one array
        vectors = np.empty((n, DIM), np.float32)
        for c, rows in chunk_sizes(n):
            vectors[c * CHUNK:c * CHUNK + rows] = chunk_vectors(c, rows)
        return ids, vectors

    store = old.IndexStore(directory, dim=DIM, mmap=True)
    return measured(lambda: store.get(MODEL, "histo", lambda: ids, all_vectors), store.path_for(MODEL, "histo"))


def new_way(n: int, directory: Path) -> dict:
    from recommender.indexes import IndexStore, VectorChunks

    ids = np.arange(n, dtype=np.int64)

    def read():
        for c, rows in chunk_sizes(n):
            yield ids[c * CHUNK:c * CHUNK + rows], chunk_vectors(c, rows)

    def rows_at(positions):      # the training sample, a chunk's worth of rows at a time
        parts = []
        for c, rows in chunk_sizes(n):
            inside = positions[(positions >= c * CHUNK) & (positions < c * CHUNK + rows)] - c * CHUNK
            if inside.size:
                parts.append(chunk_vectors(c, rows)[inside])
        return ids[positions], np.concatenate(parts)

    store = IndexStore(directory, dim=DIM, mmap=True)
    return measured(lambda: store.get(MODEL, "histo", lambda: ids, lambda: VectorChunks(n, read, rows_at)),
                    store.path_for(MODEL, "histo"))


def measured(build, path: Path) -> dict:
    baseline = rss_now()
    started = time.perf_counter()
    index = build()
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    header = read_header(path)
    return {"wall_s": round(wall, 1), "baseline_rss": baseline, "peak_rss": peak, "index_type": index.index_type,
            "nlist": index.nlist, "count": len(index), "file_bytes": path.stat().st_size,
            "faiss_section_bytes": header["index_bytes"], "index_payload_sha256": header["index_payload_sha256"],
            "ids_sha256": header["ids_sha256"]}


def read_header(path: Path) -> dict:
    import struct

    trailer = struct.Struct("<Q32s8s")
    with open(path, "rb") as fh:
        fh.seek(-trailer.size, os.SEEK_END)
        header_len, _, _ = trailer.unpack(fh.read(trailer.size))
        fh.seek(-trailer.size - header_len, os.SEEK_END)
        return json.loads(fh.read(header_len))


def old_module_source(tmp: Path) -> tuple[Path, str]:
    """recommender/indexes.py at the last commit that had it as one module."""
    deleted_in = subprocess.run(["git", "rev-list", "-1", "HEAD", "--", OLD_MODULE], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.strip()
    revision = f"{deleted_in}^" if not (ROOT / OLD_MODULE).exists() else "HEAD"
    source = subprocess.run(["git", "show", f"{revision}:{OLD_MODULE}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = tmp / "old_indexes.py"
    path.write_text(source)
    commit = subprocess.run(["git", "rev-parse", "--short", revision], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    return path, commit


def run_child(way: str, n: int, directory: Path, old_module: Path | None, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    command = [sys.executable, "-m", "benchmarks.bench_index_build", "--child", way, "--n", str(n),
               "--dir", str(directory)] + (["--old-module", str(old_module)] if old_module else [])
    load_before = [round(v, 2) for v in os.getloadavg()]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{way} build of {n} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["load_average_before"] = load_before
    row["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return row


def mem_available() -> int:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def gib(value: float) -> float:
    return round(value / 2 ** 30, 2)


def summarise(row: dict) -> dict:
    out = {}
    for way in ("old", "new"):
        if way in row:
            r = row[way]
            out[way] = {"peak_gib": gib(r["peak_rss"]), "above_baseline_gib": gib(r["peak_rss"] - r["baseline_rss"]),
                        "wall_s": r["wall_s"]}
    one_copy = row["one_copy_bytes"]
    for way in out:
        out[way]["above_baseline_per_copy"] = round((row[way]["peak_rss"] - row[way]["baseline_rss"]) / one_copy, 2)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="200000")
    parser.add_argument("--old-max", type=int, default=10 ** 9, help="skip the old build above this size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["old", "new"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--old-module", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        directory = Path(args.dir)
        row = old_way(args.n, directory, Path(args.old_module)) if args.child == "old" else new_way(args.n, directory)
        print(json.dumps(row))
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-index-build-"))
    old_module, old_commit = old_module_source(tmp)
    results, skipped = [], []
    try:
        for n in [int(s) for s in args.sizes.split(",")]:
            raw = n * DIM * 4
            row = {"vectors": n, "raw_vectors_bytes": raw}
            for way in ("new", "old"):
                # estimates from the 200 000 run: the old build peaks near 6x the raw vectors, the new near 1.3x
                need = (6.0 if way == "old" else 1.3) * raw + 2 ** 30
                if way == "old" and n > args.old_max:
                    skipped.append(f"old build at {n}: above --old-max {args.old_max}")
                    continue
                if need > 0.8 * mem_available():
                    skipped.append(f"{way} build at {n}: needs about {gib(need)} GiB, "
                                   f"{gib(mem_available())} GiB available")
                    continue
                directory = tmp / f"{way}-{n}"
                print(f"{way} build of {n} vectors ...", flush=True)
                row[way] = run_child(way, n, directory, old_module if way == "old" else None, args.threads)
                shutil.rmtree(directory, ignore_errors=True)
                print(json.dumps({way: row[way]}), flush=True)
            done = [row[w] for w in ("old", "new") if w in row]
            if done:
                # One copy of the index: the FAISS section of the file (vectors, ids in the lists).
                row["one_copy_bytes"] = done[0]["faiss_section_bytes"]
                row["summary"] = summarise(row)
            if "old" in row and "new" in row:
                row["same_index"] = (row["old"]["index_payload_sha256"] == row["new"]["index_payload_sha256"]
                                     and row["old"]["ids_sha256"] == row["new"]["ids_sha256"])
            results.append(row)
            write(args, results, skipped, old_commit)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write(args, results, skipped, old_commit):
    document = {
        "benchmark": "peak resident memory of building the histo index: one-shot (old) against chunked (new)",
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.bench_index_build", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "memory_total_gib": gib(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))},
        "shared_machine": "2 cores shared with other sessions' jobs; load averages per build below",
        "threads": args.threads,
        "old_build": f"recommender/indexes.py at {old_commit} (IndexStore.get, every vector in one array)",
        "new_build": "recommender.indexes at this commit (IndexStore.get with VectorChunks of 10 000 rows)",
        "note": "peak_rss is ru_maxrss of the child (memory-mapped store, as build_index runs); baseline_rss is "
                "its resident memory before the build; one_copy_bytes is the FAISS section of the index file",
        "skipped": skipped,
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
