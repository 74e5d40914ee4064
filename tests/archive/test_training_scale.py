"""Training at archive scale: a training set sampled in bounded memory (the same for any number
of workers), kept on disk and reused; training runs that resume after a kill; DESOM-2 and
assignment fed from the database a chunk at a time."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY1 = {"conv_filters": [4, 8, 8], "dense_units": 32, "latent_dim": 8, "batch_size": 16}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)




@pytest.mark.slow
def test_the_sampled_set_is_the_same_for_one_and_two_workers(science_files, imaging_config, tmp_path):
    from archive.services.training import sample_training_set

    files = [str(p) for p in science_files[:8]]
    kw = dict(max_per_ccd=20, seed=7, imaging_config=imaging_config.with_stamps({"stamp_sky": "kept",
                                                                                  "stretch": "asinh"}),
              progress=False)
    everything = sample_training_set(files, tmp_path / "all", max_cutouts=None, workers=0, **kw)
    cap = len(everything) // 3          # well below what the files yield: the threshold matters
    one = sample_training_set(files, tmp_path / "one", max_cutouts=cap, workers=1, **kw)
    two = sample_training_set(files, tmp_path / "two", max_cutouts=cap, workers=2, **kw)
    assert len(one) == len(two) == cap
    np.testing.assert_array_equal(one.provenance(), two.provenance())
    np.testing.assert_array_equal(one.rows[:], two.rows[:])
    assert one.set_id == two.set_id and one.meta["exposures"] == files and one.meta["seed"] == 7
    assert one.meta["stamps"]["stretch"] == "asinh" and one.meta["cutouts_seen"] == len(everything)
    # The capped set is a subset of the uncapped one, drawn from (nearly) every exposure.
    full = {tuple(r): i for i, r in enumerate(everything.provenance().tolist())}
    rows = [full[tuple(r)] for r in one.provenance().tolist()]
    np.testing.assert_array_equal(one.rows[:], everything.rows[np.array(rows)])
    assert len(set(one.provenance()[:, 0].tolist())) >= 6
    # Another seed draws another set.
    other = sample_training_set(files, tmp_path / "other", max_cutouts=cap, workers=0,
                                **{**kw, "seed": 8})
    assert not np.array_equal(other.provenance(), one.provenance())


@pytest.mark.django_db
def test_train_desom1_keeps_its_set_reuses_it_and_trains_again_from_it(science_files, imaging_config, tmp_path,
                                                                       settings, monkeypatch, one_torch_thread):
    from archive.models import ModelVersion
    from archive.services import training
    from desom.checkpoint import load_checkpoint

    settings.ARCHIVE_DATA_DIR = tmp_path / "data"
    settings.ARCHIVE_DETECTOR = "sep"
    kw = dict(paths=[str(p) for p in science_files[:4]], max_per_ccd=15, max_cutouts=80, seed=2, workers=0,
              progress=False, precision="float32", order_gate=False, activate=False,
              overrides={**TINY1, "map_rows": 3, "map_cols": 3, "iterations": 12})
    first = training.train_desom1(save_set=tmp_path / "set", **kw)
    ts_meta = json.loads((tmp_path / "set" / "set.json").read_text())
    assert ts_meta["n_cutouts"] == 80 and len(ts_meta["exposures"]) == 4 and ts_meta["seed"] == 2
    assert first.metrics["training_set"] == {"id": ts_meta["set_id"], "cutouts": 80, "path": str(tmp_path / "set")}
    assert first.config["extra"]["stamps"] == ts_meta["stamps"]
    # The archive's schedule is the study's: T_min 1, the learning rate decaying over the last third.
    assert first.config["t_min"] == training.DEFAULT_DESOM1["t_min"] == 1.0
    assert first.config["lr_decay_iterations"] == 12 // 3 and first.config["prototype_lr"] is None
    assert not any((tmp_path / "data" / "runs").iterdir())   # a finished run leaves no state behind

    # The same command again reuses the set instead of sampling.
    def no_sampling(*a, **k):
        raise AssertionError("sampled again")
    monkeypatch.setattr(training, "sample_training_set", no_sampling)
    again = training.train_desom1(save_set=tmp_path / "set", **kw)
    # And the set trains another map without the files: the same run gives the same weights.
    kw_set = {k: v for k, v in kw.items() if k not in ("paths", "max_per_ccd", "max_cutouts")}
    from_set = training.train_desom1(training_set=tmp_path / "set", **kw_set)
    files = [training.versions.checkpoint_file(v) for v in (first, again, from_set)]
    weights = [load_checkpoint(f).model.state_dict() for f in files]
    assert _same_state(weights[0], weights[1]) and _same_state(weights[0], weights[2])
    bigger = training.train_desom1(training_set=tmp_path / "set", **{**kw_set, "overrides": {**kw_set["overrides"],
                                                                                                 "map_rows": 4}})
    assert bigger.map_shape == (4, 3) and bigger.version_id != first.version_id
    # Runs finishing in the same second keep their own files: the first model is still readable.
    assert training.versions.checkpoint_file(bigger) not in files
    assert load_checkpoint(training.versions.checkpoint_file(first)).version_id == first.version_id
    assert ModelVersion.objects.filter(kind="desom1").count() >= 2

    with pytest.raises(training.TrainingDataError, match="another training set"):
        training.train_desom1(save_set=tmp_path / "set", **{**kw, "seed": 3})
    with pytest.raises(training.TrainingDataError, match="replaces"):
        training.train_desom1(training_set=tmp_path / "set", **kw)


@pytest.mark.django_db
def test_sample_cutouts_command_and_bad_sets_are_clear_errors(science_files, tmp_path, settings):
    from django.core.management import CommandError, call_command

    settings.ARCHIVE_DATA_DIR = tmp_path / "data"
    settings.ARCHIVE_DETECTOR = "sep"
    call_command("sample_cutouts", str(tmp_path / "s"), "--from", *[str(p) for p in science_files[:2]],
                 per_ccd=5, max_cutouts=12, workers=0, verbosity=0)
    meta = json.loads((tmp_path / "s" / "set.json").read_text())
    assert meta["n_cutouts"] == 12 and meta["max_per_ccd"] == 5
    with pytest.raises(CommandError, match="not empty"):
        call_command("sample_cutouts", str(tmp_path / "s"), "--from", str(science_files[0]), workers=0, verbosity=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CommandError, match="not a complete training set"):
        call_command("train_desom1", from_set=str(tmp_path / "empty"), verbosity=0)
    with pytest.raises(CommandError, match="replaces"):
        call_command("train_desom1", "--from", str(science_files[0]), from_set=str(tmp_path / "s"), verbosity=0)
    with pytest.raises(CommandError, match="checkpoint-every: must be a whole number"):
        call_command("train_desom2", "--checkpoint-every", "-1", verbosity=0)
    with pytest.raises(CommandError, match="checkpoint-every: must be a whole number"):
        call_command("train_desom1", "--checkpoint-every", "often", verbosity=0)
    for bad, message in ((["--per-ccd", "0"], "per CCD must be at least 1"),
                         (["--max-cutouts", "-3"], "max_cutouts must be at least 1")):
        with pytest.raises(CommandError, match=message):
            call_command("sample_cutouts", str(tmp_path / "bad"), "--from", str(science_files[0]), *bad,
                         workers=0, verbosity=0)
        with pytest.raises(CommandError, match=message):
            call_command("train_desom1", "--from", str(science_files[0]), *bad, workers=0, verbosity=0)
    assert not (tmp_path / "bad").exists()



@pytest.mark.django_db
def test_the_commands_record_whether_stamps_are_turned_and_refuse_a_set_cut_otherwise(science_files, tmp_path,
                                                                                        settings):
    from django.core.management import CommandError, call_command
    from archive.services import training
    from archive.services.training import DEFAULT_STAMPS

    settings.ARCHIVE_DATA_DIR = tmp_path / "data"
    settings.ARCHIVE_DETECTOR = "sep"
    call_command("sample_cutouts", str(tmp_path / "default"), "--from", str(science_files[0]),
                 per_ccd=3, max_cutouts=6, workers=0, verbosity=0)
    call_command("sample_cutouts", str(tmp_path / "other"), "--from", str(science_files[0]),
                 "--no-align-stamps" if DEFAULT_STAMPS["align"] else "--align-stamps",
                 per_ccd=3, max_cutouts=6, workers=0, verbosity=0)
    default = json.loads((tmp_path / "default" / "set.json").read_text())["stamps"]
    other = json.loads((tmp_path / "other" / "set.json").read_text())["stamps"]
    assert default["align"] is DEFAULT_STAMPS["align"] and other["align"] is not DEFAULT_STAMPS["align"]
    assert {k: v for k, v in other.items() if k != "align"} == {k: v for k, v in default.items() if k != "align"}
    with pytest.raises(CommandError, match="was cut with stamps"):
        call_command("train_desom1", from_set=str(tmp_path / "other"), verbosity=0,
                     align_stamps=DEFAULT_STAMPS["align"])
    assert training.same_stamps(DEFAULT_STAMPS, default) and not training.same_stamps(DEFAULT_STAMPS, other)
    # a set recorded before stamps could be turned was cut unturned
    unturned = {k: v for k, v in default.items() if k != "align"}
    assert training.same_stamps({**DEFAULT_STAMPS, "align": False}, unturned)
    assert not training.same_stamps({**DEFAULT_STAMPS, "align": True}, unturned)


def _write_synthetic_set(path, n=300, seed=0):
    from desom.trainset import BottomKSample, select_offer, write_training_set

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32] - 15.5
    sig = rng.uniform(1.5, 5.0, n)[:, None, None]
    cutouts = np.clip(np.exp(-(xx ** 2 + yy ** 2) / (2 * sig ** 2)) + rng.normal(0, 0.02, (n, 32, 32)), 0, 1)
    sample = BottomKSample(None, (32, 32))
    sample.offer(0, select_offer(cutouts.astype(np.float32), seed=0, source=0))
    return write_training_set(path, sample, {"set_id": f"synthetic-{n}-{seed}", "exposures": ["synthetic"],
                                             "stamps": {"stamp_sky": "kept", "stretch": "asinh"}, "failures": []})


@pytest.mark.slow
def test_a_killed_train_desom1_resumes_and_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    """Real processes: one run straight through; one killed with SIGKILL once it has written a
    checkpoint, then the same command again."""
    ts = _write_synthetic_set(tmp_path / "set")
    data = tmp_path / "data"
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(data), "DATABASE_URL": f"sqlite:///{data / 'train.sqlite3'}",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run(manage + ["migrate", "-v0"], env=env, check=True, cwd=REPO)
    command = manage + ["train_desom1", "--from-set", str(ts.path), "--map", "3x3", "--iterations", "300",
                        "--checkpoint-every", "10", "--precision", "float32", "--no-order-gate", "--no-activate",
                        "-v0"] + [arg for k, v in TINY1.items() for arg in ("--set", f"{k}={json.dumps(v)}")]

    def weights(stdout):
        path = re.search(r"saved to (\S+)", stdout).group(1)
        path = Path(path) if Path(path).is_absolute() else data / path
        return torch.load(path, weights_only=True)["state_dict"]

    straight = subprocess.run(command, env=env, check=True, cwd=REPO, capture_output=True, text=True).stdout
    assert "resumed an interrupted run" not in straight

    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    runs = data / "runs"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if any(runs.glob("desom1-*/progress.pt")):
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    out, _ = process.communicate()
    assert process.returncode == -signal.SIGKILL and "saved to" not in out, "the kill should land mid-training"

    resumed = subprocess.run(command, env=env, check=True, cwd=REPO, capture_output=True, text=True).stdout
    at = re.search(r"resumed an interrupted run at joint iteration (\d+)", resumed)
    assert at and 0 < int(at.group(1)) < 300
    assert _same_state(weights(straight), weights(resumed))
    assert not any(runs.iterdir())


@pytest.mark.django_db
def test_an_interrupted_train_desom2_resumes_to_the_same_weights(populated_archive, monkeypatch, one_torch_thread):
    from archive.services import training
    from desom import training as desom_training
    from desom.checkpoint import load_checkpoint

    kw = dict(overrides={"map_rows": 2, "map_cols": 2, "iterations": 40, "batch_size": 8}, seed=4,
              activate=False, progress=False, checkpoint_every=10)
    straight = training.train_desom2(**kw)

    real = desom_training.train_desom

    def stopped_after_a_checkpoint(*args, **kwargs):
        from desom import checkpoint as ck

        real_save = ck.save_checkpoint

        def save_then_stop(path, *a, **k):
            real_save(path, *a, **k)
            if k.get("training_state") and k["training_state"]["iteration"] >= 20:
                raise KeyboardInterrupt
        monkeypatch.setattr(ck, "save_checkpoint", save_then_stop)
        try:
            return real(*args, **kwargs)
        finally:
            monkeypatch.setattr(ck, "save_checkpoint", real_save)
    monkeypatch.setattr(desom_training, "train_desom", stopped_after_a_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        training.train_desom2(**kw)
    monkeypatch.setattr(desom_training, "train_desom", real)

    resumed = training.train_desom2(**kw)
    assert resumed.metrics["resumed_at"] == {"phase": "joint", "iteration": 20}
    assert straight.metrics["resumed_at"] is None
    a, b = (load_checkpoint(training.versions.checkpoint_file(v)) for v in (straight, resumed))
    assert _same_state(a.model.state_dict(), b.model.state_dict())
    assert a.normaliser.to_dict() == b.normaliser.to_dict()


@pytest.mark.django_db
def test_histo_matrix_and_assignment_read_the_database_a_chunk_at_a_time(populated_archive):
    from archive.models import CellAssignment, ExposureVector
    from archive.services.assign import assign_cells
    from archive.services.training import histo_matrix
    from archive import vectors

    desom1, desom2 = populated_archive
    ids, histos = histo_matrix(desom1, chunk_size=3)
    rows = ExposureVector.objects.filter(model_version=desom1, exposure__is_science=True).order_by("exposure__expnum")
    assert ids.tolist() == list(rows.values_list("exposure_id", flat=True))
    np.testing.assert_array_equal(histos, vectors.stack(rows.values_list("histo", flat=True)))
    assert histos.dtype == np.float32 and histos.flags.c_contiguous

    before = dict(CellAssignment.objects.filter(model_version=desom2).values_list("exposure_id", "cell"))
    assert set(before) == set(ids.tolist())
    CellAssignment.objects.filter(model_version=desom2).delete()
    assert assign_cells(desom2=desom2, chunk=5, progress=False) == len(ids)
    assert dict(CellAssignment.objects.filter(model_version=desom2).values_list("exposure_id", "cell")) == before
    assert assign_cells(desom2=desom2, chunk=5, progress=False) == 0            # nothing left to do
    assert assign_cells(desom2=desom2, chunk=4, recompute=True, progress=False) == len(ids)
    assert CellAssignment.objects.filter(model_version=desom2).count() == len(ids)
