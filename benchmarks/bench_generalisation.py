"""The generalisation study (issue 34): on a survey whose every exposure carries real-sky nuisances,
do the cells keep what the histo-vector knows? Writes benchmarks/results/generalisation.json and
appends each scoring of the test split to benchmarks/results/generalisation-test-ledger.json.

    .venv/bin/python -m benchmarks.bench_generalisation --validation-only   # choose; the test split unseen
    .venv/bin/python -m benchmarks.bench_generalisation                     # choose, then score the test split once

The survey is the science study's (benchmarks/science_data.py: every exposure simulated into a raw
FITS file and imaged by the archive's own path), built with nuisances (desom.simulate.nuisances)
from a seed no setting was ever tuned on (34), and DESOM-1 is the science study's, trained on the
fit exposures' cutouts (both cached by benchmarks/bench_science.py --nuisances --seed 34).

Protocol:
  - Splits as in the science study: 30% test, the rest validation (30% of it) and fit. Every
    choice (DESOM-2's inputs and map size, the verdict rule, k-means' features and k) is made on
    validation at a budget of 10% labelled fit exposures; the test split is then scored once for
    that choice, every budget and every row in the same look, and the look is recorded in the
    ledger (desom.ledger), which refuses a second look under a changed configuration unless
    --test-reason says why.
  - Labels are drawn from the exposures the maps were fitted on (a share of them, or the paper's
    expert sample of 3 per cell) and name the rest: by the cell majority, by the map kernel, or by
    the nearest labelled exposures in DESOM-2's latent space (desom.verdicts; each rule's one
    setting chosen by leave-one-out on the labelled exposures alone). They never train a network.
  - Beside every map figure, the ceiling: a linear probe (logistic regression, the same labelled
    exposures) on the same descriptor (desom.verdicts.linear_probe_probability), and the plain
    baseline, k-means given the same validation search as DESOM-2 (features: five or seven
    statistics, with or without header keywords; k; weights; the same verdict rules).
  - Scores: balanced accuracy on a balanced held-out sample, the mean over runs (DESOM-1 seeds x
    DESOM-2 seeds x labelled draws), with two-level bootstrap intervals that resample the runs
    and the exposures together (desom.evaluation.scores_over_runs); differences are paired.
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

from desom.baseline import FEATURE_NAMES, BaselineClusterer, FeatureScaler  # noqa: E402
from desom.evaluation import (cell_predictions, expected_calibration_error, expert_sample,  # noqa: E402
                              paired_difference, same_kind_precision_at_k, scores_over_runs)
from desom.ledger import HeldOutLedger, fingerprint  # noqa: E402
from desom.verdicts import (KNN_CHOICES, TEMPERATURE_CHOICES, calibrator_from_leave_one_out,  # noqa: E402
                            choose_by_leave_one_out, latent_knn_probability, linear_probe_probability,
                            map_kernel_probability, said_good)

from benchmarks import bench_science as bs  # noqa: E402
from benchmarks import science_models as sm  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BUDGETS = ("3/cell", "5%", "10%", "30%")      # labelled exposures: the expert's sample, or a share
CHOICE_BUDGET = "10%"
RULES = ("majority", "map_kernel", "latent_knn")
TARGET = {"balanced_accuracy": 0.93, "gap_to_probe": 0.02, "max_bad_kind_in_good": 0.15}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# What a stage fits on, labels and scores
# ---------------------------------------------------------------------------------------------
class Stage:
    """validation: fit on the fit split, score the balanced validation sample; test: fit on every
    training exposure, score the balanced test sample. rows = fitting rows, then scored ones."""

    def __init__(self, study, name: str):
        self.name = name
        self.fit_rows, self.scored = ((study.fit, study.val_eval) if name == "validation"
                                      else (study.train, study.test_eval))
        self.rows = np.concatenate([self.fit_rows, self.scored[~np.isin(self.scored, self.fit_rows)]])
        # for the per-kind confusion on the test stage: every test exposure, not only the sample
        self.all_scored = study.val if name == "validation" else study.test
        self.rows_all = np.concatenate([self.fit_rows, self.all_scored[~np.isin(self.all_scored, self.fit_rows)]])
        self.at = {r: i for i, r in enumerate(self.rows_all)}
        self.idx_scored = np.array([self.at[r] for r in self.scored])
        self.idx_all = np.array([self.at[r] for r in self.all_scored])
        self.fit_mask = np.isin(self.rows_all, self.fit_rows)


def draw_labelled(stage: Stage, budget: str, draw: int, cells=None, seed: int = 0) -> np.ndarray:
    """A labelled mask over stage.rows_all: a share of the fitting exposures, or the expert's
    sample (3 random members of every cell of `cells`, a map's cells over rows_all)."""
    rng_seed = seed * 1000 + draw * 17 + 7
    if budget.endswith("/cell"):
        if cells is None:
            raise ValueError("the expert's sample needs a map's cells")
        return expert_sample(cells, per_cell=int(budget.split("/")[0]), seed=rng_seed, candidates=stage.fit_mask)
    share = float(budget.rstrip("%")) / 100.0
    fit_idx = np.flatnonzero(stage.fit_mask)
    rng = np.random.default_rng(rng_seed)
    chosen = rng.choice(fit_idx, int(round(share * fit_idx.size)), replace=False)
    mask = np.zeros(stage.rows_all.size, bool)
    mask[chosen] = True
    return mask


def rule_probabilities(rule: str, good, labelled, cells=None, map_shape=None, latent=None):
    """Every exposure's P(Good) under a verdict rule, its setting chosen by leave-one-out on the
    labelled exposures; returns (probability, setting, the labelled exposures' leave-one-out
    probabilities at that setting, for calibration; None for the majority)."""
    if rule == "majority":
        known, pred = cell_predictions(cells, np.where(good, "Good", "Bad"), labelled)
        return np.where(known, np.where(pred, 1.0, 0.0), 0.5), None, None
    if rule == "map_kernel":
        def loo(t):
            return map_kernel_probability(cells, map_shape, good, labelled, t, exclude_self=True)

        choice, _ = choose_by_leave_one_out(loo, good, labelled, TEMPERATURE_CHOICES)
        return map_kernel_probability(cells, map_shape, good, labelled, choice), choice, loo(choice)
    if rule == "latent_knn":
        def loo(k):
            return latent_knn_probability(latent, good, labelled, k, exclude_self=True)

        choice, _ = choose_by_leave_one_out(loo, good, labelled, KNN_CHOICES)
        return latent_knn_probability(latent, good, labelled, choice), choice, loo(choice)
    raise ValueError(f"unknown verdict rule {rule!r}")


def calibrated(probability, loo_probability, good, labelled):
    """The rule's probabilities through the isotonic map fitted on the labelled exposures'
    leave-one-out probabilities (desom.verdicts.calibrator_from_leave_one_out); None if it
    cannot be fitted."""
    try:
        return calibrator_from_leave_one_out(loo_probability, good, labelled)(probability)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Descriptors
# ---------------------------------------------------------------------------------------------
def header_keywords(truth: list[dict]) -> np.ndarray:
    """What the archive reads from every primary header: log10 EXPTIME, AIRMASS, the band."""
    bands = ("u", "g", "r", "i", "z")
    out = np.zeros((len(truth), 2 + len(bands)))
    for i, r in enumerate(truth):
        out[i, 0] = np.log10(max(float(r["exptime"]), 0.1))
        out[i, 1] = float(r["airmass"])
        band = str(r["filter"])[:1]
        if band in bands:
            out[i, 2 + bands.index(band)] = 1.0
    return out


class Descriptors:
    """Per exposure: the histo-vector as DESOM-2 reads it (normaliser fitted on the stage's
    fitting rows), the five and seven statistics, header keywords."""

    def __init__(self, run, histos: dict, normaliser: str, representation: str):
        self.run, self.histos = run, histos
        self.x, self.sigma = sm.desom2_inputs(histos, representation)
        self.normaliser = normaliser
        self.stats5 = run.study.statistics_for("stats")
        self.stats7 = run.study.statistics_for("stats+coherent")
        self.header = header_keywords(run.data["truth"])

    def histo(self, stage: Stage) -> np.ndarray:
        from desom.normalise import HistoNormaliser

        norm = HistoNormaliser(self.normaliser, smooth_sigma=self.sigma).fit(self.x[stage.fit_rows])
        return norm.transform(self.x[stage.rows_all])

    def scaled(self, columns: np.ndarray, stage: Stage) -> np.ndarray:
        return FeatureScaler().fit(columns[stage.fit_rows]).transform(columns[stage.rows_all])


# ---------------------------------------------------------------------------------------------
# DESOM-2 maps (cached)
# ---------------------------------------------------------------------------------------------
def desom2_map(run, desc: Descriptors, stage: Stage, config: dict, seed: int, desom1_key: str, cache: Path) -> dict:
    """cells, latent over stage.rows_all and the map side of one DESOM-2 fit, cached by what made it."""
    key = fingerprint({"config": config, "seed": seed, "stage": stage.name, "desom1": desom1_key,
                       "fit": stage.fit_rows, "rows": stage.rows_all, "iterations": run.a.desom2_iterations})
    path = cache / f"desom2-{stage.name}-{key}.npz"
    if path.exists():
        with np.load(path) as z:
            return {"cells": z["cells"], "latent": z["latent"], "side": int(z["side"])}
    side = bs.map_side(len(stage.fit_rows), config["members_per_cell"])
    stats = desc.stats7 if config["inputs"] == "both+coherent" else desc.stats5 if config["inputs"] == "both" else None
    model, norm = sm.fit_desom2(desc.x[stage.fit_rows], side, config["normaliser"], seed, run.a.desom2_iterations,
                                smooth_sigma=desc.sigma, stats_weight=config.get("stats_weight", 1.0),
                                stats_train=None if stats is None else stats[stage.fit_rows])
    cells, latent, _ = sm.desom2_cells(model, norm, desc.x[stage.rows_all],
                                       None if stats is None else stats[stage.rows_all])
    np.savez(path, cells=cells, latent=latent, side=side)
    return {"cells": cells, "latent": latent, "side": side}


def config_name(c: dict) -> str:
    inputs = {"histo": "histo", "both": "histo+5", "both+coherent": "histo+7"}[c["inputs"]]
    weight = f" x{c['stats_weight']:g}" if c["inputs"] != "histo" else ""
    return f"DESOM-2 {inputs}{weight} {c['normaliser']} {c['members_per_cell']}/cell"


# ---------------------------------------------------------------------------------------------
# One stage's runs: every map row and rule, the probes and the baselines, per labelled draw
# ---------------------------------------------------------------------------------------------
class StageRuns:
    """Collects (runs, m) predictions per row name over the runs of one stage, in one run order."""

    def __init__(self, stage: Stage, good_all: np.ndarray):
        self.stage = stage
        self.good = good_all                       # over stage.rows_all
        self.preds: dict[str, list] = {}
        self.all_preds: dict[str, list] = {}       # every scored exposure (per-kind confusion)
        self.settings: dict[str, list] = {}
        self.failed: dict[str, int] = {}
        self.probs: dict[str, list] = {}           # P(Good) of the scored exposures (calibration)

    def add(self, name: str, probability, setting=None) -> None:
        """probability: every exposure's P(Good), a callable returning it, or None; a rule that
        cannot answer with these labels (None, or a ValueError: too few of a class) says Bad
        everywhere, and the failure is counted in `failed`."""
        if callable(probability):
            try:
                probability = probability()
            except ValueError:
                probability = None
        if probability is None:
            self.failed[name] = self.failed.get(name, 0) + 1
            probability = np.full(self.good.size, 0.5)
        said = said_good(probability)
        self.probs.setdefault(name, []).append(np.asarray(probability, np.float32)[self.stage.idx_scored])
        self.preds.setdefault(name, []).append(said[self.stage.idx_scored])
        self.all_preds.setdefault(name, []).append(said[self.stage.idx_all])
        self.settings.setdefault(name, []).append(setting)

    def scores(self, n_boot: int, seed: int, names=None) -> dict:
        names = [n for n in (names or self.preds) if n in self.preds]
        truth = self.good[self.stage.idx_scored]
        return scores_over_runs(truth, {n: np.array(self.preds[n]) for n in names}, n_boot, seed)

    def calibration(self, names) -> dict:
        """Expected calibration error of each row's P(Good) on the scored exposures (all runs pooled)."""
        truth = self.good[self.stage.idx_scored]
        out = {}
        for name in names:
            if name in self.probs:
                p = np.concatenate(self.probs[name])
                e = expected_calibration_error(p, np.tile(truth, len(self.probs[name])))
                out[name] = {"ece": round(e["ece"], 4), "reliability": e["reliability"]}
        return out

    def kind_confusion(self, kinds: np.ndarray, names) -> dict:
        """Per row: the share of each kind's scored exposures called Good (mean over runs)."""
        k = kinds[self.stage.all_scored]
        out = {}
        for name in names:
            if name not in self.all_preds:
                continue
            p = np.array(self.all_preds[name])
            out[name] = {str(kind): round(float(p[:, k == kind].mean()), 4) for kind in np.unique(k)}
        return out


def run_stage(run, desc: Descriptors, stage: Stage, configs: list[dict], kmeans_configs: list[dict],
              budgets, desom1_runs: list, desom2_seeds, draws, cache: Path, probes=True) -> dict:
    """Every row of a stage at every budget: {budget: StageRuns}. A run is (DESOM-1 seed,
    DESOM-2 seed, labelled draw); every row is filled for every run, in the same order."""
    study = run.study
    good_all = study.good[stage.rows_all]
    out = {b: StageRuns(stage, good_all) for b in budgets}
    histo_cache = {}
    for d1_seed, d1_key, histos in desom1_runs:
        d = Descriptors(run, histos, desc.normaliser, desc_representation(desc))
        histo = d.histo(stage)
        stats7 = d.scaled(d.stats7, stage)
        header = d.scaled(d.header, stage)
        histo_cache[d1_seed] = histo
        maps = {}
        for c in configs:
            for s in desom2_seeds:
                maps[(config_name(c), s)] = desom2_map(run, d, stage, c, s, d1_key, cache)
        clusters = {(kmeans_name(kc), s): kmeans_cells(d, stage, kc, seed=s) for kc in kmeans_configs
                    for s in desom2_seeds}
        log(f"  {stage.name}: DESOM-1 seed {d1_seed}: {len(maps)} DESOM-2 maps and {len(clusters)} k-means ready")
        for b in budgets:
            for s in desom2_seeds:
                for draw in draws:
                    # the expert's sample is drawn on the first configuration's map; every row of
                    # the run shares the labelled exposures, so differences are paired
                    first = maps[(config_name(configs[0]), s)]
                    labelled = draw_labelled(stage, b, draw, first["cells"] if b.endswith("/cell") else None,
                                             seed=run.a.seed + s)
                    rows = out[b]
                    for c in configs:
                        m = maps[(config_name(c), s)]
                        for rule in RULES:
                            try:
                                p, setting, loo = rule_probabilities(rule, good_all, labelled, m["cells"],
                                                                     (m["side"], m["side"]), m["latent"])
                            except ValueError:
                                p, setting, loo = None, None, None
                            rows.add(f"{config_name(c)} / {rule}", p, setting)
                            if rule != "majority":
                                rows.add(f"{config_name(c)} / {rule}, calibrated",
                                         None if p is None else calibrated(p, loo, good_all, labelled), setting)
                        if probes:
                            rows.add(f"probe on {config_name(c)} latent",
                                     lambda: linear_probe_probability(m["latent"], good_all, labelled, seed=s))
                    if probes:
                        stats5 = stats7[:, :len(FEATURE_NAMES)]
                        for name, x in (("probe on histo", histo), ("probe on seven statistics", stats7),
                                        ("probe on histo + five statistics", np.hstack([histo, stats5])),
                                        ("probe on histo + seven statistics", np.hstack([histo, stats7])),
                                        ("probe on seven statistics + header", np.hstack([stats7, header]))):
                            rows.add(name, lambda: linear_probe_probability(x, good_all, labelled, seed=s))
                    for kc in kmeans_configs:
                        cells, space = clusters[(kmeans_name(kc), s)]
                        for rule in ("majority", "latent_knn"):
                            try:
                                p, setting, _ = rule_probabilities(rule, good_all, labelled, cells, None, space)
                            except ValueError:
                                p, setting = None, None
                            rows.add(f"{kmeans_name(kc)} / {rule.replace('latent_knn', 'feature_knn')}", p, setting)
    return out


def desc_representation(desc: Descriptors) -> str:
    return "grid" + (f"{desc.sigma:g}" if desc.sigma else "") if desc.sigma else "hard"


# ---------------------------------------------------------------------------------------------
# The plain baseline, given the same search
# ---------------------------------------------------------------------------------------------
def kmeans_columns(d: Descriptors, features: str) -> tuple[np.ndarray, int]:
    """(raw columns, number of statistics columns) of a k-means feature set."""
    if features == "stats5":
        return d.stats5, 5
    if features == "stats7":
        return d.stats7, 7
    if features == "stats7+header":
        return np.hstack([d.stats7, d.header]), 7
    raise ValueError(f"unknown k-means features {features!r}")


def kmeans_cells(d: Descriptors, stage: Stage, kc: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, n_stats = kmeans_columns(d, kc["features"])
    weights = np.r_[np.ones(n_stats), np.full(x.shape[1] - n_stats, kc.get("header_weight", 1.0))]
    k = kc["k"] if isinstance(kc["k"], int) else bs.map_side(len(stage.fit_rows), 12) ** 2
    k = min(k, len(stage.fit_rows) // 2)      # a small (smoke) survey
    model = BaselineClusterer(k, seed=seed, weights=weights).fit(x[stage.fit_rows])
    return model.predict(x[stage.rows_all]), model.transform(x[stage.rows_all])


def kmeans_name(kc: dict) -> str:
    w = f" (header x{kc['header_weight']:g})" if "header" in kc["features"] else ""
    return f"k-means {kc['features']}{w} k={kc['k']}"


# ---------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=34, help="the survey's seed (and the splits')")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--recipe", default="asinh_aligned", help="DESOM-1 stamp recipe (the archive's default)")
    ap.add_argument("--desom1-iterations", type=int, default=3000)
    ap.add_argument("--desom1-seeds", type=int, default=1, help="DESOM-1 maps (seeds 0..N-1) on the test split")
    ap.add_argument("--desom2-iterations", type=int, default=3000)
    ap.add_argument("--desom2-seeds", type=int, default=3, help="DESOM-2 seeds on the test split (2 on validation)")
    ap.add_argument("--draws", type=int, default=3, help="labelled draws per budget and seed")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--validation-only", action="store_true")
    ap.add_argument("--test-reason", default=None,
                    help="why the test split is scored again under a changed configuration (stored in the ledger)")
    ap.add_argument("--quick", action="store_true", help="the science study's quick survey (smoke run)")
    ap.add_argument("--out", default=str(RESULTS / "generalisation.json"))
    ap.add_argument("--ledger", default=str(RESULTS / "generalisation-test-ledger.json"))
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.desom1_iterations, a.desom2_iterations, a.n_boot, a.desom2_seeds, a.draws = 120, 300, 400, 100, 2, 2
        if a.out == str(RESULTS / "generalisation.json"):
            a.out = str(ROOT / "var" / "science" / "generalisation-quick.json")
        if a.ledger == str(RESULTS / "generalisation-test-ledger.json"):
            a.ledger = str(ROOT / "var" / "science" / "generalisation-quick-ledger.json")
    return a


def science_run(a):
    """The science study's survey (built with nuisances if missing), splits and DESOM-1 (cached)."""
    # the science study's own record of this survey goes to a scratch file, never over results/science.json
    argv = ["--nuisances", "--seed", str(a.seed), "--n", str(a.n), "--recipes", a.recipe,
            "--desom1-iterations", str(a.desom1_iterations), "--desom2-iterations", str(a.desom2_iterations),
            "--out", str(ROOT / "var" / "science" / f"science-record-s{a.seed}{'-quick' if a.quick else ''}.json")]
    if a.quick:
        argv.append("--quick")
    sa = bs.parse_args(argv)
    run = bs.StudyRun(sa, "python -m benchmarks.bench_generalisation")
    bs.train_desom1_per_recipe(run)
    return run


def desom1_runs(run, a, n_seeds: int) -> list:
    """(seed, key, histos) of DESOM-1 seeds 0..n-1 (seed 0 is the science study's own map)."""
    out = []
    for s in range(n_seeds):
        settings = sm.desom1_settings(a.desom1_iterations, **(bs.setting_overrides(run.a.desom1_set) | {"seed": s}))
        _, record, h = sm.desom1_with_histos(run.data, run.study.fit, run.study.val, a.recipe, settings, run.cache, log=log)
        out.append((s, fingerprint(record["settings"]), h))
    return out


VALIDATION_CONFIGS = [
    {"inputs": "histo", "normaliser": "sqrt_counts", "members_per_cell": 12},
    {"inputs": "both+coherent", "normaliser": "sqrt_counts", "members_per_cell": 12, "stats_weight": 0.4},
    {"inputs": "both+coherent", "normaliser": "sqrt_counts", "members_per_cell": 12, "stats_weight": 0.2},
    {"inputs": "both", "normaliser": "sqrt_counts", "members_per_cell": 12, "stats_weight": 0.4},
    {"inputs": "both+coherent", "normaliser": "hellinger", "members_per_cell": 12, "stats_weight": 0.4},
]
# k-means' search on validation: features (the five or seven statistics, with header keywords
# at two weights), k (as many clusters as the map has cells, or fixed), both verdict rules.
KMEANS_SEARCH = ([{"features": f, "k": k} for f in ("stats5", "stats7") for k in ("map", 25, 64)]
                 + [{"features": "stats7+header", "k": k, "header_weight": w}
                    for k in ("map", 25, 64) for w in (0.5, 1.0)])


def best_row(scores: dict, prefix: str) -> str:
    rows = [n for n in scores if n.startswith(prefix) and isinstance(scores[n], dict) and "balanced_accuracy" in scores[n]]
    return max(rows, key=lambda n: scores[n]["balanced_accuracy"])


def summary_rows(scores: dict) -> dict:
    return {n: {k: round(v[k], 4) for k in ("balanced_accuracy", "precision", "recall")}
            | {"ci95": [round(x, 4) for x in v["ci95"]["balanced_accuracy"]]}
            for n, v in scores.items() if isinstance(v, dict) and "balanced_accuracy" in v}


def main(argv=None) -> int:
    a = parse_args(argv)
    started = time.perf_counter()
    command = " ".join(["python -m benchmarks.bench_generalisation", *(sys.argv[1:] if argv is None else argv)])
    run = science_run(a)
    study = run.study
    cache = run.cache / "generalisation"
    cache.mkdir(exist_ok=True)
    result = {"benchmark": "generalisation", "command": command,
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), **bs.machine_speed(),
                          "load_at_start": os.getloadavg()},
              "survey": run.result["survey"], "splits": study.splits(), "target": TARGET,
              "protocol": {"budgets": BUDGETS, "choice_budget": CHOICE_BUDGET, "rules": RULES,
                           "draws": a.draws, "desom2_seeds_test": a.desom2_seeds, "desom1_seeds_test": a.desom1_seeds,
                           "n_boot": a.n_boot}}

    def save():
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1, default=float))

    d1 = desom1_runs(run, a, 1)
    desc = Descriptors(run, d1[0][2], "sqrt_counts", "grid1")

    # --- validation: every configuration, rule and k-means setting at the choice budget ---
    log("validation: DESOM-2 configurations, verdict rules, probes and the k-means search")
    val = Stage(study, "validation")
    val_runs = run_stage(run, desc, val, VALIDATION_CONFIGS, KMEANS_SEARCH, (CHOICE_BUDGET,), d1,
                         list(range(2)), list(range(a.draws)), cache)[CHOICE_BUDGET]
    val_scores = val_runs.scores(200, a.seed)
    result["validation"] = {"rows": summary_rows(val_scores), "failed_rules": val_runs.failed,
                            "kinds_called_good": val_runs.kind_confusion(study.kinds, list(val_runs.preds))}
    for name, v in sorted(result["validation"]["rows"].items(), key=lambda kv: -kv[1]["balanced_accuracy"]):
        log(f"  {name:70s} {v['balanced_accuracy']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]")
    desom_row = best_row(val_scores, "DESOM-2")
    histo_rows = [n for n in val_scores if n.startswith("DESOM-2 histo ") and "/" in n]
    histo_row = max(histo_rows, key=lambda n: val_scores[n]["balanced_accuracy"])
    kmeans_row = best_row(val_scores, "k-means")
    chosen_config = next(c for c in VALIDATION_CONFIGS if desom_row.startswith(config_name(c) + " /"))
    # the map size for the chosen inputs: 8 and 20 members per cell beside 12
    sizes = [dict(chosen_config, members_per_cell=m) for m in (8, 20)]
    size_runs = run_stage(run, desc, val, sizes, [], (CHOICE_BUDGET,), d1, list(range(2)), list(range(a.draws)),
                          cache, probes=False)[CHOICE_BUDGET]
    size_scores = size_runs.scores(200, a.seed)
    result["validation"]["map_size"] = summary_rows(size_scores)
    candidates = {desom_row: val_scores[desom_row]["balanced_accuracy"]}
    candidates |= {n: v["balanced_accuracy"] for n, v in size_scores.items()
                   if isinstance(v, dict) and "balanced_accuracy" in v and n.endswith("/ " + desom_row.split(" / ")[1])}
    desom_row = max(candidates, key=candidates.get)
    chosen_config = next(c for c in VALIDATION_CONFIGS + sizes if desom_row.startswith(config_name(c) + " /"))
    chosen_rule = desom_row.split(" / ")[1]
    chosen_histo = next(c for c in VALIDATION_CONFIGS if histo_row.startswith(config_name(c) + " /"))
    chosen_kmeans = next(kc for kc in KMEANS_SEARCH if kmeans_row.startswith(kmeans_name(kc) + " /"))
    result["choice"] = {"desom2": chosen_config, "rule": chosen_rule, "desom2_histo_only": chosen_histo,
                        "histo_only_rule": histo_row.split(" / ")[1], "kmeans": chosen_kmeans,
                        "kmeans_rule": kmeans_row.split(" / ")[1], "recipe": a.recipe}
    log(f"chosen on validation: {result['choice']}")
    save()
    if a.validation_only:
        log(f"--validation-only: the test split was not scored; wrote {a.out}")
        return 0

    # --- the test split, once: every budget, the chosen rows and their ceilings ---
    configuration = {"choice": result["choice"], "budgets": BUDGETS, "desom1_seeds": a.desom1_seeds,
                     "desom2_seeds": a.desom2_seeds, "draws": a.draws, "desom2_iterations": a.desom2_iterations,
                     "desom1_iterations": a.desom1_iterations, "survey": run.result["survey"]["path"]}
    test = Stage(study, "test")
    split_id = fingerprint({"survey": run.result["survey"]["path"], "test": study.test_eval})
    ledger = HeldOutLedger(a.ledger)
    ledger.check(split_id, configuration, a.test_reason)      # refused here, before any test work
    log(f"test split {split_id}: scored once for the chosen configuration")
    d1_test = desom1_runs(run, a, a.desom1_seeds)
    configs = [chosen_config] + ([chosen_histo] if config_name(chosen_histo) != config_name(chosen_config) else [])
    test_runs = run_stage(run, desc, test, configs, [chosen_kmeans], BUDGETS, d1_test,
                          list(range(a.desom2_seeds)), list(range(a.draws)), cache)
    result["test"] = {}
    for b in BUDGETS:
        s = test_runs[b].scores(a.n_boot, a.seed)
        result["test"][b] = {"rows": summary_rows(s),
                             "differences": {k: {"difference": round(v["balanced_accuracy"], 4),
                                                 "ci95": [round(x, 4) for x in v["ci95"]]}
                                             for k, v in s["differences"].items()},
                             "kinds_called_good": test_runs[b].kind_confusion(study.kinds, list(test_runs[b].preds)),
                             "failed_rules": test_runs[b].failed,
                             "calibration": test_runs[b].calibration([n for n in test_runs[b].probs
                                                                      if n.startswith("DESOM-2")]),
                             "settings": {n: v for n, v in test_runs[b].settings.items() if any(x is not None for x in v)}}
    result["test"]["find_similar"] = find_similar(run, desc, test, d1_test, chosen_config, cache, a)
    result["verdict"] = verdict(result, chosen_config, chosen_rule, chosen_histo, result["choice"]["histo_only_rule"],
                                chosen_kmeans, result["choice"]["kmeans_rule"])
    entry = ledger.record(split_id, configuration, {"verdict": result["verdict"],
                                                     CHOICE_BUDGET: result["test"][CHOICE_BUDGET]["rows"]},
                          a.test_reason, command=command, results_file=str(Path(a.out).relative_to(ROOT))
                          if Path(a.out).is_relative_to(ROOT) else a.out)
    result["test_ledger"] = {"file": a.ledger, "split": split_id, "look": entry["look"], "repeat": entry["repeat"],
                             "reason": entry["reason"]}
    result["machine"]["load_at_end"] = os.getloadavg()
    save()
    log(f"verdict {result['verdict']}; wrote {a.out} in {result['wall_seconds']:.0f} s")
    return 0


def find_similar(run, desc, stage: Stage, d1_runs, config: dict, cache: Path, a) -> dict:
    """Precision@10 of find-similar on the test split: the histo-vector (the archive's Hellinger
    index), DESOM-2's latent code, and the seven standardised statistics, paired over the queries."""
    from recommender.indexes.transforms import hellinger_transform

    study = run.study
    kinds = study.kinds[stage.rows_all]
    queries = np.isin(stage.rows_all, stage.scored)
    seed, key, histos = d1_runs[0]
    d = Descriptors(run, histos, desc.normaliser, desc_representation(desc))
    m = desom2_map(run, d, stage, config, 0, key, cache)
    rows = {"histo (Hellinger)": hellinger_transform(histos["hard"][stage.rows_all]),
            "DESOM-2 latent": m["latent"],
            "seven statistics": d.scaled(d.stats7, stage),
            "five statistics": d.scaled(d.stats5, stage)}
    hits = {n: same_kind_precision_at_k(v, kinds, queries, k=10, return_hits=True) for n, v in rows.items()}
    out = {n: {"precision": round(h["precision"], 4), "chance": round(h["chance"], 4)} for n, h in hits.items()}
    for n in ("histo (Hellinger)", "DESOM-2 latent"):
        for base in ("seven statistics", "five statistics"):
            out[f"{n} - {base}"] = paired_difference(hits[n]["hits"], hits[base]["hits"], a.n_boot, a.seed)
    return out


def verdict(result, config, rule, histo_config, histo_rule, kmeans, kmeans_rule) -> dict:
    rows = result["test"][CHOICE_BUDGET]["rows"]
    main = f"{config_name(config)} / {rule}"
    probe = f"probe on {config_name(config)} latent"
    same_descriptor = {"histo": "probe on histo", "both": "probe on histo + five statistics",
                       "both+coherent": "probe on histo + seven statistics"}[config["inputs"]]
    histo_main = f"{config_name(histo_config)} / {histo_rule}"
    km = f"{kmeans_name(kmeans)} / {kmeans_rule.replace('latent_knn', 'feature_knn')}"
    kinds = result["test"][CHOICE_BUDGET]["kinds_called_good"].get(main, {})
    worst = max((v for k, v in kinds.items() if k != "good"), default=float("nan"))
    acc = rows[main]["balanced_accuracy"]
    return {
        "row": main, "balanced_accuracy": acc, "meets_0.93": acc >= TARGET["balanced_accuracy"],
        "probe_same_descriptor": same_descriptor, "probe_same_descriptor_accuracy": rows[same_descriptor]["balanced_accuracy"],
        "gap_to_probe_same_descriptor": round(rows[same_descriptor]["balanced_accuracy"] - acc, 4),
        "within_0.02_of_probe": rows[same_descriptor]["balanced_accuracy"] - acc <= TARGET["gap_to_probe"],
        "probe_on_latent_accuracy": rows.get(probe, {}).get("balanced_accuracy"),
        "worst_bad_kind_in_good": worst, "bad_kinds_ok": worst <= TARGET["max_bad_kind_in_good"],
        "histo_only_row": histo_main, "histo_only_accuracy": rows[histo_main]["balanced_accuracy"],
        "kmeans_row": km, "kmeans_accuracy": rows[km]["balanced_accuracy"],
        "histo_only_at_least_kmeans": rows[histo_main]["balanced_accuracy"] >= rows[km]["balanced_accuracy"],
    }


if __name__ == "__main__":
    sys.exit(main())
