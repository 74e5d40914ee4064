"""Training both DESOMs from the archive's own data and registering the results."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
from django.conf import settings

from .. import vectors
from ..executors import make_executor
from ..models import Exposure, ExposureVector, ModelVersion
from ..tasks import sample_cutouts_safely
from . import versions
from .ingest import expand_paths

logger = logging.getLogger(__name__)


# Chosen by benchmarks/bench_science.py on its validation split (benchmarks/README.md, "Science"):
# soft counts (each source spread over its node's neighbours, a Gaussian of one node) under the
# sqrt-counts normaliser, which keeps the number of sources that Hellinger drops.
DEFAULT_NORMALISER = "sqrt_counts"
DEFAULT_SMOOTH_SIGMA = 1.0
# What DESOM-2 reads (desom.normalise.FEATURES): the histo-vector with the seven source
# statistics beside it (the five and the coherent ellipticity and sky slope), at 0.4 of their
# standardised scale. On the study's validation split, with turned stamps: 0.931 at x 0.4 and
# 0.948 at x 0.2 (level: the intervals overlap), against 0.894 for the seven statistics alone and
# 0.879 for the histo-vector alone. 0.4 stays because an archive with few cutouts per exposure
# needs the statistics more: on the demo (about 200 cutouts each) x 0.2 fell to 0.765 over five
# DESOM-2 seeds, against 0.828 at x 0.4 (benchmarks/README.md, "Turned stamps").
DEFAULT_FEATURES = "histo+stats+coherent"
DEFAULT_STATISTICS_WEIGHT = 0.4
# How sources become DESOM-1 inputs (desom.pipeline.STAMP_FIELDS): recorded in every DESOM-1 so
# that ingest, assignment and search cut their cutouts the same way. Turning each stamp to its
# source's major axis won on validation (0.879 against 0.861 for the best unturned row) and lifts
# find-similar on the histo-vectors (benchmarks/README.md, "Turned stamps").
DEFAULT_STAMPS = {"stamp_sky": "kept", "stretch": "asinh", "align": True}
# DESOM-1's schedule in the study (benchmarks/science_models.desom1_settings): one learning
# rate for network and prototypes, falling linearly to zero over the last third of the run so
# the map settles (BMU churn under the order gate), and a final neighbourhood wide enough to keep
# the map ordered (T_min = 1: a neighbour keeps 1/e).
DEFAULT_DESOM1 = {"t_min": 1.0}
DESOM1_LR_DECAY_SHARE = 1 / 3
# DESOM-2's length and batch in the study; its map side comes from suggested_desom2_map. The
# paper's 20x20 and 100 000 iterations leave 1.4 exposures per cell on a 560-exposure archive and
# ran for over 25 minutes there.
DEFAULT_DESOM2 = {"iterations": 3000, "batch_size": 64}


def stamps_recipe(align: bool | None = None) -> dict | None:
    """The stamp recipe a command asks for: None (DEFAULT_STAMPS) unless it says whether to turn
    each stamp to its major axis (--align-stamps / --no-align-stamps)."""
    return None if align is None else {**DEFAULT_STAMPS, "align": bool(align)}


def same_stamps(asked: dict, recorded: dict | None) -> bool:
    """Whether a set recorded with `recorded` (a full recipe, or one from before a field existed)
    was cut the way `asked` (often only the fields a command names) would cut it now."""
    imaging = versions.imaging_config()
    return imaging.with_stamps(asked).stamp_recipe() == imaging.with_stamps(recorded).stamp_recipe()


# A training run writes its state this often (iterations), so a killed run loses at most that.
DEFAULT_CHECKPOINT_EVERY = 500


class TrainingDataError(ValueError):
    """Raised when there is nothing (or too little) to train on, with what to do about it."""


def sets_dir() -> Path:
    """Training sets sampled by train_desom1 itself (kept until a model is registered from them)."""
    return Path(settings.ARCHIVE_DATA_DIR) / "training-sets"


def runs_dir() -> Path:
    """In-progress training runs (their last checkpoint), one folder per run."""
    return Path(settings.ARCHIVE_DATA_DIR) / "runs"


def training_files(paths=None, n_exposures: int | None = None, seed: int = 0) -> list[str]:
    """The exposures a DESOM-1 training set is drawn from: the given files, folders and globs,
    or the archive's science exposures (by odometer); at most n_exposures of them, seeded."""
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
    return files


def set_recipe(files: list[str], *, max_per_ccd: int, max_cutouts: int | None, seed: int, imaging) -> dict:
    """Everything that decides a training set's content; its hash is the set's id."""
    return {"exposures": list(files), "max_per_ccd": int(max_per_ccd),
            "max_cutouts": None if max_cutouts is None else int(max_cutouts), "seed": int(seed),
            "stamps": imaging.stamp_recipe(), "imaging": imaging.to_dict()}


def sample_training_set(files: list[str], directory, *, max_per_ccd: int = 100, max_cutouts: int | None = None,
                        seed: int = 0, workers: int = 2, scheduler: str | None = None, imaging_config=None,
                        progress: bool = True):
    """Sample a DESOM-1 training set from `files` on the workers and write it to `directory`
    (desom.trainset). Each exposure yields at most max_per_ccd cutouts per CCD; the set keeps a
    uniform sample of at most max_cutouts of them (None: all), the same for the same seed
    whatever the workers and their order. The driver holds the kept cutouts (2 KB each) plus the
    results in flight, never the archive's."""
    from tqdm import tqdm

    from desom.trainset import BottomKSample, recipe_id, write_training_set

    if max_cutouts is not None and max_cutouts < 1:
        raise TrainingDataError(f"max_cutouts must be at least 1 (or none for every sampled cutout), got {max_cutouts}")
    if max_per_ccd < 1:
        raise TrainingDataError(f"cutouts per CCD must be at least 1, got {max_per_ccd}")
    config = imaging_config or versions.imaging_config()
    recipe = set_recipe(files, max_per_ccd=max_per_ccd, max_cutouts=max_cutouts, seed=seed, imaging=config)
    size = config.cutout_size
    sample = BottomKSample(max_cutouts, (size, size))
    failures = {}

    def tasks():   # built when sent, so each task carries the threshold of the results so far
        for index, path in enumerate(files):
            yield path, index, seed, sample.threshold

    with make_executor(scheduler, workers if len(files) > 1 else 0) as executor:
        bar = tqdm(total=len(files), desc="sampling cutouts", unit="exp", disable=not progress)
        for path, index, offer, error in executor.map_unordered(sample_cutouts_safely, tasks(), max_per_ccd, config,
                                                                max_in_flight=2 * executor.capacity):
            if error:
                failures[index] = error
            else:
                sample.offer(index, offer)
            bar.update(1)
            bar.set_postfix(kept=min(sample.count, max_cutouts or sample.count), seen=sample.offered, refresh=False)
        bar.close()
    if sample.count == 0:
        raise TrainingDataError("no cutouts could be sampled from the given exposures"
                                + (f" ({len(failures)} files failed)" if failures else ""))
    meta = {**recipe, "set_id": recipe_id(recipe), "cutouts_seen": int(sample.offered),
            "failures": [[files[i], failures[i]] for i in sorted(failures)]}
    return write_training_set(directory, sample, meta, progress=progress)


def build_training_set(directory, *, paths=None, n_exposures: int | None = None, max_per_ccd: int = 100,
                       max_cutouts: int | None = 200_000, seed: int = 0, workers: int = 2,
                       scheduler: str | None = None, stamps: dict | None = None, progress: bool = True):
    """Sample a training set into `directory` (a new folder) from files or, by default, the
    archive's science exposures, with the stamp recipe train_desom1 would use."""
    from desom.trainset import TrainingSetError

    if Path(directory).exists() and any(Path(directory).iterdir()):
        raise TrainingDataError(f"{directory} exists and is not empty; choose a new folder for the training set")
    files = training_files(paths, n_exposures, seed)
    imaging = versions.imaging_config().with_stamps(DEFAULT_STAMPS if stamps is None else stamps)
    try:
        return sample_training_set(files, directory, max_per_ccd=max_per_ccd, max_cutouts=max_cutouts, seed=seed,
                                   workers=workers, scheduler=scheduler, imaging_config=imaging, progress=progress)
    except TrainingSetError as exc:
        raise TrainingDataError(str(exc)) from exc


def _config_key(config) -> dict:
    """A config as it decides a run's result (how often it is checkpointed does not)."""
    d = config.to_dict()
    d.pop("checkpoint_every", None)
    return d


def _run_folder(kind: str, key: dict, fresh: bool) -> tuple[Path, Path | None]:
    """(folder of the run, checkpoint to resume from or None). The folder is named by a hash of
    everything that decides the result, so running the same command again finds it."""
    from desom.trainset import recipe_id

    folder = runs_dir() / f"{kind}-{recipe_id(key)}"
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(key, indent=1, default=str))
    progress = folder / "progress.pt"
    return folder, progress if progress.is_file() else None


def _resumed_at(progress: Path | None) -> dict | None:
    if progress is None:
        return None
    from desom.checkpoint import read_payload

    state = read_payload(progress).get("training_state") or {}
    at = {"phase": state.get("phase"), "iteration": state.get("iteration")}
    logger.info("resuming from %s (%s iteration %s)", progress, at["phase"], at["iteration"])
    return at


def train_desom1(*, paths=None, n_exposures: int | None = None, max_per_ccd: int = 100,
                 max_cutouts: int | None = 200_000, overrides: dict | None = None, seed: int = 0,
                 activate: bool = True, workers: int = 2, scheduler: str | None = None,
                 progress: bool = True, precision: str = "auto", stamps: dict | None = None,
                 order_gate: bool = True, training_set=None, save_set=None,
                 checkpoint_every: int | None = None, fresh: bool = False, device: str | None = None) -> ModelVersion:
    """Train DESOM-1 on a training set on disk, save the checkpoint under the data directory and
    register it.

    The set: training_set (a folder written by sample_training_set, e.g. by the sample_cutouts
    command), or one sampled here from files (or, by default, the archive's science exposures)
    into save_set, or into the data directory's training-sets/ (removed once a model is
    registered from it). A set already there with the same recipe is reused, not sampled again.

    The run writes a checkpoint every checkpoint_every iterations (default
    DEFAULT_CHECKPOINT_EVERY) under runs/; the same call after a crash or a kill resumes from the
    last one and ends with the weights an uninterrupted run has. fresh: start over instead.

    stamps: the stamp recipe (default DEFAULT_STAMPS), recorded in the model; a given set brings
    its own. order_gate: refuse (MapOrderError, nothing registered; the checkpoint stays for
    inspection) a map whose held-out topographic error or last BMU churn is above
    desom.metrics' thresholds.

    device: "auto" or None (CUDA when torch sees a GPU, else the CPU), "cpu", "cuda" or "cuda:N";
    the "auto" precision follows it (bf16 autocast on a GPU that runs bf16)."""
    from desom.checkpoint import save_checkpoint
    from desom.metrics import MapOrderError, check_map_order, quantization_error, topographic_error
    from desom.model import DESOMConfig, build_desom
    from desom.inference import default_device
    from desom.training import default_train_precision, train_desom
    from desom.trainset import TrainingSetError, is_training_set, open_training_set, recipe_id

    settings_ = {"checkpoint_every": DEFAULT_CHECKPOINT_EVERY, **DEFAULT_DESOM1, **(overrides or {})}
    if checkpoint_every is not None:
        settings_["checkpoint_every"] = int(checkpoint_every)
    if "lr_decay_iterations" not in settings_:
        iterations = settings_.get("iterations", DESOMConfig.iterations)
        settings_["lr_decay_iterations"] = int(iterations * DESOM1_LR_DECAY_SHARE)
    config = DESOMConfig.desom1(seed=seed, **settings_)
    # "auto": bf16 autocast where the hardware runs it natively (several times faster there,
    # benchmarks/bench_desom_speed.py), float32 elsewhere; inference follows the same precision.
    device = default_device(device)   # a ValueError (command error) before any sampling
    if precision == "auto":
        precision = default_train_precision(device)

    owned = None
    if training_set is not None:
        if paths or n_exposures or save_set:
            raise TrainingDataError("a given training set replaces --from, --exposures and --save-set")
        ts = open_training_set(training_set)
        if stamps is not None and not same_stamps(stamps, ts.meta.get("stamps")):
            raise TrainingDataError(f"{training_set} was cut with stamps {ts.meta.get('stamps')}, not {stamps}")
    else:
        files = training_files(paths, n_exposures, seed)
        imaging = versions.imaging_config().with_stamps(DEFAULT_STAMPS if stamps is None else stamps)
        recipe = set_recipe(files, max_per_ccd=max_per_ccd, max_cutouts=max_cutouts, seed=seed, imaging=imaging)
        set_id = recipe_id(recipe)
        where = Path(save_set) if save_set else sets_dir() / set_id
        if is_training_set(where):
            ts = open_training_set(where)
            if ts.set_id != set_id:
                raise TrainingDataError(f"{where} holds another training set ({ts.set_id}, not {set_id}); "
                                        "choose another folder, or train from it with --from-set")
            logger.info("reusing the training set at %s", where)
        else:
            try:
                ts = sample_training_set(files, where, max_per_ccd=max_per_ccd, max_cutouts=max_cutouts, seed=seed,
                                         workers=workers, scheduler=scheduler, imaging_config=imaging,
                                         progress=progress)
            except TrainingSetError as exc:
                raise TrainingDataError(str(exc)) from exc
        owned = None if save_set else where
    recipe_stamps = ts.meta["stamps"]
    config.extra = {**config.extra, "stamps": recipe_stamps}

    n_nodes = config.map_rows * config.map_cols
    n = len(ts)
    n_check = min(5000, max(1, n // 10))
    if n - n_check < n_nodes:
        raise TrainingDataError(f"{n} cutouts ({n - n_check} after {n_check} are held out) are fewer than the "
                                f"{n_nodes} map nodes; use more exposures or a smaller map")
    # A seeded held-out split, by row numbers: the training rows stay on disk.
    order = np.random.default_rng(seed).permutation(n)
    check = ts.rows[np.sort(order[:n_check])]
    train = ts.rows.subset(np.sort(order[n_check:]))
    del order

    folder, resume = _run_folder("desom1", {"kind": "desom1", "set": ts.set_id, "n_cutouts": n,
                                            "config": _config_key(config), "precision": precision}, fresh)
    resumed_at = _resumed_at(resume)
    model = build_desom(config)
    started = time.perf_counter()
    history = train_desom(model, train, config, progress=progress, precision=precision,
                          channels_last=True, probe=check[:, None],
                          probe_every=max(config.iterations // 20, 25),
                          checkpoint_path=folder / "progress.pt", resume_from=resume, device=device)
    elapsed = time.perf_counter() - started
    metrics = _held_out_map_metrics(model, check[:, None], quantization_error, topographic_error, device)
    metrics.update(train_cutouts=int(len(train)), held_out_cutouts=int(n_check), train_seconds=round(elapsed, 1),
                   exposures=len(ts.meta.get("exposures") or []), failed_exposures=len(ts.meta.get("failures") or []),
                   map_order=model.map_order, stamps=recipe_stamps, train_precision=config.extra.get("train_precision"),
                   training_set={"id": ts.set_id, "cutouts": n, "path": None if owned else str(ts.path)},
                   resumed_at=resumed_at, device=str(device))
    ts.rows.close()
    train.close()
    path = versions.new_checkpoint_path("desom1", seed)
    save_checkpoint(path, model, config, metrics=metrics, history=history)
    shutil.rmtree(folder, ignore_errors=True)
    if order_gate and model.map_order is not None:
        try:
            check_map_order(model.map_order)   # MapOrderError: not registered, the file stays
        except MapOrderError as exc:
            if owned is not None:
                raise MapOrderError(f"{exc} The sampled training set stays at {owned}: train_desom1 --from-set "
                                    f"{owned} trains again without sampling.") from None
            raise
    if owned is not None:
        shutil.rmtree(owned, ignore_errors=True)
    return versions.register_version(path, kind=ModelVersion.DESOM1, metrics=metrics, activate=activate)


def _held_out_map_metrics(model, data, quantization_error, topographic_error, device=None) -> dict:
    from desom.inference import DesomPredictor

    prediction = DesomPredictor(model, device=device, compile=False).predict(data, return_latent=True)
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


def histo_rows(desom1: ModelVersion, *, science_only: bool = True, exposures=None):
    """The ExposureVector rows of every exposure with a vector under `desom1` (among
    `exposures`, a queryset, when given), by odometer."""
    rows = ExposureVector.objects.filter(model_version=desom1)
    if exposures is not None:
        rows = rows.filter(exposure__in=exposures.values("pk"))
    if science_only:
        rows = rows.filter(exposure__is_science=True)
    # By odometer, not by database id: ids follow the ingest workers' finishing order, and
    # DESOM-2's minibatches follow this order, so the same archive trains the same map.
    return rows.order_by("exposure__expnum")


def histo_matrix(desom1: ModelVersion, *, science_only: bool = True, exposures=None,
                 chunk_size: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(exposure ids, histo-vectors) of every exposure with a vector under `desom1`, streamed
    from the database chunk by chunk into one preallocated (N, bins) float32 array: 2.5 KB per
    exposure and one chunk of rows, not a Python list of every row. exposures: a queryset to
    draw from (default: all)."""
    rows = histo_rows(desom1, science_only=science_only, exposures=exposures)
    n = rows.count()
    ids = np.empty(n, np.int64)
    out = None
    filled = 0
    chunk_ids, chunk_blobs = [], []

    def flush():
        nonlocal out, filled
        block = vectors.stack(chunk_blobs)
        if out is None:
            out = np.empty((n, block.shape[1]), np.float32)
        elif block.shape[1] != out.shape[1]:
            raise ValueError("stored vectors have different lengths")
        out[filled:filled + len(block)] = block
        ids[filled:filled + len(block)] = chunk_ids
        filled += len(block)
        chunk_ids.clear()
        chunk_blobs.clear()

    for exposure_id, blob in rows.values_list("exposure_id", "histo").iterator(chunk_size=chunk_size):
        if filled + len(chunk_ids) >= n:   # rows stored since the count wait for the next run
            break
        chunk_ids.append(exposure_id)
        chunk_blobs.append(blob)
        if len(chunk_ids) >= chunk_size:
            flush()
    if chunk_ids:
        flush()
    if out is None:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return ids[:filled], out[:filled]


def source_statistics_of(desom1: ModelVersion, ids: np.ndarray, names=None, chunk_size: int = 2000) -> np.ndarray:
    """(len(ids), len(names)) float64 source statistics (names: desom.baseline.FEATURE_NAMES by
    default, or STATISTIC_NAMES; NaN where unmeasurable) of the exposures `ids` among those with
    a vector under `desom1`, streamed from the database. Raises TrainingDataError, naming the
    command that fixes it, when any of them was never measured (ingested before the archive
    measured those statistics)."""
    from desom.baseline import FEATURE_NAMES, statistics_matrix, unmeasured

    names = tuple(names or FEATURE_NAMES)
    out = np.full((len(ids), len(names)), np.nan)
    seen = np.zeros(len(ids), bool)
    order = np.argsort(ids)
    sorted_ids = ids[order]
    missing = 0
    for exposure_id, stats in histo_rows(desom1).values_list("exposure_id", "exposure__source_statistics") \
            .iterator(chunk_size=chunk_size):
        at = np.searchsorted(sorted_ids, exposure_id)
        if at >= len(sorted_ids) or sorted_ids[at] != exposure_id:
            continue   # stored since the histo-vectors were read
        row = order[at]
        seen[row] = True
        if unmeasured(stats, names):
            missing += 1
        else:
            out[row] = statistics_matrix([stats], names)[0]
    missing += int((~seen).sum())
    if missing:
        raise TrainingDataError(
            f"{missing} of {len(ids)} exposures have no source statistics (they were ingested before the "
            f"archive measured them): run `manage.py source_statistics` to measure them from their files, "
            f"or train on the histo-vectors alone with `train_desom2 --features histo`")
    return out


def read_exposure_labels(path) -> dict[int, str]:
    """Exposure labels from a CSV with an `expnum` column and a `good_bad` (a survey's truth.csv)
    or `label` column: {expnum: label}. Empty labels and "mixed" (deliberately unlabelled, as for
    cells) are left out; "Good" is Good and every other label Bad (desom.evaluation.is_good)."""
    import csv

    from ..models import MIXED_LABEL

    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            column = next((c for c in ("good_bad", "label") if c in columns), None)
            if "expnum" not in columns or column is None:
                raise TrainingDataError(f"{path}: a labels file needs an 'expnum' column and a 'good_bad' or "
                                        f"'label' column; it has {columns}")
            labels = {}
            for line, row in enumerate(reader, start=2):
                text = (row.get(column) or "").strip()
                if not text or text.lower() == MIXED_LABEL:
                    continue
                try:
                    labels[int(row["expnum"])] = text
                except (TypeError, ValueError):
                    raise TrainingDataError(f"{path}, line {line}: expnum {row['expnum']!r} is not a number") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TrainingDataError(f"cannot read the labels file {path}: {exc}") from exc
    return labels


def _labels_of(ids: np.ndarray, labels: dict[int, str]) -> tuple[np.ndarray, np.ndarray]:
    """(label per training row, labelled mask) for the exposure ids of a histo matrix. Looks up
    the labelled exposures (an expert's sample: few), not every training row."""
    label_of = {pk: labels[expnum] for pk, expnum in
                Exposure.objects.filter(expnum__in=list(labels)).values_list("pk", "expnum")}
    texts = np.array([label_of.get(int(i), "") for i in ids], dtype=object).astype(str)
    return texts, texts != ""


def train_desom2(*, desom1: ModelVersion | None = None, overrides: dict | None = None, normaliser: str = DEFAULT_NORMALISER,
                 smooth_sigma: float = DEFAULT_SMOOTH_SIGMA, features: str = DEFAULT_FEATURES,
                 statistics_weight: float = DEFAULT_STATISTICS_WEIGHT, seed: int = 0,
                 activate: bool = True, progress: bool = True, checkpoint_every: int | None = None,
                 fresh: bool = False, device: str | None = None, candidates: int = 1,
                 labels: dict[int, str] | None = None) -> ModelVersion:
    """Train DESOM-2 on the stored histo-vectors of one DESOM-1 version (the active one). Unless
    overridden, the map leaves about a dozen exposures per cell (suggested_desom2_map) and the
    length and batch are DEFAULT_DESOM2's.

    features (desom.normalise.FEATURES; default DEFAULT_FEATURES): "histo+stats" puts each
    exposure's five stored source statistics, median-filled, standardised and multiplied by
    statistics_weight, beside its normalised histo-vector; "histo+stats+coherent" those and the
    two coherent statistics; "histo" reads the histo-vector alone. The normaliser carries the
    scaler and the weight, so assignment builds the same input. With statistics, an archive whose
    exposures were ingested before those statistics were measured is refused (TrainingDataError
    naming `manage.py source_statistics`).

    smooth_sigma: spread each count over the DESOM-1 map with a Gaussian of that many nodes
    before normalising (0: the paper's raw counts); stored with the normaliser, so assignment
    applies it too. The vectors are streamed from the database into one array and normalised in
    place. The run writes a checkpoint every checkpoint_every iterations (default
    DEFAULT_CHECKPOINT_EVERY); the same call on the same archive after a crash or a kill
    resumes from it (fresh: start over). device: as train_desom1's (DESOM-2 trains in float32
    on any device: a small dense network gains little from bf16).

    candidates, labels: train `candidates` maps (seeds seed + j * CANDIDATE_SEED_STEP, each under
    the reconstruction gate) and keep the one whose cells best name the labelled exposures
    ({expnum: label}, read_exposure_labels), each named by the other labelled members of its
    cell (desom.evaluation.choose_map_by_labels). DESOM-2's seed moves its accuracy by several
    points; on the science study's validation split the best of 3 by this measure raised recall
    from 0.955 to 0.970. Every candidate's score is kept in the version's metrics."""
    from desom.checkpoint import save_checkpoint
    from desom.inference import default_device
    from desom.model import DESOMConfig, build_desom
    from desom.metrics import GATE_MIN_ITERATIONS, CollapsedModelError
    from desom.normalise import HistoNormaliser
    from desom.training import CANDIDATE_SEED_STEP, train_desom, train_until_it_reconstructs

    candidates = int(candidates)
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")
    if candidates > 1 and not labels:
        raise TrainingDataError(f"choosing among {candidates} candidate maps needs labelled exposures "
                                "(train_desom2 --labels FILE); without labels train one (--candidates 1)")
    device = default_device(device)
    norm = HistoNormaliser.for_features(features, normaliser, smooth_sigma=smooth_sigma,   # ValueError first
                                        statistics_weight=statistics_weight)

    desom1 = desom1 or versions.active_version(ModelVersion.DESOM1)
    if desom1 is None:
        raise TrainingDataError("no active DESOM-1: run train_desom1 first")
    ids, histos = histo_matrix(desom1)
    if candidates > 1:
        label_texts, labelled = _labels_of(ids, labels)
        if labelled.sum() < 2:
            raise TrainingDataError(f"{int(labelled.sum())} of the {len(ids)} exposures with histo-vectors have a "
                                    "label: the labels name no exposure of this archive (expnum)")
    statistics = source_statistics_of(desom1, ids, norm.statistics_names) if norm.uses_statistics else None
    side = suggested_desom2_map(len(ids))
    settings_ = {"map_rows": side, "map_cols": side, "checkpoint_every": DEFAULT_CHECKPOINT_EVERY,
                 **DEFAULT_DESOM2, **(overrides or {})}
    if checkpoint_every is not None:
        settings_["checkpoint_every"] = int(checkpoint_every)

    n_inputs = (histos.shape[1] if len(histos) else 625) + (0 if statistics is None else statistics.shape[1])

    def config_for(attempt_seed: int) -> DESOMConfig:
        return DESOMConfig.desom2(seed=attempt_seed, input_shape=(n_inputs,), normaliser_method=normaliser,
                                  extra={"features": features}, **settings_)

    config = config_for(seed)
    n_cells = config.map_rows * config.map_cols
    if len(ids) < n_cells:
        raise TrainingDataError(f"{len(ids)} exposures with histo-vectors are fewer than the {n_cells} cells of a "
                                f"{config.map_rows}x{config.map_cols} map; ingest more or choose a smaller map")
    norm.map_shape = desom1.map_shape if all(desom1.map_shape) else None
    norm.fit(histos, statistics=statistics)
    if statistics is None:
        data = norm.transform(histos, out=histos)   # in place: one (N, bins) array in all
    else:
        data = norm.transform(histos, statistics=statistics)   # (N, bins + 5): wider, so a new array
        missing_values = {name: int(n) for name, n in zip(norm.statistics_names, np.isnan(statistics).sum(axis=0)) if n}
        del histos
    exposures_key = hashlib.sha256(ids.tobytes()).hexdigest()
    runs = {}

    def train_one(attempt_seed: int):
        # Each attempt (a restart after a collapse takes another seed) is its own resumable run.
        attempt_config = config_for(attempt_seed)
        key = {"kind": "desom2", "desom1": desom1.version_id, "normaliser": norm.to_dict(),
               "exposures": exposures_key, "config": _config_key(attempt_config)}
        folder, resume = _run_folder("desom2", key, fresh)
        resumed_at = _resumed_at(resume)      # before training writes over the file
        model = build_desom(attempt_config)
        history = train_desom(model, data, attempt_config, progress=progress, normaliser=norm,
                              checkpoint_path=folder / "progress.pt", resume_from=resume, device=device)
        runs[attempt_seed] = (attempt_config, history, folder, resumed_at)
        return model

    started = time.perf_counter()
    trained = []
    try:
        for j in range(candidates):
            trained.append(train_until_it_reconstructs(train_one, data, seed + j * CANDIDATE_SEED_STEP,
                                                       log=logger.warning,
                                                       judge=config.iterations >= GATE_MIN_ITERATIONS))
    except CollapsedModelError as exc:
        for _, _, folder, _ in runs.values():
            shutil.rmtree(folder, ignore_errors=True)
        raise TrainingDataError(f"DESOM-2 did not train: {exc}") from exc
    choice = None
    if candidates > 1:
        from desom.evaluation import choose_map_by_labels
        from desom.inference import DesomPredictor

        cells = [DesomPredictor(m, device=device).predict(data, return_activations=False).bmu for m, _ in trained]
        try:
            pick, scores = choose_map_by_labels(cells, label_texts, labelled)
        except ValueError as exc:
            for _, _, folder, _ in runs.values():
                shutil.rmtree(folder, ignore_errors=True)
            raise TrainingDataError(f"the labels cannot choose a map: {exc}") from exc
        choice = {"labelled_exposures": int(labelled.sum()), "kept_seed": trained[pick][1]["seed"],
                  "candidates": [{"seed": g["seed"], **{k: round(v, 4) for k, v in s.items() if k != "n_labelled"}}
                                 for (_, g), s in zip(trained, scores)]}
    else:
        pick = 0
    model, gate = trained[pick]
    config, history, folder, resumed_at = runs[gate["seed"]]
    metrics = {"train_exposures": int(len(ids)), "train_seconds": round(time.perf_counter() - started, 1),
               "normaliser": normaliser, "smooth_sigma": float(smooth_sigma), "features": features,
               "statistics_weight": norm.statistics_weight,
               "resumed_at": resumed_at,
               "seed": gate["seed"], "explained_variance": round(gate["explained_variance"], 4),
               "training_attempts": gate["attempts"], "reconstruction_gate": gate["judged"],
               "device": str(device)}
    if choice is not None:
        metrics["chosen_by_labels"] = choice
    if statistics is not None:
        # Unmeasurable values (no sources: no shapes) took the training medians.
        metrics["statistics_filled_with_median"] = missing_values
    path = versions.new_checkpoint_path("desom2", gate["seed"])
    save_checkpoint(path, model, config, normaliser=norm, metrics=metrics, history=history)
    for _, _, run_folder, _ in runs.values():
        shutil.rmtree(run_folder, ignore_errors=True)
    return versions.register_version(path, kind=ModelVersion.DESOM2, trained_on=desom1, metrics=metrics,
                                     activate=activate)
