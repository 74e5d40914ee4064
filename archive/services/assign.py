"""Assignment: bring every science exposure up to the active models. Vectors are recomputed
for exposures that have none under the active DESOM-1; cells for those that have none under
the active DESOM-2 (which must have been trained on that DESOM-1's histo-vectors), and copied
onto the exposures (Exposure.desom2_cell, see versions.copy_active_cells)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from django.db import transaction

from desom.baseline import statistics_matrix, unmeasured as never_measured
from tqdm import tqdm

from .. import vectors
from ..executors import make_executor
from ..models import CellAssignment, Exposure, ExposureVector, ModelVersion
from ..signals import batch_finished, exposures_ingested, vectors_changed
from ..tasks import summarise_safely
from . import versions

logger = logging.getLogger(__name__)


class AssignmentError(RuntimeError):
    pass


@dataclass
class AssignReport:
    vectors_added: int = 0
    vector_failures: int = 0
    cells_assigned: int = 0
    desom1: str | None = None
    desom2: str | None = None

    def lines(self) -> list[str]:
        return [f"vectors under DESOM-1 {self.desom1}: {self.vectors_added} added, {self.vector_failures} failed",
                f"cells under DESOM-2 {self.desom2}: {self.cells_assigned} assigned"]


def compute_missing_vectors(*, workers: int = 2, scheduler: str | None = None, progress: bool = True,
                            batch_size: int = 50, imaging_config=None) -> tuple[int, int]:
    """Histo-vectors under the active DESOM-1 for science exposures that lack one."""
    desom1 = versions.active_version(ModelVersion.DESOM1)
    if desom1 is None:
        raise AssignmentError("no active DESOM-1: run train_desom1 first")
    missing = dict(Exposure.objects.filter(is_science=True).exclude(vectors__model_version=desom1)
                   .values_list("file_path", "pk"))
    if not missing:
        return 0, 0
    checkpoint = str(versions.checkpoint_file(desom1))
    added, failed, pending = 0, 0, []

    def flush():
        nonlocal pending
        if not pending:
            return
        with transaction.atomic():
            ExposureVector.objects.bulk_create(pending, ignore_conflicts=True)
            ids = [row.exposure_id for row in pending]
            transaction.on_commit(lambda: exposures_ingested.send(sender=None, exposure_ids=ids, model_version=desom1))
        pending = []

    config = imaging_config or versions.imaging_config()
    with make_executor(scheduler, workers if len(missing) > 1 else 0) as executor:
        bar = tqdm(total=len(missing), desc="histo-vectors", unit="exp", disable=not progress)
        for outcome in executor.map_unordered(summarise_safely, sorted(missing), checkpoint, config):
            bar.update(1)
            if outcome.error or outcome.summary.histo is None:
                failed += 1
                logger.warning("no vector for %s: %s", outcome.path, outcome.error or "no histo-vector")
                continue
            summary = outcome.summary
            pending.append(ExposureVector(
                exposure_id=missing[outcome.path], model_version=desom1, histo=vectors.to_blob(summary.histo),
                activations=None if summary.activations is None else vectors.to_blob(summary.activations),
                n_detected=int(summary.n_detected or 0)))
            added += 1
            if len(pending) >= batch_size:
                flush()
        bar.close()
        flush()
    return added, failed


def trained_desom1(desom2: ModelVersion) -> ModelVersion:
    """The DESOM-1 a DESOM-2 was trained on, which must be the active one: its histo-vectors are
    the only ones this DESOM-2 can read (AssignmentError otherwise)."""
    desom1 = desom2.trained_on
    active1 = versions.active_version(ModelVersion.DESOM1)
    if desom1 is None or (active1 is not None and active1.pk != desom1.pk):
        raise AssignmentError(f"DESOM-2 {desom2.version_id} was trained on DESOM-1 "
                              f"{desom1.version_id if desom1 else '?'}, but the active DESOM-1 is "
                              f"{active1.version_id if active1 else 'none'}: train a DESOM-2 on the active one")
    return desom1


def desom2_prediction(checkpoint, predictor, histos: np.ndarray, statistics_rows=None):
    """DESOM-2's cells, quantization errors and latent codes for histo-vectors, with each
    exposure's source statistics (stored dicts; None where never measured, which takes the
    training medians) when the DESOM-2 reads them: what assign stores and an upload is placed by."""
    normaliser = checkpoint.normaliser
    statistics = None
    if normaliser.uses_statistics:
        rows = statistics_rows if statistics_rows is not None else [None] * len(histos)
        statistics = statistics_matrix(rows, normaliser.statistics_names)
    return predictor.predict(normaliser.transform(histos, statistics=statistics), return_latent=True)


def assign_cells(*, desom2: ModelVersion | None = None, recompute: bool = False, progress: bool = True,
                 chunk: int = 8192) -> int:
    """DESOM-2 cells for every science exposure with a vector under the DESOM-1 that the
    DESOM-2 was trained on. Returns how many cells were written."""
    from desom.inference import DesomPredictor

    desom2 = desom2 or versions.active_version(ModelVersion.DESOM2)
    if desom2 is None:
        raise AssignmentError("no active DESOM-2: run train_desom2 first")
    desom1 = trained_desom1(desom2)
    rows = ExposureVector.objects.filter(model_version=desom1, exposure__is_science=True)
    if not recompute:
        rows = rows.exclude(exposure__in=CellAssignment.objects.filter(model_version=desom2).values("exposure_id"))
    total = rows.count()
    if not total:
        return 0
    # Under the active DESOM-2 the cells are also copied onto the exposures (the label filter's
    # column), in the transaction that writes them.
    active2 = versions.active_version(ModelVersion.DESOM2)
    copy_to_exposures = active2 is not None and active2.pk == desom2.pk
    checkpoint = versions.load_checkpoint_for(desom2)
    predictor = DesomPredictor(checkpoint)
    # A DESOM-2 trained with statistics reads each exposure's stored source statistics too; one
    # never measured takes the training medians, as an unmeasurable value does.
    with_statistics = checkpoint.normaliser.uses_statistics
    names = checkpoint.normaliser.statistics_names
    columns = ("exposure_id", "histo") + (("exposure__source_statistics",) if with_statistics else ())
    written, last, unmeasured = 0, 0, 0
    bar = tqdm(total=total, desc="DESOM-2 cells", unit="exp", disable=not progress)
    # One page of `chunk` vectors at a time, by exposure id (keyset pages: no cursor stays open
    # while cells are written, and memory is one page whatever the archive's size).
    while True:
        page = list(rows.filter(exposure_id__gt=last).order_by("exposure_id").values_list(*columns)[:chunk])
        if not page:
            break
        part_ids = np.array([row[0] for row in page], dtype=np.int64)
        histos = vectors.stack([row[1] for row in page])
        last = int(part_ids[-1])
        if with_statistics:
            unmeasured += sum(never_measured(row[2], names) for row in page)
        prediction = desom2_prediction(checkpoint, predictor, histos,
                                       [row[2] for row in page] if with_statistics else None)
        cells = [CellAssignment(exposure_id=int(e), model_version=desom2, cell=int(c), quantization=float(q),
                                latent=vectors.to_blob(z))
                 for e, c, q, z in zip(part_ids, prediction.bmu, prediction.quantization, prediction.latent)]
        with transaction.atomic():
            if recompute:
                CellAssignment.objects.filter(model_version=desom2, exposure_id__in=part_ids.tolist()).delete()
            CellAssignment.objects.bulk_create(cells, ignore_conflicts=True)
            if copy_to_exposures:
                versions.copy_active_cells(active2, first_id=int(part_ids[0]), last_id=last)
            # the DESOM-2 indexes take the new latent codes once they are committed
            page_ids = part_ids.tolist()
            transaction.on_commit(lambda ids=page_ids: vectors_changed.send(
                sender=None, exposure_ids=ids, model_version=desom2))
        written += len(cells)
        bar.update(len(cells))
    bar.close()
    if unmeasured:
        logger.warning("%d exposures have no source statistics (ingested before they were measured) and were "
                       "placed with the training medians: run `manage.py source_statistics`, then assign "
                       "--recompute", unmeasured)
    return written


def assign(*, workers: int = 2, scheduler: str | None = None, progress: bool = True,
           recompute_cells: bool = False) -> AssignReport:
    desom1 = versions.active_version(ModelVersion.DESOM1)
    desom2 = versions.active_version(ModelVersion.DESOM2)
    report = AssignReport(desom1=desom1.version_id if desom1 else None, desom2=desom2.version_id if desom2 else None)
    if desom1 is not None:
        report.vectors_added, report.vector_failures = compute_missing_vectors(
            workers=workers, scheduler=scheduler, progress=progress)
    if desom2 is not None:
        report.cells_assigned = assign_cells(desom2=desom2, recompute=recompute_cells, progress=progress)
    batch_finished.send(sender=None)
    return report
