"""DESOM's PCA start: the prototypes begin as a grid over the encodings' two main axes, ordered
before training and the same whichever samples were drawn."""
import numpy as np
import pytest
import torch

from desom.metrics import topographic_error
from desom.model import DESOMConfig, build_desom
from desom.training import init_prototypes, pca_grid, train_desom


def _plane_data(n=2000, dim=12, seed=0):
    """Points spread over a 2-D plane (spreads 3 and 1) in `dim` dimensions, plus a little noise."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, 2)))
    coords = rng.normal(size=(n, 2)) * np.array([3.0, 1.0])
    return (coords @ basis.T + 5.0 + 0.01 * rng.normal(size=(n, dim))).astype(np.float32), basis


def test_the_grid_lies_on_the_two_main_axes_with_the_longer_side_on_the_first():
    z, basis = _plane_data()
    grid = pca_grid(torch.from_numpy(z), (6, 4)).numpy()
    assert grid.shape == (24, 12)
    assert np.allclose(grid.mean(axis=0), z.mean(axis=0), atol=1e-3)
    off_plane = (grid - z.mean(axis=0)) - (grid - z.mean(axis=0)) @ basis @ basis.T
    assert np.abs(off_plane).max() < 0.05
    cells = grid.reshape(6, 4, 12)
    down_rows = np.linalg.norm(cells[-1, 0] - cells[0, 0])     # 6 nodes along the wider axis
    across_cols = np.linalg.norm(cells[0, -1] - cells[0, 0])
    assert down_rows == pytest.approx(2 * 2.0 * 3.0, rel=0.1)   # +-2 sd of the spread-3 axis
    assert across_cols == pytest.approx(2 * 2.0 * 1.0, rel=0.1)


def test_the_grid_does_not_depend_on_the_order_or_draw_of_the_samples():
    z, _ = _plane_data()
    perm = np.random.default_rng(1).permutation(len(z))
    a = pca_grid(torch.from_numpy(z), (5, 5))
    b = pca_grid(torch.from_numpy(z[perm]), (5, 5))
    assert torch.allclose(a, b, atol=1e-4)


def test_a_pca_start_is_ordered_where_a_start_from_samples_is_not():
    z, _ = _plane_data()
    te = {}
    for init in ("samples", "pca"):
        cfg = DESOMConfig.desom2(input_shape=(12,), map_rows=6, map_cols=6, latent_dim=4, hidden_dims=(16,),
                                 iterations=1, batch_size=32, prototype_init=init)
        torch.manual_seed(0)
        model = build_desom(cfg)
        init_prototypes(model, z, np.random.default_rng(0), torch.device("cpu"))
        with torch.no_grad():
            latent = model.encode(torch.from_numpy(z)).numpy()
        te[init] = topographic_error(latent, model.som.prototypes.detach().numpy(), (6, 6))
    assert te["pca"] < 0.2 < te["samples"]


def test_a_desom_trains_from_a_pca_start_and_keeps_the_setting():
    z, _ = _plane_data(n=400)
    cfg = DESOMConfig.desom2(input_shape=(12,), map_rows=3, map_cols=3, latent_dim=4, hidden_dims=(16,),
                             iterations=20, batch_size=32, prototype_init="pca")
    model = build_desom(cfg)
    train_desom(model, z, cfg, progress=False)
    assert torch.isfinite(model.som.prototypes).all()
    assert DESOMConfig.from_dict(cfg.to_dict()).prototype_init == "pca"
    assert DESOMConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "prototype_init"}
                                 ).prototype_init == "samples"      # a checkpoint from before the option


def test_an_unknown_start_is_refused():
    with pytest.raises(ValueError, match="prototype_init"):
        DESOMConfig.desom2(prototype_init="random-walk")
