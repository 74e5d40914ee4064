"""Why find-similar over histo-vectors stops level with the five source statistics: every
candidate way of comparing histo-vectors, and where the misses are, on the science study's
validation split (the test split is not read). Writes results/find_similar_transforms.json.

    .venv/bin/python -m benchmarks.bench_find_similar_transforms

Reads the science study's cached survey and DESOM-1 (make science first). Three questions:
  1. Does another transform of the same histo-vectors find more of the same kind? Hellinger (the
     archive's index), per-bin standardised, PCA (plain and whitened), tf-idf, and DESOM-1's soft
     activations in place of hard counts.
  2. Does the signal live in the bright sources? Histo-vectors of the sources above a peak S/N
     only, and beside the full one.
  3. Are slightly trailed exposures (bt) near one another at all? Hellinger distances between
     trailed exposures by the difference of their trail angles, against Good ones.
Each candidate's precision@10 is given with its paired difference from the five statistics.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks import bench_science as bs
from desom.baseline import FeatureScaler
from desom.evaluation import paired_difference, same_kind_precision_at_k

ROOT = Path(__file__).resolve().parents[1]
PEAK_BOX = slice(12, 20)     # the stamp's central 8x8 pixels hold the detected source's peak
SNR_THRESHOLDS = (10, 20, 50, 100)
PCA_COMPONENTS = (8, 16, 32, 64)


def shares(h: np.ndarray) -> np.ndarray:
    return h / np.maximum(h.sum(axis=1, keepdims=True), 1e-12)


def peak_snr(data: dict, chunk: int = 200_000) -> np.ndarray:
    """Per cutout: (peak of the central pixels - the sky plane's centre) / the CCD's sky noise."""
    stamps, plane, noise = data["stamps"], data["plane"], data["noise"]
    out = np.empty(len(stamps), np.float32)
    for s in range(0, len(stamps), chunk):
        box = np.asarray(stamps[s:s + chunk, PEAK_BOX, PEAK_BOX], np.float32).reshape(-1, 64)
        out[s:s + chunk] = (box.max(axis=1) - plane[s:s + chunk, 0]) / noise[s:s + chunk]
    return out


def histo_of(data: dict, bmu: np.ndarray, keep: np.ndarray, n_nodes: int) -> np.ndarray:
    """Weighted BMU counts per exposure over the cutouts in `keep` (as the study's hard histo)."""
    offsets = data["offsets"]
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    out = np.zeros((len(offsets) - 1, n_nodes))
    np.add.at(out, (owner[keep], bmu[keep].astype(np.int64)), data["weight"][keep].astype(np.float64))
    return out


def candidates(hard: np.ndarray, soft: np.ndarray, fit: np.ndarray) -> dict:
    """name -> (n, d) vectors of every exposure; anything fitted is fitted on `fit` rows."""
    hell = np.sqrt(shares(hard))
    out = {"hellinger (the archive's histo index)": hell}
    mu, sd = hell[fit].mean(axis=0), hell[fit].std(axis=0)
    out["hellinger, each bin standardised"] = (hell - mu) / np.maximum(sd, 1e-6)
    _, sv, vt = np.linalg.svd(hell[fit] - mu, full_matrices=False)
    for k in PCA_COMPONENTS:
        proj = (hell - mu) @ vt[:k].T
        out[f"hellinger, PCA {k}"] = proj
        out[f"hellinger, PCA {k} whitened"] = proj / (sv[:k] / np.sqrt(len(fit)))
    idf = np.log(1.0 / np.maximum((hard[fit] > 0).mean(axis=0), 1e-3))
    out["hellinger x idf"] = hell * idf
    out["soft activations, hellinger"] = np.sqrt(shares(soft))
    return out


def trail_distances(hard: np.ndarray, kinds: np.ndarray, angles: np.ndarray, trail_px: np.ndarray) -> dict:
    """Mean Hellinger distance between trailed exposures by trail-angle difference, to Good ones,
    and each one's nearest trailed and nearest Good neighbour."""
    hell = np.sqrt(shares(hard))
    good = np.flatnonzero(kinds == "good")
    out = {}
    for kind in ("bt", "rbt"):
        rows = np.flatnonzero(kinds == kind)
        if len(rows) < 2 or len(good) < 2:
            continue
        d = np.linalg.norm(hell[rows, None] - hell[None, rows], axis=2)
        da = np.abs(angles[rows, None] - angles[None, rows]) % 180
        da = np.minimum(da, 180 - da)
        iu = np.triu_indices(len(rows), 1)
        by_angle = {f"{lo}-{hi} deg": float(d[iu][(da[iu] >= lo) & (da[iu] < hi)].mean())
                    for lo, hi in ((0, 10), (10, 30), (30, 60), (60, 90.01))}
        to_good = np.linalg.norm(hell[rows, None] - hell[None, good], axis=2)
        np.fill_diagonal(d, np.inf)
        out[kind] = {"n": int(len(rows)), "trail_px_median": float(np.median(trail_px[rows])),
                     "mean_distance_by_angle_difference": by_angle,
                     "mean_distance_to_good": float(to_good.mean()),
                     "nearest_same_kind_mean": float(d.min(axis=1).mean()),
                     "nearest_good_mean": float(to_good.min(axis=1).mean())}
    sample = good[:300]
    gg = np.linalg.norm(hell[sample, None] - hell[None, sample], axis=2)
    out["good_to_good_mean"] = float(gg[np.triu_indices(len(sample), 1)].mean())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="on the science study's --quick survey (a smoke run)")
    ap.add_argument("--out", default=None, help="default: results/find_similar_transforms.json (var/science/ with --quick)")
    a = ap.parse_args(argv)
    a.out = a.out or str(ROOT / "var" / "science" / "find_similar_transforms-quick.json" if a.quick
                         else ROOT / "benchmarks" / "results" / "find_similar_transforms.json")
    t0 = time.perf_counter()
    study_args = ["--find-similar-only", "--out", str(ROOT / "var" / "science" / "transforms-run.json")]
    run = bs.StudyRun(bs.parse_args(study_args + (["--quick"] if a.quick else [])), "bench_find_similar_transforms")
    bs.train_desom1_per_recipe(run)
    study, data = run.study, run.data
    h = run.histos[run.eligible[0]]
    fit_rows, rows, queries = bs.find_similar_split(study, "validation")
    kinds = study.kinds[rows]

    def score(vectors):
        return same_kind_precision_at_k(vectors[rows], kinds, queries, k=10, return_hits=True)

    baseline = score(FeatureScaler().fit(data["features"][fit_rows]).transform(data["features"]))
    result = {"benchmark": "find_similar_transforms", "split": "validation", "n_queries": int(queries.sum()),
              "chance": baseline["chance"], "desom1": run.eligible[0],
              "five_statistics": {"precision": baseline["precision"], "per_kind": baseline["per_kind"]},
              "candidates": {}}

    def record(group: str, name: str, vectors: np.ndarray) -> None:
        s = score(vectors)
        d = paired_difference(s["hits"], baseline["hits"], a.n_boot, run.a.seed)
        result["candidates"][name] = {"group": group, "precision": s["precision"], "per_kind": s["per_kind"],
                                      "minus_five_statistics": d}
        bs.log(f"  {name:42s} {s['precision']:.3f}  {d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
               f"  bt {s['per_kind'].get('bt', float('nan')):.2f}")

    bs.log(f"five statistics {baseline['precision']:.3f}, bt {baseline['per_kind'].get('bt', float('nan')):.2f}")
    for name, vectors in candidates(h["hard"].astype(np.float64), h["soft"].astype(np.float64), fit_rows).items():
        record("transform", name, vectors)
    snr = peak_snr(data)
    result["peak_snr_percentiles"] = dict(zip(("10", "50", "90", "99"), np.percentile(snr, [10, 50, 90, 99]).tolist()))
    full = np.sqrt(shares(h["hard"].astype(np.float64)))
    for t in SNR_THRESHOLDS:
        bright = np.sqrt(shares(histo_of(data, h["bmu"], snr > t, h["hard"].shape[1])))
        record("bright sources", f"sources above peak S/N {t}", bright)
        record("bright sources", f"all sources | above peak S/N {t}", np.hstack([full, bright]))
    truth = data["truth"]
    angles = np.array([r.get("trail_angle_deg", 0.0) for r in truth])
    trail_px = np.array([r.get("trail_px", 0.0) for r in truth])
    train = study.train   # described on the training exposures only, like everything here
    result["trails"] = trail_distances(h["hard"][train].astype(np.float64), study.kinds[train], angles[train],
                                       trail_px[train])
    bs.log(f"trails: {json.dumps(result['trails'])}")
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1, default=float))
    bs.log(f"wrote {a.out} in {result['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
