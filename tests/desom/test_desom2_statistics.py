"""The five source statistics beside the histo-vector (DESOM-2 features "histo+stats"): measured
by summarise_exposure from its own detections, scaled by the one FeatureScaler, carried by the
DESOM-2 normaliser through its checkpoint."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from desom.baseline import (FEATURE_NAMES, STATISTIC_NAMES, BaselineClusterer, FeatureScaler, SourceStatistics, statistics_matrix,
                            statistics_to_dict)
from desom.normalise import HistoNormaliser
from desom.pipeline import ImagingConfig, exposure_cutouts, summarise_exposure

_spec = importlib.util.spec_from_file_location("fitsfactory", Path(__file__).with_name("fitsfactory.py"))
ff = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ff)

SEP = ImagingConfig(detector="sep")


def _stats(n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(2.0, 0.3, n), rng.normal(4.0, 1.0, n), rng.normal(1.1, 0.05, n),
                         rng.uniform(0, 1, n), rng.normal(0.02, 0.01, n)])
    x[3, 1] = np.nan          # an unmeasurable shape
    x[5, :] = np.nan          # an exposure with nothing measurable
    return x


def test_the_scaler_fills_with_training_medians_and_standardises():
    x = _stats(50)
    scaler = FeatureScaler().fit(x)
    z = scaler.transform(x, dtype=np.float64)
    np.testing.assert_allclose(scaler.fill, np.nanmedian(x, axis=0))
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-9)
    # A row never measured lands on the medians, not on NaN.
    missing = scaler.transform(np.full((1, 5), np.nan), dtype=np.float64)[0]
    np.testing.assert_allclose(missing, (scaler.fill - scaler.mean) / scaler.std)
    # A constant column keeps unit scale instead of dividing by zero.
    flat = x.copy()
    flat[:, 2] = 1.0
    assert np.isfinite(FeatureScaler().fit(flat).transform(flat)).all()


def test_the_baseline_clusters_on_the_same_scaler():
    x = _stats(60, seed=1)
    clusterer = BaselineClusterer(3, seed=0, n_init=2).fit(x)
    np.testing.assert_array_equal(clusterer.transform(x), FeatureScaler().fit(x).transform(x, dtype=np.float64))


def test_statistics_go_to_json_and_back_with_none_for_nan():
    values = np.array([1.5, np.nan, 1.2, 0.1, np.nan])
    stored = statistics_to_dict(values)
    assert list(stored) == list(FEATURE_NAMES) and stored["fwhm_px"] is None
    back = statistics_matrix([stored, None, {"log_density": 2.0}])
    np.testing.assert_array_equal(back[0], values)
    assert np.isnan(back[1]).all() and back[2, 0] == 2.0 and np.isnan(back[2, 1:]).all()


def test_the_normaliser_puts_the_scaled_statistics_after_the_histo_and_survives_a_checkpoint(tmp_path):
    from desom.checkpoint import load_checkpoint, save_checkpoint
    from desom.model import DESOMConfig, build_desom

    rng = np.random.default_rng(3)
    histos = rng.poisson(3.0, (40, 16)).astype(np.float32)
    stats = _stats(40, seed=3)
    norm = HistoNormaliser.for_features("histo+stats", "hellinger").fit(histos, statistics=stats)
    z = norm.transform(histos, statistics=stats)
    assert z.shape == (40, 16 + 5) and norm.n_outputs == 21 and norm.features == "histo+stats"
    np.testing.assert_allclose(z[:, :16], HistoNormaliser("hellinger").fit(histos).transform(histos))
    np.testing.assert_allclose(z[:, 16:], FeatureScaler().fit(stats).transform(stats))

    with pytest.raises(ValueError, match="pass statistics"):
        norm.transform(histos)
    with pytest.raises(ValueError, match=r"\(40, 5\)"):
        norm.transform(histos, statistics=stats[:, :4])
    with pytest.raises(ValueError, match="histo-vectors only"):
        HistoNormaliser("hellinger").fit(histos).transform(histos, statistics=stats)

    config = DESOMConfig.desom2(input_shape=(21,), map_rows=2, map_cols=2, hidden_dims=(8,), latent_dim=4)
    save_checkpoint(tmp_path / "d2.pt", build_desom(config), config, normaliser=norm)
    loaded = load_checkpoint(tmp_path / "d2.pt").normaliser
    assert loaded.uses_statistics and loaded.features == "histo+stats"
    new_histos, new_stats = histos[:7] + 1, stats[:7] * 1.1
    np.testing.assert_array_equal(loaded.transform(new_histos, statistics=new_stats),
                                  norm.transform(new_histos, statistics=new_stats))


def test_a_normaliser_for_other_statistics_is_refused():
    histos = np.random.default_rng(0).poisson(3.0, (10, 4)).astype(np.float32)
    d = HistoNormaliser("minmax", statistics=True).fit(histos, statistics=_stats(10)).to_dict()
    d["statistics"]["names"] = list(reversed(FEATURE_NAMES))
    with pytest.raises(ValueError, match="none of this library's"):
        HistoNormaliser.from_dict(d)
    with pytest.raises(ValueError, match="unknown DESOM-2 features"):
        HistoNormaliser.for_features("stats")


def _write(path, fwhm, **kw):
    return ff.write_exposure(path, n_ccds=3, shape=(512, 256), layout="raw", seed=4,
                             sky_kw=dict(n_sources=120, fwhm=fwhm), **kw)


def test_summarise_exposure_measures_the_statistics_from_its_own_detections(tmp_path):
    sharp, soft = tmp_path / "1200001o.fits", tmp_path / "1200002o.fits"
    _write(sharp, 3.0)
    _write(soft, 6.0, header_kw=dict(expnum=1200002))
    a = summarise_exposure(sharp, None, SEP)
    b = summarise_exposure(soft, None, SEP)
    assert list(a.source_statistics) == list(STATISTIC_NAMES)
    # The FWHM statistic follows the injected seeing (pixels widen a sharp star a little).
    assert 3.0 <= a.source_statistics["fwhm_px"] <= 4.5
    assert b.source_statistics["fwhm_px"] == pytest.approx(6.0, rel=0.2)
    # The same values as the study's collector on the same detections (the hook, not a copy).
    collector = SourceStatistics(edge_margin=SEP.edge_margin)
    exposure_cutouts(str(sharp), SEP, on_detection=collector.on_detection, on_sample=collector.on_sample)
    assert a.source_statistics == statistics_to_dict(collector.statistics())
    assert "statistics" in a.timings
    assert summarise_exposure(sharp, None, SEP, source_statistics=False).source_statistics is None


def test_no_sources_gives_null_shapes_and_a_calibration_frame_none(tmp_path):
    empty = tmp_path / "1200003o.fits"
    ff.write_exposure(empty, n_ccds=2, shape=(512, 256), seed=1, empty_ccds=(0, 1))
    s = summarise_exposure(empty, None, SEP)
    assert s.n_detected == 0
    assert all(s.source_statistics[k] is None for k in ("fwhm_px", "elongation", "donut"))
    assert s.source_statistics["log_density"] == 0.0     # measured: no sources per megapixel
    dead = tmp_path / "1200004o.fits"
    ff.write_exposure(dead, n_ccds=2, shape=(512, 256), seed=1, dead_ccds=(0, 1))
    assert all(v is None for v in summarise_exposure(dead, None, SEP).source_statistics.values())
    bias = tmp_path / "1200005b.fits"
    ff.write_exposure(bias, n_ccds=2, shape=(512, 256), header_kw=dict(expnum=1200005, obstype="BIAS"))
    assert summarise_exposure(bias, None, SEP).source_statistics is None


def test_the_seven_statistics_travel_with_their_names_and_weight(tmp_path):
    from desom.baseline import STATISTIC_NAMES
    from desom.checkpoint import load_checkpoint, save_checkpoint
    from desom.model import DESOMConfig, build_desom

    rng = np.random.default_rng(2)
    histos = rng.poisson(3.0, (30, 16)).astype(np.float32)
    stats = np.hstack([_stats(30), rng.normal(-2.0, 0.3, (30, 2))])
    norm = HistoNormaliser.for_features("histo+stats+coherent", "hellinger", statistics_weight=0.4)
    z = norm.fit(histos, statistics=stats).transform(histos, statistics=stats)
    assert norm.statistics_names == STATISTIC_NAMES and z.shape == (30, 16 + 7)
    # the weight scales the standardised statistics' columns, and nothing else
    unweighted = HistoNormaliser.for_features("histo+stats+coherent", "hellinger").fit(histos, statistics=stats)
    np.testing.assert_allclose(z[:, 16:], 0.4 * unweighted.transform(histos, statistics=stats)[:, 16:], rtol=1e-6)
    np.testing.assert_array_equal(z[:, :16], unweighted.transform(histos, statistics=stats)[:, :16])
    with pytest.raises(ValueError, match=r"statistics must be \(30, 7\)"):
        norm.transform(histos, statistics=stats[:, :5])

    config = DESOMConfig.desom2(input_shape=(23,), map_rows=2, map_cols=2, hidden_dims=(8,), latent_dim=4)
    save_checkpoint(tmp_path / "d2.pt", build_desom(config), config, normaliser=norm)
    loaded = load_checkpoint(tmp_path / "d2.pt").normaliser
    assert loaded.features == "histo+stats+coherent" and loaded.statistics_weight == 0.4
    np.testing.assert_array_equal(loaded.transform(histos, statistics=stats), z)
    with pytest.raises(ValueError, match="statistics_weight must be positive"):
        HistoNormaliser("hellinger", statistics=True, statistics_weight=0.0)
