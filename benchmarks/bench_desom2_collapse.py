"""Why DESOM-2 collapses: the SOM term against the reconstruction term at the start of the joint
phase, on the science study's own histo-vectors (turned stamps, sqrt counts, soft 1).

    .venv/bin/python -m benchmarks.bench_desom2_collapse     # needs the study's cache (make science)

For each autoencoder pretraining length and DESOM-2 seed it trains the study's DESOM-2 (9x9 map,
batch 64, the archive's defaults otherwise) for several joint lengths and records:
- the explained variance of the reconstruction (the reconstruction gate's measure: about 0 for a
  collapse);
- the spread of the latent codes and of the prototypes (mean distance to their centroid): a
  collapse puts every exposure's code on one point;
- at the first joint iteration, the reconstruction loss and gamma times the SOM loss, the two
  terms of L = Lr + gamma * Lsom.

Writes benchmarks/results/desom2_collapse.json.
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
RESULTS = ROOT / "benchmarks" / "results"
STUDY_CACHE = ROOT / "var" / "science" / "survey36-2000-s16" / "study"


def default_histos() -> Path:
    """The study's cached turned histo-vectors, whatever the DESOM-1 settings' key in their name."""
    found = sorted(STUDY_CACHE.glob("histos-asinh_aligned-*.npz"))
    return found[-1] if found else STUDY_CACHE / "histos-asinh_aligned-*.npz"


def measure(model, z) -> dict:
    import torch

    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(z)
        latent = model.encode(x)
        rec = model.decode(latent).numpy()
    protos = model.som.prototypes.detach()
    return {"explained_variance": round(float(1 - ((rec - z) ** 2).sum() / ((z - z.mean(0)) ** 2).sum()), 4),
            "latent_spread": round(float((latent - latent.mean(0)).norm(dim=1).mean()), 5),
            "prototype_spread": round(float((protos - protos.mean(0)).norm(dim=1).mean()), 5),
            "latent_units_alive": int((latent > 0).any(dim=0).sum())}


def joint_start_terms(model, z, cfg) -> dict:
    """Lr and gamma * Lsom on the whole set, at the first joint iteration's temperature, with the
    prototypes started as training starts them."""
    import torch

    from desom.training import init_prototypes, reconstruction_loss

    init_prototypes(model, z, np.random.default_rng(cfg.seed), torch.device("cpu"))
    with torch.no_grad():
        x = torch.from_numpy(z)
        latent = model.encode(x)
        lr = float(reconstruction_loss(model.decode(latent), x))
        som = float(model.som.som_loss(model.som(latent), cfg.t_max, normalise=cfg.som_loss == "mean"))
    return {"reconstruction": lr, "gamma_som": cfg.gamma * som, "ratio": cfg.gamma * som / lr}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--histos", default=str(default_histos()), help="the study's cached histo-vectors (.npz, 'hard')")
    ap.add_argument("--exposures", type=int, default=1000)
    ap.add_argument("--pretrain", default="0,1000")
    ap.add_argument("--joint", default="0,200,3000")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--som-loss", default="sum", choices=["sum", "mean"], help="desom.model.DESOMConfig.som_loss")
    ap.add_argument("--out", default=str(RESULTS / "desom2_collapse.json"))
    a = ap.parse_args(argv)
    if not Path(a.histos).exists():
        print(f"{a.histos} is missing: run `make science` first (it caches the study's histo-vectors)")
        return 2
    import torch

    from desom.model import DESOMConfig, build_desom
    from desom.normalise import HistoNormaliser
    from desom.training import train_desom

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    hard = np.load(a.histos)["hard"][: a.exposures]
    z = HistoNormaliser("sqrt_counts", smooth_sigma=1.0).fit(hard).transform(hard).astype(np.float32)
    rows = []
    for pretrain in (int(p) for p in a.pretrain.split(",")):
        for seed in (int(s) for s in a.seeds.split(",")):
            for joint in (int(j) for j in a.joint.split(",")):
                cfg = DESOMConfig.desom2(seed=seed, input_shape=(z.shape[1],), map_rows=9, map_cols=9,
                                         iterations=joint, batch_size=64, pretrain_iterations=pretrain,
                                         som_loss=a.som_loss)
                torch.manual_seed(seed)
                model = build_desom(cfg)
                t0 = time.perf_counter()
                if joint == 0:
                    # Stop where the joint phase would begin: pretrain only, then the two terms.
                    if pretrain:
                        train_desom(model, z, cfg, progress=False)
                    start = joint_start_terms(model, z, cfg)     # starts the prototypes first
                    row = measure(model, z) | {"joint_start": start}
                else:
                    train_desom(model, z, cfg, progress=False)
                    row = measure(model, z)
                row |= {"pretrain": pretrain, "seed": seed, "joint": joint,
                        "seconds": round(time.perf_counter() - t0, 1)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    result = {"benchmark": "desom2_collapse", "command": " ".join(["python -m benchmarks.bench_desom2_collapse",
                                                                   *(sys.argv[1:] if argv is None else argv)]),
              "histos": str(Path(a.histos).relative_to(ROOT)) if Path(a.histos).is_relative_to(ROOT) else a.histos,
              "exposures": int(len(z)), "map": [9, 9], "normaliser": "sqrt_counts, soft 1", "som_loss": a.som_loss,
              "input_mean_abs": round(float(np.abs(z).mean()), 4),
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "load_average": os.getloadavg()},
              "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
