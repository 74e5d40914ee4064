"""What DESOM-2's input does on the demo: on the archive `manage.py demo` built (the same DESOM-1,
histo-vectors and source statistics), train DESOM-2 on each of desom.normalise.FEATURES (the
histo-vector alone, with the five source statistics, with the seven), for several DESOM-2 seeds
with the demo's map, length and batch and train_desom2's other defaults;
assign; score each with the demo's evaluation (30% labelled name the cells, the rest scored,
balanced Good/Bad, 95% bootstrap). Leaves the last model trained active.

    ARCHIVE_DATA_DIR=DIR .venv/bin/python manage.py demo --no-serve
    ARCHIVE_DATA_DIR=DIR .venv/bin/python -m benchmarks.bench_demo_features --seeds 0-9

Writes benchmarks/results/demo_features.json: per run the held-out and all-members figures, and
how much of each part of the input (histo, statistics) the autoencoder explains.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from desom.normalise import FEATURES  # noqa: E402


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = (int(v) for v in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(v) for v in text.split(",")]


def _explained_by_part(version, features):
    import torch

    from archive.services import versions
    from archive.services.training import histo_matrix, source_statistics_of
    from desom.metrics import explained_variance

    checkpoint = versions.load_checkpoint_for(version)
    ids, histos = histo_matrix(version.trained_on)
    names = checkpoint.normaliser.statistics_names
    stats = source_statistics_of(version.trained_on, ids, names) if names else None
    z = checkpoint.normaliser.transform(histos, statistics=stats)
    with torch.no_grad():
        r = checkpoint.model.decode(checkpoint.model.encode(torch.as_tensor(z))).numpy()
    bins = histos.shape[1]
    parts = {"histo": (z[:, :bins], r[:, :bins])}
    if stats is not None:
        parts["stats"] = (z[:, bins:], r[:, bins:])
    return ({name: round(explained_variance(x, y), 4) for name, (x, y) in parts.items()},
            {name: round(float(((x - x.mean(0)) ** 2).sum(1).mean()), 4) for name, (x, _) in parts.items()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0-2", help="DESOM-2 seeds: 0-9 or 0,3,5")
    parser.add_argument("--survey", default=None, help="the demo's survey folder (default: the one in ARCHIVE_DATA_DIR)")
    parser.add_argument("--iterations", type=int, default=1500, help="the demo's DESOM-2 length")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--features", default=",".join(FEATURES), help="comma-separated, the first is the reference")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "demo_features.json"))
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import numpy as np
    from django.conf import settings

    from archive.models import Exposure, ModelVersion
    from archive.services import versions
    from archive.services.assign import assign_cells
    from archive.services.evaluation import evaluate
    from archive.services.training import suggested_desom2_map, train_desom2

    surveys = sorted(Path(settings.ARCHIVE_DATA_DIR).glob("demo-survey-*/truth.csv"))
    truth = Path(args.survey) / "truth.csv" if args.survey else (surveys[0] if surveys else None)
    if truth is None or not truth.is_file() or versions.active_version(ModelVersion.DESOM1) is None:
        print(f"skipped: no demo archive in {settings.ARCHIVE_DATA_DIR} (run manage.py demo --no-serve there first)")
        return
    n = Exposure.objects.filter(is_science=True).count()
    side = suggested_desom2_map(n)
    out = {"command": "python -m benchmarks.bench_demo_features " + " ".join(sys.argv[1:] if argv is None else argv),
           "truth": str(truth), "n_science": n, "map": [side, side], "iterations": args.iterations,
           "load_average_start": os.getloadavg(), "runs": []}
    inputs = [f for f in args.features.split(",") if f]
    for features in inputs:
        for seed in _seeds(args.seeds):
            t0 = time.time()
            version = train_desom2(overrides={"map_rows": side, "map_cols": side, "iterations": args.iterations,
                                              "batch_size": 32}, features=features, seed=seed, progress=False)
            assign_cells(progress=False)
            result = evaluate(truth, n_boot=args.bootstrap)
            held, everyone = result["heldout"], result["all_members"]
            explained, variance = _explained_by_part(version, features)
            row = {"features": features, "seed": seed, "version": version.version_id,
                   "heldout_accuracy": held["accuracy"], "heldout_ci95": held["ci95"]["accuracy"],
                   "heldout_precision": held["precision"], "heldout_recall": held["recall"],
                   "coverage": held.get("coverage"), "n_scored": held.get("n_evaluated"),
                   "all_members_accuracy": everyone["accuracy"],
                   "explained_variance": version.metrics["explained_variance"],
                   "explained_by_part": explained, "input_variance_by_part": variance,
                   "good_by_kind": {k: v.get("predicted_good") for k, v in (held.get("confusion_by_kind") or {}).items()},
                   "seconds": round(time.time() - t0, 1)}
            out["runs"].append(row)
            print(json.dumps(row, default=float), flush=True)
    summary = {}
    for features in inputs:
        accuracy = np.array([r["heldout_accuracy"] for r in out["runs"] if r["features"] == features])
        summary[features] = {"mean": round(float(accuracy.mean()), 4), "sd": round(float(accuracy.std(ddof=1)), 4)
                             if len(accuracy) > 1 else None, "min": round(float(accuracy.min()), 4),
                             "max": round(float(accuracy.max()), 4)}
    # Seed by seed (the same seed for each input): the mean difference from the first input, with
    # a bootstrap over seeds.
    reference = [r for r in out["runs"] if r["features"] == inputs[0]]
    for features in inputs[1:]:
        diff = np.array([b["heldout_accuracy"] - a["heldout_accuracy"] for a, b in
                         zip(reference, [r for r in out["runs"] if r["features"] == features])])
        boots = np.random.default_rng(0).choice(diff, (10_000, len(diff))).mean(axis=1)
        summary[f"{features} - {inputs[0]}"] = {
            "mean": round(float(diff.mean()), 4),
            "ci95_over_seeds": [round(float(v), 4) for v in np.percentile(boots, [2.5, 97.5])]}
    out["summary"] = summary
    out["load_average_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(out, indent=1, default=float))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
