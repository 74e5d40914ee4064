"""Learning-rate decay over the last joint iterations (DESOMConfig.lr_decay_iterations)."""
import numpy as np
import pytest
import torch

import desom.training as training
from desom.model import DESOMConfig, build_desom
from desom.training import lr_factor, train_desom

TINY2 = dict(input_shape=(40,), hidden_dims=(32, 16), latent_dim=8, map_rows=3, map_cols=4,
             batch_size=32, log_every=5)


# Tiny models on a shared 2-core box: one torch thread (tests/desom/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(n=200, dim=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, dim)).astype(np.float32)


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_lr_factor_is_one_then_a_straight_line_down():
    assert [lr_factor(i, 10, 4) for i in range(10)] == [1.0] * 7 + [0.75, 0.5, 0.25]
    assert [lr_factor(i, 10, 0) for i in range(10)] == [1.0] * 10
    # more decay iterations than the phase has: the whole phase decays
    assert [lr_factor(i, 4, 100) for i in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_factor(12, 10, 4) == 0.0
    assert lr_factor(0, 0, 4) == 1.0


def test_config_validates_and_round_trips_the_decay():
    cfg = DESOMConfig.desom2(lr_decay_iterations=7, **TINY2)
    assert DESOMConfig.from_dict(cfg.to_dict()).lr_decay_iterations == 7
    # old checkpoints' configs have no such field: no decay
    d = cfg.to_dict()
    del d["lr_decay_iterations"]
    assert DESOMConfig.from_dict(d).lr_decay_iterations == 0
    assert "lr_decay_iterations" not in cfg.architecture()
    with pytest.raises(ValueError, match="lr_decay_iterations"):
        DESOMConfig.desom2(lr_decay_iterations=-1, **TINY2)


def test_training_steps_use_the_decayed_rates(monkeypatch):
    seen = []
    real = training.joint_step

    def spy(model, optimizer, *args, **kwargs):
        seen.append(tuple(g["lr"] for g in optimizer.param_groups))
        return real(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(training, "joint_step", spy)
    cfg = DESOMConfig.desom2(iterations=10, pretrain_iterations=3, lr=2e-3, prototype_lr=1e-2,
                             lr_decay_iterations=4, **TINY2)
    train_desom(build_desom(cfg), _data(), cfg, progress=False)
    want = [(2e-3 * f, 1e-2 * f) for f in [1.0] * 6 + [1.0, 0.75, 0.5, 0.25]]
    assert len(seen) == len(want)
    assert [x for pair in seen for x in pair] == pytest.approx([x for pair in want for x in pair])


def test_no_decay_leaves_training_unchanged_and_decay_changes_it():
    base = DESOMConfig.desom2(iterations=12, pretrain_iterations=3, seed=2, **TINY2)
    a, b, c = (build_desom(base) for _ in range(3))
    train_desom(a, _data(), base, progress=False)
    train_desom(b, _data(), DESOMConfig.from_dict({**base.to_dict(), "lr_decay_iterations": 0}),
                progress=False)
    train_desom(c, _data(), DESOMConfig.from_dict({**base.to_dict(), "lr_decay_iterations": 6}),
                progress=False)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


def test_resume_inside_the_decay_continues_exactly(tmp_path):
    cfg = DESOMConfig.desom2(iterations=12, pretrain_iterations=3, checkpoint_every=4,
                             lr_decay_iterations=6, **TINY2)
    full = build_desom(cfg)
    train_desom(full, _data(), cfg, progress=False, checkpoint_path=tmp_path / "ck-{phase}-{iteration}.pt")
    for stop in (4, 8):    # before the decay starts, and inside it
        resumed = build_desom(cfg)
        train_desom(resumed, _data(), cfg, progress=False,
                    resume_from=tmp_path / f"ck-joint-{stop}.pt")
        assert _same_weights(full, resumed)
