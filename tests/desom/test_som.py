"""SOM layer: grid geometry, neighbourhood kernel, temperature schedule, SOM loss."""
import math

import numpy as np
import pytest
import torch

from desom.som import (SOMLayer, gaussian_kernel, grid_coordinates, grid_distances,
                       squared_distances, temperature)


def test_grid_coordinates_are_row_major_on_a_non_square_map():
    coords = grid_coordinates(3, 5)
    assert coords.shape == (15, 2)
    assert tuple(coords[7]) == (1, 2)      # 7 = 1 * 5 + 2
    assert tuple(coords[14]) == (2, 4)
    assert tuple(coords[5]) == (1, 0)


@pytest.mark.parametrize("rows,cols", [(3, 5), (5, 3), (2, 7), (4, 4)])
def test_grid_distances_match_explicit_manhattan(rows, cols):
    d = grid_distances(rows, cols)
    cells = [(r, c) for r in range(rows) for c in range(cols)]   # enumeration order = node index
    expected = np.array([[abs(a[0] - b[0]) + abs(a[1] - b[1]) for b in cells] for a in cells])
    np.testing.assert_array_equal(d, expected)


def test_grid_distance_catches_row_from_rows_bug():
    # A known bug derives one coordinate with the row count (e.g. k % rows, k // rows); on a
    # 3x5 map unit 4 is (0, 4) and unit 5 is (1, 0): true distance 5.
    d = grid_distances(3, 5)
    assert d[4, 5] == 5
    assert d[0, 14] == 6
    buggy = abs(4 // 5 - 5 // 5) + abs(4 % 3 - 5 % 3)
    assert buggy != d[4, 5]


def test_kernel_values():
    assert gaussian_kernel(0.0, 2.0) == pytest.approx(1.0)
    assert gaussian_kernel(2.0, 2.0) == pytest.approx(math.exp(-1))
    assert gaussian_kernel(3.0, 0.5) == pytest.approx(math.exp(-36))
    t = gaussian_kernel(torch.tensor([0.0, 1.0]), 1.0)
    assert torch.allclose(t, torch.tensor([1.0, math.exp(-1)]))
    with pytest.raises(ValueError, match="temperature"):
        gaussian_kernel(1.0, 0.0)


def test_temperature_schedules():
    n, tmax, tmin = 101, 10.0, 0.5
    assert temperature(0, n, tmax, tmin) == pytest.approx(10.0)
    assert temperature(n - 1, n, tmax, tmin) == pytest.approx(0.5)
    assert temperature(50, n, tmax, tmin) == pytest.approx(math.sqrt(10 * 0.5))
    assert temperature(50, n, tmax, tmin, "linear") == pytest.approx(5.25)
    assert temperature(77, n, tmax, tmin, "constant") == pytest.approx(10.0)
    ts = [temperature(i, n, tmax, tmin) for i in range(n)]
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert temperature(500, n, tmax, tmin) == pytest.approx(0.5)   # past the end stays at Tmin
    with pytest.raises(ValueError, match="schedule"):
        temperature(0, n, tmax, tmin, "cosine")


def test_neighbourhood_weights_on_non_square_map():
    som = SOMLayer(3, 5, latent_dim=2)
    bmu = torch.tensor([4, 10])
    w = som.neighbourhood(bmu, 2.0)
    assert w.shape == (2, 15)
    # unit 4 = (0, 4); unit 10 = (2, 0): distance 2 + 4 = 6
    assert w[0, 10].item() == pytest.approx(math.exp(-36 / 4), rel=1e-5)
    assert w[1, 10].item() == pytest.approx(1.0)
    assert w[1, 11].item() == pytest.approx(math.exp(-1 / 4), rel=1e-5)
    assert not w.requires_grad


def test_squared_distances_match_direct_computation():
    g = torch.Generator().manual_seed(0)
    z, m = torch.randn(6, 4, generator=g), torch.randn(9, 4, generator=g)
    expected = ((z[:, None, :] - m[None, :, :]) ** 2).sum(-1)
    assert torch.allclose(squared_distances(z, m), expected, atol=1e-5)


def test_som_loss_value_and_gradient_paths():
    som = SOMLayer(2, 3, latent_dim=2)
    with torch.no_grad():
        som.prototypes.copy_(torch.tensor([[0., 0.], [1., 0.], [2., 0.], [0., 1.], [1., 1.], [2., 1.]]))
    z = torch.tensor([[0.1, 0.0], [2.0, 0.9]], requires_grad=True)
    d2 = som(z)
    temp = 1.5
    loss = som.som_loss(d2, temp)
    gd = torch.from_numpy(grid_distances(2, 3)).float()
    bmu = torch.tensor([0, 5])
    w = torch.exp(-gd[bmu] ** 2 / temp ** 2)
    expected = (w * d2.detach()).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert som.prototypes.grad is not None and som.prototypes.grad.abs().sum() > 0


def test_init_prototypes_checks_shape():
    som = SOMLayer(2, 2, latent_dim=3)
    enc = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    som.init_prototypes(enc)
    assert torch.equal(som.prototypes.detach(), enc)
    with pytest.raises(ValueError, match="encodings"):
        som.init_prototypes(torch.zeros(3, 3))
