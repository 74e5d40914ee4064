"""DESOM-1 (paper size: conv 32/64/128, dense 512, latent 160, 25x25 map) speed on this machine.

Training: samples/s of joint steps (batch 256 by default) for eager float32 (the baseline),
channels-last, bf16 autocast, and both. Inference: cutouts/s for the 3600 cutouts of one
exposure, for float32 eager (baseline), channels-last, bf16 weights, bf16 autocast, larger and
smaller batches and, unless --no-compile, torch.compile; each with its BMU agreement with the
float32 baseline on a briefly trained map (prototypes spread over real encodings).

Timings are best-of-N wall times, because the machine is shared; ratios are against the
baseline measured in the same run.

    .venv/bin/python -m benchmarks.bench_desom_speed [--quick] [--no-compile] [--out ...]
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
import torch

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.bench_desom_peer import synthetic_cutouts  # noqa: E402
from desom.inference import DesomPredictor  # noqa: E402
from desom.model import DESOMConfig, build_desom  # noqa: E402
from desom.training import joint_step, train_desom  # noqa: E402


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def time_training(cfg, data, precision, channels_last, iters, warmup=2):
    model = build_desom(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    bs = cfg.batch_size
    times = []
    for i in range(warmup + iters):
        x = torch.from_numpy(data[rng.integers(0, len(data), bs)])
        t0 = time.perf_counter()
        joint_step(model, opt, x, temp=5.0, gamma=cfg.gamma, precision=precision,
                   channels_last=channels_last)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    # best quartile mean: robust to other jobs stealing the cores
    t = np.sort(times)[:max(1, len(times) // 4)].mean()
    return bs / t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    ap.add_argument("--inference-only", action="store_true", help="skip the training throughput part")
    ap.add_argument("--variants", default=None,
                    help="comma-separated inference variants to time (default: all); eager_float32 "
                         "is always timed first, as the baseline")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: keep OMP_NUM_THREADS if set, else os.cpu_count())")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/desom_speed.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
    q = args.quick
    t_start = time.perf_counter()

    cfg = DESOMConfig.desom1(batch_size=128 if q else 256, seed=0)
    data, _ = synthetic_cutouts(2000 if q else 4000, seed=1)
    data = data[:, None]

    # -- training throughput --------------------------------------------------------------
    train_iters = 4 if q else 8
    training = []
    base_train = None
    train_variants = [("eager_float32", "float32", False), ("channels_last", "float32", True),
                      ("bf16_autocast", "bf16", False), ("bf16_autocast_channels_last", "bf16", True)]
    for name, prec, cl in ([] if args.inference_only else train_variants):
        sps = time_training(cfg, data, prec, cl, train_iters)
        base_train = base_train or sps
        training.append({"variant": name, "samples_per_s": round(sps, 1),
                         "ratio_vs_eager_float32": round(sps / base_train, 2)})
        print(f"train  {name:30s} {sps:8.1f} samples/s  x{sps / base_train:.2f}", flush=True)

    # -- a briefly trained map, for meaningful BMU agreement ------------------------------
    tcfg = DESOMConfig.desom1(batch_size=64, iterations=50 if q else 100, pretrain_iterations=0,
                              t_max=10.0, t_min=2.0, seed=0)
    model = build_desom(tcfg)
    t0 = time.perf_counter()
    train_desom(model, data, tcfg, progress=False)
    brief_train_s = time.perf_counter() - t0

    exposure, _ = synthetic_cutouts(3600, seed=2)      # one exposure's worth of cutouts
    reps = 2 if q else 4
    variants = [
        ("eager_float32", dict(precision="float32", channels_last=False, batch_size=1024)),
        ("eager_float32_b3600", dict(precision="float32", channels_last=False, batch_size=3600)),
        ("channels_last_float32", dict(precision="float32", channels_last=True, batch_size=1024)),
        ("channels_last_float32_b3600", dict(precision="float32", channels_last=True, batch_size=3600)),
        ("bf16_autocast_channels_last", dict(precision="bf16-autocast", channels_last=True, batch_size=1024)),
        ("bf16_weights_channels_last", dict(precision="bf16", channels_last=True, batch_size=1024)),
        ("bf16_weights_channels_last_b3600", dict(precision="bf16", channels_last=True, batch_size=3600)),
        ("default_predictor", dict()),
        ("no_compile_predictor", dict(compile=False)),
    ]
    if not args.no_compile:
        variants.append(("compile_float32_channels_last",
                         dict(precision="float32", channels_last=True, batch_size=1024, compile=True)))
        variants.append(("compile_bf16_weights_channels_last",
                         dict(precision="bf16", channels_last=True, batch_size=1024, compile=True)))
    # The named paths run eager (the predictor's default compiles once warm): only
    # default_predictor and compile_* go through torch.compile.
    variants = [(name, kw if name == "default_predictor" or "compile" in kw else {**kw, "compile": False})
                for name, kw in variants]
    if args.variants:
        wanted = {"eager_float32", *args.variants.split(",")}
        variants = [v for v in variants if v[0] in wanted]
    # Build and warm every variant first, then time them round-robin so that other jobs on a
    # shared machine slow all variants alike; keep each one's best time.
    from desom.som import grid_distances
    gd = grid_distances(*model.map_shape)
    built, inference = [], []
    for name, kw in variants:
        t0 = time.perf_counter()
        try:
            pred = DesomPredictor(model, **kw)
            pred.predict(exposure[:512])
            pred.predict(exposure)
            # the default compiles once it has seen COMPILE_MIN_SAMPLES cutouts: warm it past that
            while pred._compile_pending:
                pred.predict(exposure)
            pred.predict(exposure)
        except Exception as exc:   # e.g. torch.compile without a C compiler
            inference.append({"variant": name, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            print(f"infer  {name:34s} failed: {exc}", flush=True)
            continue
        built.append((name, kw, pred, time.perf_counter() - t0))
    best = {name: float("inf") for name, *_ in built}
    results = {}
    for _ in range(reps):
        for name, kw, pred, _setup in built:
            t0 = time.perf_counter()
            results[name] = pred.predict(exposure)
            best[name] = min(best[name], time.perf_counter() - t0)
    base_name = built[0][0]
    base_rate, base_pred = len(exposure) / best[base_name], results[base_name]
    for name, kw, pred, setup in built:
        res, rate = results[name], len(exposure) / best[name]
        agree = float((res.bmu == base_pred.bmu).mean())
        near = float((gd[res.bmu, base_pred.bmu] <= 1).mean())
        act_diff = float(np.abs(res.activations - base_pred.activations).sum(1).mean())
        inference.append({"variant": name, "options": dict(kw) or "defaults",
                          "precision": pred.precision, "channels_last": pred.channels_last,
                          "compiled": pred.compiled, "batch_size": pred.batch_size,
                          "compile_seconds": None if pred.compile_seconds is None else round(pred.compile_seconds, 1),
                          "compile_error": pred.compile_error,
                          "cutouts_per_s": round(rate, 1), "exposure_3600_s": round(best[name], 3),
                          "ratio_vs_eager_float32": round(rate / base_rate, 2),
                          "bmu_agreement_vs_float32": round(agree, 4),
                          "bmu_same_or_adjacent_vs_float32": round(near, 4),
                          "mean_L1_activation_diff_vs_float32": round(act_diff, 4),
                          "setup_and_warmup_s": round(setup, 1)})
        print(f"infer  {name:36s} {rate:8.1f} cutouts/s  x{rate / base_rate:.2f}  "
              f"3600 in {best[name]:.2f}s  BMU agree {agree:.4f} (<=1 step {near:.4f})  "
              f"setup {setup:.1f}s", flush=True)

    out = {
        "benchmark": "desom_speed",
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "quick": q,
        "machine": {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "load_average_at_end": os.getloadavg()},
        "model": "DESOM-1 paper size (conv 32/64/128, dense 512, latent 160, 25x25)",
        "training": {"batch_size": cfg.batch_size, "timed_iterations": train_iters,
                     "statistic": "mean of the fastest quarter of timed joint steps",
                     "variants": training},
        "inference": {"n_cutouts": len(exposure), "repeats": reps, "statistic": "best of repeats, variants timed round-robin",
                      "agreement_model": f"DESOM-1 trained {tcfg.iterations} iterations on synthetic "
                                         f"cutouts ({brief_train_s:.0f} s)",
                      "target_cutouts_per_s": 2400, "variants": inference},
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} ({out['wall_s']} s)")


if __name__ == "__main__":
    main()
