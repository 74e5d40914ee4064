"""Saving and loading DESOM checkpoints.

A checkpoint is one ``torch.save`` file holding plain data only (tensors, numbers, strings,
lists, dicts), read back with ``weights_only=True`` so loading never runs pickled code. It holds
the weights and prototypes, the full config, the histo normaliser (DESOM-2), optional metrics and
training history, a version id (``<kind>-<weights hash>-<UTC timestamp>``) and, for checkpoints
written during training, the optimizer and sampler state needed to resume.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from desom.model import DESOM, DESOMConfig, build_desom
from desom.normalise import HistoNormaliser

FORMAT = "desom-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the problem."""


class NotACheckpointError(CheckpointError):
    """The file is missing, unreadable, or not a DESOM checkpoint."""


class CheckpointVersionError(CheckpointError):
    """The file was written by an unsupported checkpoint format version."""


class CheckpointKindError(CheckpointError):
    """The checkpoint holds another kind of model than the caller expects (desom1 vs desom2)."""


class CheckpointConfigError(CheckpointError):
    """The stored config or weights do not match (each other, or what the caller expects)."""


@dataclass
class Checkpoint:
    model: DESOM
    config: DESOMConfig
    normaliser: HistoNormaliser | None
    version_id: str
    metrics: dict | None
    created_at: str
    history: list | None = None
    training_state: dict | None = None
    path: str | None = None
    extra: dict = field(default_factory=dict)


def weights_hash(model: torch.nn.Module, length: int = 10) -> str:
    """Short sha256 over the model's state dict (names, shapes and raw bytes, in order)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:length]


def make_version_id(model: DESOM, when: _dt.datetime | None = None) -> str:
    when = when or _dt.datetime.now(_dt.timezone.utc)
    return f"{model.config.kind}-{weights_hash(model)}-{when.strftime('%Y%m%dT%H%M%SZ')}"


def save_checkpoint(path, model: DESOM, cfg: DESOMConfig | None = None, normaliser=None,
                    metrics: dict | None = None, history=None,
                    training_state: dict | None = None) -> str:
    """Write ``model`` (and what travels with it) to ``path`` atomically; return the version id."""
    cfg = model.config if cfg is None else cfg
    if cfg.architecture() != model.config.architecture():
        raise CheckpointConfigError(
            f"config {cfg.architecture()} does not describe the model's architecture "
            f"{model.config.architecture()}")
    if isinstance(normaliser, HistoNormaliser):
        normaliser = normaliser.to_dict()
    elif normaliser is not None and not isinstance(normaliser, dict):
        raise ValueError(f"normaliser must be a HistoNormaliser or its dict, got {type(normaliser).__name__}")
    if history is not None and hasattr(history, "to_list"):
        history = history.to_list()
    now = _dt.datetime.now(_dt.timezone.utc)
    version_id = make_version_id(model, now)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": cfg.kind,
        "config": cfg.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "normaliser": normaliser,
        "metrics": metrics,
        "history": history,
        "version_id": version_id,
        "created_at": now.isoformat(),
        "training_state": training_state,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)   # readers never see a half-written checkpoint
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return version_id


def read_payload(path) -> dict:
    """The raw checkpoint dict, after the format checks (no model is built)."""
    path = Path(path)
    if not path.is_file():
        raise NotACheckpointError(f"checkpoint file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a foreign file
        raise NotACheckpointError(f"{path} is not a DESOM checkpoint (cannot be read by "
                                  f"torch.load: {type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NotACheckpointError(f"{path} is not a DESOM checkpoint (no '{FORMAT}' marker)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointVersionError(f"{path} has checkpoint format version {version!r}; this "
                                     f"library reads version {FORMAT_VERSION}")
    for key in ("kind", "config", "state_dict", "version_id"):
        if key not in payload:
            raise NotACheckpointError(f"{path} is a damaged DESOM checkpoint: missing {key!r}")
    return payload


def load_checkpoint(path, expected_kind: str | None = None,
                    expected_config: DESOMConfig | dict | None = None,
                    device=None) -> Checkpoint:
    """Load a checkpoint and rebuild its model in eval mode.

    expected_kind: refuse a checkpoint of the other kind (CheckpointKindError).
    expected_config: refuse one whose architecture differs (CheckpointConfigError).
    """
    payload = read_payload(path)
    kind = payload["kind"]
    if expected_kind is not None and kind != expected_kind:
        raise CheckpointKindError(f"{path} holds a {kind} model, expected {expected_kind}")
    try:
        cfg = DESOMConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointConfigError(f"{path} has an invalid config: {exc}") from None
    if cfg.kind != kind:
        raise CheckpointConfigError(f"{path} says kind {kind} but its config says {cfg.kind}")
    if expected_config is not None:
        if isinstance(expected_config, dict):
            expected_config = DESOMConfig.from_dict(expected_config)
        want, have = expected_config.architecture(), cfg.architecture()
        if want != have:
            diff = {k: (have.get(k), want.get(k)) for k in want if want.get(k) != have.get(k)}
            raise CheckpointConfigError(f"{path} architecture differs from the expected config "
                                        f"(field: (stored, expected)): {diff}")
    model = build_desom(cfg)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointConfigError(f"{path}: weights do not fit the stored {kind} config: "
                                    f"{str(exc)[:300]}") from None
    model.eval()
    if device is not None:
        model.to(device)
    normaliser = None
    if payload.get("normaliser") is not None:
        try:
            normaliser = HistoNormaliser.from_dict(payload["normaliser"])
        except ValueError as exc:
            raise CheckpointError(f"{path}: stored normaliser is invalid: {exc}") from None
    return Checkpoint(model=model, config=cfg, normaliser=normaliser,
                      version_id=payload["version_id"], metrics=payload.get("metrics"),
                      created_at=payload.get("created_at", ""), history=payload.get("history"),
                      training_state=payload.get("training_state"), path=str(path))
