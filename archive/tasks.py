"""Work that runs on ingest workers (local processes or a Dask cluster).

Deliberately free of Django: a worker imports this module and `desom`, nothing else, and
returns plain picklable results; only the driver writes to the database.
"""
from __future__ import annotations

import functools
import hashlib
import os
import traceback
from dataclasses import dataclass
from typing import Any

CHUNK_BYTES = 8 * 1024 * 1024


@dataclass
class FileFingerprint:
    path: str
    size: int
    sha256: str | None
    error: str | None = None


def fingerprint(path: str) -> FileFingerprint:
    """Size and sha256 of a file, read in chunks so a 1.4 GB exposure costs 8 MB of memory."""
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                digest.update(chunk)
        return FileFingerprint(path=path, size=os.path.getsize(path), sha256=digest.hexdigest())
    except OSError as exc:
        return FileFingerprint(path=path, size=0, sha256=None, error=f"cannot read {path}: {exc}")


@dataclass
class SummariseOutcome:
    path: str
    summary: Any = None
    error: str | None = None


@functools.lru_cache(maxsize=2)
def predictor_from_checkpoint(checkpoint_path: str):
    """Each worker process loads a checkpoint once and keeps it: tasks carry only its path,
    so nothing large travels with them and the model never crosses a serialiser."""
    from desom.inference import DesomPredictor

    return DesomPredictor(checkpoint_path)


def summarise_safely(path: str, checkpoint_path: str | None, config) -> SummariseOutcome:
    """Run the imaging pipeline on one file (with the DESOM-1 of `checkpoint_path`, if any);
    any failure becomes a recorded reason, never a crash of the batch."""
    from desom.pipeline import summarise_exposure

    try:
        predictor = predictor_from_checkpoint(checkpoint_path) if checkpoint_path else None
        return SummariseOutcome(path=path, summary=summarise_exposure(path, predictor=predictor, config=config))
    except Exception as exc:  # each file's failure is data for the ingest report
        reason = str(exc) or exc.__class__.__name__
        if not isinstance(exc, (ValueError, OSError)) and "ExposureReadError" not in type(exc).__name__:
            reason = f"{exc.__class__.__name__}: {reason}\n{traceback.format_exc(limit=3)}"
        return SummariseOutcome(path=path, error=reason)


def sample_cutouts_safely(task: tuple[str, int, int, int], max_per_ccd: int, config):
    """(path, index, offer or None, error or None) for a DESOM-1 training set.

    task: (path, index of the file in the set's list, the set's seed, the driver's key
    threshold when the task was sent). The exposure's cutouts are sampled with seed + index, as
    always; only those whose keys can still enter the set come back (desom.trainset)."""
    from desom.pipeline import sample_training_cutouts
    from desom.trainset import select_offer

    path, index, seed, threshold = task
    try:
        cutouts = sample_training_cutouts(path, max_per_ccd=max_per_ccd, seed=seed + index, config=config)
        return path, index, select_offer(cutouts, seed=seed, source=index, threshold=threshold), None
    except Exception as exc:  # one unreadable file must not stop the sampling
        return path, index, None, str(exc) or exc.__class__.__name__
