"""Source detection: positions of injected sources, thresholds, masks, both backends."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from desom.detection import detect_sources, detector_names, smoothing_kernel
from desom.pipeline import ImagingConfig

_spec = importlib.util.spec_from_file_location("fitsfactory", Path(__file__).with_name("fitsfactory.py"))
ff = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ff)


def grid_sources(shape, step=48, margin=40, seed=0):
    """Isolated sources on a jittered grid with sub-pixel positions."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[margin:shape[0] - margin:step, margin:shape[1] - margin:step]
    x = xs.ravel() + rng.uniform(-0.5, 0.5, xs.size)
    y = ys.ravel() + rng.uniform(-0.5, 0.5, ys.size)
    return x, y


@pytest.mark.parametrize("backend", detector_names())
def test_injected_point_sources_found_at_their_positions(backend):
    shape = (512, 384)
    x, y = grid_sources(shape)
    img, truth = ff.ccd_sky(0, shape, seed=5, positions=(x, y), fluxes=np.full(x.size, 2e4),
                            fwhm=3.5)
    res = detect_sources(img, ImagingConfig(detector=backend))
    assert res.backend == backend
    dist, _ = cKDTree(np.c_[res.x, res.y]).query(np.c_[truth.x, truth.y])
    assert np.all(dist < 1.0), dist.max()
    assert np.median(dist) < 0.2
    assert len(res) == x.size          # nothing spurious on clean noise
    assert res.background == pytest.approx(1200.0, abs=3.0)
    assert res.background_rms == pytest.approx(20.0, rel=0.1)
    assert np.all(res.n_pixels >= 5)


@pytest.mark.parametrize("backend", detector_names())
def test_pure_noise_gives_no_sources_and_faint_sources_are_missed(backend):
    shape = (384, 384)
    img, _ = ff.ccd_sky(1, shape, seed=2, n_sources=0)
    assert len(detect_sources(img, backend=backend)) <= 1
    # A source whose smoothed peak is well below 2 sigma is not detected; a bright one is.
    x, y = np.array([100.0, 280.0]), np.array([190.0, 190.0])
    img, _ = ff.ccd_sky(1, shape, seed=2, positions=(x, y), fluxes=np.array([60.0, 8000.0]))
    res = detect_sources(img, backend=backend)
    assert len(res) == 1 and abs(res.x[0] - 280.0) < 1.0


def test_backends_agree_on_a_random_field():
    img, truth = ff.ccd_sky(2, (1024, 512), seed=9, n_sources=400)
    a = detect_sources(img, backend="photutils")
    b = detect_sources(img, backend="sep")
    assert abs(len(a) - len(b)) <= 0.03 * len(a)
    dist, _ = cKDTree(np.c_[b.x, b.y]).query(np.c_[a.x, a.y])
    assert np.mean(dist < 0.5) > 0.95


@pytest.mark.parametrize("backend", detector_names())
def test_nan_region_is_masked(backend):
    shape = (512, 384)
    x, y = grid_sources(shape, seed=1)
    img, truth = ff.ccd_sky(3, shape, seed=1, positions=(x, y), fluxes=np.full(x.size, 2e4))
    img[:, :150] = np.nan
    res = detect_sources(img, backend=backend)
    assert np.isfinite(res.x).all() and np.isfinite(res.background)
    assert not np.any(res.x < 150 - 2)          # nothing inside the NaN block
    visible = truth.x > 160
    dist, _ = cKDTree(np.c_[res.x, res.y]).query(np.c_[truth.x[visible], truth.y[visible]])
    assert np.all(dist < 1.0)
    assert np.isnan(res.subtracted[:, :150]).all()


@pytest.mark.parametrize("backend", detector_names())
def test_saturated_star_found_once_and_background_unbiased(backend):
    shape = (512, 384)
    img, _ = ff.ccd_sky(4, shape, seed=4, n_sources=0)
    ff.add_gaussians(img, np.array([190.0]), np.array([250.0]), np.array([5e6]), 3.5)
    saturated = img >= 60000
    img[saturated] = 60000
    assert saturated.sum() > 20
    res = detect_sources(img, backend=backend, saturated=saturated)
    assert len(res) == 1
    assert abs(res.x[0] - 190) < 1 and abs(res.y[0] - 250) < 1
    assert res.background == pytest.approx(1200.0, abs=5.0)


def test_crowded_field_with_sep():
    shape = (1024, 1024)
    img, truth = ff.ccd_sky(5, shape, seed=5, n_sources=6000, flux_range=(2e3, 2e5))
    res = detect_sources(img, ImagingConfig(detector="sep", deblend=True))
    assert not res.warnings
    assert len(res) > 2000


@pytest.mark.parametrize("backend", detector_names())
def test_deblending_splits_a_close_pair(backend):
    shape = (256, 256)
    x, y = np.array([120.0, 128.0]), np.array([128.0, 128.0])
    img, _ = ff.ccd_sky(6, shape, seed=6, positions=(x, y), fluxes=np.array([3e4, 3e4]))
    merged = detect_sources(img, ImagingConfig(detector=backend, deblend=False))
    assert len(merged) == 1 and abs(merged.x[0] - 124) < 1
    split = detect_sources(img, ImagingConfig(detector=backend, deblend=True))
    if backend == "photutils" and importlib.util.find_spec("skimage") is None:
        # photutils deblends with scikit-image's watershed: without it, a clear warning
        assert len(split) == 1 and "scikit-image" in split.warnings[0]
        return
    assert len(split) == 2
    assert sorted(np.round(split.x)) == pytest.approx([120, 128], abs=1)


def test_edge_mask_and_kernel():
    from desom.detection import DetectionResult
    shape = (300, 200)    # inside: 37 <= x <= 200 - 1 - 37 = 162
    x = np.array([36.9, 37.0, 100.0, 162.0, 162.1, 100.0])
    y = np.array([150.0, 150.0, 150.0, 150.0, 150.0, 262.5])
    res = DetectionResult(x=x, y=y, n_pixels=np.full(6, 9), flux=np.ones(6), background=0.0,
                          background_rms=1.0, subtracted=None, backend="sep")
    assert list(res.inside(shape, 37)) == [False, True, True, True, False, False]
    k = smoothing_kernel(3.0, 7)
    assert k.shape == (7, 7) and k.sum() == pytest.approx(1.0, abs=1e-6)
    assert k[3, 3] == k.max() and np.allclose(k, k.T)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown detector .sextractor.; choose one of"):
        detect_sources(np.zeros((64, 64)), backend="sextractor")
    with pytest.raises(ValueError, match="2-D"):
        detect_sources(np.zeros(64))


def test_fast_background_map_equals_photutils_own():
    """The separable upsampling used for speed gives photutils' own full-size maps."""
    import warnings
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, SExtractorBackground, StdBackgroundRMS

    from desom.detection import _upsample_mesh

    img, _ = ff.ccd_sky(8, (700, 300), seed=8, n_sources=80)
    img += np.linspace(0, 200, 300, dtype=np.float32)[None, :]
    img += np.linspace(0, 80, 700, dtype=np.float32)[:, None] ** 1.5 / 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bkg = Background2D(img, 64, filter_size=3, sigma_clip=SigmaClip(sigma=3.0, maxiters=10),
                           bkg_estimator=SExtractorBackground(),
                           bkg_rms_estimator=StdBackgroundRMS())
        reference, reference_rms = bkg.background, bkg.background_rms
    np.testing.assert_allclose(_upsample_mesh(bkg.background_mesh, 64, img.shape), reference,
                               rtol=0, atol=1e-3)
    np.testing.assert_allclose(_upsample_mesh(bkg.background_rms_mesh, 64, img.shape),
                               reference_rms, rtol=0, atol=1e-4)
