"""The source statistics in the archive: stored per exposure at ingest, read by DESOM-2
beside the histo-vector (train_desom2 --features histo+stats, the default), applied the same way
when new exposures are assigned, measured afterwards for exposures ingested before they were."""
import numpy as np
import pytest

from archive.models import CellAssignment, Exposure
from archive.services.training import DEFAULT_FEATURES
from desom.baseline import FEATURE_NAMES, STATISTIC_NAMES, statistics_matrix
from tests.desom import fitsfactory

pytestmark = pytest.mark.django_db

SMALL = {"map_rows": 2, "map_cols": 2, "iterations": 40, "batch_size": 8}


def test_ingest_stores_the_statistics_of_a_science_file_and_null_for_a_calibration_frame(db, settings, tmp_path,
                                                                                          imaging_config):
    from archive.services.ingest import ingest

    settings.ARCHIVE_DATA_DIR = tmp_path / "data"
    files = tmp_path / "files"
    files.mkdir()
    fitsfactory.write_exposure(files / "1300001o.fits", n_ccds=2, shape=(512, 256), seed=2,
                               sky_kw=dict(n_sources=120, fwhm=6.0), header_kw=dict(expnum=1300001))
    fitsfactory.write_exposure(files / "1300002b.fits", n_ccds=2, shape=(512, 256), seed=2,
                               header_kw=dict(expnum=1300002, obstype="BIAS"))
    report = ingest([files], workers=0, imaging_config=imaging_config, progress=False, with_model=False)
    assert report.ingested == 2 and report.failed == 0

    science = Exposure.objects.get(expnum=1300001)
    stored = science.source_statistics
    # PostgreSQL's jsonb keeps keys in its own order: the names are what count (readers go by name).
    assert sorted(stored) == sorted(STATISTIC_NAMES) and all(isinstance(v, float) for v in stored.values())
    assert stored["fwhm_px"] == pytest.approx(6.0, rel=0.2)          # the injected seeing
    assert stored["log_density"] > 0 and "statistics" in science.timings
    assert Exposure.objects.get(expnum=1300002).source_statistics is None


def _cells_and_latents(version):
    from archive import vectors

    rows = CellAssignment.objects.filter(model_version=version).values_list("exposure_id", "cell", "latent")
    return {e: (c, vectors.from_blob(z)) for e, c, z in rows}


def test_desom2_reads_the_statistics_and_assign_gives_a_new_exposure_the_same_input(populated_archive, tmp_path,
                                                                                     imaging_config):
    from archive.services.assign import assign_cells
    from archive.services.ingest import ingest
    from archive.services.training import histo_matrix, train_desom2
    from archive.services.versions import load_checkpoint_for
    from desom.inference import DesomPredictor

    desom1, _ = populated_archive
    version = train_desom2(overrides=SMALL, seed=3, progress=False)       # the default features
    assert version.metrics["features"] == version.config["extra"]["features"] == DEFAULT_FEATURES == "histo+stats+coherent"
    n_bins = desom1.map_shape[0] * desom1.map_shape[1]
    assert version.config["input_shape"] == [n_bins + len(STATISTIC_NAMES)]
    checkpoint = load_checkpoint_for(version)
    assert checkpoint.normaliser.uses_statistics

    # A new exposure, ingested after training: its cell comes from [its histo | its statistics].
    new_file = tmp_path / "1400001o.fits"
    fitsfactory.write_exposure(new_file, n_ccds=2, shape=(512, 256), seed=9, sky_kw=dict(n_sources=150, fwhm=7.0),
                               header_kw=dict(expnum=1400001))
    assert ingest([new_file], workers=0, imaging_config=imaging_config, progress=False).ingested == 1
    assign_cells(progress=False)
    new = Exposure.objects.get(expnum=1400001)
    cells = _cells_and_latents(version)
    assert new.pk in cells and new.source_statistics["fwhm_px"] is not None

    ids, histos = histo_matrix(desom1)
    stats = statistics_matrix([dict(Exposure.objects.values_list("pk", "source_statistics"))[int(i)] for i in ids],
                              STATISTIC_NAMES)
    predictor = DesomPredictor(checkpoint)
    with_stats = predictor.predict(checkpoint.normaliser.transform(histos, statistics=stats), return_latent=True)
    medians_only = predictor.predict(checkpoint.normaliser.transform(histos, statistics=np.full_like(stats, np.nan)),
                                     return_latent=True)
    stored_latent = np.stack([cells[int(i)][1] for i in ids])
    assert [cells[int(i)][0] for i in ids] == with_stats.bmu.tolist()
    np.testing.assert_allclose(stored_latent, with_stats.latent, rtol=1e-5, atol=1e-5)
    # Not vacuous: an assignment that dropped the statistics (training medians) would differ.
    assert not np.allclose(stored_latent, medians_only.latent, atol=1e-3)


def test_an_archive_without_statistics_is_refused_with_the_command_that_measures_them(populated_archive):
    from django.core.management import CommandError, call_command

    from archive.services.training import train_desom2

    measured = dict(Exposure.objects.filter(is_science=True).values_list("pk", "source_statistics"))
    assert all(measured.values())
    Exposure.objects.update(source_statistics=None)        # as ingested before this change

    with pytest.raises(CommandError, match=r"manage.py source_statistics.*--features histo"):
        call_command("train_desom2", map="2x2", iterations=10, verbosity=0)
    assert train_desom2(overrides=SMALL, features="histo", progress=False, activate=False)   # still possible

    call_command("source_statistics", workers=0, detector="sep", verbosity=0)
    assert dict(Exposure.objects.filter(is_science=True).values_list("pk", "source_statistics")) == measured
    assert Exposure.objects.get(obstype="BIAS").source_statistics is None
    version = train_desom2(overrides=SMALL, progress=False, activate=False)
    assert version.metrics["features"] == DEFAULT_FEATURES


def test_the_backfill_records_a_missing_file_and_goes_on(populated_archive):
    from archive.services.ingest import measure_missing_statistics

    science = Exposure.objects.filter(is_science=True).order_by("expnum")
    Exposure.objects.filter(pk__in=[e.pk for e in science[:3]]).update(source_statistics=None)
    gone = science[0]
    Exposure.objects.filter(pk=gone.pk).update(file_path="/nowhere/gone.fits")
    report = measure_missing_statistics(workers=0, progress=False)
    assert (report.measured, report.failed) == (2, 1) and report.failures[0][0] == "/nowhere/gone.fits"
    assert Exposure.objects.get(pk=gone.pk).source_statistics is None
    assert Exposure.objects.filter(is_science=True, source_statistics__isnull=True).count() == 1


def test_statistics_measured_before_the_coherent_pair_are_remeasured_before_desom2_reads_them(populated_archive):
    from django.core.management import call_command

    from archive.services.training import TrainingDataError, train_desom2
    from desom.baseline import COHERENT_NAMES

    desom1, _ = populated_archive
    measured = dict(Exposure.objects.filter(is_science=True).values_list("pk", "source_statistics"))
    assert all(set(COHERENT_NAMES) <= set(v) for v in measured.values())
    older = Exposure.objects.filter(is_science=True).order_by("expnum")[:2]
    for exposure in older:                 # as the archive stored them before it measured the pair
        Exposure.objects.filter(pk=exposure.pk).update(
            source_statistics={k: v for k, v in exposure.source_statistics.items() if k in FEATURE_NAMES})

    # the five are all there: DESOM-2 on them trains; on all seven it is refused, naming the fix
    assert train_desom2(overrides=SMALL, features="histo+stats", progress=False, activate=False)
    with pytest.raises(TrainingDataError, match=r"2 of \d+ exposures have no source statistics.*source_statistics"):
        train_desom2(overrides=SMALL, features="histo+stats+coherent", progress=False, activate=False)

    call_command("source_statistics", workers=0, detector="sep", verbosity=0)   # measures those two again
    assert dict(Exposure.objects.filter(is_science=True).values_list("pk", "source_statistics")) == measured
    version = train_desom2(overrides=SMALL, features="histo+stats+coherent", statistics_weight=0.4, progress=False,
                           activate=False)
    assert version.config["input_shape"] == [desom1.map_shape[0] * desom1.map_shape[1] + 7]
    assert version.metrics["features"] == "histo+stats+coherent" and version.metrics["statistics_weight"] == 0.4
