"""SOM quality metrics on small hand-checked maps."""
import numpy as np
import pytest

from desom.metrics import (nearest_units, nmi, purity, quantization_error, som_scores,
                           topographic_error, topographic_error_from_units)


def test_quantization_error_by_hand():
    protos = np.array([[0.0, 0.0], [10.0, 0.0]])
    x = np.array([[3.0, 4.0], [10.0, 1.0]])      # distances 5 and 1
    assert quantization_error(x, protos) == pytest.approx(3.0)
    idx, d2 = nearest_units(x, protos, k=2)
    np.testing.assert_array_equal(idx, [[0, 1], [1, 0]])
    np.testing.assert_allclose(d2[:, 0], [25.0, 1.0])


def test_topographic_error_ordered_vs_twisted_line():
    x = np.linspace(0, 3, 61)[:, None]
    ordered = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert topographic_error(x, ordered, (1, 4)) == 0.0
    twisted = np.array([[0.0], [2.0], [1.0], [3.0]])
    assert topographic_error(x, twisted, (1, 4)) > 0.3


def test_topographic_error_neighbourhoods_on_non_square_map():
    # 2x3 map: 0=(0,0) 1=(0,1) 2=(0,2) 3=(1,0) 4=(1,1) 5=(1,2)
    first = np.array([0, 0, 0, 2])
    second = np.array([1, 3, 4, 3])    # edge, edge, diagonal, far
    assert topographic_error_from_units(first, second, (2, 3), 4) == pytest.approx(0.5)
    assert topographic_error_from_units(first, second, (2, 3), 8) == pytest.approx(0.25)
    # (0,2) and (1,0) would look adjacent if the row were taken as k % rows
    assert topographic_error_from_units([2], [3], (2, 3)) == 1.0


def test_purity_and_nmi():
    y = np.array(["a", "a", "b", "b", "b", "c"])
    c = np.array([0, 0, 0, 1, 1, 2])
    assert purity(y, c) == pytest.approx(5 / 6)
    assert purity(y, np.arange(6)) == 1.0
    assert nmi(y, y) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    assert nmi(rng.integers(0, 3, 3000), rng.integers(0, 5, 3000)) < 0.01


def test_som_scores_bundle():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [5.0, 0.0], [10.0, 0.0]])
    labels = rng.integers(0, 3, 300)
    x = centres[labels] + rng.normal(0, 0.3, (300, 2))
    s = som_scores(x, centres, (1, 3), labels)
    assert s["purity"] == 1.0 and s["nmi"] == pytest.approx(1.0)
    assert s["topographic_error"] == 0.0
    assert 0.2 < s["quantization_error"] < 0.6


def test_metric_input_errors():
    with pytest.raises(ValueError, match="dimension"):
        quantization_error(np.zeros((3, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        quantization_error(np.array([[np.nan, 0.0]]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="equal length"):
        purity([0, 1], [0])
    with pytest.raises(ValueError, match="fill a 3x3"):
        topographic_error(np.zeros((2, 2)), np.zeros((4, 2)), (3, 3))
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        topographic_error_from_units([0], [6], (2, 3))
