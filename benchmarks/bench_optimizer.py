"""Adam's update, plain (one tensor at a time) against fused (desom.training.make_optimizer's
choice), timed per training iteration of DESOM-2 and DESOM-1 in the same run. Writes
benchmarks/results/optimizer.json.

    .venv/bin/python -m benchmarks.bench_optimizer            # about 2 minutes on 2 cores
    .venv/bin/python -m benchmarks.bench_optimizer --quick

Each variant trains the same model from the same seed on the same data; the rounds alternate
the variants so that load on a shared machine falls on both. The last losses are reported so
that the two updates can be seen to agree.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_desom_speed import cpu_name
from desom import training
from desom.model import DESOMConfig, build_desom

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "optimizer.json"


def _data(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "desom2":
        # Low-rank histo-like rows: a DESOM-2 input of the study's size (fit exposures x 632).
        z = rng.normal(size=(1400, 6)) @ rng.normal(size=(6, 632))
        return ((z - z.min(0)) / (z.max(0) - z.min(0))).astype(np.float32)
    return rng.uniform(size=(2000, 1, 32, 32)).astype(np.float32)


def _config(kind: str, iterations: int) -> DESOMConfig:
    if kind == "desom2":
        return DESOMConfig.desom2(seed=0, input_shape=(632,), map_rows=10, map_cols=10,
                                  iterations=iterations, batch_size=64)
    return DESOMConfig.desom1(seed=0, iterations=iterations, batch_size=128)


def time_variant(kind: str, fused: bool, iterations: int, data: np.ndarray) -> dict:
    """Seconds per joint iteration (the loop's own clock) and the last loss."""
    plain = training.torch.optim.Adam
    if not fused:
        # make_optimizer asks for fused=True; the plain variant drops the request.
        training.torch.optim.Adam = lambda groups, **kw: plain(groups)
    try:
        torch.manual_seed(0)
        model = build_desom(_config(kind, iterations))
        precision = "float32" if kind == "desom2" else training.default_train_precision()
        training.train_desom(model, data, progress=False, precision=precision,
                             channels_last=kind == "desom1")
    finally:
        training.torch.optim.Adam = plain
    last = list(model.history)[-1]
    return {"seconds_per_iteration": last["elapsed_s"] / iterations, "last_loss": last["loss"],
            "precision": precision}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--desom2-iterations", type=int, default=300)
    ap.add_argument("--desom1-iterations", type=int, default=40)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds, a.desom2_iterations, a.desom1_iterations = 1, 60, 8
    rng = np.random.default_rng(0)
    result = {"benchmark": "optimizer", "cpu_model": cpu_name(), "cpu_count": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "load_at_start": os.getloadavg(), "kinds": {}}
    for kind, iterations in (("desom2", a.desom2_iterations), ("desom1", a.desom1_iterations)):
        data = _data(kind, rng)
        runs = {"plain": [], "fused": []}
        for _ in range(a.rounds):
            for name in ("plain", "fused"):
                runs[name].append(time_variant(kind, name == "fused", iterations, data))
        best = {name: min(r["seconds_per_iteration"] for r in rs) for name, rs in runs.items()}
        result["kinds"][kind] = {"iterations": iterations, "runs": runs,
                                 "best_seconds_per_iteration": best,
                                 "fused_speedup": best["plain"] / best["fused"]}
        print(f"{kind}: plain {best['plain'] * 1e3:.1f} ms/it, fused {best['fused'] * 1e3:.1f} ms/it, "
              f"x{best['plain'] / best['fused']:.2f}; last losses "
              f"{runs['plain'][-1]['last_loss']:.6f} / {runs['fused'][-1]['last_loss']:.6f}", flush=True)
    result["load_at_end"] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
