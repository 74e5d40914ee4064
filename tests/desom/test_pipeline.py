"""summarise_exposure and sample_training_cutouts on exposures laid out as the archive's."""
import hashlib
import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from desom.inference import DesomPredictor
from desom.model import DESOMConfig, build_desom
from desom.pipeline import (ExposureReadError, ExposureSummary, ImagingConfig,
                            sample_training_cutouts, summarise_exposure)

_spec = importlib.util.spec_from_file_location("fitsfactory", Path(__file__).with_name("fitsfactory.py"))
ff = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ff)

SHAPE = (512, 256)
SEP = ImagingConfig(detector="sep")


@pytest.fixture(scope="module")
def predictor():
    return DesomPredictor(build_desom(DESOMConfig.desom1(map_rows=5, map_cols=5)))


@pytest.fixture(scope="module")
def exposure(tmp_path_factory):
    p = tmp_path_factory.mktemp("pipe") / "1100001o.fits.fz"
    truth = ff.write_exposure(p, n_ccds=4, shape=SHAPE, layout="raw", compression="fz",
                              seed=21, sky_kw=dict(n_sources=150))
    return p, truth


@pytest.mark.parametrize("detector", ["photutils", "sep"])
def test_histo_vector_sums_to_sources_detected_with_sampling(exposure, predictor, detector):
    path, _ = exposure
    config = ImagingConfig(detector=detector, max_per_ccd=25)
    s = summarise_exposure(path, predictor, config)
    assert isinstance(s, ExposureSummary) and s.is_science and s.detector == detector
    assert len(s.ccds) == 4 and all(c.status == "ok" for c in s.ccds)
    assert all(c.n_detected > 25 and c.n_sampled == 25 for c in s.ccds)
    for c in s.ccds:
        assert c.weight == pytest.approx(c.n_detected / 25)
    assert s.n_detected == sum(c.n_detected for c in s.ccds)
    assert s.n_sampled == 100 and s.weight == pytest.approx(s.n_detected / 100)
    assert s.histo.dtype == np.float32 and s.histo.shape == (25,)
    assert s.histo.sum() == pytest.approx(s.n_detected, rel=1e-5)
    assert s.density_map.shape == (5, 5) and s.map_shape == (5, 5)
    assert s.activations.shape == (25,) and s.activations.sum() == pytest.approx(1.0, abs=1e-4)
    assert s.model_version is None
    for key in ("open", "checksum", "read", "prepare", "background", "detection", "cutouts",
                "inference", "total"):
        assert s.timings[key] >= 0.0
    assert s.checksum == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert s.file_size == Path(path).stat().st_size
    assert not s.warnings


def test_detections_match_the_injected_sources(exposure):
    path, truth = exposure
    s = summarise_exposure(path, None, SEP)
    assert s.histo is None and s.activations is None
    for record, k in zip(s.ccds, range(4)):
        t = truth[k]
        inside = ((t.x >= 37) & (t.x <= SHAPE[1] - 38) & (t.y >= 37) & (t.y <= SHAPE[0] - 38))
        # blends and faint sources make the count a little lower than the truth
        assert 0.7 * inside.sum() <= record.n_detected <= inside.sum() + 3


def test_summary_is_deterministic_and_picklable(exposure, predictor):
    path, _ = exposure
    config = ImagingConfig(detector="sep", max_per_ccd=20, seed=5)
    a = summarise_exposure(path, predictor, config)
    b = summarise_exposure(path, pickle.loads(pickle.dumps(predictor)),
                           pickle.loads(pickle.dumps(config)))
    np.testing.assert_array_equal(a.histo, b.histo)
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(c.histo, a.histo)
    assert c.metadata == a.metadata and c.ccds == a.ccds
    d = json.loads(json.dumps(a.to_dict()))
    assert d["histo"] == pytest.approx(a.histo.tolist()) and d["n_detected"] == a.n_detected
    assert d["metadata"]["release_date"] == "2011-03-15" and len(d["ccds"]) == 4
    other_seed = summarise_exposure(path, predictor, ImagingConfig(detector="sep", max_per_ccd=20, seed=6))
    assert other_seed.n_detected == a.n_detected
    assert other_seed.histo.sum() == pytest.approx(a.histo.sum(), rel=1e-5)


@pytest.mark.parametrize("n_ccds,layout,detector", [(36, "raw", "sep"), (40, "processed", "photutils")])
def test_full_focal_planes(tmp_path, predictor, n_ccds, layout, detector):
    p = tmp_path / f"e{n_ccds}.fits"
    ff.write_exposure(p, n_ccds=n_ccds, shape=(256, 128), layout=layout, seed=n_ccds,
                      sky_kw=dict(n_sources=15))
    s = summarise_exposure(p, predictor, ImagingConfig(detector=detector))
    assert s.metadata.n_ccds == n_ccds and len(s.ccds) == n_ccds
    assert [c.extname for c in s.ccds] == [f"ccd{k:02d}" for k in range(n_ccds)]
    assert s.n_detected > n_ccds
    assert s.histo.sum() == pytest.approx(s.n_detected, rel=1e-5)


def test_dead_nan_and_empty_ccds_are_warnings(tmp_path, predictor):
    for layout in ("raw", "processed"):
        p = tmp_path / f"bad_{layout}.fits"
        ff.write_exposure(p, n_ccds=4, shape=SHAPE, layout=layout, dead_ccds=[1], nan_ccds=[2],
                          empty_ccds=[3])
        s = summarise_exposure(p, predictor, SEP)
        status = [c.status for c in s.ccds]
        assert status == ["ok", "dead", "all_nan", "no_sources"]
        assert any("ccd01" in w and "flat" in w for w in s.warnings)
        assert any("ccd02" in w and "NaN" in w for w in s.warnings)
        assert any("ccd03" in w and "no sources" in w for w in s.warnings)
        assert s.n_detected == s.ccds[0].n_detected > 0
        assert s.histo.sum() == pytest.approx(s.n_detected, rel=1e-5)


def test_exposure_without_sources(tmp_path, predictor):
    p = tmp_path / "blank.fits.gz"
    ff.write_exposure(p, n_ccds=2, shape=SHAPE, layout="processed", compression="gz",
                      empty_ccds=[0, 1])
    s = summarise_exposure(p, predictor, SEP)
    assert s.n_detected == 0 and s.n_sampled == 0
    assert np.all(s.histo == 0) and s.activations is None
    assert "no sources detected in the exposure" in s.warnings


def test_calibration_frame_gives_metadata_only(tmp_path, predictor):
    p = tmp_path / "flat.fits"
    ff.write_exposure(p, n_ccds=2, shape=SHAPE, header_kw=dict(obstype="FLAT"))
    s = summarise_exposure(p, predictor)
    assert not s.is_science and s.metadata.obstype == "FLAT"
    assert s.ccds == [] and s.histo is None and s.n_detected == 0
    assert s.checksum is not None
    assert sample_training_cutouts(p).shape == (0, 32, 32)


def test_missing_obstype_is_treated_as_science_with_a_warning(tmp_path):
    p = tmp_path / "noobstype.fits"
    ff.write_exposure(p, n_ccds=1, shape=SHAPE, header_kw=dict(drop=("OBSTYPE", "EXPTYPE")))
    s = summarise_exposure(p, None, SEP)
    assert s.is_science and s.n_detected > 0
    assert any("OBSTYPE" in w for w in s.warnings)


def test_bad_files_raise_a_clear_error(tmp_path):
    p = tmp_path / "trunc.fits"
    ff.write_exposure(p, n_ccds=3, shape=SHAPE)
    ff.truncate(p, 0.5)
    with pytest.raises(ExposureReadError) as err:
        summarise_exposure(p, None, SEP)
    assert str(p) in str(err.value) and "ccd0" in str(err.value)
    q = tmp_path / "text.fits"
    q.write_text("SIMPLE = nope\n" * 300)
    with pytest.raises(ExposureReadError, match="text.fits"):
        summarise_exposure(q)


def test_training_cutouts(exposure):
    path, _ = exposure
    cut = sample_training_cutouts(path, max_per_ccd=30, seed=1, config=SEP)
    assert cut.shape == (120, 32, 32) and cut.dtype == np.float32
    assert cut.min() >= 0 and cut.max() <= 1 and np.isfinite(cut).all()
    again = sample_training_cutouts(path, max_per_ccd=30, seed=1, config=SEP)
    np.testing.assert_array_equal(cut, again)
    other = sample_training_cutouts(path, max_per_ccd=30, seed=2, config=SEP)
    assert not np.array_equal(cut, other)
    everything = sample_training_cutouts(path, max_per_ccd=None, config=SEP)
    assert everything.shape[0] == summarise_exposure(path, None, SEP).n_detected


def test_ccd_subset(exposure):
    path, _ = exposure
    s = summarise_exposure(path, None, ImagingConfig(detector="sep", ccds=(1, 3)))
    assert [c.extname for c in s.ccds] == ["ccd01", "ccd03"]
    with pytest.raises(ValueError, match="out of range"):
        summarise_exposure(path, None, ImagingConfig(detector="sep", ccds=(9,)))


def test_config_validation_and_round_trip():
    c = ImagingConfig(detector="sep", max_per_ccd=50, clip_percentiles=[2, 98], ccds=[0, 1])
    assert ImagingConfig.from_dict(c.to_dict()) == c
    for bad in (dict(detector="sextractor"), dict(max_per_ccd=0), dict(threshold_sigma=0),
                dict(clip_percentiles=(95, 1)), dict(edge_margin=5)):
        with pytest.raises(ValueError):
            ImagingConfig(**bad)


def test_rejects_a_desom2_predictor(exposure):
    path, _ = exposure
    p2 = DesomPredictor(build_desom(DESOMConfig.desom2(map_rows=3, map_cols=3)))
    with pytest.raises(ValueError, match="DESOM-1"):
        summarise_exposure(path, p2, SEP)


def test_a_failing_ccd_does_not_stop_the_exposure(exposure, monkeypatch):
    """Failure injection: detection raising on one CCD leaves a warning, the rest is done."""
    import desom.pipeline as pipeline

    real = pipeline.detect_sources
    calls = []

    def flaky(data, config, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected failure")
        return real(data, config, **kw)

    monkeypatch.setattr(pipeline, "detect_sources", flaky)
    path, _ = exposure
    s = summarise_exposure(path, None, SEP)
    assert [c.status for c in s.ccds] == ["ok", "error", "ok", "ok"]
    assert any("ccd01" in w and "injected failure" in w for w in s.warnings)
    assert s.n_detected == sum(c.n_detected for c in s.ccds) > 0
