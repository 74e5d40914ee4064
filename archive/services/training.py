"""Training both DESOMs from the archive's own data and registering the results."""
from __future__ import annotations

import logging
import time

import numpy as np

from .. import vectors
from ..executors import make_executor
from ..models import Exposure, ExposureVector, ModelVersion
from ..tasks import sample_cutouts_safely
from . import versions
from .ingest import expand_paths

logger = logging.getLogger(__name__)


# Chosen by benchmarks/bench_science.py (see benchmarks/README.md, "Science").
DEFAULT_NORMALISER = "hellinger"   # beat the paper's min-max on held-out exposures
DEFAULT_SMOOTH_SIGMA = 0.0
# How sources become DESOM-1 inputs (desom.pipeline.STAMP_FIELDS): recorded in every DESOM-1 so
# that ingest, assignment and search cut their cutouts the same way.
DEFAULT_STAMPS = {"stamp_sky": "kept", "stretch": "asinh"}
# DESOM-2's length and batch in the study; its map side comes from suggested_desom2_map. The
# paper's 20x20 and 100 000 iterations leave 1.4 exposures per cell on a 560-exposure archive and
# ran for over 25 minutes there.
DEFAULT_DESOM2 = {"iterations": 3000, "batch_size": 64}


class TrainingDataError(ValueError):
    """Raised when there is nothing (or too little) to train on, with what to do about it."""


def collect_training_cutouts(paths: list[str], *, max_per_ccd: int = 100, max_cutouts: int | None = None,
                             seed: int = 0, workers: int = 2, scheduler: str | None = None,
                             imaging_config=None, progress: bool = True) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Sample cutouts from every file on the workers; return (cutouts, failures)."""
    from tqdm import tqdm

    config = imaging_config or versions.imaging_config()
    failures = []
    tasks = [(path, seed + i) for i, path in enumerate(paths)]
    by_path = {}
    with make_executor(scheduler, workers if len(paths) > 1 else 0) as executor:
        bar = tqdm(total=len(tasks), desc="sampling cutouts", unit="exp", disable=not progress)
        for path, result, error in executor.map_unordered(sample_cutouts_safely, tasks, max_per_ccd, config):
            if error:
                failures.append((path, error))
            elif len(result):
                by_path[path] = result
            bar.update(1)
        bar.close()
    # The files' order, not the workers' finishing order: the same seed gives the same training set.
    stacks = [by_path[p] for p in paths if p in by_path]
    failures.sort(key=lambda f: paths.index(f[0]) if f[0] in paths else len(paths))
    if not stacks:
        raise TrainingDataError("no cutouts could be sampled from the given exposures"
                                + (f" ({len(failures)} files failed)" if failures else ""))
    cutouts = np.concatenate(stacks).astype(np.float32, copy=False)
    if max_cutouts and len(cutouts) > max_cutouts:
        keep = np.random.default_rng(seed).choice(len(cutouts), size=max_cutouts, replace=False)
        cutouts = cutouts[np.sort(keep)]
    return cutouts, failures


def train_desom1(*, paths=None, n_exposures: int | None = None, max_per_ccd: int = 100,
                 max_cutouts: int | None = 200_000, overrides: dict | None = None, seed: int = 0,
                 activate: bool = True, workers: int = 2, scheduler: str | None = None,
                 progress: bool = True, precision: str = "auto", stamps: dict | None = None,
                 order_gate: bool = True) -> ModelVersion:
    """Train DESOM-1 on cutouts sampled from files (or, by default, the archive's science
    exposures), save the checkpoint under the data directory and register it.

    stamps: the stamp recipe (default DEFAULT_STAMPS), recorded in the model. order_gate: refuse
    (MapOrderError, nothing registered; the checkpoint stays for inspection) a map whose held-out
    topographic error or last BMU churn is above desom.metrics' thresholds."""
    from desom.checkpoint import save_checkpoint
    from desom.metrics import check_map_order, quantization_error, topographic_error
    from desom.model import DESOMConfig, build_desom
    from desom.training import train_desom

    if paths:
        files, problems = expand_paths(paths)
        if problems and not files:
            raise TrainingDataError("; ".join(f"{p}: {r}" for p, r in problems))
    else:
        files = list(Exposure.objects.filter(is_science=True).order_by("expnum").values_list("file_path", flat=True))
    if not files:
        raise TrainingDataError("no exposures to train on: ingest some first or pass --from PATH")
    if n_exposures and len(files) > n_exposures:
        pick = np.random.default_rng(seed).choice(len(files), size=n_exposures, replace=False)
        files = [files[i] for i in sorted(pick)]

    imaging = versions.imaging_config().with_stamps(DEFAULT_STAMPS if stamps is None else stamps)
    cutouts, failures = collect_training_cutouts(files, max_per_ccd=max_per_ccd, max_cutouts=max_cutouts,
                                                 seed=seed, workers=workers, scheduler=scheduler, progress=progress,
                                                 imaging_config=imaging)
    config = DESOMConfig.desom1(seed=seed, **(overrides or {}))
    config.extra = {**config.extra, "stamps": imaging.stamp_recipe()}
    n_nodes = config.map_rows * config.map_cols
    if len(cutouts) < n_nodes:
        raise TrainingDataError(f"{len(cutouts)} cutouts are fewer than the {n_nodes} map nodes; "
                                "use more exposures or a smaller map")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cutouts))
    n_check = min(5000, max(1, len(cutouts) // 10))
    check, train = cutouts[order[:n_check]], cutouts[order[n_check:]]
    model = build_desom(config)
    started = time.perf_counter()
    # "auto": bf16 autocast where the hardware runs it natively (several times faster there,
    # benchmarks/bench_desom_speed.py), float32 elsewhere; inference follows the same precision.
    if precision == "auto":
        from desom.training import default_train_precision
        precision = default_train_precision()
    history = train_desom(model, train[:, None], config, progress=progress, precision=precision,
                          channels_last=True, probe=check[:, None],
                          probe_every=max(config.iterations // 20, 25))
    elapsed = time.perf_counter() - started
    metrics = _held_out_map_metrics(model, check[:, None], quantization_error, topographic_error)
    metrics.update(train_cutouts=int(len(train)), held_out_cutouts=int(n_check), train_seconds=round(elapsed, 1),
                   exposures=len(files), failed_exposures=len(failures), map_order=model.map_order,
                   stamps=imaging.stamp_recipe(), train_precision=config.extra.get("train_precision"))
    path = versions.models_dir() / f"desom1-{int(time.time())}-{seed}.pt"
    save_checkpoint(path, model, config, metrics=metrics, history=history)
    if order_gate and model.map_order is not None:
        check_map_order(model.map_order)   # MapOrderError: not registered, the file stays
    return versions.register_version(path, kind=ModelVersion.DESOM1, metrics=metrics, activate=activate)


def _held_out_map_metrics(model, data, quantization_error, topographic_error) -> dict:
    from desom.inference import DesomPredictor

    prediction = DesomPredictor(model).predict(data, return_latent=True)
    return {"held_out_quantization_error": float(quantization_error(prediction.latent, model.som.prototypes.detach().cpu().numpy())),
            "held_out_topographic_error": float(topographic_error(prediction.latent, model.som.prototypes.detach().cpu().numpy(),
                                                                  model.map_shape))}


def suggested_desom2_map(n_exposures: int, members_per_cell: float = 12.0) -> int:
    """Side of a square DESOM-2 map that leaves about `members_per_cell` exposures per cell
    (at most the paper's 20x20, at least 3x3). benchmarks/bench_science.py found about a dozen
    members per cell best on held-out exposures (12x12 for 2 000 exposures); with only a few,
    cells are near-singletons and an expert's label says little about the next arrival."""
    import math

    return int(min(20, max(3, math.floor(math.sqrt(max(n_exposures, 1) / members_per_cell)))))


def histo_matrix(desom1: ModelVersion, *, science_only: bool = True, exposures=None) -> tuple[np.ndarray, np.ndarray]:
    """(exposure ids, histo-vectors) of every exposure with a vector under `desom1` (among
    `exposures`, a queryset, when given)."""
    rows = ExposureVector.objects.filter(model_version=desom1)
    if exposures is not None:
        rows = rows.filter(exposure__in=exposures.values("pk"))
    if science_only:
        rows = rows.filter(exposure__is_science=True)
    # By odometer, not by database id: ids follow the ingest workers' finishing order, and
    # DESOM-2's minibatches follow this order, so the same archive trains the same map.
    rows = rows.order_by("exposure__expnum").values_list("exposure_id", "histo")
    ids, blobs = [], []
    for exposure_id, blob in rows.iterator(chunk_size=2000):
        ids.append(exposure_id)
        blobs.append(blob)
    return np.asarray(ids, dtype=np.int64), vectors.stack(blobs)


def train_desom2(*, desom1: ModelVersion | None = None, overrides: dict | None = None, normaliser: str = DEFAULT_NORMALISER,
                 smooth_sigma: float = DEFAULT_SMOOTH_SIGMA, seed: int = 0, activate: bool = True,
                 progress: bool = True) -> ModelVersion:
    """Train DESOM-2 on the stored histo-vectors of one DESOM-1 version (the active one). Unless
    overridden, the map leaves about a dozen exposures per cell (suggested_desom2_map) and the
    length and batch are DEFAULT_DESOM2's.

    smooth_sigma: spread each count over the DESOM-1 map with a Gaussian of that many nodes
    before normalising (0: the paper's raw counts); stored with the normaliser, so assignment
    applies it too."""
    from desom.checkpoint import save_checkpoint
    from desom.model import DESOMConfig, build_desom
    from desom.normalise import HistoNormaliser
    from desom.training import train_desom

    desom1 = desom1 or versions.active_version(ModelVersion.DESOM1)
    if desom1 is None:
        raise TrainingDataError("no active DESOM-1: run train_desom1 first")
    ids, histos = histo_matrix(desom1)
    side = suggested_desom2_map(len(ids))
    settings = {"map_rows": side, "map_cols": side, **DEFAULT_DESOM2, **(overrides or {})}
    config = DESOMConfig.desom2(seed=seed, input_shape=(histos.shape[1] if len(histos) else 625,),
                                normaliser_method=normaliser, **settings)
    n_cells = config.map_rows * config.map_cols
    if len(ids) < n_cells:
        raise TrainingDataError(f"{len(ids)} exposures with histo-vectors are fewer than the {n_cells} cells of a "
                                f"{config.map_rows}x{config.map_cols} map; ingest more or choose a smaller map")
    norm = HistoNormaliser(normaliser, smooth_sigma=smooth_sigma,
                           map_shape=desom1.map_shape if all(desom1.map_shape) else None).fit(histos)
    model = build_desom(config)
    started = time.perf_counter()
    history = train_desom(model, norm.transform(histos).astype(np.float32), config, progress=progress)
    metrics = {"train_exposures": int(len(ids)), "train_seconds": round(time.perf_counter() - started, 1),
               "normaliser": normaliser, "smooth_sigma": float(smooth_sigma)}
    path = versions.models_dir() / f"desom2-{int(time.time())}-{seed}.pt"
    save_checkpoint(path, model, config, normaliser=norm, metrics=metrics, history=history)
    return versions.register_version(path, kind=ModelVersion.DESOM2, trained_on=desom1, metrics=metrics,
                                     activate=activate)
