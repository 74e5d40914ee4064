"""DESOM models and their config."""
import json

import pytest
import torch
from torch import nn

from desom.model import DESOMConfig, build_desom


def test_desom1_paper_defaults_and_shapes():
    cfg = DESOMConfig.desom1()
    assert (cfg.kind, cfg.input_shape, cfg.latent_dim, cfg.map_shape) == ("desom1", (1, 32, 32), 160, (25, 25))
    assert (cfg.t_max, cfg.t_min, cfg.gamma, cfg.iterations, cfg.batch_size) == (10.0, 0.5, 0.0075, 100000, 256)
    model = build_desom(cfg)
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        x_hat, z, d2 = model(x)
    assert x_hat.shape == (3, 1, 32, 32) and z.shape == (3, 160) and d2.shape == (3, 625)
    assert float(x_hat.min()) >= 0.0 and float(x_hat.max()) <= 1.0      # sigmoid output
    assert (d2 >= 0).all()
    # (N, 32, 32) cutouts are accepted as one channel
    assert model.encode(x[:, 0]).shape == (3, 160)
    assert model.map_shape == (25, 25) and model.n_nodes == 625


def test_desom1_architecture_follows_the_paper():
    model = build_desom(DESOMConfig.desom1())
    convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.encoder.modules()) == 3
    dense = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(128 * 4 * 4, 512), (512, 160)]
    assert sum(isinstance(m, nn.Upsample) for m in model.decoder.modules()) == 3
    assert isinstance(list(model.decoder.modules())[-1], nn.Sigmoid)


def test_desom2_shapes_and_layers():
    cfg = DESOMConfig.desom2()
    assert cfg.map_shape == (20, 20) and cfg.lr == pytest.approx(2e-3) and cfg.latent_dim == 100
    model = build_desom(cfg)
    dense = [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(625, 450), (450, 300), (300, 100)]
    x = torch.randn(5, 625)
    with torch.no_grad():
        x_hat, z, d2 = model(x)
    assert x_hat.shape == (5, 625) and z.shape == (5, 100) and d2.shape == (5, 400)
    assert (z >= 0).all()              # ReLU latent
    assert (x_hat < 0).any()           # linear output can go negative


def test_config_round_trip_and_overrides():
    cfg = DESOMConfig.desom1(map_rows=8, map_cols=10, gamma=0.1, schedule="linear", seed=3)
    d = cfg.to_dict()
    json.dumps(d)                      # plain data, fit for a checkpoint or a DB row
    back = DESOMConfig.from_dict(d)
    assert back == cfg
    assert back.map_shape == (8, 10)


@pytest.mark.parametrize("overrides,needle", [
    ({"schedule": "cosine"}, "schedule"),
    ({"t_min": 0}, "temperatures"),
    ({"map_rows": 0}, "map_rows"),
    ({"input_shape": (3, 32, 32)}, "input_shape"),
    ({"input_shape": (1, 30, 30)}, "divisible"),
    ({"kind": "desom3"}, "kind"),
    ({"checkpoint_every": -1}, "checkpoint_every"),
])
def test_invalid_config_is_rejected(overrides, needle):
    with pytest.raises(ValueError, match=needle):
        DESOMConfig.desom1(**overrides)


def test_unknown_config_field_is_rejected():
    d = DESOMConfig.desom2().to_dict()
    d["dropout"] = 0.5
    with pytest.raises(ValueError, match="dropout"):
        DESOMConfig.from_dict(d)


def test_build_is_seeded_and_leaves_global_rng_alone():
    cfg = DESOMConfig.desom2(seed=7)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_desom(cfg), build_desom(cfg)
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = build_desom(DESOMConfig.desom2(seed=8))
    assert not torch.equal(a.som.prototypes, c.som.prototypes)


def test_wrong_input_shape_names_the_shapes():
    model = build_desom(DESOMConfig.desom1(map_rows=2, map_cols=2))
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 32\).*got \(2, 1, 28, 28\)"):
        model.encode(torch.rand(2, 1, 28, 28))
    model2 = build_desom(DESOMConfig.desom2(map_rows=2, map_cols=2))
    with pytest.raises(ValueError, match="625"):
        model2.encode(torch.rand(2, 600))


def test_decoded_prototypes_are_images():
    model = build_desom(DESOMConfig.desom1(map_rows=2, map_cols=3))
    imgs = model.decoded_prototypes()
    assert imgs.shape == (6, 1, 32, 32)
