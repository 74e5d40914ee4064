"""A warm-up of the SOM term's weight (DESOMConfig.gamma_warmup_iterations): gamma rises over the
first joint iterations instead of arriving whole at the first one (bench_desom2_collapse)."""
import numpy as np
import pytest
import torch

import desom.training as training
from desom.model import DESOMConfig, build_desom
from desom.training import gamma_at, train_desom

TINY2 = dict(input_shape=(40,), hidden_dims=(32, 16), latent_dim=8, map_rows=3, map_cols=4,
             batch_size=32, log_every=1)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n=200, dim=40, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, dim)).astype(np.float32)


def test_gamma_rises_in_a_straight_line_then_stays():
    assert [gamma_at(i, 0.8, 4) for i in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8, 0.8])
    assert [gamma_at(i, 0.8, 0) for i in range(3)] == [0.8, 0.8, 0.8]
    # the first step already has a (small) pull: a zero gamma would train a plain autoencoder
    assert 0 < gamma_at(0, 0.8, 1000) < 0.001


def test_the_setting_is_checked_and_old_configs_read_as_no_warmup():
    with pytest.raises(ValueError, match="gamma_warmup_iterations"):
        DESOMConfig.desom2(gamma_warmup_iterations=-1, **TINY2)
    cfg = DESOMConfig.desom2(gamma_warmup_iterations=5, **TINY2)
    assert DESOMConfig.from_dict(cfg.to_dict()).gamma_warmup_iterations == 5
    d = cfg.to_dict()
    del d["gamma_warmup_iterations"]
    assert DESOMConfig.from_dict(d).gamma_warmup_iterations == 0
    assert "gamma_warmup_iterations" not in cfg.architecture()


def test_training_steps_use_the_rising_gamma_and_the_history_records_it(monkeypatch):
    seen = []
    real = training.joint_step

    def spy(model, optimizer, x, temp, gamma, *args, **kwargs):
        seen.append(gamma)
        return real(model, optimizer, x, temp, gamma, *args, **kwargs)

    monkeypatch.setattr(training, "joint_step", spy)
    cfg = DESOMConfig.desom2(iterations=8, pretrain_iterations=2, gamma=0.04,
                             gamma_warmup_iterations=4, **TINY2)
    history = train_desom(build_desom(cfg), _data(), cfg, progress=False)
    want = [0.01, 0.02, 0.03, 0.04, 0.04, 0.04, 0.04, 0.04]
    assert seen == pytest.approx(want)
    assert list(history.column("gamma")) == pytest.approx(want)
    assert all(r["gamma"] is None for r in history if r["phase"] == "pretrain")


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_warmup_changes_training_and_none_leaves_it_as_it_was():
    base = DESOMConfig.desom2(iterations=10, seed=3, **TINY2)
    a, b, c = (build_desom(base) for _ in range(3))
    train_desom(a, _data(), base, progress=False)
    train_desom(b, _data(), DESOMConfig.from_dict({**base.to_dict(), "gamma_warmup_iterations": 0}),
                progress=False)
    train_desom(c, _data(), DESOMConfig.from_dict({**base.to_dict(), "gamma_warmup_iterations": 6}),
                progress=False)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)
