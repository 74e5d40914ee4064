"""Our SOM / DESOM against MiniSom on the same data.

Data sets: sklearn's bundled digits (8x8 images, 10 classes) and synthetic 32x32 "cutouts" in
seven families with known labels (small and large round sources, elongated sources at four
angles, donuts). Every map is scored with the same functions (desom.metrics): quantization and
topographic error in the space the map lives in, quantization error of the (decoded) prototypes
in input space so that DESOM and MiniSom can be compared there too, purity and NMI of the BMU
assignment against the labels, and wall time.

Methods on each data set (matched map size):
  minisom    MiniSom, Gaussian neighbourhood, batch of random single-sample updates
  som        our SOM layer alone (identity "encoder"): the DESOM loss with gamma only, Adam
  desom      our DESOM (dense autoencoder for digits, conv DESOM-1 architecture for cutouts)

    .venv/bin/python benchmarks/bench_desom_peer.py [--quick] [--out benchmarks/results/desom_peer.json]
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
sys.path.insert(0, str(ROOT))

from desom.metrics import som_scores  # noqa: E402
from desom.model import DESOMConfig, build_desom  # noqa: E402
from desom.som import SOMLayer, temperature  # noqa: E402
from desom.training import train_desom  # noqa: E402

CUT_ITERS = {True: 300, False: 600}
CUT_PRETRAIN = {True: 150, False: 300}
FAMILIES = ("round_small", "round_large", "elongated_0", "elongated_45", "elongated_90",
            "elongated_135", "donut")


def synthetic_cutouts(n: int, seed: int = 0, size: int = 32):
    """(n, size, size) float32 cutouts in [0, 1] and their family labels (0..6)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(FAMILIES), n)
    yy, xx = np.mgrid[:size, :size].astype(np.float64) - (size - 1) / 2
    out = np.empty((n, size, size), np.float32)
    for i, lab in enumerate(labels):
        fam = FAMILIES[lab]
        dx, dy = rng.uniform(-1.0, 1.0, 2)
        x, y = xx - dx, yy - dy
        if fam.startswith("round"):
            s = rng.uniform(1.1, 1.7) if fam == "round_small" else rng.uniform(3.0, 4.2)
            img = np.exp(-(x ** 2 + y ** 2) / (2 * s ** 2))
        elif fam.startswith("elongated"):
            ang = np.deg2rad(int(fam.split("_")[1]) + rng.uniform(-8, 8))
            u = x * np.cos(ang) + y * np.sin(ang)
            v = -x * np.sin(ang) + y * np.cos(ang)
            img = np.exp(-(u ** 2) / (2 * rng.uniform(3.5, 5.0) ** 2) - v ** 2 / (2 * 1.2 ** 2))
        else:
            r0, w = rng.uniform(4.5, 6.5), rng.uniform(1.0, 1.6)
            img = np.exp(-((np.hypot(x, y) - r0) ** 2) / (2 * w ** 2))
        img = rng.uniform(0.5, 1.0) * img + rng.normal(0, 0.03, img.shape)
        lo, hi = img.min(), img.max()
        out[i] = (img - lo) / (hi - lo)
    return out, labels


def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target


def run_minisom(x2d, rows, cols, iterations, seed):
    from minisom import MiniSom
    t0 = time.perf_counter()
    som = MiniSom(rows, cols, x2d.shape[1], sigma=max(rows, cols) / 2, learning_rate=0.5,
                  neighborhood_function="gaussian", random_seed=seed)
    som.random_weights_init(x2d)
    som.train_random(x2d, iterations)
    wall = time.perf_counter() - t0
    protos = som.get_weights().reshape(rows * cols, -1)   # (i, j) -> i * cols + j, row-major
    return protos, wall


def matched_temperatures(rows, cols):
    """Our T range matched to MiniSom's neighbourhood: MiniSom's Gaussian is
    exp(-d^2 / (2 sigma^2)) with sigma from max(rows, cols)/2 decaying to a third of it
    (asymptotic decay over the run), i.e. T = sigma * sqrt(2) from T_max to T_max / 3."""
    t_max = max(rows, cols) / 2 * np.sqrt(2)
    return float(t_max), float(t_max / 3)


def run_our_som(x2d, rows, cols, iterations, seed, batch=256, lr=0.02):
    """Our SOM layer trained on its own (the Lsom term of DESOM with a fixed identity encoder)."""
    t_max, t_min = matched_temperatures(rows, cols)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    som = SOMLayer(rows, cols, x2d.shape[1])
    x = torch.from_numpy(x2d)
    som.init_prototypes(x[torch.from_numpy(rng.choice(len(x), rows * cols, replace=False))])
    opt = torch.optim.Adam(som.parameters(), lr=lr)
    for it in range(iterations):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        temp = temperature(it, iterations, t_max, t_min)
        opt.zero_grad()
        som.som_loss(som(x[idx]), temp).backward()
        opt.step()
    wall = time.perf_counter() - t0
    return som.prototypes.detach().numpy(), wall


def run_desom(data, cfg, labels):
    t0 = time.perf_counter()
    model = build_desom(cfg)
    train_desom(model, data, cfg, progress=False)
    wall = time.perf_counter() - t0
    with torch.no_grad():
        z = torch.cat([model.encode(torch.from_numpy(data[s:s + 1024])) for s in range(0, len(data), 1024)])
        decoded = model.decoded_prototypes().reshape(model.n_nodes, -1).numpy()
    protos = model.som.prototypes.detach().numpy()
    latent = som_scores(z.numpy(), protos, model.map_shape, labels)
    # Input-space QE: distance from each input to the decoded prototype of its latent BMU.
    bmu = ((z.numpy()[:, None, :] - protos[None]) ** 2).sum(-1).argmin(1)
    qe_in = float(np.sqrt(((data.reshape(len(data), -1) - decoded[bmu]) ** 2).sum(1)).mean())
    return latent, qe_in, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller data and fewer iterations")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/desom_peer.json"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: keep OMP_NUM_THREADS if set, else os.cpu_count())")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
    q = args.quick
    results = []

    def record(dataset, method, map_shape, scores, wall, extra=None):
        row = {"dataset": dataset, "method": method, "map": f"{map_shape[0]}x{map_shape[1]}",
               **{k: round(v, 4) for k, v in scores.items()}, "wall_s": round(wall, 2)}
        row.update(extra or {})
        results.append(row)
        print(f"{dataset:9s} {method:8s} QE={row['quantization_error']:.3f} "
              f"QE_in={row.get('qe_input', row['quantization_error']):.3f} "
              f"TE={row['topographic_error']:.3f} TE8={row['topographic_error_8']:.3f} "
              f"purity={row['purity']:.3f} NMI={row['nmi']:.3f} wall={row['wall_s']:.1f}s", flush=True)

    # -- digits: 1797 x 64 ------------------------------------------------------------------
    xd, yd = digits()
    rows = cols = 8 if q else 10
    it_mini = 5000 if q else 20000
    protos, wall = run_minisom(xd, rows, cols, it_mini, args.seed)
    s = som_scores(xd, protos, (rows, cols), yd)
    record("digits", "minisom", (rows, cols), s, wall, {"qe_input": round(s["quantization_error"], 4),
                                                         "iterations": it_mini})
    it_som = 800 if q else 2000
    protos, wall = run_our_som(xd, rows, cols, it_som, args.seed)
    s = som_scores(xd, protos, (rows, cols), yd)
    record("digits", "som", (rows, cols), s, wall, {"qe_input": round(s["quantization_error"], 4),
                                                     "iterations": it_som, "batch": 256})
    t_max, t_min = matched_temperatures(rows, cols)
    cfg = DESOMConfig.desom2(input_shape=(64,), hidden_dims=(128, 64), latent_dim=16,
                             latent_activation="linear", output_activation="sigmoid",
                             map_rows=rows, map_cols=cols, t_max=t_max, t_min=t_min,
                             gamma=1e-3, lr=2e-3, prototype_lr=1e-2, batch_size=256,
                             iterations=1500 if q else 3000,
                             pretrain_iterations=800 if q else 1500, seed=args.seed)
    latent, qe_in, wall = run_desom(xd, cfg, yd)
    record("digits", "desom", (rows, cols), latent, wall,
           {"qe_input": round(qe_in, 4), "iterations": cfg.iterations,
            "pretrain_iterations": cfg.pretrain_iterations, "note": "QE/TE in latent space"})

    # -- synthetic cutouts: 7 families of 32x32 sources ----------------------------------------
    n = 2000 if q else 3000
    xc, yc = synthetic_cutouts(n, seed=args.seed)
    flat = xc.reshape(n, -1)
    rows = cols = 8 if q else 10
    it_mini = 5000 if q else 20000
    protos, wall = run_minisom(flat, rows, cols, it_mini, args.seed)
    s = som_scores(flat, protos, (rows, cols), yc)
    record("cutouts", "minisom", (rows, cols), s, wall, {"qe_input": round(s["quantization_error"], 4),
                                                          "iterations": it_mini})
    protos, wall = run_our_som(flat, rows, cols, it_som, args.seed)
    s = som_scores(flat, protos, (rows, cols), yc)
    record("cutouts", "som", (rows, cols), s, wall, {"qe_input": round(s["quantization_error"], 4),
                                                      "iterations": it_som, "batch": 256})
    t_max, t_min = matched_temperatures(rows, cols)
    cfg = DESOMConfig.desom1(map_rows=rows, map_cols=cols, t_max=t_max, t_min=t_min,
                             conv_filters=(8, 16, 16), dense_units=64, latent_dim=16,
                             gamma=1e-3, prototype_lr=1e-2, batch_size=64,
                             iterations=CUT_ITERS[q], pretrain_iterations=CUT_PRETRAIN[q],
                             seed=args.seed)
    latent, qe_in, wall = run_desom(xc[:, None], cfg, yc)
    record("cutouts", "desom", (rows, cols), latent, wall,
           {"qe_input": round(qe_in, 4), "iterations": cfg.iterations,
            "pretrain_iterations": cfg.pretrain_iterations,
            "architecture": "DESOM-1 layout, narrower (conv 8/16/16, dense 64, latent 16)",
            "note": "QE/TE in latent space"})

    verdict = {}
    for ds in ("digits", "cutouts"):
        by = {r["method"]: r for r in results if r["dataset"] == ds}
        verdict[ds] = {
            "desom_purity_ge_minisom": by["desom"]["purity"] >= by["minisom"]["purity"],
            "desom_te_le_minisom": by["desom"]["topographic_error"] <= by["minisom"]["topographic_error"],
            "desom_te8_le_minisom": by["desom"]["topographic_error_8"] <= by["minisom"]["topographic_error_8"],
        }
    out = {
        "benchmark": "desom_peer",
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "quick": q,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads()},
        "metric_notes": {
            "quantization_error": "mean Euclidean distance to the BMU prototype, in the map's own "
                                  "space (input for minisom/som, latent for desom)",
            "qe_input": "input space; for desom the decoded prototype of the latent BMU",
            "topographic_error": "fraction whose 1st and 2nd BMU do not share an edge (4-neighbourhood)",
            "topographic_error_8": "same with diagonal neighbours allowed (MiniSom's convention)",
            "purity": "fraction carrying the majority label of their BMU", "nmi": "sklearn NMI"},
        "results": results,
        "verdict": verdict,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(verdict))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
