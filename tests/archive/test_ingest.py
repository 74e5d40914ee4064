"""Ingest into the archive: idempotent, records failures and goes on, resumes after a kill,
keeps calibration frames out of the models, and runs on a real Dask cluster."""
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from archive.models import CellAssignment, Exposure, ExposureVector, IngestFailure, IngestRun
from archive.services.ingest import expand_paths, ingest

REPO = Path(__file__).resolve().parents[2]


def test_expand_paths_takes_files_folders_and_globs(survey_dir, tmp_path):
    files, problems = expand_paths([survey_dir, str(survey_dir / "*.fits"), tmp_path / "missing.fits"])
    fits_files = sorted(survey_dir.glob("*.fits"))
    assert sorted(files) == sorted(str(p.resolve()) for p in fits_files)  # duplicates removed
    assert problems == [(str(tmp_path / "missing.fits"), "no such file or folder")]


def test_ingest_is_idempotent(populated_archive, survey_dir, imaging_config):
    n_files = len(list(survey_dir.glob("*.fits")))
    assert Exposure.objects.count() == n_files
    first = {e.expnum: e.checksum for e in Exposure.objects.all()}

    again = ingest([survey_dir], workers=0, imaging_config=imaging_config, progress=False)

    assert (again.ingested, again.skipped, again.failed) == (0, n_files, 0)
    assert {e.expnum: e.checksum for e in Exposure.objects.all()} == first
    assert IngestRun.objects.count() == 2
    # The same file under another name is recognised by its checksum, not its path.
    copy_dir = survey_dir.parent / "copies"
    copy_dir.mkdir(exist_ok=True)
    shutil.copy(next(survey_dir.glob("*.fits")), copy_dir / "renamed.fits")
    assert ingest([copy_dir], workers=0, imaging_config=imaging_config, progress=False).skipped == 1
    assert Exposure.objects.count() == n_files


def test_corrupt_files_are_recorded_and_the_rest_land(archive_models, science_files, tmp_path, imaging_config):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in science_files[:3]:
        shutil.copy(path, folder)
    truncated = folder / "2000001o.fits"
    truncated.write_bytes(science_files[3].read_bytes()[:20000])
    (folder / "2000002o.fits").write_text("this is not a FITS file\n")

    report = ingest([folder], workers=0, imaging_config=imaging_config, progress=False)

    assert report.ingested == 3 and report.failed == 2
    failures = {Path(f.path).name: f.reason for f in IngestFailure.objects.all()}
    assert set(failures) == {"2000001o.fits", "2000002o.fits"}
    assert all("2000001o.fits" in r or "2000002o.fits" in r for r in failures.values()), failures
    assert Exposure.objects.count() == 3
    run = IngestRun.objects.get()
    assert (run.status, run.n_done, run.n_failed) == (IngestRun.FINISHED, 5, 2)


def test_vectors_and_cells_name_the_model_version_that_made_them(populated_archive):
    desom1, desom2 = populated_archive
    science = Exposure.objects.filter(is_science=True)
    assert ExposureVector.objects.filter(model_version=desom1).count() == science.count()
    assert CellAssignment.objects.filter(model_version=desom2).count() == science.count()
    vector = ExposureVector.objects.filter(model_version=desom1).select_related("exposure").first()
    # The histo-vector's sum is the number of sources detected (paper 5.2).
    assert vector.histo_array.sum() == pytest.approx(vector.exposure.n_detected, rel=1e-4)
    assert len(vector.histo_array) == desom1.map_shape[0] * desom1.map_shape[1]


def test_a_new_desom1_needs_a_new_desom2_before_cells_change(populated_archive, checkpoints):
    from archive.models import ModelVersion
    from archive.services import versions
    from archive.services.assign import AssignmentError, assign_cells, compute_missing_vectors
    from desom.checkpoint import load_checkpoint, save_checkpoint

    desom1, desom2 = populated_archive
    old = load_checkpoint(checkpoints["desom1"])
    with pytest.MonkeyPatch.context():
        import torch

        with torch.no_grad():
            old.model.som.prototypes.mul_(1.01)  # a different model: other weights, other version id
    path = versions.models_dir() / "desom1-b.pt"
    save_checkpoint(path, old.model, old.config)
    new1 = versions.register_version(path, kind=ModelVersion.DESOM1)
    assert new1.version_id != desom1.version_id and versions.active_version("desom1") == new1

    added, failed = compute_missing_vectors(workers=0, progress=False)
    n_science = Exposure.objects.filter(is_science=True).count()
    assert (added, failed) == (n_science, 0)
    # Old vectors stay with the old version; nothing is overwritten.
    assert ExposureVector.objects.filter(model_version=desom1).count() == n_science
    with pytest.raises(AssignmentError, match="trained on DESOM-1"):
        assign_cells(progress=False)


def test_calibration_frames_are_recorded_but_never_modelled(populated_archive):
    calibration = Exposure.objects.filter(is_science=False)
    assert set(calibration.values_list("obstype", flat=True)) == {"BIAS", "FLAT"}
    assert not ExposureVector.objects.filter(exposure__in=calibration).exists()
    assert not CellAssignment.objects.filter(exposure__in=calibration).exists()
    run = IngestRun.objects.get()
    assert run.n_calibration == 2


@pytest.mark.slow
def test_ingest_through_a_dask_local_cluster_with_two_workers(archive_models, science_files, tmp_path,
                                                              imaging_config):
    folder = tmp_path / "dask"
    folder.mkdir()
    for path in science_files[:6]:
        shutil.copy(path, folder)
    report = ingest([folder], workers=2, imaging_config=imaging_config, progress=False)
    assert report.executor == "dask local cluster, 2 workers"
    assert (report.ingested, report.failed) == (6, 0)
    desom1, _ = archive_models
    assert ExposureVector.objects.filter(model_version=desom1).count() == 6


@pytest.mark.slow
def test_a_killed_ingest_resumes_without_loss_or_duplicates(survey_dir, science_files, tmp_path):
    """A real process, killed with SIGKILL once some batches are committed, then rerun."""
    folder = tmp_path / "files"
    folder.mkdir()
    for path in science_files[:12]:
        shutil.copy(path, folder)
    data = tmp_path / "data"
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(data), "DATABASE_URL": f"sqlite:///{data / 'kill.sqlite3'}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run(manage + ["migrate", "-v0"], env=env, check=True, cwd=REPO)
    command = manage + ["ingest", str(folder), "--workers", "0", "--batch-size", "2", "--no-model",
                        "--detector", "sep", "-v0"]
    process = subprocess.Popen(command, env=env, cwd=REPO)
    database = data / "kill.sqlite3"
    deadline = time.monotonic() + 120
    count = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with sqlite3.connect(database, timeout=1) as connection:
                count = connection.execute("SELECT COUNT(*) FROM archive_exposure").fetchone()[0]
        except sqlite3.OperationalError:
            count = 0
        if count >= 2:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 2 <= count < 12, f"the kill should land mid-ingest (saw {count} exposures)"

    subprocess.run(command, env=env, check=True, cwd=REPO)
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT expnum, COUNT(*) FROM archive_exposure GROUP BY expnum").fetchall()
        runs = dict(connection.execute("SELECT id, status FROM archive_ingestrun").fetchall())
    assert len(rows) == 12 and all(n == 1 for _, n in rows)
    assert sorted(runs.values()) == ["finished", "interrupted"]


def test_release_dates_come_from_rel_date_and_rule_visibility(populated_archive, survey_dir):
    """REL_DATE sets the proprietary period; an exposure still proprietary is hidden from anonymous users."""
    import csv
    import datetime as dt

    from rest_framework.test import APIClient

    with open(survey_dir / "truth.csv") as handle:
        truth = {int(r["expnum"]): r for r in csv.DictReader(handle)}
    exposures = list(Exposure.objects.filter(is_science=True))
    for exposure in exposures:
        assert exposure.release_date == dt.date.fromisoformat(truth[exposure.expnum]["rel_date"])
    # Move one exposure's REL_DATE into the future, as a file from a current programme would have it.
    future = exposures[0]
    future.release_date = dt.date.today() + dt.timedelta(days=30)
    future.save()
    listed = {row["id"] for row in APIClient().get("/api/exposures/?page_size=500").json()["results"]}
    assert future.pk not in listed
    assert {e.pk for e in exposures if e.is_public} <= listed
