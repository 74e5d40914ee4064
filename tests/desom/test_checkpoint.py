"""Checkpoints: round trip, version ids, and refusal of foreign or mismatched files."""
import re

import numpy as np
import pytest
import torch

from desom.checkpoint import (CheckpointConfigError, CheckpointError, CheckpointKindError,
                              CheckpointVersionError, NotACheckpointError, load_checkpoint,
                              save_checkpoint)
from desom.inference import DesomPredictor
from desom.model import DESOMConfig, build_desom
from desom.normalise import HistoNormaliser
from desom.training import train_desom

TINY1 = dict(conv_filters=(4, 8, 8), dense_units=32, latent_dim=8, map_rows=3, map_cols=4,
             batch_size=16)


# Tiny models on a shared 2-core box: one torch thread (tests/desom/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_round_trip_gives_same_predictions(tmp_path):
    cfg = DESOMConfig.desom1(iterations=4, **TINY1)
    model = build_desom(cfg)
    x = np.random.default_rng(0).random((60, 32, 32), dtype=np.float32)
    train_desom(model, x, cfg, progress=False)
    vid = save_checkpoint(tmp_path / "m.pt", model, cfg, metrics={"qe": 0.5}, history=model.history)
    assert re.fullmatch(r"desom1-[0-9a-f]{10}-\d{8}T\d{6}Z", vid)
    ck = load_checkpoint(tmp_path / "m.pt", expected_kind="desom1", expected_config=cfg)
    assert ck.version_id == vid and ck.metrics == {"qe": 0.5} and ck.config == cfg
    assert len(ck.history) == len(model.history) and ck.created_at
    assert not ck.model.training
    a = DesomPredictor(model, precision="float32").predict(x, return_latent=True)
    b = DesomPredictor(ck, precision="float32").predict(x, return_latent=True)
    np.testing.assert_array_equal(a.bmu, b.bmu)
    np.testing.assert_array_equal(a.latent, b.latent)
    # same weights -> same hash part of the version id
    assert save_checkpoint(tmp_path / "again.pt", ck.model).split("-")[1] == vid.split("-")[1]


def test_normaliser_travels_with_desom2(tmp_path):
    cfg = DESOMConfig.desom2(map_rows=2, map_cols=3)
    model = build_desom(cfg)
    H = np.random.default_rng(1).poisson(3.0, (20, 625)).astype(np.float32)
    norm = HistoNormaliser("authors").fit(H)
    save_checkpoint(tmp_path / "d2.pt", model, cfg, normaliser=norm)
    ck = load_checkpoint(tmp_path / "d2.pt", expected_kind="desom2")
    assert ck.normaliser.method == "authors"
    np.testing.assert_array_equal(ck.normaliser.transform(H), norm.transform(H))
    pred = DesomPredictor(tmp_path / "d2.pt").predict_histos(H)
    assert pred.bmu.shape == (20,) and pred.bmu.max() < 6


def test_wrong_kind_is_refused(tmp_path):
    save_checkpoint(tmp_path / "d2.pt", build_desom(DESOMConfig.desom2(map_rows=2, map_cols=2)))
    with pytest.raises(CheckpointKindError, match="holds a desom2 model, expected desom1"):
        load_checkpoint(tmp_path / "d2.pt", expected_kind="desom1")
    with pytest.raises(CheckpointKindError):
        DesomPredictor(tmp_path / "d2.pt", expected_kind="desom1")


def test_config_mismatch_is_refused(tmp_path):
    cfg = DESOMConfig.desom1(**TINY1)
    save_checkpoint(tmp_path / "m.pt", build_desom(cfg), cfg)
    other = DESOMConfig.desom1(**{**TINY1, "map_rows": 5})
    with pytest.raises(CheckpointConfigError, match="map_rows"):
        load_checkpoint(tmp_path / "m.pt", expected_config=other)
    # weights that do not fit the stored config
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["config"]["latent_dim"] = 9
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointConfigError, match="weights do not fit"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(CheckpointConfigError, match="architecture"):
        save_checkpoint(tmp_path / "x.pt", build_desom(cfg), other)


def test_foreign_files_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NotACheckpointError, match="notes.txt"):
        load_checkpoint(tmp_path / "notes.txt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")
    with pytest.raises(NotACheckpointError, match="marker"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(NotACheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    cfg = DESOMConfig.desom1(**TINY1)
    save_checkpoint(tmp_path / "m.pt", build_desom(cfg), cfg)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointVersionError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")
    # every refusal is a CheckpointError, itself a ValueError
    assert issubclass(CheckpointKindError, CheckpointError) and issubclass(CheckpointError, ValueError)
