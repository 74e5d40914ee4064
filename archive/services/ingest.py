"""Ingest: files, folders and globs into the archive.

The driver fingerprints every file on the workers (size and sha256), skips those already
ingested with the same checksum, sends the rest through `desom.pipeline.summarise_exposure`
on the workers, and alone writes the results to the database in batches. Each failure is
recorded with its reason and the batch goes on. A crash loses at most the batch in flight:
a rerun skips what was committed and finishes the rest.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from tqdm import tqdm

from desom.fits_io import expnum_from_filename

from .. import geometry, vectors
from ..executors import make_executor
from ..models import CellAssignment, Exposure, ExposureVector, IngestFailure, IngestRun, ModelVersion
from ..signals import batch_finished, exposures_ingested
from ..tasks import fingerprint, summarise_safely
from . import versions

logger = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fz", ".fits.gz", ".fit.gz")


def is_fits_name(path: str | Path) -> bool:
    return str(path).lower().endswith(FITS_SUFFIXES)


def expand_paths(paths) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders (searched recursively for FITS files) and glob patterns, in a stable
    order without duplicates. Returns (files, problems) where problems name what matched nothing."""
    files: list[str] = []
    problems: list[tuple[str, str]] = []
    for raw in paths:
        raw = str(raw)
        candidates = sorted(glob.glob(raw, recursive=True)) if glob.has_magic(raw) else [raw]
        if not candidates:
            problems.append((raw, "the pattern matched no file"))
        for candidate in candidates:
            path = Path(candidate)
            if path.is_dir():
                found = sorted(str(p) for p in path.rglob("*") if p.is_file() and is_fits_name(p))
                if not found:
                    problems.append((candidate, "the folder holds no FITS file"))
                files.extend(found)
            elif path.is_file():
                files.append(str(path))
            else:
                problems.append((candidate, "no such file or folder"))
    seen: set[str] = set()
    unique = []
    for path in files:
        resolved = str(Path(path).resolve())
        if resolved not in seen:
            seen.add(resolved)
            unique.append(resolved)
    return unique, problems


def mark_interrupted_runs() -> int:
    """Runs left 'running' by a process that no longer exists were killed: say so."""
    stale = []
    for run in IngestRun.objects.filter(status=IngestRun.RUNNING):
        if run.pid is None or not _process_alive(run.pid) or run.pid == os.getpid():
            stale.append(run.pk)
    return IngestRun.objects.filter(pk__in=stale).update(status=IngestRun.INTERRUPTED)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exposure_number(metadata, path: str) -> int | None:
    """EXPNUM, else the odometer in FILENAME ('1038843o') or in the file's own name, by the
    library's one rule (desom.fits_io.expnum_from_filename)."""
    if getattr(metadata, "expnum", None) is not None:
        return int(metadata.expnum)
    return expnum_from_filename(getattr(metadata, "filename", None), Path(path).name)


def release_date_for(metadata) -> dt.date:
    """REL_DATE when the file has one; else the observation date plus the default proprietary
    period; else (no date at all) the default period from today, the cautious choice."""
    if getattr(metadata, "release_date", None):
        return metadata.release_date
    days = dt.timedelta(days=settings.ARCHIVE_DEFAULT_PROPRIETARY_DAYS)
    observed = _observation_datetime(metadata)
    base = observed.date() if observed else timezone.now().date()
    return base + days


def _observation_datetime(metadata) -> dt.datetime | None:
    value = getattr(metadata, "date_obs", None)
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    mjd = getattr(metadata, "mjd_obs", None)
    if mjd is not None:
        return dt.datetime(1858, 11, 17, tzinfo=dt.timezone.utc) + dt.timedelta(days=float(mjd))
    return None


def clip_to_columns(model, fields: dict) -> dict:
    """Text values cut to their column's max_length, read from the model so that the lengths
    live in one place (the model): a header may carry a longer value than the archive keeps."""
    clipped = dict(fields)
    for name, value in fields.items():
        limit = getattr(model._meta.get_field(name), "max_length", None)
        if limit and isinstance(value, str):
            clipped[name] = value[:limit]
    return clipped


def exposure_fields(summary) -> dict:
    md = summary.metadata
    warnings = list(summary.warnings or [])
    if summary.is_science and summary.n_detected == 0:
        status = Exposure.STATUS_NO_SOURCES
    elif warnings:
        status = Exposure.STATUS_WARNINGS
    else:
        status = Exposure.STATUS_OK
    # Header text is cut to its column; the path and checksum are kept whole (a clipped path
    # would name another file).
    header_text = clip_to_columns(Exposure, dict(
        filename=md.filename or Path(summary.path).name,
        obstype=md.obstype or "OBJECT",
        layout=getattr(md, "layout", None) or "",
        object_name=md.object or "",
        filter_name=md.filter_name or "",
        band=md.band or "",
        instrument=md.instrument or "",
        runid=getattr(md, "runid", None) or "",
    ))
    return header_text | dict(
        file_path=str(summary.path),
        file_size=int(summary.file_size or 0),
        checksum=summary.checksum,
        is_science=bool(summary.is_science),
        ra_deg=md.ra_deg,
        dec_deg=md.dec_deg,
        mjd_obs=md.mjd_obs,
        date_obs=_observation_datetime(md),
        exptime=md.exptime,
        airmass=md.airmass,
        n_ccds=int(md.n_ccds or 0),
        n_detected=int(summary.n_detected or 0),
        n_sampled=int(summary.n_sampled or 0),
        status=status,
        warnings=warnings,
        timings={k: round(float(v), 4) for k, v in (summary.timings or {}).items()},
        release_date=release_date_for(md),
        # None for a calibration frame: it is never modelled, so nothing is measured.
        source_statistics=getattr(summary, "source_statistics", None) if summary.is_science else None,
    )


@dataclass
class IngestReport:
    run_id: int
    n_files: int = 0
    ingested: int = 0
    skipped: int = 0
    failed: int = 0
    calibration: int = 0
    elapsed_s: float = 0.0
    executor: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"ingest run {self.run_id}: {self.n_files} files on {self.executor} in {self.elapsed_s:.1f} s",
               f"  ingested {self.ingested} (calibration frames among them: {self.calibration}), "
               f"skipped {self.skipped} already in the archive, failed {self.failed}"]
        out += [f"  FAILED {path}: {reason.splitlines()[0]}" for path, reason in self.failures[:50]]
        if len(self.failures) > 50:
            out.append(f"  ... and {len(self.failures) - 50} more failures (see IngestRun {self.run_id})")
        return out


class _RunWriter:
    """Accumulates worker results and writes them to the database in batches."""

    def __init__(self, run: IngestRun, version: ModelVersion | None, report: IngestReport, batch_size: int):
        self.run, self.version, self.report, self.batch_size = run, version, report, batch_size
        self.pending: list = []
        self.new_ids: list[int] = []
        self.checksums: dict[str, str] = {}  # path -> sha256, from the fingerprinting pass

    def fail(self, path: str, reason: str) -> None:
        IngestFailure.objects.create(run=self.run, path=path, reason=reason)
        self.report.failed += 1
        self.report.failures.append((path, reason))

    def add(self, outcome) -> None:
        self.pending.append(outcome)
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        new_ids: list[int] = []
        with transaction.atomic():
            for outcome in batch:
                if outcome.error:
                    self.fail(outcome.path, outcome.error)
                    continue
                exposure_id = self._write_one(outcome.summary)
                if exposure_id is not None:
                    new_ids.append(exposure_id)
            done = self.report.ingested + self.report.skipped + self.report.failed
            IngestRun.objects.filter(pk=self.run.pk).update(
                n_done=done, n_ingested=self.report.ingested, n_skipped=self.report.skipped,
                n_failed=self.report.failed, n_calibration=self.report.calibration, updated_at=timezone.now())
            if new_ids:
                version = self.version
                transaction.on_commit(lambda ids=new_ids: exposures_ingested.send(
                    sender=None, exposure_ids=ids, model_version=version))
        self.new_ids.extend(new_ids)

    def _write_one(self, summary) -> int | None:
        expnum = exposure_number(summary.metadata, summary.path)
        if expnum is None:
            self.fail(summary.path, "no exposure number: the file has no EXPNUM or FILENAME keyword and "
                                    "its name holds no odometer")
            return None
        fields = exposure_fields(summary)
        by_number = Exposure.objects.filter(expnum=expnum).first()
        by_path = Exposure.objects.filter(file_path=fields["file_path"]).first()
        if by_number is not None and by_number.checksum == fields["checksum"]:
            self.report.skipped += 1  # the same file under another path
            return None
        if by_number is not None and (by_path is None or by_path.pk != by_number.pk):
            self.fail(summary.path, f"exposure number {expnum} is already in the archive from "
                                    f"{by_number.file_path} with different content")
            return None
        if by_path is not None:
            # The file at this path was replaced: its old vectors and cells no longer describe it.
            ExposureVector.objects.filter(exposure=by_path).delete()
            CellAssignment.objects.filter(exposure=by_path).delete()
            by_path.desom2_cell = None   # the copy of the cell just deleted (versions.copy_active_cells)
            for name, value in fields.items():
                setattr(by_path, name, value)
            by_path.expnum = expnum
            by_path.save()
            exposure = by_path
        else:
            exposure = Exposure.objects.create(expnum=expnum, **fields)
        geometry.store_footprint(exposure, getattr(summary, "footprint", None))
        self.report.ingested += 1
        if not exposure.is_science:
            self.report.calibration += 1
            return None
        if self.version is not None and summary.histo is not None:
            ExposureVector.objects.update_or_create(
                exposure=exposure, model_version=self.version,
                defaults=dict(histo=vectors.to_blob(summary.histo),
                              activations=None if summary.activations is None else vectors.to_blob(summary.activations),
                              n_detected=int(summary.n_detected or 0)))
            return exposure.pk
        return None


def ingest(paths, *, scheduler: str | None = None, workers: int = 2, batch_size: int = 25,
           imaging_config=None, progress: bool = True, with_model: bool = True) -> IngestReport:
    """Ingest files, folders and globs. With an active DESOM-1 (and `with_model`), each science
    exposure gets its histo-vector too; without one, metadata and detections only (`assign`
    adds vectors later)."""
    started = time.perf_counter()
    scheduler = scheduler if scheduler is not None else (settings.DASK_SCHEDULER or None)
    mark_interrupted_runs()
    files, problems = expand_paths(paths)
    version = versions.active_version(ModelVersion.DESOM1) if with_model else None
    run = IngestRun.objects.create(paths=[str(p) for p in paths], n_files=len(files) + len(problems),
                                   model_version=version, pid=os.getpid(),
                                   scheduler=scheduler or f"local:{workers}")
    report = IngestReport(run_id=run.pk, n_files=run.n_files)
    writer = _RunWriter(run, version, report, batch_size)
    for path, reason in problems:
        writer.fail(path, reason)

    # The workers have already hashed every file for the skip test: do not read them twice.
    config = dataclasses.replace(imaging_config or versions.imaging_config(), checksum=False)
    with make_executor(scheduler, workers if len(files) > 1 else 0) as executor:
        report.executor = executor.description
        todo = _files_not_yet_ingested(executor, files, writer, progress)
        checkpoint = str(versions.checkpoint_file(version)) if version is not None else None
        bar = tqdm(total=len(todo), desc="summarising", unit="exp", disable=not progress)
        try:
            for outcome in executor.map_unordered(summarise_safely, todo, checkpoint, config):
                if outcome.summary is not None and outcome.summary.checksum is None:
                    outcome.summary.checksum = writer.checksums[outcome.path]
                writer.add(outcome)
                bar.update(1)
                bar.set_postfix(ok=report.ingested, skip=report.skipped, fail=report.failed)
        finally:
            bar.close()
            writer.flush()
    run.refresh_from_db()
    run.status = IngestRun.FINISHED
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "finished_at"])
    batch_finished.send(sender=None)
    report.elapsed_s = time.perf_counter() - started
    return report


def _files_not_yet_ingested(executor, files: list[str], writer: _RunWriter, progress: bool) -> list[str]:
    """Fingerprint files on the workers; those whose checksum the archive holds are skipped."""
    prints = []
    bar = tqdm(total=len(files), desc="checksums", unit="file", disable=not progress or not files)
    for result in executor.map_unordered(fingerprint, files):
        prints.append(result)
        bar.update(1)
    bar.close()
    known = set()
    checksums = [p.sha256 for p in prints if p.sha256]
    for start in range(0, len(checksums), 500):
        known.update(Exposure.objects.filter(checksum__in=checksums[start:start + 500])
                     .values_list("checksum", flat=True))
    todo = []
    for item in prints:
        if item.sha256:
            writer.checksums[item.path] = item.sha256
        if item.error:
            writer.fail(item.path, item.error)
        elif item.sha256 in known:
            writer.report.skipped += 1
        else:
            todo.append(item.path)
    IngestRun.objects.filter(pk=writer.run.pk).update(n_done=writer.report.skipped + writer.report.failed,
                                                      n_skipped=writer.report.skipped)
    order = {path: i for i, path in enumerate(files)}
    return sorted(todo, key=order.__getitem__)


@dataclass
class StatisticsReport:
    n_exposures: int = 0
    measured: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"source statistics: {self.measured} of {self.n_exposures} exposures measured, "
               f"{self.failed} failed, in {self.elapsed_s:.1f} s"]
        out += [f"  FAILED {path}: {reason.splitlines()[0]}" for path, reason in self.failures[:50]]
        if len(self.failures) > 50:
            out.append(f"  ... and {len(self.failures) - 50} more")
        return out


def measure_missing_statistics(*, workers: int = 2, scheduler: str | None = None, batch_size: int = 25,
                               imaging_config=None, progress: bool = True) -> StatisticsReport:
    """The source statistics of every science exposure ingested before the archive measured them
    (source_statistics NULL) or before it measured all of them (one of desom.baseline.STATISTIC_NAMES
    absent, e.g. the coherent pair), from its file, by the ingest's own imaging on the workers
    (without DESOM-1: the statistics need only the detections). A file that cannot be read, or
    that changed since it was ingested (another checksum), is reported and the rest go on; a
    rerun picks up what is still missing. Pass the detector the exposures were ingested with."""
    started = time.perf_counter()
    scheduler = scheduler if scheduler is not None else (settings.DASK_SCHEDULER or None)
    from desom.baseline import STATISTIC_NAMES

    # the database's form of desom.baseline.unmeasured: no statistics, or one of them absent
    never = Q(source_statistics__isnull=True) | ~Q(source_statistics__has_keys=list(STATISTIC_NAMES))
    todo = {path: (pk, checksum) for path, pk, checksum in
            Exposure.objects.filter(never, is_science=True)
            .order_by("expnum").values_list("file_path", "pk", "checksum")}
    report = StatisticsReport(n_exposures=len(todo))
    config = dataclasses.replace(imaging_config or versions.imaging_config(), checksum=True)
    pending: dict[int, dict] = {}

    def flush():
        with transaction.atomic():
            for pk, values in pending.items():
                Exposure.objects.filter(pk=pk).update(source_statistics=values)
        pending.clear()

    with make_executor(scheduler, workers if len(todo) > 1 else 0) as executor:
        bar = tqdm(total=len(todo), desc="source statistics", unit="exp", disable=not progress)
        try:
            for outcome in executor.map_unordered(summarise_safely, list(todo), None, config):
                bar.update(1)
                pk, checksum = todo[outcome.path]
                summary = outcome.summary
                if outcome.error is None and summary.checksum != checksum:
                    outcome.error = ("the file changed since it was ingested (another checksum): "
                                     "ingest it again")
                if outcome.error is None and summary.source_statistics is None:
                    outcome.error = "the file is no longer a science exposure"
                if outcome.error:
                    report.failed += 1
                    report.failures.append((outcome.path, outcome.error))
                    logger.warning("no source statistics for %s: %s", outcome.path, outcome.error)
                    continue
                pending[pk] = summary.source_statistics
                report.measured += 1
                if len(pending) >= batch_size:
                    flush()
                bar.set_postfix(ok=report.measured, fail=report.failed, refresh=False)
        finally:
            bar.close()
            flush()
    report.elapsed_s = time.perf_counter() - started
    return report
