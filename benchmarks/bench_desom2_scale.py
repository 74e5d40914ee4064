"""DESOM-2 at archive scale: the archive's own training service on N synthetic histo-vectors.

Builds a throw-away archive (SQLite in a temporary ARCHIVE_DATA_DIR) holding N science exposures
with a 625-bin histo-vector each under one DESOM-1 version row, then times, with the archive's
defaults and nothing overridden:

1. ``archive.services.training.train_desom2`` (what ``manage.py train_desom2`` runs): reading the
   vectors from the database, fitting and applying the default normaliser, training on the map
   from ``suggested_desom2_map`` (about a dozen exposures per cell, at most 20x20) for
   ``DEFAULT_DESOM2`` iterations and batch, writing and registering the checkpoint;
2. ``archive.services.assign.assign_cells``: a cell for every exposure (``manage.py assign``'s
   DESOM-2 half).

The histo-vectors are Dirichlet mixtures: some tens of exposure "types", each a sparse Dirichlet
profile over the 625 DESOM-1 nodes; an exposure draws its own profile from a Dirichlet around
one type (sometimes a blend of two) and its counts from a multinomial with a lognormal number of
sources. The load average before and after is recorded: the machine may be shared.

    nice -n 15 .venv/bin/python -m benchmarks.bench_desom2_scale            # 50 000 exposures
    .venv/bin/python -m benchmarks.bench_desom2_scale --exposures 5000 --out /tmp/x.json

Writes benchmarks/results/desom2_scale.json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_desom_speed import cpu_name

ROOT = Path(__file__).resolve().parents[1]

BINS = 625


def dirichlet_mixture_histos(n: int, seed: int = 0, n_types: int = 40, alpha: float = 0.05,
                             concentration: float = 300.0, blend_share: float = 0.3,
                             chunk: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """(N, 625) float32 weighted counts and the (N,) type of each exposure."""
    rng = np.random.default_rng(seed)
    types = rng.dirichlet(np.full(BINS, alpha), size=n_types) + 1e-4
    types /= types.sum(axis=1, keepdims=True)
    out = np.empty((n, BINS), np.float32)
    kind = rng.integers(n_types, size=n)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        m = hi - lo
        base = types[kind[lo:hi]]
        blend = np.where(rng.random(m) < blend_share, rng.uniform(0, 0.5, m), 0.0)
        base = (1 - blend[:, None]) * base + blend[:, None] * types[rng.integers(n_types, size=m)]
        p = rng.gamma(concentration * base)          # a Dirichlet draw per row, vectorised
        p /= p.sum(axis=1, keepdims=True)
        n_src = np.clip(rng.lognormal(np.log(2000), 0.8, size=m), 30, 60_000).astype(np.int64)
        out[lo:hi] = rng.multinomial(n_src, p).astype(np.float32)
    return out, kind


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exposures", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-s", type=float, default=300.0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary archive")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/desom2_scale.json"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="desom2-scale-"))
    os.environ["ARCHIVE_DATA_DIR"] = str(tmp)
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    django.setup()
    import torch
    from django.core.management import call_command

    from archive import vectors
    from archive.models import CellAssignment, Exposure, ExposureVector, ModelVersion
    from archive.services import training as svc
    from archive.services.assign import assign_cells

    load_start = os.getloadavg()
    t0 = time.perf_counter()
    call_command("migrate", verbosity=0)
    histos, kind = dirichlet_mixture_histos(args.exposures, seed=args.seed)
    desom1 = ModelVersion.objects.create(version_id="desom1-bench-scale", kind=ModelVersion.DESOM1,
                                         checkpoint_path="/bench/none.pt", is_active=True,
                                         config={"map_rows": 25, "map_cols": 25})
    day = dt.date(2000, 1, 1)
    step = 5000
    for lo in range(0, args.exposures, step):
        hi = min(args.exposures, lo + step)
        Exposure.objects.bulk_create([
            Exposure(expnum=1_000_000 + i, filename=f"{1_000_000 + i}p.fits.fz",
                     file_path=f"/bench/{1_000_000 + i}p.fits.fz", checksum="0" * 64, release_date=day,
                     ra_deg=150.0, dec_deg=2.0, band="r", mjd_obs=55000.0, exptime=300.0, runid="11AQ01")
            for i in range(lo, hi)])
    ids = dict(Exposure.objects.values_list("expnum", "id"))
    for lo in range(0, args.exposures, step):
        hi = min(args.exposures, lo + step)
        ExposureVector.objects.bulk_create([
            ExposureVector(exposure_id=ids[1_000_000 + i], model_version=desom1,
                           histo=vectors.to_blob(histos[i]), n_detected=int(histos[i].sum()))
            for i in range(lo, hi)])
    del histos
    setup_s = time.perf_counter() - t0
    print(f"archive with {args.exposures} exposures built in {setup_s:.1f} s", flush=True)

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    version = svc.train_desom2(progress=False)
    train_s = time.perf_counter() - t0
    load_after_train = os.getloadavg()
    print(f"train_desom2: {train_s:.1f} s ({version.config.get('map_rows')}x{version.config.get('map_cols')})",
          flush=True)
    t0 = time.perf_counter()
    written = assign_cells(progress=False)
    assign_s = time.perf_counter() - t0
    load_after = os.getloadavg()
    print(f"assign_cells: {written} cells in {assign_s:.1f} s", flush=True)

    cells = np.array(CellAssignment.objects.filter(model_version=version).values_list("cell", flat=True))
    occupied = np.bincount(cells, minlength=version.config["map_rows"] * version.config["map_cols"])
    cfg = version.config
    out = {
        "benchmark": "desom2_scale",
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "machine": {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "niceness": os.nice(0),
                    "load_average_at_start": load_start, "load_average_before_training": load_before,
                    "load_average_after_training": load_after_train, "load_average_at_end": load_after,
                    "note": "2 cores shared with another long CPU-bound job: the load average shows it"},
        "data": {"exposures": args.exposures, "bins": BINS, "generator": "Dirichlet mixture (40 types, "
                 "per-exposure Dirichlet around a type or a blend of two, multinomial counts, lognormal sources)",
                 "seed": args.seed},
        "settings": {"map": f"{cfg['map_rows']}x{cfg['map_cols']}", "iterations": cfg["iterations"],
                     "batch_size": cfg["batch_size"], "normaliser": cfg.get("normaliser_method"),
                     "rule": "suggested_desom2_map (about 12 exposures per cell, at most 20x20) and "
                             "DEFAULT_DESOM2, nothing overridden",
                     "default_desom2": svc.DEFAULT_DESOM2,
                     "train_precision": (cfg.get("extra") or {}).get("train_precision")},
        "timings_s": {"build_archive": round(setup_s, 1), "train_desom2_service": round(train_s, 1),
                      "training_loop": version.metrics.get("train_seconds"),
                      "assign_cells": round(assign_s, 1),
                      "train_and_assign": round(train_s + assign_s, 1)},
        "target_s": args.target_s,
        "meets_target": bool(train_s + assign_s <= args.target_s),
        "cells": {"written": int(written), "occupied": int((occupied > 0).sum()),
                  "max_members": int(occupied.max()), "median_members_occupied": float(np.median(occupied[occupied > 0]))},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["timings_s"]), "->", args.out)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
