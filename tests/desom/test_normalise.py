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


def test_smoothing_spreads_counts_over_map_neighbours_and_keeps_the_sum():
    from desom.normalise import map_smoothing_kernel
    k = map_smoothing_kernel((5, 5), 1.0)
    one = np.zeros(25)
    one[12] = 10.0                      # all counts in the centre node
    spread = one @ k
    assert spread.sum() == pytest.approx(10.0)
    assert spread[12] == spread.max() and spread[11] == pytest.approx(spread[13])
    assert spread[7] == pytest.approx(spread[11])           # row and column neighbours alike
    assert spread[0] < spread[6] < spread[12]


def test_smoothing_separates_sparse_histograms_of_nearby_densities():
    # Exposures from two nearby smooth densities over the map, 150 sources each: after
    # smoothing, exposures of different densities stand further apart relative to those of
    # the same density (the ratio without smoothing is near 1: shot noise hides the shift).
    rng = np.random.default_rng(3)
    r, c = np.divmod(np.arange(625), 25)

    def density(r0, c0):
        d = np.exp(-((r - r0) ** 2 + (c - c0) ** 2) / 40.0)
        return d / d.sum()

    X = np.vstack([rng.multinomial(150, density(8, 15), size=20),
                   rng.multinomial(150, density(10, 13), size=20)]).astype(np.float32)

    def separation(norm):
        Z = norm.fit(X).transform(X)
        within = np.linalg.norm(Z[:10] - Z[10:20], axis=1).mean()
        between = np.linalg.norm(Z[:20] - Z[20:], axis=1).mean()
        return between / within

    assert separation(HistoNormaliser("minmax", smooth_sigma=1.0)) > 1.15 * separation(HistoNormaliser("minmax"))


def test_smoothing_round_trips_and_checks_the_map():
    X = _histos()
    norm = HistoNormaliser("authors", smooth_sigma=1.5).fit(X)
    again = HistoNormaliser.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert again.smooth_sigma == 1.5 and again.map_shape == (25, 25)
    np.testing.assert_allclose(again.transform(X[:5]), norm.transform(X[:5]), rtol=1e-6)
    # A dict from before smoothing existed still loads, unsmoothed.
    old = norm.to_dict()
    del old["smooth_sigma"], old["map_shape"]
    assert HistoNormaliser.from_dict(old).smooth_sigma == 0.0
    with pytest.raises(ValueError, match="not a square map"):
        HistoNormaliser(smooth_sigma=1.0).fit(np.ones((3, 10)))
    with pytest.raises(ValueError, match="smooth_sigma"):
        HistoNormaliser(smooth_sigma=-1.0)


def test_hellinger_sees_the_shape_of_the_distribution_not_the_number_of_sources():
    X = _histos()
    norm = HistoNormaliser("hellinger").fit(X)
    Z = norm.transform(X[:5])
    np.testing.assert_allclose(Z, np.sqrt(X[:5] / X[:5].sum(axis=1, keepdims=True)), rtol=1e-5)
    # Each vector has unit length; ten times the sources with the same shape maps to the same point.
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(norm.transform(10 * X[:5]), Z, rtol=1e-5)
    # Euclidean distance there is sqrt(2) x the Hellinger distance of the two distributions.
    p, q = X[0] / X[0].sum(), X[1] / X[1].sum()
    hellinger = np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2))
    assert np.linalg.norm(Z[0] - Z[1]) == pytest.approx(np.sqrt(2) * hellinger, rel=1e-5)
    # An exposure without sources stays at the origin instead of becoming NaN.
    assert np.all(norm.transform(np.zeros((1, X.shape[1]))) == 0)
    again = HistoNormaliser.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_allclose(again.transform(X[:5]), Z)


@pytest.mark.parametrize("method", ["minmax", "authors", "hellinger", "sqrt_counts"])
def test_fitting_and_normalising_in_blocks_matches_the_whole_array(method):
    """An archive's vectors are fitted and normalised a block at a time (and in place): the
    result is the whole-array computation's."""
    X = _histos().astype(np.float32)
    whole = HistoNormaliser(method, smooth_sigma=0.7).fit(X, chunk=len(X))
    blocks = HistoNormaliser(method, smooth_sigma=0.7).fit(X, chunk=7)
    np.testing.assert_allclose(blocks.offset, whole.offset, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(blocks.scale, whole.scale, rtol=1e-12, atol=1e-12)
    expect = whole.transform(X, chunk=len(X))
    inplace = X.copy()
    assert blocks.transform(inplace, out=inplace, chunk=5) is inplace
    np.testing.assert_allclose(inplace, expect, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="float32"):
        whole.transform(X, out=np.zeros(X.shape, np.float64))
