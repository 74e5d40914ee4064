"""Training DESOM-2 from the archive's stored histo-vectors, with and without map smoothing."""
import numpy as np
import pytest

pytestmark = pytest.mark.django_db


def test_train_desom2_stores_the_smoothing_with_the_normaliser_and_assign_uses_it(populated_archive):
    from archive.models import CellAssignment, ModelVersion
    from archive.services.assign import assign_cells
    from archive.services.versions import checkpoint_file
    from archive.services.training import histo_matrix, train_desom2
    from desom.checkpoint import load_checkpoint

    desom1, _ = populated_archive
    version = train_desom2(overrides={"map_rows": 2, "map_cols": 2, "iterations": 40, "batch_size": 8},
                           smooth_sigma=1.0, features="histo", seed=3, activate=True, progress=False)
    assert version.metrics["smooth_sigma"] == 1.0 and version.metrics["features"] == "histo"
    checkpoint = load_checkpoint(checkpoint_file(version))
    norm = checkpoint.normaliser
    assert norm.smooth_sigma == 1.0 and norm.map_shape == desom1.map_shape

    # The stored normaliser smooths: a vector with all its counts in one node comes out with
    # counts in the neighbours too, unlike an unsmoothed normaliser fitted on the same data.
    ids, histos = histo_matrix(desom1)
    one = np.zeros((1, histos.shape[1]), np.float32)
    one[0, 0] = histos.sum(axis=1).mean()
    from desom.normalise import HistoNormaliser
    plain = HistoNormaliser(norm.method).fit(histos)
    assert not np.allclose(norm.transform(one), plain.transform(one))

    assign_cells(progress=False)
    cells = dict(CellAssignment.objects.filter(model_version=version).values_list("exposure_id", "cell"))
    assert set(cells) == set(ids.tolist())
    from desom.inference import DesomPredictor
    predicted = DesomPredictor(checkpoint).predict_histos(histos, return_activations=False).bmu
    assert [cells[i] for i in ids.tolist()] == predicted.tolist()
    assert ModelVersion.objects.get(pk=version.pk).is_active


def test_train_desom2_command_refuses_a_negative_smoothing(populated_archive):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="smooth_sigma"):
        call_command("train_desom2", smooth=-1.0, map="2x2", iterations=5, verbosity=0)


def test_train_desom2_without_options_sizes_its_map_to_the_archive(populated_archive):
    """No --map: about a dozen exposures per cell (not the paper's 20x20), the study's length."""
    from archive.services.training import DEFAULT_DESOM2, histo_matrix, suggested_desom2_map, train_desom2

    desom1, _ = populated_archive
    ids, _ = histo_matrix(desom1)
    version = train_desom2(overrides={"iterations": 20}, seed=1, activate=False, progress=False)
    side = suggested_desom2_map(len(ids))
    assert (version.config["map_rows"], version.config["map_cols"]) == (side, side) and side < 20
    assert version.config["batch_size"] == DEFAULT_DESOM2["batch_size"]
    assert DEFAULT_DESOM2["iterations"] < 100_000


def test_a_collapsed_desom2_is_retrained_with_another_seed_and_recorded(populated_archive, monkeypatch):
    """The archive applies desom's reconstruction gate: an attempt that does not reconstruct its
    inputs is dropped (its run folder too) and the next seed trained; the version records both.
    The first attempt's collapse is forced by scoring it 0 (a real collapse is rare and slow to
    provoke; desom's own tests make one)."""
    import desom.training as training_lib
    from archive.services.training import TrainingDataError, runs_dir, train_desom2
    from desom.metrics import GATE_MIN_ITERATIONS, MIN_EXPLAINED_VARIANCE

    real = training_lib.reconstruction_share
    calls = []

    def first_collapses(model, data, **kw):
        calls.append(1)
        return 0.0 if len(calls) == 1 else real(model, data, **kw)

    monkeypatch.setattr(training_lib, "reconstruction_share", first_collapses)
    overrides = {"map_rows": 2, "map_cols": 2, "iterations": GATE_MIN_ITERATIONS, "batch_size": 8}
    version = train_desom2(overrides=overrides, seed=5, activate=False, progress=False)
    attempts = version.metrics["training_attempts"]
    assert [a["seed"] for a in attempts] == [5, 5 + training_lib.RESTART_SEED_STEP]
    assert attempts[0]["explained_variance"] == 0.0 and version.metrics["reconstruction_gate"]
    assert version.metrics["seed"] == 5 + training_lib.RESTART_SEED_STEP == version.config["seed"]
    assert version.metrics["explained_variance"] >= MIN_EXPLAINED_VARIANCE
    assert not list(runs_dir().glob("desom2-*"))          # no run folder left behind

    monkeypatch.setattr(training_lib, "reconstruction_share", lambda model, data, **kw: 0.0)
    with pytest.raises(TrainingDataError, match="collapsed"):
        train_desom2(overrides=overrides, seed=6, activate=False, progress=False)
    assert not list(runs_dir().glob("desom2-*"))


def test_a_short_desom2_run_is_measured_not_gated(populated_archive):
    from archive.services.training import train_desom2

    version = train_desom2(overrides={"map_rows": 2, "map_cols": 2, "iterations": 20, "batch_size": 8},
                           seed=2, activate=False, progress=False)
    assert version.metrics["reconstruction_gate"] is False
    assert len(version.metrics["training_attempts"]) == 1 and "explained_variance" in version.metrics


def test_labelled_exposures_choose_among_candidate_maps_and_every_score_is_kept(populated_archive, survey_dir):
    """--labels with --candidates: one map per seed (seed + j * CANDIDATE_SEED_STEP), the one
    whose cells name the labelled exposures best kept, the others' scores in the metrics."""
    from archive.services.training import read_exposure_labels, train_desom2
    from desom.training import CANDIDATE_SEED_STEP

    labels = read_exposure_labels(survey_dir / "truth.csv")
    assert set(labels.values()) == {"Good", "Bad"}
    version = train_desom2(overrides={"map_rows": 2, "map_cols": 2, "iterations": 30, "batch_size": 8},
                           features="histo", seed=4, activate=False, progress=False, candidates=3, labels=labels)
    choice = version.metrics["chosen_by_labels"]
    seeds = [c["seed"] for c in choice["candidates"]]
    assert seeds == [4, 4 + CANDIDATE_SEED_STEP, 4 + 2 * CANDIDATE_SEED_STEP]
    scores = [c["balanced_accuracy"] for c in choice["candidates"]]
    best = seeds[int(np.nanargmax(scores))]
    assert choice["kept_seed"] == best == version.metrics["seed"] == version.config["seed"]
    assert choice["labelled_exposures"] == 32      # the calibration frames have no histo-vector
    # one map and no choice by default
    plain = train_desom2(overrides={"map_rows": 2, "map_cols": 2, "iterations": 30, "batch_size": 8},
                         features="histo", seed=4, activate=False, progress=False)
    assert "chosen_by_labels" not in plain.metrics


def test_candidates_without_usable_labels_are_refused_before_training(populated_archive, tmp_path):
    from django.core.management import CommandError, call_command

    from archive.services.training import TrainingDataError, train_desom2

    small = {"map_rows": 2, "map_cols": 2, "iterations": 5, "batch_size": 8}
    with pytest.raises(TrainingDataError, match="needs labelled exposures"):
        train_desom2(overrides=small, features="histo", candidates=2, progress=False)
    with pytest.raises(TrainingDataError, match="name no exposure"):
        train_desom2(overrides=small, features="histo", candidates=2, labels={999_999: "Good"}, progress=False)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("exposure,quality\n1,Good\n")
    with pytest.raises(CommandError, match="needs an 'expnum' column"):
        call_command("train_desom2", labels=str(wrong), map="2x2", iterations=5, verbosity=0)
    garbled = tmp_path / "garbled.csv"
    garbled.write_text("expnum,label\nabc,Good\n")
    with pytest.raises(CommandError, match="line 2"):
        call_command("train_desom2", labels=str(garbled), map="2x2", iterations=5, verbosity=0)
    with pytest.raises(CommandError, match="candidates must be >= 1"):
        call_command("train_desom2", candidates=0, map="2x2", iterations=5, verbosity=0)
    with pytest.raises(CommandError, match="cannot read"):
        call_command("train_desom2", labels=str(tmp_path / "absent.csv"), map="2x2", iterations=5, verbosity=0)


def test_labels_leave_out_empty_and_mixed_rows(tmp_path):
    from archive.services.training import read_exposure_labels

    path = tmp_path / "labels.csv"
    path.write_text("expnum,label\n1,Good\n2,\n3,mixed\n4,BT\n")
    assert read_exposure_labels(path) == {1: "Good", 4: "BT"}
