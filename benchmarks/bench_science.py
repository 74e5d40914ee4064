"""The science study: does the two-stage DESOM pipeline tell Good from Bad exposures it never
saw, and does it beat a plain method? Writes benchmarks/results/science.json and docs/science/.

    .venv/bin/python -m benchmarks.bench_science            # the study (make science)
    .venv/bin/python -m benchmarks.bench_science --quick    # smoke run: a small survey, short training

The survey (benchmarks/science_data.py): 2 000 balanced simulated exposures of 36 CCDs of 704x640
px at a realistic source density (about 2 000 cutouts each), every one simulated into a real raw
FITS file and imaged by the archive's own path. Stages are cached under var/science/, so a study
that is interrupted resumes, and a second run reuses what it can.

Protocol (it cannot flatter):
  - A fixed 30% of the exposures is the test split. Nothing is fitted on it and nothing is chosen
    on it: it is scored once, at the end, for the configuration the validation split chose.
  - The other 70% is split again: validation (30% of them) and fit (the rest). DESOM-1 learns
    from cutouts of fit exposures only, its map order measured on a probe of validation cutouts.
  - Every setting (stamp recipe, histo representation, normaliser, map size) is chosen on the
    validation split: DESOM-2 and k-means fitted on fit exposures, cells named by a labelled share
    of the fit exposures, scored on validation exposures.
  - The final DESOM-2 (and k-means) is fitted on every training exposure (fit + validation), its
    cells named by a labelled 30% of the survey drawn from them, and scored on the test split: a
    balanced Good/Bad sample, the same exposures for every method, over three seeds, with 95%
    bootstrap intervals of the seed-mean (test exposures resampled; paired across methods).
  - The plain baseline is k-means over five source statistics measured on the same detections,
    with as many clusters as the DESOM-2 map uses. The paper's own recipe (sky kept, per-stamp
    clip, hard counts, per-bin min-max) and today's stamps are scored the same way beside it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from desom.baseline import COHERENT_FLOORS, FEATURE_NAMES, STATISTIC_NAMES, BaselineClusterer, FeatureScaler  # noqa: E402
from desom.evaluation import cell_predictions, choose_map_by_labels, is_good, same_kind_precision_at_k  # noqa: E402
from desom.model import DESOMConfig  # noqa: E402
from desom.training import CANDIDATE_SEED_STEP, MAP_CANDIDATES as DESOM2_CANDIDATES  # noqa: E402

from benchmarks import science_models as sm  # noqa: E402
from benchmarks.science_data import build_survey, load_survey  # noqa: E402

TEST_SHARE = 0.3
VALIDATION_SHARE = 0.3          # of the training exposures
LABELLED_SHARE = 0.3            # of the survey, drawn from the exposures the models were fitted on
MEMBERS_PER_CELL = (8, 12, 20)  # DESOM-2 map sizes tried: side = sqrt(exposures / members)
RESULTS = ROOT / "benchmarks" / "results"
# What DESOM-2 reads: the histo-vector, statistics alone (5, or 7 with the coherent pair), or both.
INPUTS = ("histo", "stats", "stats+coherent", "both", "both+coherent")
PAPER = {"accuracy": 0.958, "precision": 0.929, "recall": 0.991}
TARGET = {"accuracy": 0.93, "precision": 0.90, "recall": 0.97, "margin_over_baseline": 0.05,
          "max_bad_kind_in_good_cells": 0.25}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine_speed() -> dict:
    """What sets this study's speed besides the core count: the CPU, and whether it trains DESOM-1
    in bf16 natively (AVX512-BF16/AMX; an AVX2-only CPU trains in float32, several times slower)."""
    from benchmarks.bench_desom_speed import cpu_name
    from desom.training import default_train_precision

    return {"cpu_model": cpu_name(), "desom1_train_precision_here": default_train_precision()}


def map_side(n_exposures: int, members_per_cell: float) -> int:
    return int(min(20, max(3, math.floor(math.sqrt(n_exposures / members_per_cell)))))


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
def balanced_sample(rows: np.ndarray, good: np.ndarray, seed: int) -> np.ndarray:
    """As many Good as Bad exposures of `rows`, drawn without replacement (sorted indices)."""
    rng = np.random.default_rng(seed)
    g, b = rows[good[rows]], rows[~good[rows]]
    m = min(len(g), len(b))
    return np.sort(np.concatenate([rng.choice(g, m, replace=False), rng.choice(b, m, replace=False)]))


def _rates(truth, pred, known):
    """accuracy, precision, recall over covered exposures; arrays broadcast over leading axes."""
    t, p, k = truth, pred, known
    tp = np.sum(k & t & p, axis=-1)
    fp = np.sum(k & ~t & p, axis=-1)
    fn = np.sum(k & t & ~p, axis=-1)
    tn = np.sum(k & ~t & ~p, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"accuracy": (tp + tn) / (tp + fp + fn + tn), "precision": tp / (tp + fp),
                "recall": tp / (tp + fn), "coverage": k.mean(axis=-1)}


def seed_mean_scores(truth: np.ndarray, preds: dict, n_boot: int, seed: int) -> dict:
    """Scores of each method as the mean over its seeds, with percentile 95% intervals from
    resampling the evaluated exposures (the same resamples for every method, so the difference
    between two methods has an interval too). preds: name -> (pred_good, known), (seeds, m)."""
    rng = np.random.default_rng(seed)
    m = truth.size
    boot = rng.integers(0, m, size=(n_boot, m))
    out = {}
    samples = {}
    for name, (pred, known) in preds.items():
        point = {k: float(np.nanmean(v)) for k, v in _rates(truth[None], pred, known).items()}
        per_seed = {k: [float(x) for x in v] for k, v in _rates(truth[None], pred, known).items()}
        b = _rates(truth[boot][:, None, :], pred[:, boot].transpose(1, 0, 2), known[:, boot].transpose(1, 0, 2))
        b = {k: np.nanmean(v, axis=1) for k, v in b.items()}
        samples[name] = b["accuracy"]
        point["ci95"] = {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in b.items()}
        point["per_seed"] = per_seed
        # An abstention counted as a coin flip: the accuracy of a system that must answer.
        correct = ((pred == truth[None]) & known).sum(axis=1) + 0.5 * (~known).sum(axis=1)
        point["accuracy_effective"] = float(np.mean(correct / m))
        point["n_evaluated"] = int(m)
        out[name] = point
    names = list(preds)
    out["differences"] = {}
    for a in names:
        for b_ in names:
            if a < b_:
                d = samples[a] - samples[b_]
                out["differences"][f"{a}-{b_}"] = {
                    "accuracy": out[a]["accuracy"] - out[b_]["accuracy"],
                    "ci95": [float(np.nanpercentile(d, 2.5)), float(np.nanpercentile(d, 97.5))]}
    return out


def kind_confusion(kinds, scored_rows, pred, known) -> dict:
    """Per kind, the share of its scored exposures that land in Good cells (mean over seeds),
    among those whose cell is named; and the abstained share."""
    out = {}
    for kind in np.unique(kinds[scored_rows]):
        sel = kinds[scored_rows] == kind
        k = known[:, sel]
        p = pred[:, sel]
        with np.errstate(invalid="ignore"):
            good_share = np.nanmean(np.where(k.any(axis=1), (p & k).sum(axis=1) / np.maximum(k.sum(axis=1), 1), np.nan))
        out[str(kind)] = {"n": int(sel.sum()), "share_in_good_cells": float(good_share),
                          "abstained": float((~k).mean())}
    return out


def brief(s: dict) -> str:
    ci = s["ci95"]["accuracy"]
    return (f"acc {s['accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] prec {s['precision']:.3f} "
            f"rec {s['recall']:.3f} cov {s['coverage']:.2f}")


# ---------------------------------------------------------------------------------------------
# One fitted configuration
# ---------------------------------------------------------------------------------------------
class Study:
    def __init__(self, data, args, cache_dir):
        self.data, self.a, self.cache_dir = data, args, cache_dir
        self.desom2_settings = setting_overrides(args.desom2_set)
        DESOMConfig.desom2(**self.desom2_settings)    # a misspelt setting fails here, not in a worker
        truth = data["truth"]
        self.n = len(truth)
        self.kinds = np.array([r["kind"] for r in truth])
        self.good = is_good(np.array([r["good_bad"] for r in truth]))
        self.failed = np.array([bool(e) for e in data["errors"]])
        rng = np.random.default_rng(args.seed)
        is_test = rng.uniform(size=self.n) < TEST_SHARE
        is_val = rng.uniform(size=self.n) < VALIDATION_SHARE
        ok = ~self.failed
        self.test = np.flatnonzero(is_test & ok)
        self.train = np.flatnonzero(~is_test & ok)
        self.val = np.flatnonzero(~is_test & is_val & ok)
        self.fit = np.flatnonzero(~is_test & ~is_val & ok)
        share = LABELLED_SHARE / (1.0 - TEST_SHARE)     # of the exposures the models saw
        lab_rng = np.random.default_rng(args.seed + 1)
        self.labelled_fit = np.sort(lab_rng.choice(self.fit, int(round(share * len(self.fit))), replace=False))
        self.labelled_train = np.sort(lab_rng.choice(self.train, int(round(share * len(self.train))), replace=False))
        self.val_eval = balanced_sample(self.val, self.good, args.seed + 2)
        self.test_eval = balanced_sample(self.test, self.good, args.seed + 3)
        self.scaler = FeatureScaler().fit(data["features"][self.fit])
        self.scaler_train = FeatureScaler().fit(data["features"][self.train])
        self.coherent = np.full((self.n, 2), np.nan)   # the COHERENT_NAMES, set by StudyRun
        self.fits = FitPool(getattr(args, "fit_workers", 1))
        self.candidates = max(1, int(getattr(args, "desom2_candidates", 1)))
        self.histos = {}

    def statistics_for(self, inputs: str) -> np.ndarray:
        """The raw statistics an input reads: the five (FEATURE_NAMES), or with "coherent" in
        its name all seven (STATISTIC_NAMES; the coherent pair set by StudyRun)."""
        if "coherent" in inputs:
            return np.hstack([self.data["features"], self.coherent])
        return self.data["features"]

    def splits(self) -> dict:
        return {"n": self.n, "test": len(self.test), "train": len(self.train), "validation": len(self.val),
                "fit": len(self.fit), "labelled_for_selection": len(self.labelled_fit),
                "labelled_for_test": len(self.labelled_train), "validation_scored": len(self.val_eval),
                "test_scored": len(self.test_eval), "failed": int(self.failed.sum())}

    def run(self, stage: str, histos: dict | None, representation: str, normaliser: str, members: float,
            seeds, inputs: str = "histo", stats_weight: float = 1.0) -> dict:
        """Fit DESOM-2 (inputs: INPUTS) and the two k-means baselines on the stage's fitting
        exposures, name cells with its labelled ones, predict its scored exposures. With "both",
        the standardised statistics are multiplied by `stats_weight` (their share of DESOM-2's
        input beside a 625-bin histo-vector), as the archive's HistoNormaliser does."""
        if inputs not in INPUTS:
            raise ValueError(f"unknown inputs {inputs!r}; expected one of {INPUTS}")
        fit_rows, labelled, scored = ((self.fit, self.labelled_fit, self.val_eval) if stage == "validation"
                                      else (self.train, self.labelled_train, self.test_eval))
        rows = np.concatenate([fit_rows, scored[~np.isin(scored, fit_rows)]])
        side = map_side(len(fit_rows), members)
        raw = self.statistics_for(inputs)
        if histos is not None:
            x, sigma = sm.desom2_inputs(histos, representation)
        preds, latents, cells_seed, gates = [], [], [], []
        base_preds = {"baseline": [], "baseline_coherent": []}
        base_seeds = {name: [] for name in base_preds}   # the k-means seed kept per map seed
        at = {r: i for i, r in enumerate(rows)}
        idx = np.array([at[r] for r in scored])
        truth_rows = np.where(self.good[rows], "Good", "Bad")
        labelled_rows = np.isin(rows, labelled)
        t0 = time.perf_counter()
        iterations = self.a.desom2_iterations
        # On the test split each seed may train several candidate maps, of which the labelled
        # exposures keep one (desom.evaluation.choose_map_by_labels); selection trains one.
        n_candidates = self.candidates if stage == "test" else 1
        attempt_seeds = [s + j * CANDIDATE_SEED_STEP for s in seeds for j in range(n_candidates)]
        if inputs.startswith("stats"):
            scaled = FeatureScaler().fit(raw[fit_rows]).transform(raw)
            jobs = [(_fit_stats_desom2, (scaled[fit_rows], side, s, iterations), dict(self.desom2_settings))
                    for s in attempt_seeds]
        else:
            stats = raw if inputs.startswith("both") else None
            jobs = [(sm.fit_desom2, (x[fit_rows], side, normaliser, s, iterations),
                     {"smooth_sigma": sigma, "stats_weight": stats_weight,
                      "stats_train": None if stats is None else stats[fit_rows], **self.desom2_settings})
                    for s in attempt_seeds]
        fitted = self.fits.map(jobs)
        chosen = []

        def cells_of(result):
            if inputs.startswith("stats"):
                return (result, *_stats_cells(result, scaled[rows]))
            model, norm = result
            return (model, *sm.desom2_cells(model, norm, x[rows], None if stats is None else stats[rows])[:2])

        for i, s in enumerate(seeds):
            candidates = [cells_of(r) for r in fitted[i * n_candidates:(i + 1) * n_candidates]]
            pick = 0
            if n_candidates > 1:
                pick, scores = choose_map_by_labels([c[1] for c in candidates], truth_rows, labelled_rows)
                chosen.append({"seed": s, "kept": attempt_seeds[i * n_candidates + pick],
                               "leave_one_out": [round(c["balanced_accuracy"], 4) for c in scores]})
            model, cells, latent = candidates[pick]
            gates.append(model.training_gate)
            if len(model.training_gate["attempts"]) > 1:
                log(f"    DESOM-2 seed {s} collapsed and was restarted: {model.training_gate['attempts']}")
            cell_of = np.full(self.n, -1)
            cell_of[rows] = cells
            known, pred = cell_predictions(cell_of[rows], truth_rows, labelled_rows)
            preds.append((pred[idx], known[idx]))
            cells_seed.append(cell_of)
            latents.append((rows, latent))
            # The baselines: k-means with as many clusters as the map uses on the fitting rows,
            # over the five statistics (the plain baseline) and over the seven. Where the map
            # was kept among candidates, so is the clustering, by the same labels and rule.
            k = max(2, len(np.unique(cell_of[fit_rows])))
            for name, columns in (("baseline", self.statistics_for("stats")),
                                  ("baseline_coherent", self.statistics_for("stats+coherent"))):
                base_cells = [BaselineClusterer(k, seed=s + j * CANDIDATE_SEED_STEP).fit(columns[fit_rows])
                              .predict(columns[rows]) for j in range(n_candidates)]
                bpick = choose_map_by_labels(base_cells, truth_rows, labelled_rows)[0] if n_candidates > 1 else 0
                bknown, bpred = cell_predictions(base_cells[bpick], truth_rows, labelled_rows)
                base_preds[name].append((bpred[idx], bknown[idx]))
                base_seeds[name].append(s + bpick * CANDIDATE_SEED_STEP)
        out = {"stage": stage, "representation": representation, "normaliser": normaliser,
               "members_per_cell": members, "map_side": side, "inputs": inputs, "stats_weight": stats_weight,
               "seeds": list(seeds),
               "training_gates": [{"seed": g["seed"], "attempts": g["attempts"]} for g in gates],
               "candidates": {"per_seed": n_candidates, "chosen": chosen} if n_candidates > 1 else None,
               "baseline_seeds": base_seeds,
               "seconds": round(time.perf_counter() - t0, 1)}
        stacked = lambda pairs: (np.array([p for p, _ in pairs]), np.array([k for _, k in pairs]))  # noqa: E731
        out["_preds"] = {"desom": stacked(preds)} | {name: stacked(v) for name, v in base_preds.items()}
        out["_cells"] = cells_seed
        out["_latent"] = latents
        out["_scored"] = scored
        return out


class FitPool:
    """Runs a study's DESOM-2 fits (one per seed) in `workers` processes of one torch thread each.

    A DESOM-2 step is a few small dense layers: two single-thread fits side by side finish
    sooner than two in turn on two threads each (about 1.2x on 2 cores). The workers are spawned,
    not forked, so no OpenMP state crosses into them; results come back in the jobs' order, so
    the study reads the same seeds in the same order whatever the number of workers."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self._pool = None

    def map(self, jobs: list) -> list:
        """jobs: (function, args, kwargs) triples of picklable module-level functions."""
        if self.workers == 1 or len(jobs) < 2:
            return [fn(*args, **kwargs) for fn, args, kwargs in jobs]
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_one_torch_thread)
        # A job left over when the workers are busy no more runs alone on one thread: it runs
        # here afterwards, on every thread (three seeds: a pair side by side, then one).
        paired = len(jobs) - len(jobs) % self.workers
        futures = [self._pool.submit(fn, *args, **kwargs) for fn, args, kwargs in jobs[:paired]]
        done = [f.result() for f in futures]
        return done + [fn(*args, **kwargs) for fn, args, kwargs in jobs[paired:]]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _fit_stats_desom2(x, side, seed, iterations, **settings):
    """DESOM-2 on the standardised statistics alone (five or seven: the ablation's "statistics only")."""
    return sm.train_gated_desom2(x, side, seed, iterations, **{"hidden_dims": (32, 16), "latent_dim": 8, **settings})


def _stats_cells(model, x):
    from desom.inference import DesomPredictor

    pred = DesomPredictor(model).predict(x.astype(np.float32), return_latent=True, return_activations=False)
    return pred.bmu, pred.latent


def summarise(study: Study, run: dict, n_boot: int, seed: int, with_baseline: bool = True) -> dict:
    truth = study.good[run["_scored"]]
    preds = {"desom": run["_preds"]["desom"]}
    if with_baseline:
        preds["baseline"] = run["_preds"]["baseline"]
    scores = seed_mean_scores(truth, preds, n_boot, seed)
    out = {k: v for k, v in run.items() if not k.startswith("_")}
    out.update(scores)
    return out


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------
def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path.relative_to(ROOT))


def plots(result: dict, outdir: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    final = result.get("test", {})
    conf = {name: final[name]["confusion_by_kind"]
            for name in ("desom", "desom_histo_only", "baseline", "baseline_coherent", "paper_recipe")
            if name in final and "confusion_by_kind" in final[name]}
    if conf:
        kinds = sorted(next(iter(conf.values())), key=lambda k: (k != "good", k))
        fig, ax = plt.subplots(figsize=(8, 4.2))
        width = 0.8 / len(conf)
        for i, (name, c) in enumerate(conf.items()):
            ax.bar(np.arange(len(kinds)) + i * width, [c[k]["share_in_good_cells"] for k in kinds], width, label=name)
        ax.axhline(TARGET["max_bad_kind_in_good_cells"], color="grey", ls="--", lw=1, label="bad-kind limit 0.25")
        ax.set_xticks(np.arange(len(kinds)) + 0.4 - width / 2, kinds, rotation=30, ha="right")
        ax.set_ylabel("share of test exposures in Good cells")
        ax.set_title("Held-out test exposures: where each kind lands (mean of 3 seeds)")
        ax.legend(fontsize=8)
        written.append(_save(fig, outdir / "science_confusion.png"))
    orders = {r: v["probe_history"] for r, v in result.get("desom1", {}).items() if v.get("probe_history")}
    if orders:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for r, hist in orders.items():
            its = [h["iteration"] for h in hist]
            axes[0].plot(its, [h["te"] for h in hist], label=r)
            axes[1].plot(its[1:], [h["churn"] for h in hist[1:]], label=r)
        axes[0].set_ylabel("topographic error (probe)")
        axes[1].set_ylabel("BMU churn since last probe")
        for ax in axes:
            ax.set_xlabel("joint iteration")
            ax.legend(fontsize=8)
        written.append(_save(fig, outdir / "science_map_order.png"))
    return written


# ---------------------------------------------------------------------------------------------
# The study's stages, in order: each reads what the earlier ones left in `StudyRun` and adds its
# own part of the result (saved after each stage, so an interrupted study keeps what it measured).
# ---------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--survey", default=None, help="survey folder (built there when missing)")
    ap.add_argument("--n", type=int, default=2000, help="exposures in the survey")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--recipes", default="asinh,asinh_aligned",
                    help=f"DESOM-1 variants to compare on validation, first is the proposed one: a stamp recipe "
                         f"({', '.join(sm.RECIPES)}), at --desom1-iterations or as RECIPE@ITERATIONS")
    ap.add_argument("--desom1-iterations", type=int, default=3000)
    ap.add_argument("--desom1-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a DESOM-1 setting (t_min, lr, prototype_lr, batch_size, max_cutouts...)")
    ap.add_argument("--desom2-iterations", type=int, default=3000)
    ap.add_argument("--desom2-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a DESOM-2 setting (desom.model.DESOMConfig), e.g. prototype_init=pca")
    ap.add_argument("--representations", default="hard,grid1,latent")
    ap.add_argument("--normalisers", default="minmax,hellinger,sqrt_counts")
    ap.add_argument("--stats-weights", default="1,0.4,0.2,0.1,0.05",
                    help="weights of the statistics beside the histo-vector tried on validation")
    ap.add_argument("--selection-seeds", type=int, default=2, help="DESOM-2 seeds averaged on validation")
    ap.add_argument("--desom2-candidates", type=int, default=DESOM2_CANDIDATES, metavar="K",
                    help="test split: DESOM-2 maps trained per seed, the labelled exposures keeping one "
                         "(desom.evaluation.choose_map_by_labels; measured on validation by "
                         "bench_desom2_seed_choice). Selection on validation trains one per seed")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--fit-workers", type=int, default=2,
                    help="DESOM-2 fits run side by side, one torch thread each (1: in this process)")
    ap.add_argument("--quick", action="store_true", help="small survey, short training (smoke run)")
    ap.add_argument("--nuisances", action="store_true",
                    help="a survey whose exposures of every kind carry real-sky nuisances (desom.simulate.nuisances: "
                         "wind shake, optics pattern, moonlight, cirrus, fringes, satellites, halos, bad columns, "
                         "short Good exposures, clouded low-exposure frames); its own folder, ...-nuisances")
    ap.add_argument("--out", default=str(RESULTS / "science.json"))
    ap.add_argument("--replot", action="store_true", help="only redraw the figures from --out")
    ap.add_argument("--validation-only", action="store_true",
                    help="choose on validation (the grid and DESOM-2's inputs) and stop: the test split stays "
                         "unseen, for trying a setting without spending the one look at it")
    ap.add_argument("--find-similar-only", action="store_true",
                    help="only find-similar over histo-vectors against the statistics (validation choice, "
                         "test score), from the cached DESOM-1; writes results/find_similar.json")
    a = ap.parse_args(argv)
    if a.find_similar_only and a.out == str(RESULTS / "science.json"):
        a.out = str(RESULTS / "find_similar.json")
    a.survey_spec = None
    if a.validation_only and a.out == str(RESULTS / "science.json"):
        a.out = str(ROOT / "var" / "science" / "science-validation.json")   # never over the test run's figures
    if a.nuisances:
        from desom.simulate.survey import SCIENCE_SURVEY
        a.survey_spec = {**SCIENCE_SURVEY, "nuisances": True}
    if a.quick:
        a.n, a.desom1_iterations, a.desom2_iterations, a.n_boot = 120, 300, 400, 200
        a.selection_seeds = 1
        a.desom1_set = ["max_cutouts=20000"] + a.desom1_set
        a.survey_spec = {"n_ccds": 8, "ccd_shape": (512, 512), "galaxy_density": 150.0,
                         **({"nuisances": True} if a.nuisances else {})}
        if a.out == str(RESULTS / "science.json"):
            a.out = str(ROOT / "var" / "science" / "science-quick.json")
    return a


def setting_overrides(items) -> dict:
    """--desom1-set / --desom2-set KEY=VALUE items as settings: integers, floats, None, or words."""
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            overrides[key] = None if value == "None" else (int(value) if value.lstrip("-").isdigit() else float(value))
        except ValueError:
            overrides[key] = value
    return overrides


class StudyRun:
    """One run of the study: its arguments, survey, splits, the result being written, and what
    the stages hand on to each other (histo-vectors per recipe, the configuration chosen)."""

    def __init__(self, a: argparse.Namespace, command: str):
        self.a = a
        self.started = time.perf_counter()
        self.recipes = [r for r in a.recipes.split(",") if r]
        for variant in self.recipes:   # a typo fails here, before the survey is built
            sm.desom1_variant(variant, a.desom1_iterations)
        name = f"survey36-{a.n}-s{a.seed}" if not a.quick else f"quick-{a.n}-s{a.seed}"
        self.survey = Path(a.survey or ROOT / "var" / "science" / (name + ("-nuisances" if a.nuisances else "")))
        build_survey(self.survey, a.n, a.seed, workers=a.workers, survey=a.survey_spec, log=log)
        self.data = load_survey(self.survey)
        self.cache = self.survey / "study"
        self.cache.mkdir(exist_ok=True)
        self.study = Study(self.data, a, self.cache)
        self.study.coherent = sm.exposure_coherent_statistics(self.data, self.cache, log=log)
        self.histos: dict = {}
        self.eligible: list = []    # variants whose DESOM-1 passed the map-order gate
        self.choice: dict = {}
        self.seeds = list(range(a.selection_seeds))
        self._validation_runs: dict = {}
        self.result = self._header(command)

    def _header(self, command: str) -> dict:
        data, study = self.data, self.study
        counts = np.diff(data["offsets"])
        log(f"survey: {study.n} exposures, {counts.mean():.0f} cutouts per exposure on average; splits {study.splits()}")
        return {"benchmark": "science", "command": command,
                "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), **machine_speed(),
                            "load_at_start": os.getloadavg()},
                "survey": {"path": str(self.survey), **json.loads((self.survey / "survey.json").read_text()),
                           "kinds": {k: int(c) for k, c in zip(*np.unique(study.kinds, return_counts=True))},
                           "mean_detected_per_exposure": float(data["n_detected"].mean()),
                           "mean_cutouts_per_exposure": float(counts.mean()),
                           "median_cutouts_per_exposure": float(np.median(counts)),
                           "build_seconds": float(data["build_seconds"]),
                           "seconds_per_exposure": {"simulate": float(data["seconds"][:, 0].mean()),
                                                    "image": float(data["seconds"][:, 1].mean())}},
                "splits": study.splits(),
                "protocol": {"test_share": TEST_SHARE, "validation_share": VALIDATION_SHARE,
                             "labelled_share": LABELLED_SHARE, "balanced": True, "seed": self.a.seed,
                             "n_boot": self.a.n_boot, "members_per_cell_tried": MEMBERS_PER_CELL},
                "target": TARGET, "paper": PAPER}

    def save(self) -> None:
        self.result["wall_seconds"] = round(time.perf_counter() - self.started, 1)
        Path(self.a.out).parent.mkdir(parents=True, exist_ok=True)
        with open(self.a.out, "w") as fh:
            json.dump(self.result, fh, indent=1, default=float)

    def validation_summary(self, histos, representation, normaliser, members, inputs="histo",
                           stats_weight: float = 1.0) -> dict:
        # The same fit asked for twice (the ablation's "histo" row is the grid's choice; the
        # shot-noise rows at every cutout are grid rows) is fitted once: same inputs, same seeds.
        # Keyed by the input array's identity; the entry holds the array, so no later array can
        # take its id while the entry lives.
        x = sm.desom2_inputs(histos, representation)[0]
        key = (id(x), representation, normaliser, members, inputs, float(stats_weight))
        if key not in self._validation_runs:
            run = self.study.run("validation", histos, representation, normaliser, members, self.seeds,
                                 inputs=inputs, stats_weight=stats_weight)
            self._validation_runs[key] = (x, summarise(self.study, run, 200, self.a.seed, with_baseline=False))
        return dict(self._validation_runs[key][1])


def train_desom1_per_recipe(run: StudyRun) -> None:
    """Stages 2-3: DESOM-1 per variant (trained or cached), its histo-vectors, its map order. A
    map the archive's order gate would refuse (desom.metrics.check_map_order) is kept for the
    record but may not be chosen (run.eligible)."""
    from desom.metrics import MapOrderError, check_map_order, map_order

    data, study = run.data, run.study
    run.result["desom1"] = {}
    val_rows = sm.cutout_rows(data, study.val)
    for variant in run.recipes:
        recipe, iterations = sm.desom1_variant(variant, run.a.desom1_iterations)
        settings = sm.desom1_settings(iterations, **setting_overrides(run.a.desom1_set))
        _, record, h = sm.desom1_with_histos(data, study.fit, study.val, recipe, settings, run.cache, log=log)
        run.histos[variant] = h
        full = map_order(h["bmu"][val_rows].astype(np.int64), h["second"][val_rows].astype(np.int64), (25, 25))
        record = {k: v for k, v in record.items() if k != "settings"} | {"settings": settings}
        record["validation_topographic_error"] = full["topographic_error"]
        record["inference_seconds"] = float(h["seconds"])
        record["inference_precision"] = str(h["precision"])
        record["busiest_10_nodes_share"] = float(np.sort(h["hard"][study.fit].sum(axis=0))[::-1][:10].sum()
                                                  / max(h["hard"][study.fit].sum(), 1))
        try:
            check_map_order(record["map_order"])
            record["map_order_gate"] = "passed"
            run.eligible.append(variant)
        except MapOrderError as refused:
            record["map_order_gate"] = str(refused)
            log(f"DESOM-1 {variant}: {refused} It is scored for the record and may not be chosen.")
        run.result["desom1"][variant] = record
        run.save()
    if not run.eligible and run.a.quick:
        # a smoke run's few hundred iterations never settle; it exercises the stages, not the map
        log("--quick: every DESOM-1 was refused by the map-order gate; going on with all of them (a smoke run)")
        run.eligible = list(run.recipes)
    if not run.eligible:
        raise SystemExit("every DESOM-1 variant was refused by the map-order gate: "
                         + "; ".join(f"{v}: {r['map_order_gate']}" for v, r in run.result["desom1"].items()))


def choose_on_validation(run: StudyRun) -> None:
    """Stage 4: every (recipe, representation, normaliser) at 12 members per cell, then the map
    size for the best of them, all on the validation split."""
    grid = []
    log("selection on the validation split")

    def record_grid(extra=None):
        run.result["selection"] = {"grid": [{k: v for k, v in g.items() if k != "differences"} for g in grid]} | (extra or {})

    for recipe in run.recipes:
        for rep in run.a.representations.split(","):
            for norm in run.a.normalisers.split(","):
                s = run.validation_summary(run.histos[recipe], rep, norm, 12) | {"recipe": recipe}
                grid.append(s)
                log(f"  {recipe:9s} {rep:7s} {norm:11s} 12/cell: {brief(s['desom'])}")
                record_grid()
                run.save()
    key = lambda g: (g["desom"]["accuracy_effective"], g["desom"]["accuracy"])  # noqa: E731
    best = max([g for g in grid if g["recipe"] in run.eligible], key=key)
    per_recipe = {r: max([g for g in grid if g["recipe"] == r], key=key) for r in run.recipes}
    for members in MEMBERS_PER_CELL:
        if members == 12:
            continue
        s = run.validation_summary(run.histos[best["recipe"]], best["representation"], best["normaliser"], members)
        s["recipe"] = best["recipe"]
        grid.append(s)
        log(f"  {best['recipe']:9s} {best['representation']:7s} {best['normaliser']:11s} {members}/cell: {brief(s['desom'])}")
    best = max([g for g in grid if g["recipe"] == best["recipe"] and g["representation"] == best["representation"]
                and g["normaliser"] == best["normaliser"]], key=key)
    run.choice = {k: best[k] for k in ("recipe", "representation", "normaliser", "members_per_cell")}
    record_grid({"choice": run.choice,
                 "best_per_recipe": {r: {k: g[k] for k in ("representation", "normaliser")} | {"accuracy": g["desom"]["accuracy"]}
                                     for r, g in per_recipe.items()}})
    log(f"chosen on validation: {run.choice}")


def ablate_inputs(run: StudyRun) -> None:
    """What DESOM-2 reads, on validation: the histo-vector alone, the statistics alone (five, and
    seven with the coherent pair), and both at each weight of the statistics. The pipeline's
    inputs and weight are chosen here among those that read the histo-vector; the rows without
    it are the ablation that shows the deep part's own share."""
    c = run.choice
    ablation = {}
    weights = [float(w) for w in run.a.stats_weights.split(",") if w]
    rows = [("histo", 1.0), ("stats", 1.0), ("stats+coherent", 1.0)]
    rows += [(inputs, w) for inputs in ("both", "both+coherent") for w in weights]
    for inputs, weight in rows:
        s = run.validation_summary(run.histos[c["recipe"]], c["representation"], c["normaliser"],
                                   c["members_per_cell"], inputs=inputs, stats_weight=weight)
        name = inputs if not inputs.startswith("both") else f"{inputs}, statistics x {weight:g}"
        ablation[name] = {k: s["desom"][k] for k in ("accuracy", "accuracy_effective", "precision", "recall",
                                                     "coverage", "ci95")}
        ablation[name] |= {"inputs": inputs, "stats_weight": weight}
        log(f"  inputs {name:34s}: {brief(s['desom'])}")
        run.result["selection"]["ablation_validation"] = ablation
        run.save()
    key = lambda v: (v["accuracy_effective"], v["accuracy"])  # noqa: E731
    best = max((v for v in ablation.values() if v["inputs"] == "histo" or v["inputs"].startswith("both")), key=key)
    run.choice["inputs"], run.choice["stats_weight"] = best["inputs"], best["stats_weight"]
    both = [v for v in ablation.values() if v["inputs"] == "both"]
    # the five statistics' weight for the test split's "histo + five statistics" row
    run.choice["stats_weight_five"] = max(both, key=key)["stats_weight"] if both else 1.0
    run.result["selection"]["inputs_chosen"] = {k: run.choice[k] for k in ("inputs", "stats_weight", "stats_weight_five")}
    log(f"inputs chosen on validation: {run.result['selection']['inputs_chosen']}")
    run.save()


def measure_separability(run: StudyRun) -> None:
    """How much of Good/Bad each DESOM-2 input holds at all: a supervised classifier given every
    fit exposure's truth (which no unsupervised map is given), scored on the balanced validation
    sample. Not a method for the archive: a ceiling, so that a miss can be told apart from
    information the descriptors never had (the kinds still called Good by a classifier that was
    shown them are beyond any map built on the same inputs)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from desom.normalise import HistoNormaliser

    data, study, c = run.data, run.study, run.choice
    x, sigma = sm.desom2_inputs(run.histos[c["recipe"]], c["representation"])
    histo = HistoNormaliser(c["normaliser"], smooth_sigma=sigma).fit(x[study.fit]).transform(x)
    stats = study.scaler.transform(data["features"])
    seven = FeatureScaler().fit(study.statistics_for("stats+coherent")[study.fit]) \
        .transform(study.statistics_for("stats+coherent"))
    inputs = {"stats": stats, "histo": histo, "both": np.hstack([histo, stats]),
              "stats+coherent": seven, "both+coherent": np.hstack([histo, seven])}
    classifiers = {
        "logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)),
        "boosted_trees": lambda: HistGradientBoostingClassifier(max_iter=200, random_state=run.a.seed),
    }
    scored = study.val_eval
    truth = study.good[scored]
    out = {}
    for name, z in inputs.items():
        for cname, make in classifiers.items():
            model = make().fit(z[study.fit], study.good[study.fit])
            said_good = model.predict(z[scored]).astype(bool)
            pred = np.array([said_good])
            scores = seed_mean_scores(truth, {"c": (pred, np.ones_like(pred))}, 200, run.a.seed)["c"]
            kinds = kind_confusion(study.kinds, scored, pred, np.ones_like(pred))
            out[f"{name}/{cname}"] = {"accuracy": scores["accuracy"], "ci95": scores["ci95"]["accuracy"],
                                      "precision": scores["precision"], "recall": scores["recall"],
                                      "called_good": {k: round(v["share_in_good_cells"], 3) for k, v in kinds.items()}}
            log(f"  supervised {name:5s} {cname:13s}: acc {scores['accuracy']:.3f} "
                f"[{scores['ci95']['accuracy'][0]:.3f}, {scores['ci95']['accuracy'][1]:.3f}]; called Good: "
                + ", ".join(f"{k} {v['share_in_good_cells']:.2f}" for k, v in kinds.items() if k != "good"))
    run.result["selection"]["supervised_ceiling_validation"] = out
    good_fit = study.fit[study.good[study.fit]]
    physical = 10.0 ** study.coherent - np.array(COHERENT_FLOORS)   # the statistics without their log
    for name, values in (("coherent_ellipticity_fit", physical[:, 0]), ("coherent_sky_slope_fit", physical[:, 1])):
        edge = float(np.nanmax(values[good_fit]))
        fit_kinds = study.kinds[study.fit]
        run.result["selection"][name] = {
            "good_max": edge,
            "median_by_kind": {str(k): float(np.nanmedian(values[study.fit][fit_kinds == k])) for k in np.unique(fit_kinds)},
            "share_above_good_max_by_kind": {str(k): float(np.mean(values[study.fit][fit_kinds == k] > edge))
                                             for k in np.unique(fit_kinds)}}
    run.save()


def measure_shot_noise(run: StudyRun) -> None:
    """The chosen recipe's histo-vectors from a share of each exposure's cutouts, hard counts
    against soft assignment, with the reliability ratio (two halves of one exposure against two
    exposures; 1 = noise). This is what the first study's lr-decay map ran into."""
    from desom.metrics import CollapsedModelError, histo_reliability
    from desom.normalise import map_smoothing_kernel

    data, study, c, seed = run.data, run.study, run.choice, run.a.seed
    h = run.histos[c["recipe"]]
    off = data["offsets"]
    val_rows = sm.cutout_rows(data, study.val)
    owner = np.repeat(np.arange(study.n), np.diff(off))[val_rows]
    by_sources = []
    for share in (0.1, 0.25, 1.0):
        thin = {"hard": sm.thinned_hard(data, h, share, seed) if share < 1 else h["hard"], "soft": h["soft"]}
        keep = np.random.default_rng(seed).uniform(size=val_rows.size) < share
        row = {"share": share, "mean_cutouts": float(np.diff(off)[study.val].mean() * share)}
        for rep in ("hard", "grid1"):
            kernel = map_smoothing_kernel((25, 25), 1.0) if rep == "grid1" else None
            rel = histo_reliability(h["bmu"][val_rows][keep], owner[keep], data["weight"][val_rows][keep],
                                    kernel=kernel, seed=seed)
            try:
                s = run.validation_summary(thin, rep, c["normaliser"], c["members_per_cell"])
            except CollapsedModelError as exc:
                # A diagnostic row whose DESOM-2 never reconstructs is recorded as such; the study
                # goes on to the test split, which does not depend on it.
                log(f"  {share:.0%} of the cutouts, {rep}: DESOM-2 collapsed on every attempt ({exc})")
                row[rep] = {"accuracy": float("nan"), "ci95": [float("nan")] * 2,
                            "reliability_ratio": rel["ratio"], "collapsed": str(exc)}
                continue
            row[rep] = {"accuracy": s["desom"]["accuracy"], "ci95": s["desom"]["ci95"]["accuracy"],
                        "reliability_ratio": rel["ratio"]}
        by_sources.append(row)
        log(f"  {share:.0%} of the cutouts ({row['mean_cutouts']:.0f}): hard {row['hard']['accuracy']:.3f} "
            f"(reliability {row['hard']['reliability_ratio']:.2f}), soft {row['grid1']['accuracy']:.3f} "
            f"(reliability {row['grid1']['reliability_ratio']:.2f})")
    run.result["selection"]["by_sources_validation"] = by_sources
    run.save()


def _all_test_predictions(study: Study, run_cells) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, known) over every test exposure (not only the balanced sample), per seed."""
    rows = np.concatenate([study.train, study.test])
    at = {r: i for i, r in enumerate(rows)}
    idx = np.array([at[r] for r in study.test])
    p, k = [], []
    for cell_of in run_cells:
        known, pred = cell_predictions(cell_of[rows], np.where(study.good[rows], "Good", "Bad"),
                                       np.isin(rows, study.labelled_train))
        p.append(pred[idx])
        k.append(known[idx])
    return np.array(p), np.array(k)


def score_test_once(run: StudyRun) -> dict:
    """Stage 5: the test split, once, for the chosen configuration (its inputs too), beside the
    ablation (the histo-vector alone, the statistics alone, histo + the five statistics), the
    paper's recipe and today's stamps when they were trained, and the two k-means baselines.
    Returns the chosen configuration's run (its latent space feeds find-similar)."""
    study, c, final_seeds = run.study, run.choice, [0, 1, 2]
    inputs = c.get("inputs", "histo")
    log(f"test split: the chosen configuration ({inputs}), its ablation and the baselines, 3 seeds")
    main_run = study.run("test", run.histos[c["recipe"]], c["representation"], c["normaliser"],
                         c["members_per_cell"], final_seeds, inputs=inputs, stats_weight=c.get("stats_weight", 1.0))
    runs = {"desom": main_run}
    rows_info = {"desom": dict(c)}
    stats_only = "stats+coherent" if "coherent" in inputs else "stats"
    ablation = {"desom_histo_only": ("histo", 1.0), "desom_stats_only": (stats_only, 1.0),
                "desom_plus_stats": ("both", c.get("stats_weight_five", 1.0))}
    for name, (row_inputs, weight) in ablation.items():
        if row_inputs == inputs and weight == c.get("stats_weight", 1.0):
            continue   # the chosen configuration itself
        runs[name] = study.run("test", run.histos[c["recipe"]], c["representation"], c["normaliser"],
                               c["members_per_cell"], final_seeds, inputs=row_inputs, stats_weight=weight)
        rows_info[name] = dict(c, inputs=row_inputs, stats_weight=weight)
    references = {"paper": ("paper_recipe", "hard", "minmax"), "today": ("today", "hard", "hellinger")}
    for recipe, (name, rep, norm) in references.items():
        if recipe in run.histos:
            runs[name] = study.run("test", run.histos[recipe], rep, norm, c["members_per_cell"], final_seeds)
            rows_info[name] = {"recipe": recipe, "representation": rep, "normaliser": norm,
                               "members_per_cell": c["members_per_cell"], "inputs": "histo"}
    preds = {name: main_run["_preds"][name] for name in ("desom", "baseline", "baseline_coherent")}
    preds |= {name: r["_preds"]["desom"] for name, r in runs.items() if name != "desom"}
    scores = seed_mean_scores(study.good[study.test_eval], preds, run.a.n_boot, run.a.seed)
    for name in list(scores):
        if name in rows_info:
            scores[name]["configuration"] = rows_info[name]
    # Where each kind lands, over every test exposure (not only the balanced sample).
    for name in ("desom", "desom_histo_only", "paper_recipe"):
        if name in runs:
            p, k = _all_test_predictions(study, runs[name]["_cells"])
            scores[name]["confusion_by_kind"] = kind_confusion(study.kinds, study.test, p, k)
    for name, stats_inputs, names in (("baseline", "stats", FEATURE_NAMES),
                                      ("baseline_coherent", "stats+coherent", STATISTIC_NAMES)):
        scores[name]["configuration"] = {"method": f"k-means over {len(names)} statistics", "features": names}
        scores[name]["configuration"]["kmeans_seeds"] = main_run["baseline_seeds"][name]
        scores[name]["confusion_by_kind"] = _baseline_confusion(study, main_run, main_run["baseline_seeds"][name],
                                                                study.statistics_for(stats_inputs))
    scores["map_side"] = main_run["map_side"]
    # Which candidate each seed kept, with every candidate's leave-one-out score (None: one each).
    scores["candidates"] = {name: r["candidates"] for name, r in runs.items()}
    run.result["test"] = scores
    for name in preds:
        log(f"  {name:17s} {brief(scores[name])}")
    margin, margin_ci = desom_margin(scores)
    if margin_ci:
        log(f"  desom - baseline: {margin:+.3f} [{margin_ci[0]:+.3f}, {margin_ci[1]:+.3f}]")
    run.save()
    return main_run


# How find-similar may compare histo-vectors: (normaliser, soft-assignment sigma). The first is
# the archive's own "histo" index (recommender.indexes.transforms.hellinger_transform); another is
# chosen only where it beats it on the validation split with a paired 95% interval above zero.
FIND_SIMILAR_TRANSFORMS = {"hellinger": ("hellinger", 0.0), "hellinger_s0.5": ("hellinger", 0.5),
                           "hellinger_s1": ("hellinger", 1.0), "hellinger_s2": ("hellinger", 2.0),
                           "sqrt_counts": ("sqrt_counts", 0.0), "sqrt_counts_s0.5": ("sqrt_counts", 0.5),
                           "sqrt_counts_s1": ("sqrt_counts", 1.0)}
ARCHIVE_FIND_SIMILAR = "hellinger"


def find_similar_vectors(histos: np.ndarray, fit_rows: np.ndarray, rows: np.ndarray, name: str) -> np.ndarray:
    """The histo-vectors of `rows` as find-similar transform `name` compares them."""
    from desom.normalise import HistoNormaliser
    from recommender.indexes.transforms import hellinger_transform

    method, sigma = FIND_SIMILAR_TRANSFORMS[name]
    if name == ARCHIVE_FIND_SIMILAR:
        return hellinger_transform(histos[rows])
    return HistoNormaliser(method, smooth_sigma=sigma).fit(histos[fit_rows]).transform(histos[rows])


def find_similar_split(study: Study, stage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fit rows, searched rows, query mask): the scored (balanced) exposures of the stage query
    their neighbours among every exposure of its fitting split and the other scored ones."""
    fit_rows, scored = (study.fit, study.val_eval) if stage == "validation" else (study.train, study.test_eval)
    rows = np.concatenate([fit_rows, scored[~np.isin(scored, fit_rows)]])
    return fit_rows, rows, np.isin(rows, scored)


def _p_at_10(vectors, kinds, queries) -> dict:
    return same_kind_precision_at_k(vectors, kinds, queries, k=10, return_hits=True)


def _without_hits(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "hits"}


def histo_find_similar(study: Study, histos: np.ndarray, n_boot: int, seed: int) -> dict:
    """Find-similar over histo-vectors against the source statistics: the transform chosen on
    the validation split (FIND_SIMILAR_TRANSFORMS), then the test split scored once, with paired
    bootstrap intervals (same queries) of each difference."""
    from desom.evaluation import paired_difference

    fit_rows, rows, queries = find_similar_split(study, "validation")
    kinds = study.kinds[rows]
    validation = {name: _p_at_10(find_similar_vectors(histos, fit_rows, rows, name), kinds, queries)
                  for name in FIND_SIMILAR_TRANSFORMS}
    validation["baseline_features"] = _p_at_10(study.scaler.transform(study.data["features"][rows]), kinds, queries)
    archive_hits = validation[ARCHIVE_FIND_SIMILAR]["hits"]
    gains = {name: paired_difference(validation[name]["hits"], archive_hits, n_boot, seed)
             for name in FIND_SIMILAR_TRANSFORMS if name != ARCHIVE_FIND_SIMILAR}
    better = [name for name, g in gains.items() if g["ci95"][0] > 0]
    chosen = max(better, key=lambda name: gains[name]["difference"]) if better else ARCHIVE_FIND_SIMILAR
    scores = ", ".join(f"{name} {v['precision']:.3f}" for name, v in validation.items())
    log(f"find-similar on validation: {scores}; chosen {chosen}")

    fit_rows, rows, queries = find_similar_split(study, "test")
    kinds = study.kinds[rows]
    seven = study.statistics_for("stats+coherent")
    test = {"histo_find_similar": _p_at_10(find_similar_vectors(histos, fit_rows, rows, chosen), kinds, queries),
            "baseline_features": _p_at_10(study.scaler_train.transform(study.data["features"][rows]), kinds, queries),
            "baseline_features_coherent": _p_at_10(FeatureScaler().fit(seven[fit_rows]).transform(seven[rows]),
                                                   kinds, queries)}
    if chosen != ARCHIVE_FIND_SIMILAR:
        test["histo_archive_index"] = _p_at_10(find_similar_vectors(histos, fit_rows, rows, ARCHIVE_FIND_SIMILAR),
                                               kinds, queries)
    histo_hits = test["histo_find_similar"]["hits"]
    differences = {f"histo_find_similar-{name}": paired_difference(histo_hits, test[name]["hits"], n_boot, seed)
                   for name in ("baseline_features", "baseline_features_coherent")}
    return {"transforms": {k: list(v) for k, v in FIND_SIMILAR_TRANSFORMS.items()},
            "archive_transform": ARCHIVE_FIND_SIMILAR, "chosen": chosen,
            "validation": {name: _without_hits(v) for name, v in validation.items()},
            "validation_gain_over_archive": gains,
            "test": test, "test_differences": differences, "rows": rows, "queries": queries}


def score_find_similar(run: StudyRun, main_run: dict | None) -> None:
    """Precision@10 of find-similar: the scored (balanced) test exposures query their neighbours
    among every exposure the final map placed (training and scored test ones). Without a main
    run (--find-similar-only) the DESOM-2 rows are left out."""
    from desom.evaluation import paired_difference
    from desom.normalise import HistoNormaliser

    study, c = run.study, run.choice
    recipe = c.get("recipe", run.eligible[0])
    found = histo_find_similar(study, run.histos[recipe]["hard"], run.a.n_boot, run.a.seed)
    rows, queries, test = found.pop("rows"), found.pop("queries"), found.pop("test")
    kinds = study.kinds[rows]
    if main_run is not None:
        x, sigma = sm.desom2_inputs(run.histos[recipe], c["representation"])
        test["histo_chosen_normaliser"] = _p_at_10(
            HistoNormaliser(c["normaliser"], smooth_sigma=sigma).fit(x[study.train]).transform(x[rows]), kinds, queries)
        inputs = c.get("inputs", "histo")
        stats = study.statistics_for(inputs) if inputs.startswith("both") else None
        names = () if stats is None else (STATISTIC_NAMES if "coherent" in inputs else FEATURE_NAMES)
        desom2_input = HistoNormaliser(c["normaliser"], smooth_sigma=sigma, statistics=names,
                                       statistics_weight=c.get("stats_weight", 1.0)) \
            .fit(x[study.train], statistics=None if stats is None else stats[study.train]) \
            .transform(x[rows], statistics=None if stats is None else stats[rows])
        test["desom2_input"] = _p_at_10(desom2_input, kinds, queries)
        lat_rows, latent = main_run["_latent"][0]
        order = {r: i for i, r in enumerate(lat_rows)}
        test["desom2_latent"] = _p_at_10(latent[[order[r] for r in rows]], kinds, queries)
        for name in ("desom2_input", "desom2_latent"):
            found["test_differences"][f"{name}-baseline_features"] = paired_difference(
                test[name]["hits"], test["baseline_features"]["hits"], run.a.n_boot, run.a.seed)
    run.result["similar"] = {name: _without_hits(v) for name, v in test.items()} | {"selection": found}
    for name, v in run.result["similar"].items():
        if name != "selection":
            log(f"  find-similar p@10 {name}: {v['precision']:.3f} (chance {v['chance']:.3f})")
    for name, d in found["test_differences"].items():
        log(f"  {name}: {d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")


def desom_margin(scores: dict) -> tuple[float, list[float] | None]:
    """DESOM's accuracy minus the plain baseline's, with its paired bootstrap interval. The
    differences are stored under alphabetical keys ("baseline-desom" is baseline minus desom),
    so the sign turns here and nowhere else."""
    diff = scores["differences"].get("baseline-desom")
    if not diff:
        return float("nan"), None
    return -diff["accuracy"], [-diff["ci95"][1], -diff["ci95"][0]]


def verdict(result: dict) -> dict:
    """The study's figures against the targets of issue 16."""
    scores = result["test"]
    d, b = scores["desom"], scores["baseline"]
    worst = max((v["share_in_good_cells"] for k, v in d["confusion_by_kind"].items() if k != "good"), default=float("nan"))
    _, margin_ci = desom_margin(scores)
    histo_only = scores.get("desom_histo_only", d if d["configuration"].get("inputs", "histo") == "histo" else None)
    return {
        "accuracy": d["accuracy"] >= TARGET["accuracy"],
        "precision": d["precision"] >= TARGET["precision"],
        "recall": d["recall"] >= TARGET["recall"],
        "beats_baseline_by": round(d["accuracy"] - b["accuracy"], 4),
        "margin_ci95": margin_ci,
        "margin_met": d["accuracy"] - b["accuracy"] >= TARGET["margin_over_baseline"],
        "intervals_disjoint": d["ci95"]["accuracy"][0] > b["ci95"]["accuracy"][1],
        "worst_bad_kind_in_good_cells": worst,
        "bad_kinds_ok": worst <= TARGET["max_bad_kind_in_good_cells"],
        "find_similar_at_least_baseline": result["similar"]["histo_find_similar"]["precision"]
        >= result["similar"]["baseline_features"]["precision"],
        "find_similar_difference_ci95": result["similar"]["selection"]["test_differences"]
        ["histo_find_similar-baseline_features"]["ci95"],
        # beyond the targets: against k-means over all seven statistics, and the
        # histo-vector alone against the plain baseline (the deep part's own share)
        "beats_baseline_coherent_by": round(d["accuracy"] - scores["baseline_coherent"]["accuracy"], 4),
        "histo_only_beats_baseline_by": None if histo_only is None else round(histo_only["accuracy"] - b["accuracy"], 4),
        "find_similar_desom2_input_at_least_baseline": result["similar"]["desom2_input"]["precision"]
        >= result["similar"]["baseline_features"]["precision"],
    }


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.replot:
        with open(a.out) as fh:
            print("\n".join(plots(json.load(fh), ROOT / "docs" / "science")))
        return 0
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    command = " ".join(["python -m benchmarks.bench_science", *(sys.argv[1:] if argv is None else argv)])
    run = StudyRun(a, command)
    train_desom1_per_recipe(run)
    if a.find_similar_only:
        score_find_similar(run, None)
        run.save()
        log(f"wrote {a.out} in {run.result['wall_seconds']:.0f} s")
        return 0
    try:
        choose_on_validation(run)
        ablate_inputs(run)
        if a.validation_only:
            run.save()
            log(f"--validation-only: the test split was not scored; wrote {a.out} in "
                f"{run.result['wall_seconds']:.0f} s")
            return 0
        measure_separability(run)
        measure_shot_noise(run)
        main_run = score_test_once(run)
        score_find_similar(run, main_run)
    finally:
        run.study.fits.close()
    run.result["verdict"] = verdict(run.result)
    run.result["figures"] = plots(run.result, ROOT / "docs" / "science") if not a.quick else []
    run.result["machine"]["load_at_end"] = os.getloadavg()
    run.save()
    log(f"verdict {run.result['verdict']}; wrote {a.out} in {run.result['wall_seconds']:.0f} s")
    return 0


def _baseline_confusion(study: Study, run: dict, seeds, features: np.ndarray) -> dict:
    """A k-means baseline's kind confusion over every test exposure, refitted as in Study.run
    with the seeds it kept there (`seeds`: one per map seed)."""
    rows = np.concatenate([study.train, study.test])
    p, k = [], []
    for s, cell_of in zip(seeds, run["_cells"]):
        n_clusters = max(2, len(np.unique(cell_of[study.train])))
        base = BaselineClusterer(n_clusters, seed=s).fit(features[study.train])
        bcell = base.predict(features[rows])
        known, pred = cell_predictions(bcell, np.where(study.good[rows], "Good", "Bad"),
                                       np.isin(rows, study.labelled_train))
        sel = np.isin(rows, study.test)      # rows end with study.test, in its order
        p.append(pred[sel])
        k.append(known[sel])
    return kind_confusion(study.kinds, study.test, np.array(p), np.array(k))


if __name__ == "__main__":
    sys.exit(main())
