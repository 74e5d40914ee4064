"""The science study's models (science stages 2-4): stamp recipes, DESOM-1 per recipe with its
map-order record, inference into histo-vectors, DESOM-2 and the scores. Every trained model and
every set of histo-vectors is cached on disk under the survey's study folder, keyed by what made
it, so a study that stops resumes where it stopped and a second study reuses what it can.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from desom.baseline import plane_stamps

# How each recipe turns the kept raw stamps (pixel - CCD sky) into DESOM-1 inputs.
RECIPES = {
    # The authors' code: cut from the image with its sky, clipped per stamp at its 1st-95th
    # percentiles (a per-stamp clip does not see the sky level, only its structure).
    "paper": {"stamp_sky": "kept", "stretch": "clip"},
    # The archive until this study: the same clip, cut from the background-subtracted image.
    "today": {"stamp_sky": "subtracted", "stretch": "clip"},
    # Sky kept, one asinh scale in units of the CCD's sky noise for every stamp.
    "asinh": {"stamp_sky": "kept", "stretch": "asinh"},
    # The asinh scale on background-subtracted stamps: separates the stretch from the sky.
    "asinh_sub": {"stamp_sky": "subtracted", "stretch": "asinh"},
    # asinh, each stamp then turned so its source's major axis lies along x: a trail at any angle
    # falls in the same nodes (an experiment on find-similar's blindness to slight trails).
    "asinh_aligned": {"stamp_sky": "kept", "stretch": "asinh", "align": True},
}


def stretched(data: dict, index: np.ndarray, recipe: str, chunk: int = 20_000) -> np.ndarray:
    """(len(index), 32, 32) float32 DESOM-1 inputs of the cutouts at `index` under a recipe,
    stretched in chunks so the temporaries stay small whatever the number of cutouts."""
    from desom.cutouts import align_major_axis, stretch_stamps

    spec = RECIPES[recipe]
    index = np.asarray(index)
    out = np.empty((len(index), 32, 32), np.float32)
    for s in range(0, len(index), chunk):
        idx = index[s:s + chunk]
        raw = np.asarray(data["stamps"][idx], np.float32)
        if spec["stamp_sky"] == "subtracted":
            raw -= plane_stamps(data["plane"][idx])
        out[s:s + len(idx)] = stretch_stamps(raw, spec["stretch"], sky=0.0, noise=data["noise"][idx])
        if spec.get("align"):
            out[s:s + len(idx)] = align_major_axis(out[s:s + len(idx)])
    return out


def _key(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def cutout_rows(data: dict, exposures: np.ndarray) -> np.ndarray:
    """Indices of every cutout of the given exposures, in order."""
    off = data["offsets"]
    return np.concatenate([np.arange(off[i], off[i + 1]) for i in exposures]) if len(exposures) else np.zeros(0, np.int64)


# ---------------------------------------------------------------------------------------------
# DESOM-1
# ---------------------------------------------------------------------------------------------
def desom1_variant(name: str, default_iterations: int) -> tuple[str, int]:
    """A DESOM-1 variant the study compares, as (stamp recipe, training iterations): "asinh" is
    the recipe at the study's --desom1-iterations, "asinh@9000" the same recipe trained 9 000
    iterations, so the training length is chosen on the validation split like the stretch."""
    recipe, at, length = name.partition("@")
    if recipe not in RECIPES:
        raise ValueError(f"unknown stamp recipe {recipe!r} in {name!r}; expected one of {', '.join(RECIPES)}")
    if not at:
        return recipe, int(default_iterations)
    if not length.isdigit() or int(length) < 1:
        raise ValueError(f"DESOM-1 iterations in {name!r} must be a positive integer")
    return recipe, int(length)


def desom1_settings(iterations: int, **overrides) -> dict:
    """The study's DESOM-1 recipe (the paper's architecture): one learning rate for network and
    prototypes, falling linearly to zero over the last third of the run so the map settles (BMU
    churn), the same precision for training and inference (bf16 where the hardware has it), a
    final neighbourhood wide enough to keep order (T_min = 1: a neighbour keeps 1/e)."""
    base = {"iterations": iterations, "batch_size": 128, "lr": 1e-3, "prototype_lr": None,
            "t_max": 10.0, "t_min": 1.0, "pretrain_iterations": 0, "lr_decay_iterations": iterations // 3,
            "max_cutouts": 300_000, "precision": "auto", "seed": 0}
    base.update(overrides)
    if base["precision"] == "auto":
        from desom.training import default_train_precision
        base["precision"] = default_train_precision()
    return base


def train_desom1(data: dict, fit_exposures: np.ndarray, probe_exposures: np.ndarray, recipe: str,
                 settings: dict, cache_dir: Path, log=print):
    """DESOM-1 on a seeded sample of the fit exposures' cutouts under `recipe`, with the map
    order recorded on a fixed probe of other exposures' cutouts. Returns (model, record)."""
    import torch

    from desom.checkpoint import load_checkpoint, save_checkpoint
    from desom.model import DESOMConfig, build_desom
    from desom.training import train_desom

    # Keyed by the recipe and the settings: the cutouts are a seeded sample of fit exposures, and
    # which ones (recorded in the checkpoint) never includes a validation or test exposure.
    key = _key({"recipe": RECIPES[recipe], "settings": settings})
    path = cache_dir / f"desom1-{recipe}-{settings['iterations']}-{key}.pt"
    if path.exists():
        ckpt = load_checkpoint(path)
        log(f"DESOM-1 {recipe}: cached ({path.name})")
        return ckpt.model, ckpt.metrics
    rng = np.random.default_rng(settings["seed"])
    rows = cutout_rows(data, fit_exposures)
    if len(rows) > settings["max_cutouts"]:
        rows = np.sort(rng.choice(rows, settings["max_cutouts"], replace=False))
    probe_rows = cutout_rows(data, probe_exposures)
    probe_rows = np.sort(rng.choice(probe_rows, min(5000, len(probe_rows)), replace=False))
    train = stretched(data, rows, recipe)[:, None]
    probe = stretched(data, probe_rows, recipe)[:, None]
    cfg = DESOMConfig.desom1(seed=settings["seed"], iterations=settings["iterations"],
                             batch_size=settings["batch_size"], lr=settings["lr"],
                             prototype_lr=settings["prototype_lr"], t_max=settings["t_max"],
                             t_min=settings["t_min"], pretrain_iterations=settings["pretrain_iterations"],
                             lr_decay_iterations=settings["lr_decay_iterations"])
    torch.manual_seed(settings["seed"])
    model = build_desom(cfg)
    t0 = time.perf_counter()
    train_desom(model, train, cfg, progress=True, precision=settings["precision"],
                channels_last=True, probe=probe, probe_every=max(settings["iterations"] // 20, 50))
    seconds = time.perf_counter() - t0
    probes = [{"iteration": r["iteration"], "te": r["probe_te"], "churn": r["probe_churn"]}
              for r in model.history if "probe_te" in r]
    record = {"recipe": recipe, "settings": settings, "train_seconds": round(seconds, 1),
              "train_cutouts": int(len(train)), "map_order": model.map_order, "probe_history": probes,
              "fit_exposures_sampled": int(len(fit_exposures)),
              "fit_exposures_hash": _key(np.asarray(fit_exposures).tolist())}
    save_checkpoint(path, model, cfg, metrics=record, history=model.history)
    log(f"DESOM-1 {recipe}: {settings['iterations']} iterations on {len(train)} cutouts in {seconds:.0f} s; "
        f"probe TE {model.map_order['topographic_error']:.3f}, churn {model.map_order['bmu_churn']}")
    return model, record


def infer_histos(model, data: dict, recipe: str, cache: Path, exposures_per_call: int = 40,
                 precision: str = "auto", log=print) -> dict:
    """Per exposure: hard histo (weighted BMU counts), latent-soft histo (weighted soft
    activations) and per cutout BMU / second BMU, over every exposure. Cached."""
    from tqdm import tqdm

    from desom.inference import DesomPredictor

    if cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    predictor = DesomPredictor(model, batch_size=1024, precision=precision)
    n_exp = len(data["offsets"]) - 1
    k = predictor.n_nodes
    hard = np.zeros((n_exp, k), np.float32)
    soft = np.zeros((n_exp, k), np.float32)
    bmu = np.zeros(int(data["offsets"][-1]), np.int16)
    second = np.zeros_like(bmu)
    t0 = time.perf_counter()
    off = data["offsets"]
    for s in tqdm(range(0, n_exp, exposures_per_call), desc=f"DESOM-1 inference ({recipe})", unit="chunk"):
        exps = np.arange(s, min(s + exposures_per_call, n_exp))
        lo, hi = off[exps[0]], off[exps[-1] + 1]
        if hi == lo:
            continue
        x = stretched(data, np.arange(lo, hi), recipe)[:, None]
        pred = predictor.predict(x, return_activations=True)
        owner = np.repeat(exps, np.diff(off[exps[0]:exps[-1] + 2]))
        w = data["weight"][lo:hi].astype(np.float64)
        np.add.at(hard, (owner, pred.bmu), w)
        for e in exps:
            a, b = off[e] - lo, off[e + 1] - lo
            if b > a:
                soft[e] = (pred.activations[a:b] * w[a:b, None]).sum(axis=0)
        bmu[lo:hi] = pred.bmu
        second[lo:hi] = pred.second_bmu
    out = {"hard": hard, "soft": soft, "bmu": bmu, "second": second,
           "seconds": np.array(time.perf_counter() - t0), "precision": np.array(predictor.precision)}
    np.savez(cache, **out)
    log(f"inference ({recipe}, {predictor.precision}): {len(bmu)} cutouts in {float(out['seconds']):.0f} s "
        f"({len(bmu) / max(float(out['seconds']), 1e-9):.0f}/s)")
    return out


# ---------------------------------------------------------------------------------------------
# DESOM-2 and the baseline
# ---------------------------------------------------------------------------------------------
def exposure_coherent_statistics(data: dict, cache: Path, log=print) -> np.ndarray:
    """(n, 2) each exposure's COHERENT_NAMES (desom.baseline.coherent_statistics, the archive's
    own measurement) from its stored stamps and planes; NaN where too few. Computed once and
    cached in the study folder."""
    from desom.baseline import coherent_statistics

    path = Path(cache) / "coherent-statistics.npy"
    if path.exists():
        return np.load(path)
    t0 = time.perf_counter()
    off = data["offsets"]
    out = np.full((len(off) - 1, 2), np.nan)
    for i in range(len(off) - 1):
        rows = slice(int(off[i]), int(off[i + 1]))
        out[i] = coherent_statistics(data["stamps"][rows], data["plane"][rows], data["noise"][rows])
    np.save(path, out)
    log(f"coherent statistics of {len(out)} exposures in {time.perf_counter() - t0:.0f} s")
    return out


def desom2_inputs(histos: dict, representation: str, map_shape=(25, 25)) -> tuple[np.ndarray, float]:
    """The histo-vectors DESOM-2 sees: 'hard' counts, 'grid' (soft assignment on the map, via
    the normaliser's smooth_sigma, returned as the second value) or 'latent' soft activations."""
    if representation == "hard":
        return histos["hard"], 0.0
    if representation.startswith("grid"):
        sigma = float(representation[4:] or 1.0)
        return histos["hard"], sigma
    if representation == "latent":
        return histos["soft"], 0.0
    raise ValueError(f"unknown representation {representation!r}")


def fit_desom2(x_train: np.ndarray, side: int, normaliser: str, seed: int, iterations: int,
               smooth_sigma: float = 0.0, stats_train: np.ndarray | None = None, stats_weight: float = 1.0,
               **settings):
    """DESOM-2 on normalised histo-vectors, with the source statistics (5 or 7 raw columns,
    desom.baseline.FEATURE_NAMES or STATISTIC_NAMES) beside them when given: the archive's own
    HistoNormaliser builds the input, as train_desom2 does. settings: other DESOMConfig fields."""
    from desom.baseline import FEATURE_NAMES, STATISTIC_NAMES
    from desom.normalise import HistoNormaliser

    names = () if stats_train is None else (FEATURE_NAMES if stats_train.shape[1] == len(FEATURE_NAMES)
                                            else STATISTIC_NAMES)
    norm = HistoNormaliser(normaliser, smooth_sigma=smooth_sigma, statistics=names,
                           statistics_weight=stats_weight).fit(x_train, statistics=stats_train)
    z = norm.transform(x_train, statistics=stats_train)
    return train_gated_desom2(z, side, seed, iterations, **settings), norm


def train_gated_desom2(z: np.ndarray, side: int, seed: int, iterations: int, **architecture):
    """DESOM-2 (side x side, batch 64) on the rows z, under the archive's rule: a collapsed
    autoencoder is retrained with the next seed (desom.training.train_until_it_reconstructs;
    runs shorter than GATE_MIN_ITERATIONS are measured, not gated). The gate's record is kept
    on the model as `training_gate`."""
    import torch

    from desom.metrics import GATE_MIN_ITERATIONS
    from desom.model import DESOMConfig, build_desom
    from desom.training import train_desom, train_until_it_reconstructs

    z = np.asarray(z, np.float32)

    def train_one(attempt_seed: int):
        cfg = DESOMConfig.desom2(seed=attempt_seed, input_shape=(z.shape[1],), map_rows=side, map_cols=side,
                                 iterations=iterations, batch_size=64, **architecture)
        torch.manual_seed(attempt_seed)
        model = build_desom(cfg)
        train_desom(model, z, cfg, progress=False)
        return model

    model, gate = train_until_it_reconstructs(train_one, z, seed, judge=iterations >= GATE_MIN_ITERATIONS)
    model.training_gate = gate
    return model


def desom2_cells(model, norm, x: np.ndarray, stats: np.ndarray | None = None):
    from desom.inference import DesomPredictor

    z = norm.transform(x, statistics=stats)
    pred = DesomPredictor(model).predict(z, return_latent=True, return_activations=False)
    return pred.bmu, pred.latent, z


def thinned_hard(data: dict, histos: dict, share: float, seed: int, n_nodes: int = 625) -> np.ndarray:
    """Hard histo-vectors built from a random `share` of every exposure's cutouts (weights
    scaled by 1 / share): the same exposures seen with fewer sources."""
    off = data["offsets"]
    owner = np.repeat(np.arange(len(off) - 1), np.diff(off))
    keep = np.random.default_rng(seed).uniform(size=owner.size) < share
    out = np.zeros((len(off) - 1, n_nodes), np.float32)
    np.add.at(out, (owner[keep], histos["bmu"][keep].astype(np.int64)),
              data["weight"][keep].astype(np.float64) / share)
    return out


def desom1_with_histos(data: dict, fit: np.ndarray, probe: np.ndarray, recipe: str, settings: dict,
                       cache_dir: Path, log=print):
    """DESOM-1 of a recipe (trained or cached) and the histo-vectors of every exposure under it
    (computed or cached): (model, training record, histos)."""
    model, record = train_desom1(data, fit, probe, recipe, settings, cache_dir, log=log)
    cache = cache_dir / f"histos-{recipe}-{_key(record['settings'])}-{record['train_cutouts']}.npz"
    return model, record, infer_histos(model, data, recipe, cache, log=log)
