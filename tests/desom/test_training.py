"""Joint DESOM training on small synthetic data."""
import json

import numpy as np
import pytest
import torch

from desom.metrics import purity, topographic_error
from desom.model import DESOMConfig, build_desom
from desom.som import temperature
from desom.training import joint_step, train_desom

TINY1 = dict(conv_filters=(4, 8, 8), dense_units=32, latent_dim=8, map_rows=3, map_cols=4,
             batch_size=16, log_every=5)
TINY2 = dict(input_shape=(40,), hidden_dims=(32, 16), latent_dim=8, map_rows=3, map_cols=4,
             batch_size=32, log_every=10)


# Tiny models on a shared 2-core box: one torch thread (tests/desom/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cutouts(n=200, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32] - 15.5
    sig = rng.uniform(1.5, 5.0, n)[:, None, None]
    img = np.exp(-(xx ** 2 + yy ** 2) / (2 * sig ** 2)) + rng.normal(0, 0.02, (n, 32, 32))
    return np.clip(img, 0, 1).astype(np.float32)


def _clusters(n=600, n_clusters=4, dim=40, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (n_clusters, dim))
    labels = rng.integers(0, n_clusters, n)
    x = centres[labels] + rng.normal(0, 0.05, (n, dim))
    return x.astype(np.float32), labels


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("kind", ["desom1", "desom2"])
def test_joint_steps_lower_both_losses_on_a_fixed_batch(kind):
    if kind == "desom1":
        cfg, x = DESOMConfig.desom1(**TINY1), torch.from_numpy(_cutouts(32)[:, None])
    else:
        cfg, x = DESOMConfig.desom2(**TINY2), torch.from_numpy(_clusters(64)[0])
    model = build_desom(cfg)
    with torch.no_grad():
        model.som.init_prototypes(model.encode(x[:12]))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    # gamma large enough that the SOM term matters at this scale
    steps = [joint_step(model, opt, x, temp=2.0, gamma=0.5) for _ in range(25)]
    assert steps[-1]["reconstruction"] < steps[0]["reconstruction"]
    assert steps[-1]["som"] < steps[0]["som"]


def test_som_gradient_reaches_encoder_and_prototypes_not_decoder():
    cfg = DESOMConfig.desom2(**TINY2)
    model = build_desom(cfg)
    x = torch.from_numpy(_clusters(32)[0])
    z = model.encode(x)
    model.som.som_loss(model.som(z), 1.0).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters()
               if p.dim() > 1)
    assert model.som.prototypes.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.decoder.parameters())


def test_seeded_cpu_run_is_bit_for_bit_repeatable():
    cfg = DESOMConfig.desom1(iterations=6, pretrain_iterations=2, seed=5, **TINY1)
    data = _cutouts()
    runs = []
    for _ in range(2):
        model = build_desom(cfg)
        hist = train_desom(model, data, cfg, progress=False)
        runs.append((model, hist))
    assert _same_weights(runs[0][0], runs[1][0])
    assert runs[0][1].to_list() != [] and [r["loss"] for r in runs[0][1]] == [r["loss"] for r in runs[1][1]]
    other = build_desom(cfg)
    train_desom(other, data, DESOMConfig.desom1(iterations=6, pretrain_iterations=2, seed=6, **TINY1),
                progress=False)
    assert not _same_weights(runs[0][0], other)


def test_history_log_and_temperature_schedule(tmp_path):
    cfg = DESOMConfig.desom2(iterations=40, pretrain_iterations=10, **TINY2)
    x, _ = _clusters()
    log = tmp_path / "log.jsonl"
    hist = train_desom(build_desom(cfg), x, cfg, progress=True, log_path=log)
    lines = [json.loads(s) for s in log.read_text().splitlines()]
    assert lines == hist.to_list()
    assert [r["phase"] for r in lines] == ["pretrain"] + ["joint"] * 4
    joint = [r for r in lines if r["phase"] == "joint"]
    assert [r["iteration"] for r in joint] == [10, 20, 30, 40]
    for r in joint:
        assert r["temperature"] == pytest.approx(temperature(r["iteration"] - 1, 40, 10.0, 0.5))
        assert r["loss"] == pytest.approx(r["reconstruction"] + cfg.gamma * r["som"], rel=1e-5)
    assert joint[-1]["temperature"] == pytest.approx(0.5)


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    cfg = DESOMConfig.desom1(iterations=10, pretrain_iterations=3, checkpoint_every=5, **TINY1)
    data = _cutouts()
    full = build_desom(cfg)
    full_hist = train_desom(full, data, cfg, progress=False,
                            checkpoint_path=tmp_path / "ck-{phase}-{iteration}.pt")
    assert (tmp_path / "ck-joint-5.pt").exists() and (tmp_path / "ck-joint-10.pt").exists()
    resumed = build_desom(cfg)
    res_hist = train_desom(resumed, data, cfg, progress=False, resume_from=tmp_path / "ck-joint-5.pt")
    assert _same_weights(full, resumed)
    def drop(h):
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in h]

    assert drop(res_hist) == drop(full_hist)


def test_clustered_data_gives_pure_ordered_map():
    x, labels = _clusters(n=800, n_clusters=4)
    cfg = DESOMConfig.desom2(iterations=300, pretrain_iterations=100, gamma=0.05, t_max=2.0,
                             t_min=0.3, **TINY2)
    model = build_desom(cfg)
    train_desom(model, x, cfg, progress=False)
    with torch.no_grad():
        z = model.encode(torch.from_numpy(x)).numpy()
    protos = model.som.prototypes.detach().numpy()
    bmu = ((z[:, None, :] - protos[None]) ** 2).sum(-1).argmin(1)
    assert purity(labels, bmu) > 0.95
    assert topographic_error(z, protos, model.map_shape) < 0.2


def test_bad_training_input():
    cfg = DESOMConfig.desom1(iterations=2, **TINY1)
    model = build_desom(cfg)
    data = _cutouts(50)
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 32\).*\(50, 16, 16\)"):
        train_desom(model, data[:, :16, :16], cfg, progress=False)
    bad = data.copy()
    bad[7, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_desom(model, bad, cfg, progress=False)
    with pytest.raises(ValueError, match="at least 12 training samples"):
        train_desom(model, data[:5], cfg, progress=False)
    with pytest.raises(ValueError, match="architecture"):
        train_desom(model, data, DESOMConfig.desom1(iterations=2, **{**TINY1, "latent_dim": 9}),
                    progress=False)


def test_resume_needs_a_training_checkpoint(tmp_path):
    from desom.checkpoint import CheckpointError, save_checkpoint
    cfg = DESOMConfig.desom2(iterations=2, **TINY2)
    model = build_desom(cfg)
    save_checkpoint(tmp_path / "plain.pt", model, cfg)
    with pytest.raises(CheckpointError, match="no training state"):
        train_desom(model, _clusters()[0], cfg, progress=False, resume_from=tmp_path / "plain.pt")
