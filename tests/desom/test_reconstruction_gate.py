"""The reconstruction gate: a DESOM-2 autoencoder that collapsed to the mean input (the study met
one seed in three doing so, its cells then at chance) is caught without labels and retrained with
the next seed."""
import numpy as np
import pytest
import torch

from desom.metrics import (MIN_EXPLAINED_VARIANCE, CollapsedModelError, check_reconstruction,
                           explained_variance)
from desom.model import DESOMConfig, build_desom
from desom.training import RESTART_SEED_STEP, reconstruction_share, train_desom, train_until_it_reconstructs

CFG = dict(input_shape=(12,), hidden_dims=(24, 16), latent_dim=4, map_rows=2, map_cols=2,
           batch_size=32, iterations=1000, seed=0)


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, size=(4, 12))
    return (centres[rng.integers(0, 4, n)] + rng.normal(0, 0.03, (n, 12))).astype(np.float32)


def _collapse(model, data):
    """What the collapse looks like: the decoder answers the mean input whatever the code."""
    last = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.from_numpy(data.mean(axis=0)))
    return model


def test_explained_variance_is_one_for_a_copy_and_zero_for_the_mean():
    x = _data()
    assert explained_variance(x, x) == pytest.approx(1.0)
    assert explained_variance(x, np.tile(x.mean(axis=0), (len(x), 1))) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="do not vary"):
        explained_variance(np.ones((5, 3)), np.ones((5, 3)))
    with pytest.raises(CollapsedModelError, match="collapsed"):
        check_reconstruction(0.01)
    assert check_reconstruction(MIN_EXPLAINED_VARIANCE + 0.1) > MIN_EXPLAINED_VARIANCE


def test_a_trained_desom2_passes_and_a_collapsed_one_is_caught():
    x = _data()
    cfg = DESOMConfig.desom2(**CFG)
    model = build_desom(cfg)
    train_desom(model, x, cfg, progress=False)
    trained = reconstruction_share(model, x)
    assert trained > MIN_EXPLAINED_VARIANCE
    # The share must not depend on the model's train/eval state, and it must leave it as it was.
    model.train()
    assert reconstruction_share(model, x) == pytest.approx(trained) and model.training
    assert reconstruction_share(_collapse(model, x), x) < 0.05


def test_a_collapsed_seed_is_retrained_with_the_next_one():
    x = _data()
    seen = []

    def train_one(seed):
        seen.append(seed)
        cfg = DESOMConfig.desom2(**{**CFG, "seed": seed})
        model = build_desom(cfg)
        train_desom(model, x, cfg, progress=False)
        return _collapse(model, x) if len(seen) == 1 else model

    model, record = train_until_it_reconstructs(train_one, x, seed=7)
    assert seen == [7, 7 + RESTART_SEED_STEP]
    assert record["seed"] == 7 + RESTART_SEED_STEP and record["judged"]
    assert [a["seed"] for a in record["attempts"]] == seen
    assert record["attempts"][0]["explained_variance"] < 0.05 < MIN_EXPLAINED_VARIANCE < record["explained_variance"]


def test_every_attempt_collapsing_is_an_error_and_a_smoke_run_is_only_recorded():
    x = _data()

    def collapsed(seed):
        return _collapse(build_desom(DESOMConfig.desom2(**{**CFG, "seed": seed})), x)

    with pytest.raises(CollapsedModelError, match="every attempt collapsed"):
        train_until_it_reconstructs(collapsed, x, seed=0, attempts=2)
    model, record = train_until_it_reconstructs(collapsed, x, seed=0, judge=False)
    assert not record["judged"] and len(record["attempts"]) == 1 and record["explained_variance"] < 0.05
