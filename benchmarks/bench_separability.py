"""How separable Good and Bad are from the exposure statistics at all (issue 16): the five
statistics of the plain baseline, and the same with the bright sources' coherent ellipticity
(`desom.baseline.coherent_ellipticity`) and the sky's coherent slope under the sources
(`desom.baseline.coherent_sky_slope`), each given to a supervised classifier (boosted trees)
that sees every label, scored by 5-fold cross-validation. No unsupervised map built on the same
statistics can do better than this ceiling, so it tells a method's miss from information the
statistics never held. Beside it, the same inputs clustered by k-means the plain baseline's way
(unsupervised, clusters named by a labelled 30%). Also: each kind's coherent statistics against
the Good exposures'.

Reads the science survey's shards as they are written, so it runs on a survey still being built:

    .venv/bin/python -m benchmarks.bench_separability [--survey var/science/survey36-2000-s16]

Writes benchmarks/results/separability.json. Not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_shards(survey: Path, max_exposures: int | None = None) -> dict:
    """Features, truth and each exposure's coherent statistics from the finished shards."""
    from benchmarks import science_models as sm
    from desom.baseline import COHERENT_FLOORS

    features, truth, coherent = [], [], []
    for path in sorted((survey / "shards").glob("shard-*.npz")):
        with np.load(path) as z:
            shard = {k: z[k] for k in ("stamps", "plane", "noise", "counts", "features")}
            truth += json.loads(str(z["truth"]))
        shard["offsets"] = np.r_[0, np.cumsum(shard["counts"])]
        with tempfile.TemporaryDirectory() as tmp:
            coherent.append(sm.exposure_coherent_statistics(shard, Path(tmp), log=lambda _: None))
        features.append(shard["features"])
        if max_exposures and len(truth) >= max_exposures:
            break
    coherent = np.concatenate(coherent)   # the logs of desom.baseline.COHERENT_NAMES
    return {"features": np.concatenate(features), "coherent": coherent,
            "coherence": 10.0 ** coherent[:, 0] - COHERENT_FLOORS[0],
            "sky_slope": 10.0 ** coherent[:, 1] - COHERENT_FLOORS[1], "truth": truth}


def unsupervised(x: np.ndarray, good: np.ndarray, kinds: np.ndarray, seeds=range(5), per_cell: int = 12) -> dict:
    """k-means as the plain baseline uses it (about a dozen training exposures per cluster, the
    statistics standardised with the archive's FeatureScaler, clusters named by the majority of
    a labelled 30% of the training exposures) on a held-out 30%: the balanced accuracy over
    the held-out exposures whose cluster is named, mean over seeds."""
    from sklearn.cluster import KMeans

    from desom.baseline import FeatureScaler
    from desom.evaluation import cell_predictions

    scores, coverage, called = [], [], {k: [] for k in np.unique(kinds)}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        test = rng.uniform(size=len(x)) < 0.3
        train = np.flatnonzero(~test)
        labelled = np.zeros(len(x), bool)
        labelled[rng.choice(train, int(round(0.3 / 0.7 * len(train))), replace=False)] = True
        scaler = FeatureScaler().fit(x[train])
        k = max(2, int(round(len(train) / per_cell)))
        cells = KMeans(k, n_init=10, random_state=seed).fit(scaler.transform(x[train])).predict(scaler.transform(x))
        known, said_good = cell_predictions(cells, np.where(good, "Good", "Bad"), labelled)
        t = test & known
        scores.append(0.5 * (said_good[t & good].mean() + (~said_good[t & ~good]).mean()))
        coverage.append(float(known[test].mean()))
        for kind in called:
            sel = t & (kinds == kind)
            called[kind].append(float(said_good[sel].mean()) if sel.any() else np.nan)
    return {"balanced_accuracy": float(np.mean(scores)), "per_seed": [float(v) for v in scores],
            "coverage": float(np.mean(coverage)),
            "called_good_by_kind": {str(k): float(np.nanmean(v)) for k, v in called.items()}}


def main(argv=None) -> int:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from desom.evaluation import is_good

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--survey", default=str(ROOT / "var" / "science" / "survey36-2000-s16"))
    ap.add_argument("--max-exposures", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "separability.json"))
    a = ap.parse_args(argv)
    started, load_before = time.perf_counter(), os.getloadavg()
    data = load_shards(Path(a.survey), a.max_exposures)
    kinds = np.array([t["kind"] for t in data["truth"]])
    good = is_good(np.array([t["good_bad"] for t in data["truth"]]))
    coherence = data["coherence"]
    names = [str(k) for k in np.unique(kinds)]
    good_values = coherence[kinds == "good"]
    edge = float(np.nanmax(good_values))
    result = {"benchmark": "separability", "command": " ".join(["python -m benchmarks.bench_separability",
                                                                *(sys.argv[1:] if argv is None else argv)]),
              "survey": a.survey, "exposures": int(len(kinds)),
              "kinds": {k: int((kinds == k).sum()) for k in names},
              "load_average_before": load_before,
              "coherent_ellipticity": {
                  "good_p50_p99_max": [float(v) for v in np.nanpercentile(good_values, [50, 99, 100])],
                  "by_kind": {k: {"median": float(np.nanmedian(coherence[kinds == k])),
                                  "min": float(np.nanmin(coherence[kinds == k])),
                                  "share_above_good_max": float(np.mean(coherence[kinds == k] > edge))}
                              for k in names}},
              "supervised_ceiling": {}}
    slope = data["sky_slope"]
    slope_edge = float(np.nanmax(slope[kinds == "good"]))
    result["coherent_sky_slope"] = {
        "good_p50_p99_max": [float(v) for v in np.nanpercentile(slope[kinds == "good"], [50, 99, 100])],
        "by_kind": {k: {"median": float(np.nanmedian(slope[kinds == k])),
                        "share_above_good_max": float(np.mean(slope[kinds == k] > slope_edge))} for k in names}}
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    inputs = {"five statistics": data["features"],
              "five statistics + coherent ellipticity": np.c_[data["features"], data["coherent"][:, 0]],
              "five statistics + coherent ellipticity + coherent sky slope": np.c_[data["features"], data["coherent"]]}
    for name, x in inputs.items():
        said_good = cross_val_predict(HistGradientBoostingClassifier(max_iter=200, random_state=0), x, good,
                                      cv=cv).astype(bool)
        balanced = 0.5 * (said_good[good].mean() + (~said_good[~good]).mean())
        result["supervised_ceiling"][name] = {
            "balanced_accuracy": float(balanced),
            "called_good_by_kind": {k: float(said_good[kinds == k].mean()) for k in names}}
        print(f"{name}: balanced accuracy {balanced:.3f}")
    result["unsupervised_kmeans"] = {}
    for name, x in inputs.items():
        result["unsupervised_kmeans"][name] = unsupervised(x, good, kinds)
        print(f"k-means, {name}: balanced accuracy {result['unsupervised_kmeans'][name]['balanced_accuracy']:.3f}")
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["load_average_after"] = os.getloadavg()
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("coherent_ellipticity", "coherent_sky_slope")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
