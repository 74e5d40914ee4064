"""Joint training of a DESOM (paper section 3.4, after Forest et al. 2019).

Every iteration draws a minibatch, sets the temperature T from the schedule, computes the
BMUs of the batch from the current prototypes (no gradient through the BMU choice or the
kernel weights) and takes one Adam step on

    L = Lr + gamma * Lsom,   Lr = mean squared reconstruction error,
    Lsom = mean_i sum_k w[i, k] ||z_i - m_k||^2,  w[i, k] = exp(-d(bmu_i, k)^2 / T^2)

so the SOM term pulls both the encoder (through z) and the prototypes. Optional autoencoder
pre-training runs first (reconstruction loss only); the prototypes are then initialised from
the encodings of K training samples drawn without replacement.

Adam moves a parameter by about lr per step whatever the gradient's size, so at a constant lr
the prototypes keep jittering by about prototype_lr at the end of training, which in a small
latent space is enough to break the map's order (topographic error rises with the run's
length). cfg.lr_decay_iterations > 0 lets both learning rates fall linearly to zero over the
last that many joint iterations, as the learning rate of a classical SOM decays.

Map order: given a fixed ``probe`` set, training records every ``probe_every`` joint iterations
the probe's topographic error and the share of its BMUs that moved since the last record (BMU
churn), computed under the training precision; the last record is ``model.map_order``, which
the caller stores in the checkpoint and ``desom.metrics.check_map_order`` gates. The training
precision is written into the config (``extra["train_precision"]``), so a predictor can run the
encoder the way it was trained.

Reproducibility: minibatches come from a numpy Generator seeded with cfg.seed, the weights
from build_desom(cfg); on the CPU with the same thread count a run is bit-for-bit repeatable.
A checkpoint written during training holds the optimizer and sampler state, so a run resumed
from it continues exactly where it stopped.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from desom.model import DESOM, DESOMConfig
from desom.som import temperature

TRAIN_PRECISIONS = ("float32", "bf16")


def default_train_precision(device=None) -> str:
    """bf16 autocast where the hardware runs it natively (a CUDA device, or a CPU with
    AVX512-BF16/AMX, where oneDNN reports bf16 support): several times faster there. Elsewhere
    float32: an AVX2-only CPU emulates bf16 and trained a DESOM-1 an order of magnitude slower."""
    from desom.inference import default_device

    dev = default_device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "float32"
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
    except (AttributeError, RuntimeError):
        return "float32"


@dataclass
class TrainingHistory:
    """Losses logged every cfg.log_every iterations (and at the last one of each phase)."""
    records: list = field(default_factory=list)

    def append(self, record: dict) -> None:
        self.records.append(record)

    def to_list(self) -> list:
        return [dict(r) for r in self.records]

    def column(self, key: str, phase: str | None = "joint") -> np.ndarray:
        return np.array([r[key] for r in self.records if phase is None or r["phase"] == phase])

    @property
    def last(self) -> dict | None:
        return self.records[-1] if self.records else None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)


def prepare_data(data, cfg: DESOMConfig) -> np.ndarray:
    """Check the training array and give it the model's (N, *input_shape) float32 layout
    (a view where possible, so a memory-mapped array stays on disk)."""
    from desom.trainset import DiskRows

    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    want = tuple(cfg.input_shape)
    if isinstance(data, DiskRows):
        return _prepare_disk_rows(data, cfg, want)
    if not isinstance(data, np.ndarray):
        raise ValueError(f"training data must be a numpy array or desom.trainset.DiskRows, "
                         f"got {type(data).__name__}")
    if cfg.kind == "desom1" and data.ndim == 3 and data.shape[1:] == want[1:]:
        data = data.reshape(data.shape[0], *want)
    if data.ndim != len(want) + 1 or tuple(data.shape[1:]) != want:
        raise ValueError(f"{cfg.kind} training data must have shape (N, {', '.join(map(str, want))}),"
                         f" got {data.shape}")
    if data.shape[0] < 1:
        raise ValueError("training data is empty")
    if data.dtype != np.float32:
        data = data.astype(np.float32)
    # Chunked so a huge (memory-mapped) array is never copied whole.
    step = max(1, 2 ** 24 // int(np.prod(want)))
    for start in range(0, data.shape[0], step):
        if not np.isfinite(data[start:start + step]).all():
            raise ValueError(f"training data contains NaN or infinite values "
                             f"(in samples {start}..{min(start + step, data.shape[0]) - 1})")
    return data


def _prepare_disk_rows(data, cfg: DESOMConfig, want: tuple):
    """A training set on disk: check its layout; rows are read (and converted) per batch."""
    if cfg.kind == "desom1" and len(data.row_shape) == len(want) - 1 and data.row_shape == want[1:]:
        data = data.with_row_shape(want)
    if data.row_shape != want:
        raise ValueError(f"{cfg.kind} training data must have rows of shape {want}, got {data.row_shape} "
                         f"({data.path})")
    if len(data) < 1:
        raise ValueError("training data is empty")
    if not data.finite_by_construction:   # integer codes cannot be NaN; float files are scanned
        step = max(1, 2 ** 22 // int(np.prod(want)))
        for start in range(0, len(data), step):
            if not np.isfinite(data[start:start + step]).all():
                raise ValueError(f"training data contains NaN or infinite values "
                                 f"(in samples {start}..{min(start + step, len(data)) - 1})")
    return data


def _batch(data: np.ndarray, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    # Sorted indices read a memory-mapped array in order; the loss is a mean, so order is moot.
    return _tensor(data[np.sort(idx)], device)


def _tensor(rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """Rows as a tensor with plain C strides. A view such as x[:, None] keeps strides on its
    size-1 axis that torch reads as channels-last, and the convolutions then take another path
    with other rounding; and oneDNN may round differently on a buffer of another alignment.
    A copy into torch's own (64-byte aligned) memory makes a batch the same whatever array or
    file it came from, which is what lets a resumed run end bit for bit where a straight one does."""
    out = torch.empty(tuple(rows.shape), dtype=torch.float32)
    np.copyto(out.numpy(), rows)
    return out.to(device)


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(x_hat.float(), x.float())


def _start_step(model: DESOM, optimizer: torch.optim.Optimizer, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Training mode, gradients cleared, the batch in the memory format the step runs in."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _autocast(x: torch.Tensor, precision: str):
    """bf16 autocast on the batch's device for precision "bf16"; float32 otherwise."""
    return torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=(precision == "bf16"))


def joint_step(model: DESOM, optimizer: torch.optim.Optimizer, x: torch.Tensor, temp: float,
               gamma: float, precision: str = "float32", channels_last: bool = False) -> dict:
    """One optimisation step on L = Lr + gamma * Lsom; returns the batch's losses (before it)."""
    x = _start_step(model, optimizer, x, channels_last)
    with _autocast(x, precision):
        z = model.encode(x)
        x_hat = model.decode(z)
    lr_loss = reconstruction_loss(x_hat, x)
    som_loss = model.som.som_loss(model.som(z.float()), temp,
                                  normalise=model.config.som_loss == "mean")
    loss = lr_loss + gamma * som_loss
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), "reconstruction": float(lr_loss.detach()),
            "som": float(som_loss.detach())}


def pretrain_step(model: DESOM, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                  precision: str = "float32", channels_last: bool = False) -> dict:
    """One autoencoder-only step (reconstruction loss)."""
    x = _start_step(model, optimizer, x, channels_last)
    with _autocast(x, precision):
        x_hat = model.decode(model.encode(x))
    loss = reconstruction_loss(x_hat, x)
    loss.backward()
    optimizer.step()
    v = float(loss.detach())
    return {"loss": v, "reconstruction": v, "som": None}


PCA_INIT_SAMPLES = 8192
PCA_INIT_SPAN = 2.0     # the grid spans +-2 standard deviations along each principal axis


@torch.no_grad()
def init_prototypes(model: DESOM, data: np.ndarray, rng: np.random.Generator,
                    device: torch.device) -> np.ndarray:
    """Set the prototypes from the encodings of samples drawn without replacement: K of them
    ("samples"), or a grid over the first two principal axes of up to PCA_INIT_SAMPLES of them
    ("pca", the map's longer side along the first axis). Returns the samples' indices."""
    k = model.n_nodes
    if data.shape[0] < k:
        raise ValueError(f"need at least {k} training samples to initialise a "
                         f"{model.map_shape[0]}x{model.map_shape[1]} map, got {data.shape[0]}")
    pca = model.config.prototype_init == "pca"
    n = min(data.shape[0], PCA_INIT_SAMPLES) if pca else k
    idx = rng.choice(data.shape[0], size=n, replace=False)
    model.eval()
    z = torch.cat([model.encode(_tensor(data[idx[s:s + 1024]], device))
                   for s in range(0, n, 1024)])
    model.som.init_prototypes(pca_grid(z.float(), model.map_shape) if pca else z)
    return idx


def pca_grid(z: torch.Tensor, map_shape: tuple[int, int]) -> torch.Tensor:
    """(rows * cols, D) points on the plane of z's first two principal axes, about z's mean, a
    regular grid spanning PCA_INIT_SPAN standard deviations each way: neighbouring nodes start
    neighbours in the data, so the map is ordered before it learns (Kohonen's linear
    initialisation), and the start no longer depends on which samples were drawn."""
    rows, cols = map_shape
    mean = z.mean(dim=0)
    centred = z - mean
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    sd = s / max(z.shape[0] - 1, 1) ** 0.5
    axes = [vh[i] * sd[i] if i < vh.shape[0] else torch.zeros_like(mean) for i in range(2)]
    # The longer side of the map follows the axis of larger spread.
    long_axis, short_axis = axes
    row_axis, col_axis = (long_axis, short_axis) if rows >= cols else (short_axis, long_axis)
    row_axis, col_axis = _fixed_sign(row_axis), _fixed_sign(col_axis)
    a = torch.linspace(-PCA_INIT_SPAN, PCA_INIT_SPAN, rows, dtype=z.dtype) if rows > 1 else torch.zeros(1, dtype=z.dtype)
    b = torch.linspace(-PCA_INIT_SPAN, PCA_INIT_SPAN, cols, dtype=z.dtype) if cols > 1 else torch.zeros(1, dtype=z.dtype)
    grid = mean + a[:, None, None] * row_axis + b[None, :, None] * col_axis
    return grid.reshape(rows * cols, -1)      # row-major, as the SOM numbers its nodes


def _fixed_sign(axis: torch.Tensor) -> torch.Tensor:
    """The axis with its largest entry positive: a direction fixed by the data, not by the SVD."""
    return axis * torch.sign(axis[axis.abs().argmax()]) if axis.any() else axis


def make_optimizer(model: DESOM, cfg: DESOMConfig) -> torch.optim.Adam:
    """Adam over the autoencoder (cfg.lr) and the prototypes (cfg.prototype_lr or cfg.lr).

    Adam moves every coordinate by about lr per step whatever the gradient's size, so the
    prototypes can need a larger rate than the network to follow latent codes of large scale.
    """
    protos = [model.som.prototypes]
    others = [p for p in model.parameters() if p is not model.som.prototypes]
    groups = [{"params": others, "lr": cfg.lr}, {"params": protos, "lr": cfg.prototype_lr or cfg.lr}]
    # The fused kernel does Adam's update in one pass per parameter group: the same update,
    # 1.69x faster per DESOM-2 iteration on 2 CPU cores (1.09x for DESOM-1's convolutions),
    # measured by benchmarks/bench_optimizer.py. A device without a fused Adam takes the plain one.
    try:
        return torch.optim.Adam(groups, fused=True)
    except RuntimeError:
        return torch.optim.Adam(groups)


def lr_factor(iteration: int, iterations: int, decay_iterations: int) -> float:
    """Learning-rate multiplier at joint ``iteration`` (0-based) of ``iterations``: 1, then over
    the last ``decay_iterations`` a straight line down to 1/decay_iterations at the last step
    (0 or fewer decay iterations: always 1; more than ``iterations``: the whole joint phase)."""
    if decay_iterations <= 0 or iterations <= 0:
        return 1.0
    n = min(int(decay_iterations), int(iterations))
    return float(min(1.0, max(iterations - iteration, 0) / n))


def gamma_at(iteration: int, gamma: float, warmup_iterations: int) -> float:
    """The SOM term's weight at joint iteration `iteration` (0-based): a linear rise over the
    first `warmup_iterations`, reaching `gamma` at the last of them; `gamma` throughout when 0."""
    if warmup_iterations <= 0:
        return float(gamma)
    return float(gamma) * min(1.0, (max(iteration, 0) + 1) / warmup_iterations)


def set_learning_rates(optimizer: torch.optim.Optimizer, cfg: DESOMConfig, factor: float) -> None:
    """Scale the two parameter groups of make_optimizer to ``factor`` times their configured lr."""
    base = (cfg.lr, cfg.prototype_lr or cfg.lr)
    for group, lr in zip(optimizer.param_groups, base):
        group["lr"] = lr * factor


@torch.no_grad()
def probe_units(model: DESOM, probe: np.ndarray, device: torch.device, precision: str = "float32",
                channels_last: bool = False, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """First and second BMUs of the probe samples, the encoder run as in training."""
    from desom.som import squared_distances

    was_training = model.training
    model.eval()
    first, second = [], []
    for s in range(0, probe.shape[0], batch):
        x = _tensor(probe[s:s + batch], device)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=(precision == "bf16")):
            z = model.encode(x)
        d2 = squared_distances(z.float(), model.som.prototypes.float())
        top = torch.topk(d2, k=min(2, d2.shape[1]), dim=1, largest=False).indices.cpu().numpy()
        first.append(top[:, 0])
        second.append(top[:, -1])
    model.train(was_training)
    return np.concatenate(first), np.concatenate(second)


def _plain(record):
    """A dict of numbers as plain Python values (a checkpoint is read with weights_only)."""
    return None if record is None else json.loads(json.dumps(record, default=float))


def _write_log(log_file, record: dict) -> None:
    if log_file is not None:
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()


def train_desom(model: DESOM, data, cfg: DESOMConfig | None = None, *, progress: bool = True,
                log_path=None, device=None, checkpoint_path=None, resume_from=None,
                normaliser=None, precision: str = "float32",
                channels_last: bool = False, probe=None, probe_every: int = 500) -> TrainingHistory:
    """Train ``model`` on ``data`` with ``cfg`` (default: the model's own config).

    data: (N, 1, 32, 32) or (N, 32, 32) float32 in [0, 1] for desom1; (N, n_bins) float32,
    already normalised, for desom2. progress: tqdm bar with losses and T. log_path: JSON lines,
    one per history record (appended). device: None/"auto" (CUDA when present), "cpu", "cuda".
    checkpoint_path: written every cfg.checkpoint_every iterations (if > 0) and at the end,
    with the optimizer state; "{phase}" and "{iteration}" in the path keep one file per
    checkpoint (e.g. "run/ckpt-{phase}-{iteration}.pt"). resume_from: a checkpoint written by this function; training
    continues at its saved iteration. normaliser: stored in the checkpoints (DESOM-2).
    precision "bf16" (autocast) and channels_last are speed options; the default float32 path is
    the reproducible one. probe: a fixed set of samples (same layout as data) whose map order is
    recorded every probe_every joint iterations and at the end (``model.map_order``).
    Returns the TrainingHistory (also on the model as ``model.history``).
    """
    from desom.metrics import map_order
    from desom.checkpoint import CheckpointConfigError, read_payload, save_checkpoint
    from desom.inference import default_device

    cfg = (model.config if cfg is None else cfg).validate()
    if cfg.architecture() != model.config.architecture():
        raise ValueError(f"config architecture {cfg.architecture()} does not match the model's "
                         f"{model.config.architecture()}")
    if precision not in TRAIN_PRECISIONS:
        raise ValueError(f"precision must be one of {TRAIN_PRECISIONS}, got {precision!r}")
    data = prepare_data(data, cfg)
    probe = prepare_data(probe, cfg) if probe is not None else None
    if probe_every < 1:
        raise ValueError(f"probe_every must be >= 1, got {probe_every}")
    # The precision travels with the weights: a predictor runs the encoder as it was trained.
    cfg.extra = {**(cfg.extra or {}), "train_precision": precision}
    model.config.extra = dict(cfg.extra)
    device = default_device(device)
    model.to(device)
    if channels_last and cfg.kind == "desom1":
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg)
    rng = np.random.default_rng(cfg.seed)
    history = TrainingHistory()
    phase, start, protos_ready = "pretrain", 0, False
    # The probe's last BMUs travel with a checkpoint, so a resumed run measures the same churn.
    probe_state = {"previous": None, "order": None}

    if resume_from is not None:
        payload = read_payload(resume_from)
        state = payload.get("training_state")
        if not state:
            raise CheckpointConfigError(f"{resume_from} holds no training state (it was not "
                                        f"written by train_desom) and cannot be resumed")
        saved = DESOMConfig.from_dict(payload["config"])
        if saved.architecture() != cfg.architecture():
            raise CheckpointConfigError(f"{resume_from} was trained with architecture "
                                        f"{saved.architecture()}, not {cfg.architecture()}")
        model.load_state_dict(payload["state_dict"])
        model.to(device)
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        phase, start, protos_ready = state["phase"], int(state["iteration"]), bool(state["prototypes_ready"])
        for r in payload.get("history") or []:
            history.append(r)
        if state.get("probe_previous") is not None:
            probe_state["previous"] = state["probe_previous"].cpu().numpy()
        probe_state["order"] = state.get("probe_order")

    log_file = None
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "a")

    def checkpoint(ph, it, ready):
        if checkpoint_path is None:
            return
        state = {"phase": ph, "iteration": it, "prototypes_ready": ready,
                 "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state,
                 "probe_previous": (None if probe_state["previous"] is None
                                    else torch.from_numpy(np.asarray(probe_state["previous"], np.int64))),
                 "probe_order": _plain(probe_state["order"])}
        path = str(checkpoint_path)
        if "{" in path:
            path = path.format(phase=ph, iteration=it)
        save_checkpoint(path, model, cfg, normaliser=normaliser,
                        history=history.to_list(), training_state=state)

    total = cfg.pretrain_iterations + cfg.iterations
    done = start + (cfg.pretrain_iterations if phase == "joint" else 0)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=done, desc=f"train {cfg.kind}", unit="it",
                   dynamic_ncols=True)
    n, bs = data.shape[0], min(cfg.batch_size, data.shape[0])
    t0 = time.perf_counter()

    def record_order(iteration):
        first, second = probe_units(model, probe, device, precision, channels_last)
        order = map_order(first, second, model.map_shape, probe_state["previous"])
        order["iteration"] = int(iteration)
        probe_state["previous"], probe_state["order"] = first, order
        return order
    try:
        phases = [("pretrain", cfg.pretrain_iterations), ("joint", cfg.iterations)]
        for ph, n_iter in phases:
            if ph == "pretrain" and phase == "joint":
                continue
            first = start if ph == phase else 0
            if ph == "joint" and not protos_ready:
                init_prototypes(model, data, rng, device)
                protos_ready = True
            for it in range(first, n_iter):
                x = _batch(data, rng.integers(0, n, size=bs), device)
                if ph == "pretrain":
                    temp = None
                    losses = pretrain_step(model, optimizer, x, precision, channels_last)
                else:
                    temp = temperature(it, n_iter, cfg.t_max, cfg.t_min, cfg.schedule)
                    if cfg.lr_decay_iterations > 0:
                        set_learning_rates(optimizer, cfg,
                                           lr_factor(it, n_iter, cfg.lr_decay_iterations))
                    gamma = gamma_at(it, cfg.gamma, cfg.gamma_warmup_iterations)
                    losses = joint_step(model, optimizer, x, temp, gamma, precision, channels_last)
                if not math.isfinite(losses["loss"]):
                    raise FloatingPointError(f"{ph} loss became {losses['loss']} at iteration {it}; "
                                             f"lower lr ({cfg.lr}) or gamma ({cfg.gamma})")
                last = it == n_iter - 1
                order = None
                if probe is not None and ph == "joint" and ((it + 1) % probe_every == 0 or last):
                    order = record_order(it + 1)
                if (it + 1) % max(cfg.log_every, 1) == 0 or last or order is not None:
                    rec = {"phase": ph, "iteration": it + 1, "temperature": temp,
                           "gamma": None if temp is None else gamma, **losses,
                           "elapsed_s": round(time.perf_counter() - t0, 3)}
                    if order is not None:
                        rec.update(probe_te=order["topographic_error"], probe_churn=order["bmu_churn"])
                    history.append(rec)
                    _write_log(log_file, rec)
                if bar is not None:
                    bar.update(1)
                    if it % 10 == 0 or last:
                        bar.set_postfix(phase=ph, loss=f"{losses['loss']:.4g}",
                                        rec=f"{losses['reconstruction']:.4g}",
                                        som="-" if temp is None else f"{losses['som']:.4g}",
                                        T="-" if temp is None else f"{temp:.3g}", refresh=False)
                if cfg.checkpoint_every > 0 and (it + 1) % cfg.checkpoint_every == 0 and not last:
                    checkpoint(ph, it + 1, protos_ready)
            phase, start = ph, n_iter
        if not protos_ready:   # iterations == 0: still leave a usable map
            init_prototypes(model, data, rng, device)
            protos_ready = True
        checkpoint("joint", cfg.iterations, True)
    finally:
        if bar is not None:
            bar.close()
        if log_file is not None:
            log_file.close()
    model.eval()
    model.history = history
    model.map_order = probe_state["order"]
    return history


# Restarts of a collapsed DESOM-2: the same seed always collapses the same way, so each attempt
# takes the next seed of this sequence (recorded with the model).
RESTART_ATTEMPTS = 3
RESTART_SEED_STEP = 1000
# DESOM-2 maps trained per run when labelled exposures can choose one
# (desom.evaluation.choose_map_by_labels): on validation, keeping the best of 3 seeds by their
# leave-one-out accuracy raised recall from 0.955 to 0.970 (benchmarks/bench_desom2_seed_choice.py).
MAP_CANDIDATES = 3
CANDIDATE_SEED_STEP = 100    # candidate j trains with seed + j * CANDIDATE_SEED_STEP


def reconstruction_share(model: DESOM, data: np.ndarray, max_rows: int = 20_000, batch_size: int = 2048) -> float:
    """Explained variance (desom.metrics.explained_variance) of the model's reconstructions of up to
    max_rows evenly spaced rows of data, in float32 on the model's device."""
    from desom.metrics import explained_variance

    data = np.asarray(data)
    rows = np.linspace(0, len(data) - 1, min(len(data), max_rows)).astype(np.int64)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = []
    try:
        with torch.no_grad():
            for start in range(0, rows.size, batch_size):
                x = torch.as_tensor(np.asarray(data[rows[start:start + batch_size]], np.float32), device=device)
                outputs.append(model.decode(model.encode(x)).float().cpu().numpy())
    finally:
        model.train(was_training)
    return explained_variance(np.asarray(data[rows], np.float32), np.concatenate(outputs))


def train_until_it_reconstructs(train_one, data: np.ndarray, seed: int, attempts: int = RESTART_ATTEMPTS,
                                log=None, judge: bool = True):
    """Train with train_one(seed) -> model; if the model fails the reconstruction gate on data,
    train again with the next seed (seed + k * RESTART_SEED_STEP), at most `attempts` times.
    Returns (model, record) where record holds the seed kept and every attempt's explained
    variance; raises CollapsedModelError when every attempt collapsed. judge=False measures and
    records the first attempt without gating it (runs shorter than GATE_MIN_ITERATIONS)."""
    from desom.metrics import CollapsedModelError, check_reconstruction

    tried = []
    for k in range(max(1, attempts)):
        attempt_seed = seed + k * RESTART_SEED_STEP
        model = train_one(attempt_seed)
        share = reconstruction_share(model, data)
        tried.append({"seed": attempt_seed, "explained_variance": round(share, 4)})
        if not judge:
            return model, {"seed": attempt_seed, "explained_variance": share, "attempts": tried, "judged": False}
        try:
            check_reconstruction(share)
        except CollapsedModelError as exc:
            if log:
                log(f"seed {attempt_seed}: {exc}; restarting with another seed")
            continue
        return model, {"seed": attempt_seed, "explained_variance": share, "attempts": tried, "judged": True}
    raise CollapsedModelError(f"every attempt collapsed ({tried}); check the inputs' normalisation")
