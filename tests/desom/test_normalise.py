"""Histo-vector normalisers (paper: per-bin min-max; authors' code: clip, z-score, standardise)."""
import json

import numpy as np
import pytest

from desom.normalise import HistoNormaliser


def _histos(seed=0, n=200, bins=625):
    rng = np.random.default_rng(seed)
    X = rng.poisson(rng.gamma(1.0, 3.0, size=bins), size=(n, bins)).astype(np.float32)
    X[:, 10] = 0.0          # an empty cell in every exposure
    X[:, 20] = 5.0          # a constant non-zero cell
    return X


def test_minmax_maps_each_bin_to_unit_interval():
    X = _histos()
    Xn = HistoNormaliser("minmax").fit_transform(X)
    assert Xn.dtype == np.float32 and Xn.shape == X.shape
    assert np.isfinite(Xn).all()
    varying = X.max(0) > X.min(0)
    np.testing.assert_allclose(Xn[:, varying].min(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(Xn[:, varying].max(0), 1.0, atol=1e-6)
    assert (Xn[:, 10] == 0).all() and (Xn[:, 20] == 0).all()   # constant bins: 0, not NaN


def test_minmax_does_not_clip_new_vectors():
    X = _histos()
    norm = HistoNormaliser().fit(X)
    new = X[:1].copy()
    new[0, 0] = X[:, 0].max() * 2 + 1
    assert norm.transform(new)[0, 0] > 1.0


def test_authors_variant_standardises_bins_and_clips_outliers():
    X = _histos(1)
    norm = HistoNormaliser("authors").fit(X)
    Xn = norm.transform(X)
    assert np.isfinite(Xn).all()
    varying = Xn.std(0) > 0
    np.testing.assert_allclose(Xn[:, varying].mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(Xn[:, varying].std(0), 1.0, atol=1e-3)
    # a huge spike in one bin is clipped at the vector's mean + 3 sigma before scaling
    spiked = X[:1].copy()
    spiked[0, 0] = 1e6
    very = X[:1].copy()
    very[0, 0] = 1e9
    assert norm.transform(spiked)[0, 0] == pytest.approx(norm.transform(very)[0, 0], rel=0.05)


@pytest.mark.parametrize("method", ["minmax", "authors"])
def test_round_trip_through_json(method):
    X = _histos(2)
    norm = HistoNormaliser(method).fit(X)
    back = HistoNormaliser.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert back.method == method and back.n_bins == 625
    np.testing.assert_array_equal(back.transform(X[:7]), norm.transform(X[:7]))


def test_bad_input_errors():
    X = _histos()
    with pytest.raises(ValueError, match="method"):
        HistoNormaliser("zscore")
    with pytest.raises(ValueError, match="not fitted"):
        HistoNormaliser().transform(X)
    norm = HistoNormaliser().fit(X)
    with pytest.raises(ValueError, match="600 bins.*625"):
        norm.transform(X[:, :600])
    bad = X[:3].copy()
    bad[1, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        norm.transform(bad)
    with pytest.raises(ValueError, match="NaN"):
        HistoNormaliser().fit(bad)
    with pytest.raises(ValueError, match="2-D"):
        norm.transform(np.zeros((2, 5, 5)))
    with pytest.raises(ValueError, match="positive scale"):
        HistoNormaliser.from_dict({"method": "minmax", "offset": [0.0], "scale": [0.0]})
