"""The "desom2" index at archive scale: recall and latency of its IVF against exact search.

The vectors are DESOM-2 latent codes (100 numbers per exposure). A DESOM-2 with the archive's
defaults (histo-vector soft-assigned at sigma 1, sqrt counts, the seven source statistics at
weight 0.4, about a dozen exposures per cell) is trained on the science survey's training split
(`make science` builds the survey and caches its DESOM-1 histo-vectors), and every surveyed
exposure gets its code. An archive of N exposures is then drawn from those codes, two ways:

- "manifold": a point on the segment from a random surveyed code to one of its 10 nearest
  codes, plus Gaussian noise of length 0.1 x the median nearest-code distance. The archive
  stays on the surface the survey's codes lie on (DESOM-2 codes have few directions of
  variation), denser as N grows, as a real archive is.
- "isotropic": a random surveyed code plus noise of length 1 x that distance in all 100
  directions. Each code becomes a ball of N / 2 000 near-equidistant points, so the exact
  10 nearest are a near-tie among hundreds: the hard case for an inverted file and for recall.
- "wide": the same with noise of 3 x that distance, so the balls of neighbouring codes overlap.

For each N it builds the index as the archive does (``VectorIndex("desom2", ...)``: exact below
the kind's approximate_threshold, IVF-Flat above), and measures, for 300 queries drawn from the
archive: recall@10 of the IVF at several nprobe against numpy brute force, and single-query
latency (p50/p99 ms) of exact FAISS and of the IVF; and how much farther the IVF's 10th
neighbour is than the true 10th (mean ratio of distances, 1 = as near).

    .venv/bin/python -m benchmarks.bench_desom2_index            # N = 100k, 1M (a few minutes)
    .venv/bin/python -m benchmarks.bench_desom2_index --quick    # N = 50k, on bench_science --quick's survey

Writes benchmarks/results/desom2_index.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from benchmarks import science_models as sm  # noqa: E402
from benchmarks.bench_faiss import brute_force_l2, latency_ms, recall_at_k  # noqa: E402
from recommender.indexes import DESOM2, VectorIndex  # noqa: E402

K = 10
NPROBES = (8, 32, 128)


def survey_latents(survey: Path, seed: int, iterations: int) -> np.ndarray:
    """Every surveyed exposure's DESOM-2 latent code under the archive's default DESOM-2."""
    import argparse as _argparse

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()   # the archive's training defaults live in archive.services.training
    from archive.services.training import DEFAULT_NORMALISER, DEFAULT_SMOOTH_SIGMA, DEFAULT_STATISTICS_WEIGHT
    from benchmarks.bench_science import Study, map_side
    from benchmarks.science_data import load_survey

    data = load_survey(survey)
    study = Study(data, _argparse.Namespace(seed=16), survey / "study")
    study.coherent = sm.exposure_coherent_statistics(data, survey / "study", log=lambda *_: None)
    histos = sorted((survey / "study").glob("histos-asinh-*.npz"))
    if not histos:
        raise SystemExit(f"no cached histo-vectors in {survey / 'study'}: run `make science` first")
    hard = np.load(histos[0])["hard"]
    stats = study.statistics_for("stats+coherent")
    model, norm = sm.fit_desom2(hard[study.train], map_side(len(study.train), 12), DEFAULT_NORMALISER, seed,
                                iterations, smooth_sigma=DEFAULT_SMOOTH_SIGMA, stats_train=stats[study.train],
                                stats_weight=DEFAULT_STATISTICS_WEIGHT)
    ok = ~study.failed
    _, latent, _ = sm.desom2_cells(model, norm, hard[ok], stats[ok])
    return np.asarray(latent, np.float32)


GENERATORS = {"manifold": 0.1, "isotropic": 1.0, "wide": 3.0}    # noise length, in nearest-code distances


def synthetic_archive(codes: np.ndarray, n: int, generator: str, seed: int) -> np.ndarray:
    """n codes drawn from the surveyed ones (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    neighbours, d = brute_force_l2(codes, codes, 11)
    nearest = float(np.median(np.sqrt(np.maximum(d[:, 1], 0.0))))
    scale = GENERATORS[generator] * nearest / np.sqrt(codes.shape[1])
    out = np.empty((n, codes.shape[1]), np.float32)
    for lo in range(0, n, 200_000):
        m = min(200_000, n - lo)
        start = rng.integers(0, len(codes), m)
        x = codes[start].astype(np.float64)
        if generator == "manifold":
            end = neighbours[start, rng.integers(1, 11, m)]
            x += rng.uniform(0, 1, (m, 1)) * (codes[end] - x)
        out[lo:lo + m] = x + rng.normal(0.0, scale, (m, codes.shape[1]))
    return out


def bench_size(base: np.ndarray, n_queries: int, seed: int) -> dict:
    n, dim = base.shape
    rng = np.random.default_rng(seed + n)
    queries = base[rng.choice(n, n_queries, replace=False)]
    truth_i, truth_d = brute_force_l2(base, queries, K)
    ids = np.arange(n, dtype=np.int64)
    row = {"n": n, "dim": dim}

    exact = VectorIndex(DESOM2.name, "bench", dim, approximate_threshold=n + 1, use_gpu=False)
    t0 = time.perf_counter()
    exact.build(ids, base)
    row["exact_build_s"] = round(time.perf_counter() - t0, 2)
    row["exact_p50_ms"], row["exact_p99_ms"] = latency_ms(lambda q: exact.search(q, K), queries[:200])

    ivf = VectorIndex(DESOM2.name, "bench", dim, approximate_threshold=0, use_gpu=False)
    t0 = time.perf_counter()
    ivf.build(ids, base)
    row["ivf_build_s"] = round(time.perf_counter() - t0, 2)
    row["nlist"] = ivf.nlist
    row["recall_at_10"], row["tenth_distance_ratio"], row["ivf_p50_ms"] = {}, {}, {}
    true_tenth = np.sqrt(np.maximum(truth_d[:, -1], 1e-12))
    for nprobe in NPROBES:
        found = [ivf.search(q, K, nprobe=nprobe) for q in queries]
        ids_found = np.stack([f[0] for f in found])
        row["recall_at_10"][str(nprobe)] = round(recall_at_k(ids_found, truth_i, truth_d, base, queries), 4)
        row["tenth_distance_ratio"][str(nprobe)] = round(float(np.mean([f[1][-1] for f in found] / true_tenth)), 4)
        row["ivf_p50_ms"][str(nprobe)] = round(latency_ms(lambda q, p=nprobe: ivf.search(q, K, nprobe=p),
                                                          queries[:200])[0], 3)
    row["kind_default"] = {"approximate_threshold": DESOM2.approximate_threshold, "nprobe": DESOM2.nprobe}
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--survey", default=None,
                    help="a survey built by bench_science (default: the main one; with --quick its quick one)")
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--generators", default="manifold,isotropic,wide")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--iterations", type=int, default=3000, help="DESOM-2 training iterations")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "desom2_index.json"))
    a = ap.parse_args(argv)
    if a.quick:
        a.sizes, a.queries, a.iterations = "50000", 100, 600
    a.survey = a.survey or str(ROOT / "var" / "science" / ("quick-120-s16" if a.quick else "survey36-2000-s16"))
    import torch
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    codes = survey_latents(Path(a.survey), a.seed, a.iterations)
    print(f"{len(codes)} survey latent codes of {codes.shape[1]} in {time.perf_counter() - t0:.0f} s", flush=True)
    result = {"benchmark": "desom2_index", "command": " ".join(["python -m benchmarks.bench_desom2_index",
                                                               *(sys.argv[1:] if argv is None else argv)]),
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "load_at_start": os.getloadavg()},
              "survey": a.survey, "survey_codes": int(len(codes)), "sizes": []}
    for generator in a.generators.split(","):
        for n in (int(s) for s in a.sizes.split(",")):
            base = synthetic_archive(codes, n, generator, a.seed)
            row = {"generator": generator} | bench_size(base, a.queries, a.seed)
            result["sizes"].append(row)
            print(json.dumps(row), flush=True)
            del base
    result["machine"]["load_at_end"] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    probes = " / ".join(map(str, NPROBES))
    print(f"| archive | N | exact p50 / p99 ms | IVF lists | recall@10 at nprobe {probes} | 10th-distance ratio "
          f"| IVF p50 ms |")
    for r in result["sizes"]:
        print(f"| {r['generator']} | {r['n']:,} | {r['exact_p50_ms']:.1f} / {r['exact_p99_ms']:.1f} | {r['nlist']} | "
              + " / ".join(f"{r['recall_at_10'][str(p)]:.3f}" for p in NPROBES) + " | "
              + " / ".join(f"{r['tenth_distance_ratio'][str(p)]:.3f}" for p in NPROBES) + " | "
              + " / ".join(f"{r['ivf_p50_ms'][str(p)]:.2f}" for p in NPROBES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
