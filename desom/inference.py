"""Batched inference with a trained DESOM: latent codes, best-matching units, quantization
distances and soft prototype activations, for arrays or streams of batches of any length.

Soft activations. For sample i and map unit k, with d2 the squared latent distances to the
prototypes and b_i = min_k d2[i, k] the sample's quantization distance,

    a[i, k] = softmax_k( -(d2[i, k] - b_i) / (tau * (b_i + s)) )

``s`` is a fixed scale of the model: the median squared latent distance between prototypes of
grid-adjacent units (the typical "one map step" in latent space). A sample sitting on its
prototype (b_i << s) gives a unit one map step farther away about 1/e of the BMU's weight; a
sample far from every prototype (b_i >> s) is scored relative to its own distance, so the
kernel stays soft instead of collapsing to one-hot when the map is coarse for the data. Rows
sum to 1, the BMU has the largest weight, and ``tau`` (``activation_temperature``) widens or
sharpens the kernel.

Speed (benchmarks/bench_desom_speed.py, 2 shared cores): the DESOM-1 encoder runs in float32
with channels-last memory, each ReLU moved after its max-pool (identical output, a quarter of
the work), over each batch in cache-sized chunks of CPU_ENCODER_CHUNK cutouts (about 1.8x the
whole-batch path on 2 AVX2 cores), and by default (``compile="auto"``) through torch.compile
once the predictor has encoded COMPILE_MIN_SAMPLES cutouts (a one-off compile of 20-60 s on 2
busy cores, paid once per process; BMUs equal to eager float32 for 99.9% of cutouts).
``compile=False`` or DESOM_COMPILE=0 keeps it eager; without a C++ compiler, or when the compile
fails, the predictor runs eager (with a warning for a failure). int8 quantization of the
encoder was measured and rejected: 4.3x eager float32 but only 78-85% of BMUs agree (a trained
25x25 map has 1% of cutouts within 0.13% of a tie between two units).
The default precision (``precision="auto"``) is the precision the model was
trained in: bf16 autocast for a map trained in bf16, float32 otherwise. ``precision="bf16"``
(bf16 weights) is about 3x eager on a CPU with native bf16 but moved about 4% of the BMUs of a
float32-trained map, so it is opt-in. Distances and outputs are always float32.
"""
from __future__ import annotations

import copy
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from desom.model import DESOM
from desom.som import grid_distances, squared_distances

PRECISIONS = ("auto", "float32", "bf16", "bf16-autocast")
COMPILE_CHOICES = ("auto", True, False)
# compile="auto" compiles a DESOM-1 encoder once the predictor has encoded this many samples.
# The compile costs 20-60 s on 2 busy cores; on the whole-batch path it saved about a third of
# each batch's time, on the chunked path (CPU_ENCODER_CHUNK) only 1-8% (benchmarks/README.md,
# "DESOM-1 speed", issue 20), so it now pays back only after about a million cutouts. A
# predictor kept for a bulk pass (an ingest worker's) compiles after the first ten or so
# exposures; a small run (the demo's) or a request-time predictor never pays it.
COMPILE_MIN_SAMPLES = 32_768
# On the CPU a DESOM-1 encoder runs over each batch in chunks of this many cutouts: its first
# feature map is 128 KiB a cutout, so a 1024-cutout batch streams 128 MiB through memory at every
# layer while 64 cutouts' maps stay in cache (benchmarks/README.md, "DESOM-1 speed": about 1.8x
# on 2 cores, eager or compiled).
CPU_ENCODER_CHUNK = 64


def pool_before_relu(features: torch.nn.Sequential) -> torch.nn.Sequential:
    """The same layers with each ReLU moved after the max-pool that follows it: max-pooling
    commutes with ReLU (both monotone), so the output is identical, and the ReLU then touches a
    quarter of the values."""
    layers = list(features)
    out, i = [], 0
    while i < len(layers):
        if (i + 1 < len(layers) and isinstance(layers[i], torch.nn.ReLU)
                and isinstance(layers[i + 1], torch.nn.MaxPool2d)):
            out += [layers[i + 1], torch.nn.ReLU(inplace=True)]
            i += 2
        else:
            out.append(layers[i])
            i += 1
    return torch.nn.Sequential(*out)


def compile_unavailable() -> str | None:
    """None when torch.compile can run the default (inductor) backend here, else why not."""
    if os.environ.get("DESOM_COMPILE", "").strip().lower() in ("0", "false", "no", "off"):
        return "turned off by DESOM_COMPILE=0"
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    # Inductor builds C++ kernels on the CPU (and Triton kernels on CUDA, which need a compiler
    # for their launchers too).
    cc = os.environ.get("CXX") or os.environ.get("CC")
    if not ((cc and shutil.which(cc)) or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        return "no C++ compiler on PATH (inductor builds its kernels with one)"
    return None


@dataclass
class Prediction:
    bmu: np.ndarray                    # (N,) int64 node index = row * map_cols + col
    quantization: np.ndarray           # (N,) float32 squared latent distance to the BMU
    activations: np.ndarray | None     # (N, K) float32 soft activations, rows sum to 1
    latent: np.ndarray | None = None   # (N, latent_dim) float32, on request
    second_bmu: np.ndarray | None = None  # (N,) int64 runner-up unit (for topographic error)

    def __len__(self) -> int:
        return int(self.bmu.shape[0])

    @staticmethod
    def concatenate(parts: list["Prediction"], n_nodes: int, latent_dim: int) -> "Prediction":
        def cat(name, empty):
            vals = [getattr(p, name) for p in parts]
            if not parts:
                return empty
            if any(v is None for v in vals):
                return None
            return np.concatenate(vals, axis=0)
        return Prediction(
            bmu=cat("bmu", np.zeros(0, np.int64)),
            quantization=cat("quantization", np.zeros(0, np.float32)),
            activations=cat("activations", np.zeros((0, n_nodes), np.float32)),
            latent=cat("latent", None),
            second_bmu=cat("second_bmu", np.zeros(0, np.int64)))


DEVICE_CHOICES = ("auto", "cpu", "cuda")


def default_device(device=None) -> torch.device:
    """The torch device to run on: None or "auto" is the first CUDA device when torch sees one
    and the CPU otherwise; "cpu", "cuda", "cuda:N" (or a torch.device) as given. Asking for
    CUDA where torch has none is a ValueError that says why (a CPU build of torch, or no
    driver/device), not a failure deep inside the first kernel."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU build" if torch.version.cuda is None
                   else f"torch (CUDA {torch.version.cuda}) sees no CUDA device or driver")
            raise ValueError(f"device {device!r} asked for, but {why}; use --device cpu or auto, "
                             f"or install requirements-gpu.txt on a machine with an NVIDIA GPU")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: only cpu and cuda are supported")
    return dev


def neighbour_scale(prototypes: torch.Tensor, rows: int, cols: int) -> float:
    """Median squared latent distance between prototypes of grid-adjacent units."""
    p = prototypes.detach().to("cpu", torch.float64)
    if rows * cols < 2:
        return 1.0
    adj = np.argwhere(np.triu(grid_distances(rows, cols) == 1))
    d2 = ((p[adj[:, 0]] - p[adj[:, 1]]) ** 2).sum(dim=1).numpy()
    s = float(np.median(d2))
    if not np.isfinite(s) or s <= 0:
        # Collapsed map (all prototypes equal): fall back to the mean squared prototype norm.
        s = float((p ** 2).sum(dim=1).mean()) or 1.0
    return s


class DesomPredictor:
    """Run a DESOM (a model, a Checkpoint, or a checkpoint path) over many inputs.

    The predictor works on a frozen copy of the encoder and prototypes taken at construction,
    so training the original model further does not change it.
    """

    def __init__(self, model_or_checkpoint, batch_size: int = 1024, device=None,
                 precision: str = "auto", channels_last: bool | None = None,
                 activation_temperature: float = 1.0, expected_kind: str | None = None,
                 compile: bool | str = "auto", encoder_chunk: int | None = None):
        from desom.checkpoint import Checkpoint, load_checkpoint

        source = model_or_checkpoint
        self.version_id = None
        self.normaliser = None
        if isinstance(source, (str, Path)):
            source = load_checkpoint(source, expected_kind=expected_kind)
        if isinstance(source, Checkpoint):
            self.version_id = source.version_id
            self.normaliser = source.normaliser
            model = source.model
        elif isinstance(source, DESOM):
            model = source
        else:
            raise ValueError(f"DesomPredictor needs a DESOM model, a Checkpoint or a checkpoint "
                             f"path, got {type(source).__name__}")
        if expected_kind is not None and model.kind != expected_kind:
            raise ValueError(f"predictor expected a {expected_kind} model, got {model.kind}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if activation_temperature <= 0:
            raise ValueError("activation_temperature must be positive")
        self.config = model.config
        self.kind = model.kind
        self.batch_size = int(batch_size)
        self.device = default_device(device)
        self.activation_temperature = float(activation_temperature)
        # "auto" runs the encoder as it was trained (desom.training records the precision): a
        # bf16-trained map read in float32 moved 1.4-2.8% of BMUs, and the reverse is no better.
        if precision == "auto":
            trained = (model.config.extra or {}).get("train_precision", "float32")
            precision = "bf16-autocast" if trained == "bf16" else "float32"
        self.precision = precision
        self.channels_last = (self.kind == "desom1") if channels_last is None else bool(channels_last)

        self._model = model   # for check_input only
        self.encoder = copy.deepcopy(model.encoder).to(self.device).eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        if self.kind == "desom1":
            self.encoder.features = pool_before_relu(self.encoder.features)
        if self.channels_last and self.kind == "desom1":
            self.encoder = self.encoder.to(memory_format=torch.channels_last)
        # encoder_chunk: None (auto) is CPU_ENCODER_CHUNK for a DESOM-1 on the CPU, else whole
        # batches; 0 is whole batches.
        if encoder_chunk is None:
            encoder_chunk = CPU_ENCODER_CHUNK if (self.kind == "desom1" and self.device.type == "cpu") else 0
        if encoder_chunk < 0:
            raise ValueError(f"encoder_chunk must be >= 0, got {encoder_chunk}")
        self.encoder_chunk = int(encoder_chunk)
        if self.precision == "bf16":
            # bf16 weights and activations throughout the encoder: cheaper than autocast, which
            # re-casts the weights on every call.
            self.encoder = self.encoder.to(torch.bfloat16)
        if compile not in COMPILE_CHOICES:
            raise ValueError(f"compile must be 'auto', True or False, got {compile!r}")
        # compile: True compiles now; "auto" (the default) compiles a DESOM-1 encoder on the
        # first call with COMPILE_MIN_SAMPLES samples or more, unless compile_unavailable() says
        # why not (DESOM_COMPILE=0 turns it off for every process); False never. A compile that
        # fails when first run falls back to the eager encoder with a warning.
        self._eager_encoder = self.encoder
        self.compile_skipped = None          # why "auto" did not compile (None: it may)
        self.compile_error = None            # why a compile failed and eager took over
        self.compile_seconds = None          # the first compiled call's wall time (compile included)
        self._compile_pending = False
        self.samples_seen = 0
        if compile == "auto":
            self.compile_skipped = ("only the DESOM-1 encoder is compiled by default" if self.kind != "desom1"
                                    else compile_unavailable())
            self._compile_pending = self.compile_skipped is None
        elif compile:
            self._compile_now()
        self.prototypes = model.som.prototypes.detach().to(self.device, torch.float32).clone()
        self.map_shape = model.map_shape
        # How this model's inputs are cut (desom.pipeline.STAMP_FIELDS); None: before recipes.
        self.stamp_recipe = (model.config.extra or {}).get("stamps") if self.kind == "desom1" else None
        self.n_nodes = model.n_nodes
        self.latent_dim = model.config.latent_dim
        self.activation_scale = neighbour_scale(self.prototypes, *self.map_shape)

    @property
    def compiled(self) -> bool:
        """True while the encoder runs through torch.compile."""
        return self.encoder is not self._eager_encoder

    def _compile_now(self) -> None:
        # Dynamic batch dimension, so the last, shorter batch does not compile again.
        self._compile_pending = False
        self.compile_seconds = None
        self.encoder = torch.compile(self._eager_encoder, dynamic=True)

    def __getstate__(self):
        # A compiled module does not pickle: a predictor sent to another process travels with
        # its eager encoder and compiles again there once it has seen COMPILE_MIN_SAMPLES samples.
        state = dict(self.__dict__)
        if self.compiled:
            state["encoder"] = self._eager_encoder
            state["_compile_pending"] = True
            state["samples_seen"] = 0
            state["compile_seconds"] = None
        return state

    def _fall_back_to_eager(self, exc: BaseException) -> None:
        self.compile_error = f"{type(exc).__name__}: {str(exc)[:300]}"
        logging.getLogger(__name__).warning("torch.compile failed (%s); the DESOM predictor runs eager",
                                            self.compile_error)
        self.encoder = self._eager_encoder

    # -- input handling -------------------------------------------------------------------
    def _to_tensor(self, batch, where: str) -> torch.Tensor:
        if isinstance(batch, torch.Tensor):
            x = batch.detach().to("cpu", torch.float32)
        else:
            arr = np.asarray(batch)
            if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
                raise ValueError(f"{where}: input must be numeric, got dtype {arr.dtype}")
            x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        try:
            x = self._model.check_input(x)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not torch.isfinite(x).all():
            raise ValueError(f"{where}: input contains NaN or infinite values")
        return x

    def _batches(self, x) -> Iterator[tuple[torch.Tensor, str]]:
        if isinstance(x, (np.ndarray, torch.Tensor)):
            if x.ndim < 1:
                raise ValueError("input must be an array of samples, got a scalar")
            n = x.shape[0]
            for start in range(0, n, self.batch_size):
                yield self._to_tensor(x[start:start + self.batch_size],
                                      f"samples {start}..{min(n, start + self.batch_size) - 1}"), ""
            return
        if isinstance(x, (str, bytes, dict)) or not isinstance(x, Iterable):
            raise ValueError(f"input must be an array or an iterable of arrays, got {type(x).__name__}")
        for i, batch in enumerate(x):
            t = self._to_tensor(batch, f"batch {i}")
            # Re-slice large incoming batches so memory stays bounded by batch_size.
            for start in range(0, t.shape[0], self.batch_size):
                yield t[start:start + self.batch_size], ""

    # -- core -----------------------------------------------------------------------------
    @torch.inference_mode()
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.precision == "bf16":
            x = x.to(torch.bfloat16)
        if self.compiled and self.compile_seconds is None:
            # The first compiled call compiles; if that fails (no working compiler, an
            # unsupported op), the eager encoder takes over for good.
            started = time.perf_counter()
            try:
                z = self._run_encoder(x)
            except Exception as exc:   # torch._dynamo / inductor errors have no common base
                self._fall_back_to_eager(exc)
                z = self._run_encoder(x)
            else:
                self.compile_seconds = time.perf_counter() - started
            return z.float()
        return self._run_encoder(x).float()

    def _run_encoder(self, x: torch.Tensor) -> torch.Tensor:
        chunk = self.encoder_chunk
        if chunk and x.shape[0] > chunk:
            return torch.cat([self._run_encoder_once(x[s:s + chunk]) for s in range(0, x.shape[0], chunk)])
        return self._run_encoder_once(x)

    def _run_encoder_once(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "bf16-autocast":
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                return self.encoder(x)
        return self.encoder(x)

    @torch.inference_mode()
    def _predict_tensor(self, x: torch.Tensor, return_latent: bool,
                        return_activations: bool) -> Prediction:
        z = self._encode(x)
        d2 = squared_distances(z, self.prototypes)
        top2 = torch.topk(d2, k=min(2, self.n_nodes), dim=1, largest=False)
        dmin = top2.values[:, 0]
        act = None
        if return_activations:
            scale = self.activation_temperature * (dmin[:, None] + self.activation_scale)
            logits = -(d2 - dmin[:, None]) / scale
            act = torch.softmax(logits, dim=1).cpu().numpy().astype(np.float32, copy=False)
        second = top2.indices[:, -1]
        return Prediction(
            bmu=top2.indices[:, 0].cpu().numpy().astype(np.int64),
            quantization=dmin.cpu().numpy().astype(np.float32),
            activations=act,
            latent=z.cpu().numpy().astype(np.float32) if return_latent else None,
            second_bmu=second.cpu().numpy().astype(np.int64))

    def iter_predict(self, x, return_latent: bool = False,
                     return_activations: bool = True) -> Iterator[Prediction]:
        """One Prediction per batch (at most batch_size samples): for streams too big to hold."""
        for t, _ in self._batches(x):
            if self._compile_pending and self.samples_seen >= COMPILE_MIN_SAMPLES:
                self._compile_now()
            yield self._predict_tensor(t, return_latent, return_activations)
            self.samples_seen += int(t.shape[0])

    def predict(self, x, return_latent: bool = False, return_activations: bool = True) -> Prediction:
        """Predict for an array (N, ...) or an iterable of such arrays; results concatenated.

        For millions of samples pass an iterable and ``return_activations=False`` (the (N, K)
        activations are the only large output), or use ``iter_predict``.
        """
        parts = list(self.iter_predict(x, return_latent, return_activations))
        return Prediction.concatenate(parts, self.n_nodes, self.latent_dim)

    def predict_histos(self, histos, **kwargs) -> Prediction:
        """DESOM-2 on raw histo-vectors: apply the checkpoint's normaliser, then predict."""
        if self.normaliser is None:
            raise ValueError("this predictor has no histo normaliser (load it from a DESOM-2 "
                             "checkpoint saved with one)")
        return self.predict(self.normaliser.transform(histos), **kwargs)

    def encode(self, x) -> np.ndarray:
        """(N, latent_dim) float32 latent codes."""
        return self.predict(x, return_latent=True, return_activations=False).latent

    def bmu(self, x) -> np.ndarray:
        return self.predict(x, return_activations=False).bmu
