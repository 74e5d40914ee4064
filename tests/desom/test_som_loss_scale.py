"""The SOM term as a weighted mean: the same pull, at a size that no longer grows with the
number of nodes the neighbourhood covers."""
import pytest
import torch

from desom.model import DESOMConfig
from desom.som import SOMLayer


def test_the_mean_som_loss_is_the_sum_divided_by_the_neighbourhood_weight():
    torch.manual_seed(0)
    som = SOMLayer(5, 5, 3)
    z = torch.randn(40, 3)
    with torch.no_grad():
        d = som(z)
    weights = som.neighbourhood(d.argmin(dim=1), 2.0)
    expected = ((weights * d).sum(dim=1) / weights.sum(dim=1)).mean()
    assert som.som_loss(d, 2.0, normalise=True) == pytest.approx(float(expected), rel=1e-6)
    assert som.som_loss(d, 2.0) == pytest.approx(float((weights * d).sum(dim=1).mean()), rel=1e-6)


def test_a_wide_neighbourhood_inflates_the_sum_but_not_the_mean():
    torch.manual_seed(0)
    small, large = SOMLayer(3, 3, 3), SOMLayer(9, 9, 3)
    for som in (small, large):
        with torch.no_grad():
            som.prototypes.zero_()
    z = torch.randn(64, 3)
    # With every prototype at the origin each distance is |z|^2: the sum grows with the nodes in
    # reach (9 against 81 at T = 10), the mean stays |z|^2.
    with torch.no_grad():
        sums = [float(s.som_loss(s(z), 10.0)) for s in (small, large)]
        means = [float(s.som_loss(s(z), 10.0, normalise=True)) for s in (small, large)]
    assert sums[1] / sums[0] > 5
    assert means[0] == pytest.approx(means[1], rel=1e-5)
    assert means[0] == pytest.approx(float((z ** 2).sum(dim=1).mean()), rel=1e-5)


def test_the_setting_is_checked_and_old_configs_read_as_the_sum():
    with pytest.raises(ValueError, match="som_loss"):
        DESOMConfig.desom2(som_loss="median")
    cfg = DESOMConfig.desom2(som_loss="mean")
    assert DESOMConfig.from_dict(cfg.to_dict()).som_loss == "mean"
    assert DESOMConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "som_loss"}).som_loss == "sum"
