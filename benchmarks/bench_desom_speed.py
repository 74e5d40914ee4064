"""DESOM-1 (paper size: conv 32/64/128, dense 512, latent 160, 25x25 map) speed on this machine.

Training: samples/s of joint steps (batch 256 by default) for eager float32 (the baseline),
channels-last, bf16 autocast, and both. Inference: cutouts/s for the 3600 cutouts of one
exposure, for float32 eager (baseline), channels-last, bf16 weights, bf16 autocast, larger and
smaller batches and, unless --no-compile, torch.compile; each with its BMU agreement with the
float32 baseline on a briefly trained map (prototypes spread over real encodings).

Timings are best-of-N wall times, because the machine is shared; ratios are against the
baseline measured in the same run.

    .venv/bin/python -m benchmarks.bench_desom_speed [--quick] [--no-compile] [--out ...]

With ``--survey DIR --model CKPT`` the agreement is measured on a trained map and the archive's
own stamps instead: DIR is a science survey (benchmarks/science_data.py: simulated exposures
imaged by desom.pipeline, stamps under the asinh recipe), CKPT a DESOM-1 checkpoint trained on
it; every variant then predicts all the survey's cutouts (or --agreement-cutouts of them) and
its BMUs are compared with eager float32's. The int8_* variants (static int8 quantization of the
encoder, torch.ao FX graph mode, x86 backend, per-channel weights, calibrated on 2 048 cutouts
of the timing or survey set) and the compile mode / batch size / oneDNN variants are only timed
when named in --variants.
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


def second_gap(pred, cutouts) -> dict:
    """Quantiles of (d2 to the runner-up - d2 to the BMU) / d2 to the BMU under a predictor: how
    close its BMUs are to a tie, so how small a relative error in the latent distances moves
    that share of them."""
    from desom.som import squared_distances

    z = torch.from_numpy(pred.encode(cutouts))
    top2 = torch.topk(squared_distances(z, pred.prototypes), k=2, dim=1, largest=False).values.double()
    gap = ((top2[:, 1] - top2[:, 0]) / top2[:, 0].clamp_min(1e-12)).numpy()
    return {f"{q:g}": round(float(np.quantile(gap, q)), 5) for q in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)}


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


def int8_encoder(encoder, calibration: np.ndarray, scheme: str):
    """A static int8 copy of a DESOM-1 encoder (torch.ao FX graph mode, x86 backend).

    scheme: "default" (torch's x86 mapping: 7-bit histogram activations, 8-bit per-channel
    weights), "act8_w7" (8-bit activations, 7-bit weights, the mix that cannot saturate AVX2's
    u8 x s8 pair sums), "convs_only" (act8_w7 on the convolutions, float head), "head_dynamic"
    (float convolutions, dynamic int8 Linear layers)."""
    import copy
    import warnings

    from torch.ao.quantization import QConfig, QConfigMapping, get_default_qconfig_mapping, quantize_dynamic
    from torch.ao.quantization.observer import HistogramObserver, PerChannelMinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    enc = copy.deepcopy(encoder).eval()
    if scheme == "head_dynamic":
        return quantize_dynamic(enc, {torch.nn.Linear}, dtype=torch.qint8)
    act8_w7 = QConfig(activation=HistogramObserver.with_args(dtype=torch.quint8, reduce_range=False),
                      weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, quant_min=-64, quant_max=63,
                                                                qscheme=torch.per_channel_symmetric))
    if scheme == "default":
        mapping = get_default_qconfig_mapping("x86")
    elif scheme == "act8_w7":
        mapping = QConfigMapping().set_global(act8_w7)
    elif scheme == "convs_only":
        mapping = QConfigMapping()
        for name, mod in enc.named_modules():
            if isinstance(mod, torch.nn.Conv2d):
                mapping.set_module_name(name, act8_w7)
    else:
        raise ValueError(f"unknown int8 scheme {scheme!r}")
    calib = torch.from_numpy(np.ascontiguousarray(calibration, np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # torch.ao.quantization's deprecation notices
        prepared = prepare_fx(enc, mapping, example_inputs=(calib[:8],))
        with torch.inference_mode():
            for start in range(0, len(calib), 256):
                prepared(calib[start:start + 256])
        return convert_fx(prepared)


class _Mkldnn:
    """Runs a predictor with torch.backends.mkldnn (oneDNN) turned off."""

    def __init__(self, pred):
        self.pred = pred

    def __getattr__(self, name):
        return getattr(self.pred, name)

    def predict(self, *args, **kwargs):
        with torch.backends.mkldnn.flags(enabled=False):
            return self.pred.predict(*args, **kwargs)


def make_variant(model, kw: dict, calibration: np.ndarray):
    """A DesomPredictor for one variant; the bench-only options (int8, compile_mode, mkldnn)
    replace its encoder or wrap it."""
    import copy

    kw = dict(kw)
    legacy = kw.pop("legacy", False)
    int8 = kw.pop("int8", None)
    mode = kw.pop("compile_mode", None)
    mkldnn = kw.pop("mkldnn", True)
    pred = DesomPredictor(model, **kw)
    if legacy:
        # The encoder as the model holds it (ReLU before each max-pool), whole batches at once:
        # the predictor before issue 20.
        enc = copy.deepcopy(model.encoder).eval()
        pred.encoder = pred._eager_encoder = enc.to(memory_format=torch.channels_last) if pred.channels_last else enc
        pred.encoder_chunk = 0
        if kw.get("compile") is True:
            pred._compile_now()
    if int8:
        pred.channels_last = False      # quantized convolutions take their own layout
        pred.encoder = pred._eager_encoder = int8_encoder(model.encoder, calibration, int8)
    if mode:
        pred.encoder = torch.compile(pred._eager_encoder, mode=mode, dynamic=True)
        pred.compile_seconds = None
    return pred if mkldnn else _Mkldnn(pred)


def agreement_set(args):
    """(model, cutouts, description): the trained map and survey stamps of --model/--survey."""
    from benchmarks.science_data import load_survey
    from benchmarks.science_models import stretched
    from desom.checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.model)
    data = load_survey(Path(args.survey))
    n = len(data["stamps"]) if args.agreement_cutouts is None else min(args.agreement_cutouts, len(data["stamps"]))
    cutouts = stretched(data, np.arange(n), "asinh")
    it = ckpt.model.config.iterations
    return ckpt.model.eval(), cutouts, (f"{Path(args.model).name}: DESOM-1 trained {it} iterations on the survey "
                                        f"{args.survey} (asinh stamps); {n} of its cutouts")


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
    ap.add_argument("--survey", default=None, help="a science survey folder (with --model): agreement "
                    "on its cutouts, timing on its first 3600")
    ap.add_argument("--model", default=None, help="a trained DESOM-1 checkpoint (with --survey)")
    ap.add_argument("--agreement-cutouts", type=int, default=None, help="at most this many survey cutouts")
    ap.add_argument("--reps", type=int, default=None, help="timed repeats per variant (default 4, --quick 2)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/desom_speed.json"))
    args = ap.parse_args()
    if bool(args.survey) != bool(args.model):
        ap.error("--survey and --model go together")
    if args.threads:
        torch.set_num_threads(args.threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
    q = args.quick
    t_start = time.perf_counter()
    load_at_start = os.getloadavg()

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
    if args.model:
        model, agree_cutouts, agreement_model = agreement_set(args)
        exposure = agree_cutouts[:3600]
        calibration = agree_cutouts[::max(1, len(agree_cutouts) // 2048)][:2048, None]
    else:
        tcfg = DESOMConfig.desom1(batch_size=64, iterations=50 if q else 100, pretrain_iterations=0,
                                  t_max=10.0, t_min=2.0, seed=0)
        model = build_desom(tcfg)
        t0 = time.perf_counter()
        train_desom(model, data, tcfg, progress=False)
        agreement_model = (f"DESOM-1 trained {tcfg.iterations} iterations on synthetic cutouts "
                           f"({time.perf_counter() - t0:.0f} s)")
        exposure, _ = synthetic_cutouts(3600, seed=2)      # one exposure's worth of cutouts
        agree_cutouts = exposure
        calibration = data[:2048]
    reps = args.reps or (2 if q else 4)
    variants = [
        ("eager_float32", dict(precision="float32", channels_last=False, batch_size=1024, legacy=True)),
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
    # Timed only when named in --variants.
    optional = [
        ("previous_default", dict(precision="float32", channels_last=True, batch_size=1024, compile=True,
                                  legacy=True)),
        ("previous_channels_last_eager", dict(precision="float32", channels_last=True, batch_size=1024,
                                              legacy=True)),
        ("no_compile_chunk0", dict(compile=False, encoder_chunk=0)),
        ("no_compile_chunk32", dict(compile=False, encoder_chunk=32)),
        ("no_compile_chunk128", dict(compile=False, encoder_chunk=128)),
        ("no_compile_chunk256", dict(compile=False, encoder_chunk=256)),
        ("no_compile_b4096", dict(compile=False, batch_size=4096)),
        ("compile_chunk32", dict(compile=True, encoder_chunk=32)),
        ("compile_chunk128", dict(compile=True, encoder_chunk=128)),
        ("int8_default", dict(precision="float32", batch_size=1024, int8="default")),
        ("int8_act8_w7", dict(precision="float32", batch_size=1024, int8="act8_w7")),
        ("int8_act8_w7_b4096", dict(precision="float32", batch_size=4096, int8="act8_w7")),
        ("int8_convs_only", dict(precision="float32", batch_size=1024, int8="convs_only")),
        ("int8_head_dynamic_channels_last", dict(precision="float32", channels_last=True, batch_size=1024,
                                                 int8="head_dynamic")),
        ("int8_act8_w7_compiled", dict(precision="float32", batch_size=1024, int8="act8_w7",
                                       compile_mode="default")),
        ("channels_last_float32_b256", dict(precision="float32", channels_last=True, batch_size=256)),
        ("channels_last_float32_no_mkldnn", dict(precision="float32", channels_last=True, batch_size=1024,
                                                 mkldnn=False)),
        ("compile_float32_channels_last_b256", dict(precision="float32", channels_last=True, batch_size=256,
                                                    compile=True)),
        ("compile_float32_channels_last_b4096", dict(precision="float32", channels_last=True, batch_size=4096,
                                                     compile=True)),
        ("compile_max_autotune_channels_last", dict(precision="float32", channels_last=True, batch_size=1024,
                                                    compile_mode="max-autotune-no-cudagraphs")),
    ]
    if args.variants:
        variants += optional
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
            pred = make_variant(model, kw, calibration)
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
    base_rate = len(exposure) / best[base_name]
    if agree_cutouts is not exposure:
        # Agreement on the whole survey set, one variant after the other (not timed).
        results = {name: pred.predict(agree_cutouts) for name, _kw, pred, _setup in built}
    base_pred = results[base_name]
    for name, kw, pred, setup in built:
        res, rate = results[name], len(exposure) / best[name]
        agree = float((res.bmu == base_pred.bmu).mean())
        near = float((gd[res.bmu, base_pred.bmu] <= 1).mean())
        act_diff = float(np.abs(res.activations - base_pred.activations).sum(1).mean())
        margin = second_gap(pred, agree_cutouts) if name == base_name else None
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
                          "setup_and_warmup_s": round(setup, 1),
                          **({"float32_bmu_runner_up_relative_gap_quantiles": margin} if margin else {})})
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
                    "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()},
        "model": "DESOM-1 paper size (conv 32/64/128, dense 512, latent 160, 25x25)",
        "training": {"batch_size": cfg.batch_size, "timed_iterations": train_iters,
                     "statistic": "mean of the fastest quarter of timed joint steps",
                     "variants": training},
        "inference": {"n_cutouts": len(exposure), "repeats": reps, "statistic": "best of repeats, variants timed round-robin",
                      "agreement_model": agreement_model, "agreement_cutouts": len(agree_cutouts),
                      "target_cutouts_per_s": 2400, "variants": inference},
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} ({out['wall_s']} s)")


if __name__ == "__main__":
    main()
