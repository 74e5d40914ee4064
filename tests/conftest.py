"""Shared fixtures. Tests that touch the database use pytest-django's `db` fixture; the data
directory of every test session is a fresh temporary folder so nothing leaks into var/."""
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from desom.runtime import prefer_passive_waiting

# Must be set before Django's settings are imported by pytest-django.
os.environ.setdefault("ARCHIVE_DATA_DIR", tempfile.mkdtemp(prefix="desom-test-data-"))
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Idle OpenMP threads sleep instead of spinning (desom/runtime.py): a 1 000-step DESOM-2 run
# measured 129 s spinning against 7.6 s passive (load average 10, 2 cores).
prefer_passive_waiting()

# --- a small simulated survey and two small trained DESOMs, made once per session ---------

SURVEY_SIZE = 32
SURVEY_CCDS = 2
SURVEY_SHAPE = (512, 256)
# Four kinds at clearly visible severities: what a search must tell apart at the least.
SURVEY_MIX = {"good": 1, "rbt": 1, "bad_focus": 1, "bgp_crowded": 1}
DESOM1_SIDE = 6


@pytest.fixture(scope="session")
def imaging_config():
    from desom.pipeline import ImagingConfig

    # sep is the fast backend; the photutils default is exercised by the imaging tests.
    return ImagingConfig(detector="sep", checksum=True)


@pytest.fixture(scope="session")
def survey_dir(tmp_path_factory) -> Path:
    """32 exposures of four kinds (8 each) plus one bias and one flat frame."""
    from desom.simulate import SurveyConfig, simulate_survey

    out = tmp_path_factory.mktemp("survey")
    config = SurveyConfig(n=SURVEY_SIZE, mix=SURVEY_MIX, seed=5, workers=2, n_ccds=SURVEY_CCDS,
                          ccd_shape=SURVEY_SHAPE, include_calibration=2, dead_ccd_prob=0.0,
                          severity_range=(0.6, 1.0))
    simulate_survey(config=config, outdir=out, progress=False)
    return out


@pytest.fixture(scope="session")
def science_files(survey_dir) -> list[Path]:
    import csv

    with open(survey_dir / "truth.csv") as handle:
        rows = list(csv.DictReader(handle))
    return [survey_dir / row["file"] for row in rows if row["obstype"] == "OBJECT"]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, survey_dir, science_files, imaging_config) -> dict:
    """A small DESOM-1 (6x6, 150 iterations) and DESOM-2 (3x3) trained on the survey, saved as
    real checkpoints."""
    from desom.checkpoint import save_checkpoint
    from desom.inference import DesomPredictor
    from desom.model import DESOMConfig, build_desom
    from desom.normalise import HistoNormaliser
    from desom.pipeline import sample_training_cutouts, summarise_exposure
    from desom.training import train_desom

    out = tmp_path_factory.mktemp("models")
    cutouts = np.concatenate([sample_training_cutouts(str(f), max_per_ccd=40, seed=i, config=imaging_config)
                              for i, f in enumerate(science_files)])
    config1 = DESOMConfig.desom1(map_rows=DESOM1_SIDE, map_cols=DESOM1_SIDE, iterations=150, batch_size=64, seed=1)
    model1 = build_desom(config1)
    train_desom(model1, cutouts[:, None], config1, progress=False)
    path1 = out / "desom1.pt"
    save_checkpoint(path1, model1, config1)

    predictor = DesomPredictor(model1)
    histos = np.stack([summarise_exposure(str(f), predictor=predictor, config=imaging_config).histo
                       for f in science_files])
    normaliser = HistoNormaliser("minmax").fit(histos)
    config2 = DESOMConfig.desom2(input_shape=(DESOM1_SIDE ** 2,), map_rows=3, map_cols=3, iterations=60, batch_size=8, seed=2)
    model2 = build_desom(config2)
    train_desom(model2, normaliser.transform(histos).astype(np.float32), config2, progress=False)
    path2 = out / "desom2.pt"
    save_checkpoint(path2, model2, config2, normaliser=normaliser)
    return {"desom1": path1, "desom2": path2}


@pytest.fixture
def archive_models(db, checkpoints, settings, tmp_path):
    """Both checkpoints registered and active (copied into this test's data directory)."""
    from archive.models import ModelVersion
    from archive.services import versions

    settings.ARCHIVE_DATA_DIR = tmp_path / "data"
    versions.models_dir()
    desom1 = versions.register_version(shutil.copy(checkpoints["desom1"], versions.models_dir()),
                                       kind=ModelVersion.DESOM1)
    desom2 = versions.register_version(shutil.copy(checkpoints["desom2"], versions.models_dir()),
                                       kind=ModelVersion.DESOM2, trained_on=desom1)
    return desom1, desom2


_SUMMARY_CACHE: dict = {}


def _summarise_once(path, checkpoint_path, config):
    """The real `summarise_safely`, memoised for the session: the imaging of a file is a pure
    function of (file, model, settings), and the tests that need a populated archive would
    otherwise detect the same sources in the same 34 files again and again. Checkpoints are
    copied per test, so the model is keyed by its content, not its path."""
    import hashlib

    from archive.tasks import summarise_safely

    model_key = hashlib.sha256(Path(checkpoint_path).read_bytes()).hexdigest() if checkpoint_path else None
    key = (str(path), Path(path).stat().st_mtime_ns, model_key, repr(config))
    if key not in _SUMMARY_CACHE:
        _SUMMARY_CACHE[key] = summarise_safely(path, checkpoint_path, config)
    return _SUMMARY_CACHE[key]


@pytest.fixture
def populated_archive(archive_models, survey_dir, imaging_config, django_capture_on_commit_callbacks,
                      monkeypatch):
    """The survey ingested (in-process, through the real ingest service) under the active
    models, with cells assigned."""
    from archive.services import ingest as ingest_module
    from archive.services.assign import assign_cells
    from archive.services.ingest import ingest

    monkeypatch.setattr(ingest_module, "summarise_safely", _summarise_once)
    with django_capture_on_commit_callbacks(execute=True):
        report = ingest([survey_dir], workers=0, imaging_config=imaging_config, progress=False)
        assign_cells(progress=False)
    monkeypatch.undo()
    assert report.failed == 0, report.failures
    return archive_models


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared 2-core box: one thread avoids OpenMP spin-waits against other
    jobs, and makes seeded runs repeat bit for bit whatever the machine's thread default."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def secret_archive(populated_archive):
    """The populated archive with one proprietary exposure of run factories.PROPRIETARY_RUN: `pi` is
    granted the run, `other` holds another run (which grants nothing here), `staff` sees
    everything; every other exposure is public. Returns (the secret exposure, users by name)."""
    import datetime as dt

    from archive.models import Exposure, RunAccess
    from tests import factories
    from tests.factories import PASSWORD, PROPRIETARY_RUN

    science = Exposure.objects.filter(is_science=True).order_by("expnum")
    secret = science[3]
    Exposure.objects.update(release_date=dt.date(2000, 1, 1))
    Exposure.objects.filter(pk=secret.pk).update(release_date=dt.date.today() + dt.timedelta(days=365),
                                                 runid=PROPRIETARY_RUN)
    secret.refresh_from_db()
    users = {"staff": factories.user("staff", staff=True, password=PASSWORD),
             "pi": factories.user("pi", password=PASSWORD),
             "other": factories.user("other", password=PASSWORD)}
    RunAccess.objects.create(user=users["pi"], runid=PROPRIETARY_RUN)
    RunAccess.objects.create(user=users["other"], runid="26AQ01")
    return secret, users


ROWS_DESOM1_SIDE = 5
ROWS_DESOM2_SHAPE = (3, 3)


@pytest.fixture
def archive_rows(db):
    """A small archive made of rows (tests.factories), for tests that need exposures, vectors,
    cells and active versions but no trained model and no imaging: an active DESOM-1 (5x5) and
    DESOM-2 (3x3), 18 science exposures with seeded histo-vectors, two in each cell, and one
    calibration frame. Returns (desom1, desom2) like `populated_archive`."""
    from archive.models import ModelVersion
    from tests import factories

    desom1 = factories.model_version(ModelVersion.DESOM1, rows=ROWS_DESOM1_SIDE, cols=ROWS_DESOM1_SIDE)
    desom2 = factories.model_version(ModelVersion.DESOM2, rows=ROWS_DESOM2_SHAPE[0], cols=ROWS_DESOM2_SHAPE[1],
                                     trained_on=desom1)
    rng = np.random.default_rng(7)
    n_cells = ROWS_DESOM2_SHAPE[0] * ROWS_DESOM2_SHAPE[1]
    for i in range(2 * n_cells):
        row = factories.exposure()
        factories.vector(row, desom1, rng.poisson(3.0, ROWS_DESOM1_SIDE ** 2))
        factories.assign(row, i % n_cells, desom2)
    factories.exposure(is_science=False, obstype="FLAT")
    return desom1, desom2


@pytest.fixture(autouse=True)
def _fresh_index_store():
    """Each test starts with no index loaded in this process."""
    from recommender import services

    services.reset_store()
    yield
    services.reset_store()
