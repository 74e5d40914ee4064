"""Benchmark of the recommender's FAISS indexes (recommender/indexes.py).

Synthetic histo-vectors shaped like the archive's: 625 nonnegative weighted counts per exposure,
drawn from a mixture of some hundreds of "exposure types" (a sparse Dirichlet profile over the
DESOM-1 nodes each, plus a low-rank continuous variation within the type) with a lognormal number
of sources and Poisson noise, so near neighbours are meaningful. For each size it measures:
build time, memory (RSS delta and serialized size), single-query latency p50/p99 at k=10 and
recall@10 against exact search (ground truth for a sample of queries by numpy brute force), for
numpy brute force (the baseline), exact FAISS, IVF-Flat over a range of nprobe, and HNSW where
its build fits the time budget. Also: recall of IVF inner-product search for node queries
(the "activation" kind).

    .venv/bin/python -m benchmarks.bench_faiss            # 10k, 50k, 100k, 1M (about 10 minutes)
    .venv/bin/python -m benchmarks.bench_faiss --quick    # 10k, 100k

Writes benchmarks/results/faiss.json and prints a table.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

import faiss  # noqa: E402

from recommender import indexes as rx  # noqa: E402

DIM = 625
K = 10


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class HistoGenerator:
    """Mixture of exposure types; chunks are reproducible from (seed, chunk number)."""

    def __init__(self, n_types=300, rank=6, alpha=0.3, variation=0.6, seed=0, empty_fraction=0.002):
        rng = np.random.default_rng(seed)
        self.protos = np.log(rng.dirichlet(np.full(DIM, alpha), size=n_types) + 1e-5).astype(np.float32)
        self.basis = (rng.normal(size=(n_types, rank, DIM)) * variation).astype(np.float32)
        self.n_types, self.rank, self.seed = n_types, rank, seed
        self.empty_fraction = empty_fraction

    def chunk(self, m, index):
        rng = np.random.default_rng([self.seed, index])
        t = rng.integers(self.n_types, size=m)
        z = rng.normal(size=(m, self.rank)).astype(np.float32)
        logits = self.protos[t] + np.einsum("mr,mrd->md", z, self.basis[t], optimize=True)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        # Half the exposures blend in a second type (up to 50/50): a continuum between the
        # types, not well separated clusters, which is what makes approximate search work.
        blend = np.where(rng.random(m) < 0.5, rng.uniform(0, 0.5, size=m), 0.0).astype(np.float32)
        other = np.exp(self.protos[rng.integers(self.n_types, size=m)])
        other /= other.sum(axis=1, keepdims=True)
        p = (1 - blend[:, None]) * p + blend[:, None] * other
        n_src = np.clip(rng.lognormal(np.log(1500), 1.0, size=m), 10, 60000)
        counts = rng.poisson(p * n_src[:, None]).astype(np.float32)
        counts[rng.random(m) < self.empty_fraction] = 0.0
        return counts

    def histos(self, n, chunk=50_000, start_chunk=0):
        parts, i = [], start_chunk
        for lo in range(0, n, chunk):
            parts.append(self.chunk(min(chunk, n - lo), i))
            i += 1
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def transformed(self, n, chunk=50_000, start_chunk=0):
        """Hellinger vectors (n, 626) generated chunk by chunk (never 2 copies of the raw data)."""
        out = np.empty((n, DIM + 1), dtype=np.float32)
        i = start_chunk
        for lo in range(0, n, chunk):
            m = min(chunk, n - lo)
            out[lo:lo + m] = rx.hellinger_transform(self.chunk(m, i))
            i += 1
        return out


def brute_force_l2(base, queries, k, block=50_000):
    """Exact k-NN by numpy in float64 (the ground truth): squared L2 = ||x||^2 - 2 x.q + ||q||^2."""
    q64 = queries.astype(np.float64)
    best_d = np.full((len(queries), k), np.inf)
    best_i = np.full((len(queries), k), -1, np.int64)
    qn = (q64 ** 2).sum(1)
    for lo in range(0, len(base), block):
        b = base[lo:lo + block].astype(np.float64)
        d = (b ** 2).sum(1)[None, :] - 2 * q64 @ b.T + qn[:, None]
        kk = min(k, d.shape[1])
        part = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        cand_d = np.concatenate([best_d, np.take_along_axis(d, part, 1)], 1)
        cand_i = np.concatenate([best_i, part + lo], 1)
        order = np.argsort(cand_d, axis=1)[:, :k]
        best_d = np.take_along_axis(cand_d, order, 1)
        best_i = np.take_along_axis(cand_i, order, 1)
    return best_i, best_d


def brute_force_ip(base, queries, k, block=100_000):
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.full((len(queries), k), -1, np.int64)
    for lo in range(0, len(base), block):
        s = queries.astype(np.float64) @ base[lo:lo + block].T.astype(np.float64)
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], 1)
        cand_i = np.concatenate([best_i, part + lo], 1)
        order = np.argsort(-cand_s, axis=1)[:, :k]
        best_s = np.take_along_axis(cand_s, order, 1)
        best_i = np.take_along_axis(cand_i, order, 1)
    return best_i, best_s


def recall_at_k(found, truth, truth_score=None, base=None, queries=None, metric="l2"):
    """Share of the true top-k found. With the true k-th score and the data, a found id whose
    exact (float64) score ties the k-th true one counts as found: near-ties at the boundary
    are not misses of the index (float32 rounding decides them)."""
    hits = 0
    for row, (f, t) in enumerate(zip(found, truth)):
        f = f[f >= 0]
        ok = set(f.tolist()) & set(t.tolist())
        if truth_score is not None:
            for i in set(f.tolist()) - ok:
                x = base[i].astype(np.float64)
                q = queries[row].astype(np.float64)
                if metric == "l2":
                    good = ((x - q) ** 2).sum() <= truth_score[row, -1] + 1e-6
                else:
                    good = x @ q >= truth_score[row, -1] - 1e-7
                if good:
                    ok.add(i)
        hits += min(len(ok), t.size)
    return hits / truth.size


def latency_ms(fn, queries, repeat_min=1):
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q[None, :])
        times.append((time.perf_counter() - t0) * 1000)
    times = np.array(times)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def numpy_single_query(base, sqnorms):
    def run(q):
        d = sqnorms - 2 * (base @ q[0])
        part = np.argpartition(d, K - 1)[:K]
        return part[np.argsort(d[part])]
    return run


def bench_size(n, gen, args, results):
    print(f"\n== n = {n:,}", flush=True)
    entry = {"n": n}
    t_size = t0 = time.perf_counter()
    base = gen.transformed(n)
    entry["generate_and_transform_s"] = round(time.perf_counter() - t0, 2)
    entry["data_bytes"] = int(base.nbytes)
    ids = np.arange(n, dtype=np.int64)
    # queries: fresh exposures from the same mixture (not in the index)
    q_raw = gen.histos(args.queries, start_chunk=10_000)
    queries = rx.hellinger_transform(q_raw)
    t0 = time.perf_counter()
    truth_i, truth_d = brute_force_l2(base, queries[: args.truth_queries], K)
    entry["ground_truth_batch_s"] = round(time.perf_counter() - t0, 2)

    # numpy brute force single-query baseline
    sqn = (base ** 2).sum(1)
    n_lat_np = min(args.latency_queries, 20 if n >= 500_000 else 100)
    np_p50, np_p99 = latency_ms(numpy_single_query(base, sqn), queries[:n_lat_np])
    del sqn
    entry["numpy_brute_force"] = {"p50_ms": round(np_p50, 3), "p99_ms": round(np_p99, 3),
                                  "queries_timed": n_lat_np, "recall_at_10": 1.0}
    print(f"numpy brute force: p50 {np_p50:.2f} ms  p99 {np_p99:.2f} ms", flush=True)

    # exact FAISS
    rss_a = rss_bytes()
    t0 = time.perf_counter()
    flat = faiss.IndexIDMap2(faiss.IndexFlatL2(DIM + 1))
    flat.add_with_ids(base, ids)
    build = time.perf_counter() - t0
    n_lat_flat = min(args.latency_queries, 20 if n >= 500_000 else 100)
    p50, p99 = latency_ms(lambda q: flat.search(q, K), queries[:n_lat_flat])
    _, fi = flat.search(queries[: args.truth_queries], K)
    entry["faiss_flat"] = {"build_s": round(build, 3), "rss_delta_bytes": rss_bytes() - rss_a,
                           "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                           "recall_at_10": recall_at_k(fi, truth_i, truth_d, base, queries),
                           "latency_ratio_vs_numpy_p50": round(np_p50 / p50, 2)}
    print(f"faiss flat: p50 {p50:.2f} ms p99 {p99:.2f} ms recall {entry['faiss_flat']['recall_at_10']:.3f}", flush=True)
    flat = None  # free it (the timing lambdas above have run)
    gc.collect()

    # IVF-Flat through the production class (defaults), then an nprobe sweep on the same index
    rss_a = rss_bytes()
    t0 = time.perf_counter()
    vi = rx.VectorIndex("histo", "bench", DIM, approximate_threshold=0, nlist=args.nlist)
    # build() transforms raw vectors; we hand it the index pre-transformed data through the
    # internal path to avoid regenerating 2.5 GB of raw counts (same code as build()).
    index = vi._new_ivf(base)
    index.add_with_ids(base, ids)
    vi._cpu, vi._ids, vi.trained_size = index, ids, n
    build = time.perf_counter() - t0
    rss_delta = rss_bytes() - rss_a
    ivf = {"nlist": vi.nlist, "build_s": round(build, 2), "rss_delta_bytes": rss_delta,
           "kmeans_train_points": min(n, vi.nlist * rx.DEFAULT_TRAIN_POINTS_PER_LIST),
           "sweep": []}
    print(f"ivf-flat nlist={vi.nlist}: build {build:.1f} s, rss +{rss_delta / 2**20:.0f} MiB", flush=True)
    for nprobe in args.nprobes:
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        p50, p99 = latency_ms(lambda q: index.search(q, K, params=params), queries[: args.latency_queries])
        _, fi = index.search(queries[: args.truth_queries], K, params=params)
        rec = recall_at_k(fi, truth_i, truth_d, base, queries)
        ivf["sweep"].append({"nprobe": nprobe, "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                             "recall_at_10": round(rec, 4),
                             "latency_ratio_vs_numpy_p50": round(np_p50 / p50, 1)})
        print(f"  nprobe {nprobe:3d}: p50 {p50:.3f} ms  p99 {p99:.3f} ms  recall@10 {rec:.3f}", flush=True)
    # the production search path (VectorIndex.search: locking, padding removal, Hellinger)
    p50, p99 = latency_ms(lambda q: vi.search(q, K), q_raw[: args.latency_queries])
    ivf["vector_index_search_default_nprobe"] = {"nprobe": vi.nprobe, "p50_ms": round(p50, 3),
                                                 "p99_ms": round(p99, 3)}
    entry["ivf_flat"] = ivf
    # serialized size
    t0 = time.perf_counter()
    ser = faiss.serialize_index(index)
    entry["ivf_flat"]["serialized_bytes"] = int(ser.nbytes)
    entry["ivf_flat"]["serialize_s"] = round(time.perf_counter() - t0, 2)
    ser = index = vi = None  # free them (the timing lambdas above have run)
    gc.collect()

    # HNSW (no remove_ids) where its build fits the budget
    if n <= args.hnsw_max:
        rss_a = rss_bytes()
        t0 = time.perf_counter()
        h = faiss.IndexHNSWFlat(DIM + 1, args.hnsw_m)
        h.hnsw.efConstruction = 40
        h.add(base)
        build = time.perf_counter() - t0
        hn = {"M": args.hnsw_m, "efConstruction": 40, "build_s": round(build, 2),
              "rss_delta_bytes": rss_bytes() - rss_a, "sweep": []}
        print(f"hnsw M={args.hnsw_m}: build {build:.1f} s", flush=True)
        for ef in (16, 32, 64, 128):
            params = faiss.SearchParametersHNSW(efSearch=ef)
            p50, p99 = latency_ms(lambda q: h.search(q, K, params=params), queries[: args.latency_queries])
            _, fi = h.search(queries[: args.truth_queries], K, params=params)
            rec = recall_at_k(fi, truth_i, truth_d, base, queries)
            hn["sweep"].append({"efSearch": ef, "p50_ms": round(p50, 3), "p99_ms": round(p99, 3),
                                "recall_at_10": round(rec, 4)})
            print(f"  efSearch {ef:3d}: p50 {p50:.3f} ms  p99 {p99:.3f} ms  recall@10 {rec:.3f}", flush=True)
        entry["hnsw_flat"] = hn
        del h
        gc.collect()

    # activation kind: node queries on share vectors (IVF inner product vs exact)
    if n <= args.activation_max:
        shares = base[:, :DIM] ** 2          # Hellinger squared = the share vectors
        rng = np.random.default_rng(5)
        nodes = rng.integers(DIM, size=args.truth_queries)
        nq = np.stack([rx.neighbourhood_query(int(b), (25, 25), 1.0) for b in nodes])
        truth_a, truth_s = brute_force_ip(shares, nq, K)
        act = {"queries": "neighbourhood_query(random bmu, (25, 25), radius=1)"}
        fl = faiss.IndexFlatIP(DIM)
        fl.add(shares)
        p50, p99 = latency_ms(lambda q: fl.search(q, K), nq[: min(args.latency_queries, 100)])
        act["faiss_flat_ip"] = {"p50_ms": round(p50, 3), "p99_ms": round(p99, 3)}
        del fl
        if n >= 50_000:
            av = rx.VectorIndex("activation", "bench", DIM, approximate_threshold=0)
            aidx = av._new_ivf(shares)
            aidx.add(shares)
            act["ivf_ip"] = {"nlist": int(aidx.nlist), "sweep": []}
            for nprobe in args.nprobes:
                params = faiss.SearchParametersIVF(nprobe=nprobe)
                _, fi = aidx.search(nq, K, params=params)
                p50, p99 = latency_ms(lambda q: aidx.search(q, K, params=params), nq[: min(args.latency_queries, 100)])
                act["ivf_ip"]["sweep"].append({"nprobe": nprobe, "recall_at_10": round(recall_at_k(fi, truth_a, truth_s, shares, nq, metric='ip'), 4),
                                               "p50_ms": round(p50, 3)})
            del aidx
        entry["activation_node_queries"] = act
        print(f"activation: {json.dumps(act)}", flush=True)
        del shares
    del base
    gc.collect()
    # what VectorIndex picks at this size with its defaults, and how that configuration did
    if n < rx.DEFAULT_APPROXIMATE_THRESHOLDS["histo"]:
        chosen = {"index_type": "flat", **{k: entry["faiss_flat"][k] for k in ("p50_ms", "p99_ms", "recall_at_10")}}
    else:
        row = next((r for r in entry["ivf_flat"]["sweep"] if r["nprobe"] == rx.DEFAULT_NPROBES["histo"]), None)
        chosen = {"index_type": "ivf_flat", "nlist": entry["ivf_flat"]["nlist"], "nprobe": rx.DEFAULT_NPROBES["histo"],
                  **({k: row[k] for k in ("p50_ms", "p99_ms", "recall_at_10")} if row else {}),
                  "vector_index_search_p50_ms": entry["ivf_flat"]["vector_index_search_default_nprobe"]["p50_ms"]}
    chosen["latency_ratio_vs_numpy_p50"] = round(entry["numpy_brute_force"]["p50_ms"] / chosen["p50_ms"], 1) \
        if chosen.get("p50_ms") else None
    entry["vector_index_default"] = chosen
    entry["elapsed_s"] = round(time.perf_counter() - t_size, 1)
    print(f"VectorIndex default at n={n:,}: {chosen}", flush=True)
    results.append(entry)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10k and 100k only")
    ap.add_argument("--sizes", type=int, nargs="*", help="override the sizes")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--latency-queries", type=int, default=300)
    ap.add_argument("--truth-queries", type=int, default=200)
    ap.add_argument("--nprobes", type=int, nargs="*", default=[2, 4, 8, 16, 32])
    ap.add_argument("--nlist", type=int, default=None, help="override the nlist rule")
    ap.add_argument("--hnsw-max", type=int, default=100_000)
    ap.add_argument("--hnsw-m", type=int, default=16)
    ap.add_argument("--activation-max", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "faiss.json"))
    args = ap.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    # 50k is the default approximate threshold: the smallest IVF the class builds
    sizes = args.sizes or ([10_000, 100_000] if args.quick else [10_000, 50_000, 100_000, 1_000_000])
    gen = HistoGenerator()
    results = []
    t_start = time.perf_counter()
    for n in sizes:
        bench_size(n, gen, args, results)
    summary = {
        "benchmark": "faiss",
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "faiss_threads": args.threads,
                    "faiss_version": faiss.__version__, "numpy_version": np.__version__,
                    "gpus": faiss.get_num_gpus()},
        "data": {"dim": DIM, "stored_dim": DIM + 1, "types": gen.n_types, "rank": gen.rank,
                 "transform": "hellinger+empty", "k": K, "truth_queries": args.truth_queries,
                 "latency": "single-query search, one query per call, k=10; queries are new exposures "
                            "from the same mixture"},
        "defaults": {"approximate_thresholds": rx.DEFAULT_APPROXIMATE_THRESHOLDS,
                     "nprobes": rx.DEFAULT_NPROBES,
                     "nlist_rule": f"round({rx.DEFAULT_NLIST_PER_SQRT_N} * sqrt(n)) clamped to "
                                   f"[{rx.DEFAULT_MIN_NLIST}, {rx.DEFAULT_MAX_NLIST}]",
                     "kmeans_iterations": rx.DEFAULT_KMEANS_ITERATIONS,
                     "train_points_per_list": rx.DEFAULT_TRAIN_POINTS_PER_LIST},
        "results": results,
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    print_table(summary)
    print(f"\nwrote {args.out} in {summary['total_s']} s")


def print_table(summary):
    print(f"\n{'n':>9} {'method':<26} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {'recall@10':>9} {'x numpy':>8}")
    for e in summary["results"]:
        base = e["numpy_brute_force"]["p50_ms"]
        rows = [("numpy brute force", None, e["numpy_brute_force"])]
        rows.append(("faiss flat (exact)", e["faiss_flat"]["build_s"], e["faiss_flat"]))
        for s in e["ivf_flat"]["sweep"]:
            rows.append((f"ivf nlist={e['ivf_flat']['nlist']} nprobe={s['nprobe']}", e["ivf_flat"]["build_s"], s))
        for s in e.get("hnsw_flat", {}).get("sweep", []):
            rows.append((f"hnsw M={e['hnsw_flat']['M']} ef={s['efSearch']}", e["hnsw_flat"]["build_s"], s))
        for name, build, s in rows:
            b = f"{build:8.2f}" if build is not None else f"{'':>8}"
            print(f"{e['n']:>9,} {name:<26} {b} {s['p50_ms']:8.3f} {s['p99_ms']:8.3f} "
                  f"{s['recall_at_10']:9.3f} {base / s['p50_ms']:8.1f}")


if __name__ == "__main__":
    main()
