"""Model versions: registering trained checkpoints, activating one per kind, and loading the
active models once per process."""
from __future__ import annotations

import threading
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from .. import memo
from ..models import CellAssignment, Exposure, ModelVersion
from ..signals import model_version_activated

_cache_lock = threading.Lock()
_checkpoint_cache: dict[str, object] = {}


def models_dir() -> Path:
    path = Path(settings.ARCHIVE_DATA_DIR) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_checkpoint_path(kind: str, seed: int) -> Path:
    """A fresh file name for a trained model: two runs that finish in the same second (another
    map size on the same set, say) must not write over each other's checkpoint."""
    import time
    import uuid

    return models_dir() / f"{kind}-{int(time.time())}-{seed}-{uuid.uuid4().hex[:8]}.pt"


def _stored_path(path: Path) -> str:
    """Keep checkpoints inside the data directory relative to it, so the directory can move."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path(settings.ARCHIVE_DATA_DIR)))
    except ValueError:
        return str(path)


def checkpoint_file(version: ModelVersion) -> Path:
    path = Path(version.checkpoint_path)
    return path if path.is_absolute() else Path(settings.ARCHIVE_DATA_DIR) / path


def register_version(checkpoint_path, *, kind: str, trained_on: ModelVersion | None = None,
                     metrics: dict | None = None, activate: bool = True) -> ModelVersion:
    """Record a saved checkpoint as a model version (its id and config come from the file)."""
    from desom.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_path, expected_kind=kind)
    version, _ = ModelVersion.objects.update_or_create(
        version_id=checkpoint.version_id,
        defaults=dict(kind=kind, checkpoint_path=_stored_path(checkpoint_path),
                      config=checkpoint.config.to_dict(), metrics=metrics or dict(checkpoint.metrics or {}),
                      trained_on=trained_on),
    )
    with _cache_lock:
        _checkpoint_cache[version.version_id] = checkpoint
    if activate:
        activate_version(version)
    return version


def activate_version(version: ModelVersion) -> None:
    """Make `version` the active one of its kind. A DESOM-2's cells are copied onto the
    exposures in the same transaction, so no reader ever sees the new version with the old
    version's cells (a quality-label filter would then answer for the wrong map)."""
    with transaction.atomic():
        ModelVersion.objects.filter(kind=version.kind, is_active=True).exclude(pk=version.pk).update(is_active=False)
        version.is_active = True
        version.activated_at = timezone.now()
        version.save(update_fields=["is_active", "activated_at"])
        memo.forget()
        if version.kind == ModelVersion.DESOM2:
            copy_active_cells(version)
        transaction.on_commit(lambda: model_version_activated.send(sender=None, version=version))


# Exposure ids per UPDATE when copying cells: each statement's work (and its memory for the
# join) stays bounded at any archive size.
CELL_COPY_CHUNK = 50_000


def copy_active_cells(desom2: ModelVersion, *, first_id: int | None = None, last_id: int | None = None,
                      chunk: int = CELL_COPY_CHUNK) -> int:
    """Set Exposure.desom2_cell to each exposure's cell under `desom2`, NULL where it has none,
    for the exposures with ids in [first_id, last_id] (default: all). The one writer of that
    copy. Bulk SQL a chunk of ids at a time; rows that already hold the right value are not
    rewritten, so a re-run or the re-activation of an unchanged version writes nothing.
    Returns how many exposures changed."""
    if not (desom2.is_active and desom2.kind == ModelVersion.DESOM2):
        raise ValueError(f"{desom2} is not the active DESOM-2: only its cells are copied onto exposures")
    if first_id is None or last_id is None:
        bounds = Exposure.objects.aggregate(lo=Min("id"), hi=Max("id"))
        if bounds["lo"] is None:
            return 0
        first_id = bounds["lo"] if first_id is None else first_id
        last_id = bounds["hi"] if last_id is None else last_id
    exposure = connection.ops.quote_name(Exposure._meta.db_table)
    assignment = connection.ops.quote_name(CellAssignment._meta.db_table)
    # UPDATE ... FROM (PostgreSQL, SQLite >= 3.33): one join per chunk, not a query per row.
    set_cells = (f"UPDATE {exposure} SET desom2_cell = a.cell FROM {assignment} AS a "
                 f"WHERE a.exposure_id = {exposure}.id AND a.model_version_id = %s "
                 f"AND a.exposure_id BETWEEN %s AND %s AND {exposure}.id BETWEEN %s AND %s "
                 f"AND ({exposure}.desom2_cell IS NULL OR {exposure}.desom2_cell <> a.cell)")
    clear_cells = (f"UPDATE {exposure} SET desom2_cell = NULL WHERE id BETWEEN %s AND %s "
                   f"AND desom2_cell IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {assignment} AS a "
                   f"WHERE a.exposure_id = {exposure}.id AND a.model_version_id = %s)")
    changed = 0
    with transaction.atomic(), connection.cursor() as cursor:
        for lo in range(int(first_id), int(last_id) + 1, chunk):
            hi = min(lo + chunk - 1, int(last_id))
            cursor.execute(set_cells, [desom2.pk, lo, hi, lo, hi])
            changed += max(cursor.rowcount, 0)
            cursor.execute(clear_cells, [lo, hi, desom2.pk])
            changed += max(cursor.rowcount, 0)
    return changed


def active_version(kind: str) -> ModelVersion | None:
    """The active version of `kind` (read once per request: archive.memo)."""
    return memo.remembered(("active_version", kind),
                           lambda: ModelVersion.objects.filter(kind=kind, is_active=True).first())


def load_checkpoint_for(version: ModelVersion):
    """The version's checkpoint, loaded once per process."""
    from desom.checkpoint import load_checkpoint

    with _cache_lock:
        cached = _checkpoint_cache.get(version.version_id)
    if cached is None:
        cached = load_checkpoint(checkpoint_file(version), expected_kind=version.kind)
        if cached.version_id != version.version_id:
            raise ValueError(f"checkpoint {checkpoint_file(version)} holds version {cached.version_id}, "
                             f"not {version.version_id}")
        with _cache_lock:
            _checkpoint_cache[version.version_id] = cached
    return cached


def predictor_for(version: ModelVersion, batch_size: int = 1024):
    """A predictor for one request (search by a stamp or an uploaded exposure): never compiled,
    since a request must not wait for torch.compile (desom.inference)."""
    from desom.inference import DesomPredictor

    return DesomPredictor(load_checkpoint_for(version), batch_size=batch_size, compile=False)


def clear_cache() -> None:
    with _cache_lock:
        _checkpoint_cache.clear()


def imaging_config(**overrides):
    """The archive's imaging settings (one detector for ingest, training and uploads)."""
    from desom.pipeline import ImagingConfig

    values = {"detector": settings.ARCHIVE_DETECTOR, **overrides}
    return ImagingConfig(**values)
