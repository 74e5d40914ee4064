"""Can DESOM-2's seed be chosen without the labels it will be scored with?

DESOM-2's seed-to-seed spread (0.916-0.947 on the test split, up to 0.05 between neighbouring
validation rows) is larger than what most settings change. The archive trains one DESOM-2 and
already retrains it under another seed when it collapses (desom.training.train_until_it_reconstructs).
If a measure of the trained map that needs no labels, or only the labels the archive holds at
training time, follows a seed's validation accuracy, the archive could train a few seeds and keep
the best by that measure.

On the validation split only (the test split is not read), for the study's chosen configuration
(turned stamps, grid1, sqrt counts, 12 exposures per cell, histo + seven statistics), it trains
--seeds DESOM-2 seeds and records per seed:
- validation accuracy, precision and recall (cells named by the labelled fitting exposures, as
  in the study);
- explained variance of the reconstruction (the collapse gate's measure);
- input R2: the share of the normalised inputs' variance that the cells explain (1 - within-cell
  over total sum of squares, on the fitting exposures): how alike a cell's members are;
- latent quantization error over the latent spread, and topographic error;
- leave-one-out accuracy of the labelled fitting exposures: each named by the other labelled
  members of its cell (balanced over Good and Bad).
Then the Spearman correlation of each measure with validation accuracy, and the accuracy one
would get by training k seeds and keeping the best by the measure (mean over every k-subset),
beside the plain mean over seeds.

    .venv/bin/python -m benchmarks.bench_desom2_seed_choice --seeds 12 --stats-weight 0.2
Writes benchmarks/results/desom2_seed_choice.json (needs the study's caches: make science).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from benchmarks import bench_science as bs  # noqa: E402
from benchmarks import science_models as sm  # noqa: E402
from desom.evaluation import binary_scores, cell_predictions, leave_one_out_accuracy  # noqa: E402

MEASURES = ("explained_variance", "input_r2", "latent_qe_share", "topographic_error", "labelled_loo_accuracy")
# Which way is better for each measure (+1: higher is better).
BETTER = {"explained_variance": 1, "input_r2": 1, "latent_qe_share": -1, "topographic_error": -1,
          "labelled_loo_accuracy": 1}


def input_r2(z: np.ndarray, cells: np.ndarray) -> float:
    total = ((z - z.mean(0)) ** 2).sum()
    _, inv = np.unique(cells, return_inverse=True)
    counts = np.bincount(inv).astype(float)
    sums = np.zeros((counts.size, z.shape[1]))
    np.add.at(sums, inv, z)
    means = sums / counts[:, None]
    within = ((z - means[inv]) ** 2).sum()
    return float(1 - within / total)


def spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def best_of_k(acc: np.ndarray, measure: np.ndarray, better: int, k: int) -> float:
    picks = [acc[list(s)][np.argmax(better * measure[list(s)])] for s in itertools.combinations(range(acc.size), k)]
    return float(np.mean(picks))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--stats-weight", type=float, default=0.2)
    ap.add_argument("--inputs", default="both+coherent")
    ap.add_argument("--members", type=float, default=12)
    ap.add_argument("--k", default="2,3,4")
    ap.add_argument("--desom2-set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "desom2_seed_choice.json"))
    a = ap.parse_args(argv)
    study_args = ["--recipes", "asinh_aligned", "--representations", "grid1", "--normalisers", "sqrt_counts",
                  "--validation-only", "--out", "/dev/null"]
    for item in a.desom2_set:
        study_args += ["--desom2-set", item]
    run = bs.StudyRun(bs.parse_args(study_args), "bench_desom2_seed_choice")
    bs.train_desom1_per_recipe(run)
    study = run.study
    histos = run.histos["asinh_aligned"]
    x, sigma = sm.desom2_inputs(histos, "grid1")
    stats = study.statistics_for(a.inputs)
    fit, labelled, scored = study.fit, study.labelled_fit, study.val_eval
    rows = np.concatenate([fit, scored[~np.isin(scored, fit)]])
    side = bs.map_side(len(fit), a.members)
    truth_rows = np.where(study.good[rows], "Good", "Bad")
    labelled_rows = np.isin(rows, labelled)
    at = {r: i for i, r in enumerate(rows)}
    idx = np.array([at[r] for r in scored])
    fit_part = np.arange(len(fit))
    per_seed = []
    from desom.inference import DesomPredictor

    for seed in range(a.seeds):
        t0 = time.perf_counter()
        model, norm = sm.fit_desom2(x[fit], side, "sqrt_counts", seed, run.a.desom2_iterations, smooth_sigma=sigma,
                                    stats_train=stats[fit], stats_weight=a.stats_weight, **run.study.desom2_settings)
        z = norm.transform(x[rows], statistics=stats[rows])
        pred = DesomPredictor(model).predict(z, return_latent=True, return_activations=False)
        cells = pred.bmu
        known, good_pred = cell_predictions(cells, truth_rows, labelled_rows)
        s = binary_scores(study.good[scored][known[idx]], good_pred[idx][known[idx]])
        latent_fit = pred.latent[fit_part]
        spread = float(((latent_fit - latent_fit.mean(0)) ** 2).sum(1).mean())
        from desom.metrics import map_order
        order = map_order(cells[fit_part].astype(np.int64), pred.second_bmu[fit_part].astype(np.int64), model.map_shape)
        lab_fit = np.flatnonzero(labelled_rows[fit_part])
        rec = {"seed": seed, "kept_seed": model.training_gate["seed"], "accuracy": s["accuracy"],
               "precision": s["precision"], "recall": s["recall"], "coverage": float(known[idx].mean()),
               "explained_variance": float(model.training_gate["explained_variance"]),
               "input_r2": input_r2(z[fit_part], cells[fit_part]),
               "latent_qe_share": float(pred.quantization[fit_part].mean()) / max(spread, 1e-12),
               "topographic_error": float(order["topographic_error"]),
               "labelled_loo_accuracy": leave_one_out_accuracy(cells[fit_part], truth_rows[fit_part],
                                                               lab_fit)["balanced_accuracy"],
               "seconds": round(time.perf_counter() - t0, 1)}
        per_seed.append(rec)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()), flush=True)
    acc = np.array([r["accuracy"] for r in per_seed])
    rec_ = np.array([r["recall"] for r in per_seed])
    summary = {"mean_accuracy": float(acc.mean()), "sd_accuracy": float(acc.std(ddof=1)),
               "mean_recall": float(rec_.mean()), "measures": {}}
    ks = [int(k) for k in a.k.split(",") if k and int(k) <= a.seeds]
    for m in MEASURES:
        values = np.array([r[m] for r in per_seed])
        summary["measures"][m] = {"spearman_with_accuracy": spearman(values, acc),
                                  "spearman_with_recall": spearman(values, rec_),
                                  "best_of_k_accuracy": {k: best_of_k(acc, values, BETTER[m], k) for k in ks},
                                  "best_of_k_recall": {k: best_of_k(rec_, values, BETTER[m], k) for k in ks}}
        print(f"{m:24s} rho(acc) {summary['measures'][m]['spearman_with_accuracy']:+.2f} "
              f"rho(rec) {summary['measures'][m]['spearman_with_recall']:+.2f} best-of-k acc "
              + " ".join(f"{k}:{v:.3f}" for k, v in summary["measures"][m]["best_of_k_accuracy"].items()), flush=True)
    print(f"mean accuracy over seeds {acc.mean():.3f} (sd {acc.std(ddof=1):.3f}), mean recall {rec_.mean():.3f}")
    out = {"benchmark": "desom2_seed_choice", "command": "python -m benchmarks.bench_desom2_seed_choice " + " ".join(argv or sys.argv[1:]),
           "configuration": {"recipe": "asinh_aligned", "representation": "grid1", "normaliser": "sqrt_counts",
                             "members_per_cell": a.members, "map_side": side, "inputs": a.inputs,
                             "stats_weight": a.stats_weight, "desom2_settings": run.study.desom2_settings},
           "split": "validation (fit on the fitting exposures, scored on the balanced validation sample)",
           "n_scored": int(len(scored)), "per_seed": per_seed, "summary": summary}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1, default=float))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
