"""DESOM-1 training and inference, and a FAISS search over a million histo-vectors, on a device.

Written for a GPU (benchmarks/gpu_check.sh runs it with --device cuda after installing
requirements-gpu.txt), and runnable on the CPU with --device cpu --quick, which is how it is
tested on machines without a GPU. Every part runs the archive's own code:

1. DESOM-1 training, paper size (conv 32/64/128, dense 512, latent 160, 25x25), the precision
   the archive picks for the device (desom.training.default_train_precision: bf16 autocast on a
   GPU that runs bf16) with channels-last: samples/s of joint steps (best quarter of timed
   steps), then one short end-to-end run of desom.training.train_desom.
2. DESOM-1 inference (desom.inference.DesomPredictor) on synthetic cutouts: eager float32 (the
   baseline), the trained precision, and the predictor's default (torch.compile once warm);
   cutouts/s and BMU agreement with eager float32; the compile time.
3. FAISS: recommender.indexes.VectorIndex "histo" indexes (Hellinger, IVF-Flat past 50 000 as
   the archive builds them, and exact) over N synthetic histo-vectors (1 000 000 by default,
   benchmarks/bench_faiss.py's generator); batch and single-query search on the GPU copy
   against the CPU index, with the overlap of their top-10.

    benchmarks/gpu_check.sh                                            # on a GPU machine
    .venv/bin/python -m benchmarks.bench_gpu --device cpu --quick --out /tmp/gpu-cpu.json

Writes benchmarks/results/gpu.json (machine, device, command, every figure).
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
from benchmarks.bench_faiss import HistoGenerator  # noqa: E402
from desom.inference import DesomPredictor, default_device  # noqa: E402
from desom.model import DESOMConfig, build_desom  # noqa: E402
from desom.training import default_train_precision, joint_step, make_optimizer, train_desom  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device) -> dict:
    import faiss

    from recommender.indexes import gpu_status

    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda, "device": str(device),
            "faiss": getattr(faiss, "__version__", "?"), "faiss_gpu": gpu_status() or "available",
            "torch_threads": torch.get_num_threads(), "load_average_at_start": os.getloadavg()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1),
                    compute_capability=f"{p.major}.{p.minor}", bf16=torch.cuda.is_bf16_supported())
    else:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def bench_training(device, quick: bool, data: np.ndarray) -> tuple[dict, object]:
    precision = default_train_precision(device)
    batch = 64 if quick else 256
    cfg = DESOMConfig.desom1(batch_size=batch, seed=0)
    model = build_desom(cfg).to(device).to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    rng = np.random.default_rng(0)
    warmup, timed = (2, 4) if quick else (10, 60)
    times = []
    for i in range(warmup + timed):
        x = torch.from_numpy(data[rng.integers(0, len(data), batch)]).to(device)
        sync(device)
        t0 = time.perf_counter()
        joint_step(model, opt, x, temp=5.0, gamma=cfg.gamma, precision=precision, channels_last=True)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    best = float(np.sort(times)[:max(1, len(times) // 4)].mean())

    # The archive's loop end to end (batch draws, temperature schedule, the probe's map order).
    iters = 20 if quick else 1500
    run_cfg = DESOMConfig.desom1(batch_size=batch, iterations=iters, pretrain_iterations=0,
                                 t_max=10.0, t_min=2.0, seed=0, prototype_lr=1e-2)
    trained = build_desom(run_cfg)
    t0 = time.perf_counter()
    train_desom(trained, data, run_cfg, progress=False, device=device, precision=precision,
                channels_last=True, probe=data[:256 if quick else 2000], probe_every=max(iters // 5, 1))
    sync(device)
    loop_s = time.perf_counter() - t0
    out = {"precision": precision, "channels_last": True, "batch_size": batch,
           "joint_step_samples_per_s": round(batch / best, 1), "timed_steps": timed,
           "statistic": "mean of the fastest quarter of timed joint steps",
           "train_desom": {"iterations": iters, "wall_s": round(loop_s, 2),
                           "samples_per_s": round(iters * batch / loop_s, 1),
                           "map_order": trained.map_order}}
    print(f"training  {precision}: {out['joint_step_samples_per_s']} samples/s per step; "
          f"train_desom {iters} it in {loop_s:.1f} s", flush=True)
    return out, trained


def bench_inference(device, quick: bool, model, cutouts: np.ndarray) -> dict:
    variants = [("eager_float32", dict(precision="float32", channels_last=False, compile=False)),
                ("trained_precision_eager", dict(compile=False)),
                ("default", dict())]
    results, rows = {}, []
    reps = 2 if quick else 5
    for name, kw in variants:
        pred = DesomPredictor(model, device=device, **kw)
        t0 = time.perf_counter()
        # warm: the default path compiles once it has seen COMPILE_MIN_SAMPLES cutouts
        pred.predict(cutouts[:512])
        pred.predict(cutouts)
        while pred._compile_pending:
            pred.predict(cutouts)
        pred.predict(cutouts)
        sync(device)
        warm_s = time.perf_counter() - t0
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            results[name] = pred.predict(cutouts, return_activations=True)
            sync(device)
            best = min(best, time.perf_counter() - t0)
        rows.append({"variant": name, "precision": pred.precision, "channels_last": pred.channels_last,
                     "compiled": pred.compiled, "compile_seconds": None if pred.compile_seconds is None
                     else round(pred.compile_seconds, 1), "compile_error": pred.compile_error,
                     "compile_skipped": pred.compile_skipped, "warm_up_s": round(warm_s, 1),
                     "cutouts_per_s": round(len(cutouts) / best, 1)})
    base = results["eager_float32"].bmu
    for row in rows:
        row["bmu_agreement_vs_eager_float32"] = round(float((results[row["variant"]].bmu == base).mean()), 4)
        print(f"inference {row['variant']:26s} {row['cutouts_per_s']:10.1f} cutouts/s  "
              f"agree {row['bmu_agreement_vs_eager_float32']:.4f}  compiled {row['compiled']} "
              f"(compile {row['compile_seconds']} s)", flush=True)
    return {"n_cutouts": len(cutouts), "repeats": reps, "statistic": "best of repeats", "variants": rows}


def bench_faiss(n: int, quick: bool) -> dict:
    from recommender.indexes import VectorIndex, gpu_status

    gen = HistoGenerator(seed=0)
    t0 = time.perf_counter()
    raw = gen.histos(n)
    queries = gen.histos(1000 if quick else 10_000, start_chunk=10_000)
    gen_s = time.perf_counter() - t0
    ids = np.arange(n, dtype=np.int64)
    use_gpu = gpu_status() is None
    out = {"vectors": n, "dim": raw.shape[1], "generate_s": round(gen_s, 1), "queries": len(queries),
           "on_gpu": use_gpu, "why_not_gpu": gpu_status(), "indexes": []}
    kinds = [("ivf_flat (archive default past 50k)", {}), ("exact flat", {"approximate_threshold": n + 1})]
    for label, options in kinds:
        t0 = time.perf_counter()
        cpu = VectorIndex("histo", "bench", use_gpu=False, **options).build(ids, raw)
        build_s = time.perf_counter() - t0
        row = {"index": label, "index_type": cpu.index_type, "nlist": cpu.nlist, "nprobe": cpu.nprobe,
               "cpu_build_s": round(build_s, 1)}
        # The CPU index answers a sample (an exact CPU search of every query would dominate).
        sample = queries[:200] if cpu.index_type == "flat" else queries
        t0 = time.perf_counter()
        want_ids, _ = cpu.search(sample, k=10)
        cpu_s = time.perf_counter() - t0
        row.update(cpu_batch_queries=len(sample), cpu_batch_qps=round(len(sample) / cpu_s, 1))
        if use_gpu:
            gpu = VectorIndex("histo", "bench", use_gpu=True, **options)
            gpu._cpu, gpu._ids, gpu.trained_size = cpu._cpu, cpu._ids, cpu.trained_size   # same vectors
            t0 = time.perf_counter()
            gpu.search(queries[:1], k=10)              # makes the GPU copy
            copy_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            got_ids, _ = gpu.search(queries, k=10)
            batch_s = time.perf_counter() - t0
            single = []
            for q in queries[:200]:
                t1 = time.perf_counter()
                gpu.search(q, k=10)
                single.append(time.perf_counter() - t1)
            overlap = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10
                               for a, b in zip(got_ids[:len(sample)], want_ids)])
            row.update(gpu_copy_s=round(copy_s, 2), gpu_batch_qps=round(len(queries) / batch_s, 1),
                       gpu_single_query_p50_ms=round(1000 * float(np.median(single)), 3),
                       gpu_single_query_p99_ms=round(1000 * float(np.percentile(single, 99)), 3),
                       top10_overlap_gpu_vs_cpu=round(float(overlap), 4),
                       speedup_batch=round((len(queries) / batch_s) / (len(sample) / cpu_s), 1))
            del gpu
        out["indexes"].append(row)
        print(f"faiss     {label:36s} {json.dumps({k: v for k, v in row.items() if k != 'index'})}", flush=True)
        del cpu
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--quick", action="store_true", help="small sizes (a CPU check of the script)")
    ap.add_argument("--faiss-vectors", type=int, default=None,
                    help="histo-vectors in the FAISS index (default 1 000 000; --quick 20 000)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["training", "inference", "faiss"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/gpu.json"))
    args = ap.parse_args()
    device = default_device(args.device)
    q = args.quick
    started = time.perf_counter()
    out = {"benchmark": "gpu", "command": " ".join([Path(sys.executable).name] + sys.argv), "quick": q,
           "machine": machine(device)}
    print(json.dumps(out["machine"]), flush=True)
    data, _ = synthetic_cutouts(2000 if q else 20_000, seed=1)
    data = data[:, None]
    model = None
    if "training" not in args.skip:
        out["training"], model = bench_training(device, q, data)
    if "inference" not in args.skip:
        if model is None:
            model = build_desom(DESOMConfig.desom1(seed=0))
        cutouts, _ = synthetic_cutouts(6000 if q else 100_000, seed=2)
        out["inference"] = bench_inference(device, q, model, cutouts[:, None])
    if "faiss" not in args.skip:
        out["faiss"] = bench_faiss(args.faiss_vectors or (20_000 if q else 1_000_000), q)
    out["machine"]["load_average_at_end"] = os.getloadavg()
    out["wall_s"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {args.out} ({out['wall_s']} s)")


if __name__ == "__main__":
    main()
