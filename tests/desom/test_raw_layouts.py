"""Raw MegaCam layouts: DATASEC trimming, per-amplifier overscan bias, and the same sky written
raw and processed giving the same sources and histo-vectors."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits

from desom.detection import detect_sources, detector_names
from desom.fits_io import layout_from_header, open_exposure, prepare_ccd
from desom.inference import DesomPredictor
from desom.model import DESOMConfig, build_desom
from desom.pipeline import ImagingConfig, sample_training_cutouts, summarise_exposure
from desom.training import init_prototypes

_spec = importlib.util.spec_from_file_location("fitsfactory", Path(__file__).with_name("fitsfactory.py"))
ff = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ff)

SHAPE = (1024, 512)
BIAS = (900.0, 1080.0)       # amplifiers differ by 180 ADU
SKY = dict(n_sources=300)
COMMON = dict(n_ccds=4, shape=SHAPE, seed=11, bias=BIAS, bias_slope=0.03, sky_kw=SKY)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    out = {"raw": d / "1000001o.fits", "processed": d / "1000001p.fits",
           "stripped": d / "1000001s.fits", "seeing": d / "1000002p.fits"}
    ff.write_exposure(out["raw"], layout="raw", **COMMON)
    ff.write_exposure(out["processed"], layout="processed", **COMMON)
    ff.write_exposure(out["stripped"], layout="raw", strip_sections=True, **COMMON)
    ff.write_exposure(out["seeing"], layout="processed",
                      **{**COMMON, "sky_kw": dict(SKY, fwhm=6.0)})
    return out


def test_real_megacam_sections_are_understood():
    h = fits.Header()
    h["BITPIX"], h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = 16, 2, 2112, 4644
    h["DATASEC"] = "[33:2080,1:4612]"
    h["BSECA"], h["BSECB"] = "[1:32,1:4644]", "[2081:2112,1:4644]"
    h["DSECA"], h["DSECB"] = "[33:1056,1:4612]", "[1057:2080,1:4612]"
    assert layout_from_header(h) == "raw"
    raw = np.zeros((4644, 2112), np.int16)     # stored values; BZERO brings them to 32768
    raw[:, :1056] += 500                       # amp A bias 33268, amp B bias 32768
    h["BZERO"], h["BSCALE"] = 32768, 1
    ccd = prepare_ccd(raw, h)
    assert ccd.data.shape == (4612, 2048)
    assert ccd.bias_levels == {"A": 33268.0, "B": 32768.0}
    assert np.abs(ccd.data).max() == 0.0
    p = fits.Header({"BITPIX": -32, "NAXIS": 2, "NAXIS1": 2048, "NAXIS2": 4612})
    assert layout_from_header(p) == "processed"


def test_trimmed_and_bias_subtracted_per_amplifier_and_row(files):
    with open_exposure(files["raw"]) as r, open_exposure(files["processed"]) as p:
        for k in range(2):
            raw = r.read_ccd(k)
            proc = p.read_ccd(k)
            assert raw.layout == "raw" and proc.layout == "processed"
            assert raw.data.shape == proc.data.shape == SHAPE
            assert raw.raw_shape == (SHAPE[0] + 32, SHAPE[1] + 64)
            assert raw.bias_levels["A"] == pytest.approx(BIAS[0] + 0.03 * 528, abs=2)
            assert raw.bias_levels["B"] == pytest.approx(BIAS[1] + 0.03 * 528, abs=2)
            diff = raw.data - proc.data
            # What remains is the raw file's own read noise (5 ADU) and rounding, with no step
            # between the amplifiers and no trend along rows (the bias ramps by 30 ADU).
            half = SHAPE[1] // 2
            assert abs(np.median(diff[:, :half]) - np.median(diff[:, half:])) < 0.5
            assert abs(np.median(diff[:100]) - np.median(diff[-100:])) < 0.5
            assert abs(np.median(diff)) < 0.5 and np.std(diff) < 5.5
            assert not raw.warnings


def _near(values, line, width=5.0):
    return np.abs(values - line) < width


@pytest.mark.parametrize("backend", detector_names())
def test_no_spurious_sources_along_amplifier_boundary_or_edges(files, backend):
    with open_exposure(files["raw"]) as r:
        for k in range(len(r)):
            ccd = r.read_ccd(k)
            res = detect_sources(ccd.data, backend=backend, saturated=ccd.saturated)
            ny, nx = ccd.data.shape
            density = len(res) / (nx * ny)              # sources per pixel
            strip = 10 * ny                               # a 10 px wide strip along the CCD
            expected = density * strip
            limit = expected + 3 * np.sqrt(expected) + 1
            boundary = nx / 2 - 0.5                       # between columns nx/2-1 and nx/2
            assert _near(res.x, boundary).sum() <= limit
            assert _near(res.x, 0).sum() <= limit and _near(res.x, nx - 1).sum() <= limit
            assert _near(res.y, 0).sum() <= density * 10 * nx + 3 * np.sqrt(density * 10 * nx) + 1
            # and no long segment hugging the boundary (what an unsubtracted bias step makes)
            close = np.abs(res.x - boundary) < 40
            assert res.n_pixels[close].max(initial=0) < 600


def test_without_section_keywords_the_fallback_warns_and_shows_the_step(files):
    """The control: the same raw file without its section keywords cannot be corrected; it is
    read untrimmed with a warning, and the amplifier step then makes giant spurious segments
    next to the boundary, which the test above would catch."""
    with open_exposure(files["stripped"]) as r:
        ccd = r.read_ccd(0)
        assert ccd.data.shape == (SHAPE[0] + 32, SHAPE[1] + 64)
        assert any("DATASEC" in w for w in ccd.warnings)
        assert any("overscan" in w for w in ccd.warnings)
        res = detect_sources(ccd.data, backend="sep")
        boundary = 32 + SHAPE[1] / 2 - 0.5
        close = np.abs(res.x - boundary) < 40
        assert res.n_pixels[close].max(initial=0) > 1000


@pytest.fixture(scope="module")
def predictor(files):
    """A small real DESOM-1 (untrained encoder) whose 5x5 prototypes are set to the encodings
    of cutouts from the field, as training starts: cutouts then spread over the map."""
    cutouts = sample_training_cutouts(files["processed"], max_per_ccd=None,
                                      config=ImagingConfig(detector="sep"))
    model = build_desom(DESOMConfig.desom1(map_rows=5, map_cols=5))
    init_prototypes(model, cutouts[:, None], np.random.default_rng(0), torch.device("cpu"))
    return DesomPredictor(model)


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("backend", detector_names())
def test_raw_and_processed_give_the_same_sources_and_histo(files, predictor, backend):
    config = ImagingConfig(detector=backend)
    raw = summarise_exposure(files["raw"], predictor, config)
    proc = summarise_exposure(files["processed"], predictor, config)
    assert raw.metadata.layout == "raw" and proc.metadata.layout == "processed"
    assert not raw.warnings and not proc.warnings
    assert proc.n_detected > 500
    assert abs(raw.n_detected - proc.n_detected) <= 0.02 * proc.n_detected
    for a, b in zip(raw.ccds, proc.ccds):
        assert abs(a.n_detected - b.n_detected) <= max(2, 0.02 * b.n_detected)
    assert _cosine(raw.histo, proc.histo) >= 0.98
    # the same measure separates a different sky: bad seeing lands elsewhere on the map
    seeing = summarise_exposure(files["seeing"], predictor, config)
    assert _cosine(proc.histo, seeing.histo) < 0.9
    # and the map is really used, not one node
    assert np.count_nonzero(proc.histo) >= 10


def test_single_amplifier_biassec(tmp_path):
    science, _ = ff.ccd_sky(0, (256, 200), seed=1, n_sources=30)
    data, h = ff.raw_ccd(science, 0, bias=(1500.0, 1500.0))
    for key in ("BSECA", "BSECB", "DSECA", "DSECB"):
        del h[key]
    h["BIASSEC"] = "[1:32,1:288]"
    p = tmp_path / "single_amp.fits"
    fits.HDUList([fits.PrimaryHDU(header=ff.primary_header(n_ccds=1)),
                  fits.ImageHDU(data, header=h)]).writeto(p)
    with open_exposure(p) as r:
        ccd = r.read_ccd(0)
    assert ccd.data.shape == (256, 200) and not ccd.warnings
    assert ccd.bias_levels["single"] == pytest.approx(1500.0, abs=1)
    assert np.median(ccd.data) == pytest.approx(np.median(science), abs=1.0)


def test_saturated_star_in_raw_data(tmp_path):
    science, _ = ff.ccd_sky(0, (300, 300), seed=2, n_sources=0)
    ff.add_gaussians(science, np.array([150.0]), np.array([140.0]), np.array([2e7]), 3.5)
    data, h = ff.raw_ccd(science, 0)
    p = tmp_path / "sat.fits"
    fits.HDUList([fits.PrimaryHDU(header=ff.primary_header(n_ccds=1)),
                  fits.ImageHDU(data, header=h)]).writeto(p)
    with open_exposure(p) as r:
        ccd = r.read_ccd(0)
    assert ccd.saturated is not None and ccd.saturated.shape == (300, 300)
    assert ccd.saturated[140, 150] and ccd.saturated.sum() > 10
    for backend in detector_names():
        res = detect_sources(ccd.data, backend=backend, saturated=ccd.saturated)
        assert len(res) == 1 and abs(res.x[0] - 150) < 1 and abs(res.y[0] - 140) < 1


def test_processed_float_data_pass_through_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(5.0, 2.0, (128, 96)).astype(">f4")     # big-endian, as in the file
    p = tmp_path / "proc.fits"
    fits.HDUList([fits.PrimaryHDU(header=ff.primary_header(n_ccds=1)),
                  fits.ImageHDU(data, name="ccd00")]).writeto(p)
    with open_exposure(p) as r:
        ccd = r.read_ccd(0)
    assert ccd.layout == "processed" and not ccd.warnings and not ccd.bias_levels
    np.testing.assert_array_equal(ccd.data, data.astype(np.float32))


def test_integer_data_already_trimmed_is_processed_and_bare_integers_warn():
    rng = np.random.default_rng(1)
    stored = rng.integers(-100, 100, (128, 96)).astype(np.int16)
    h = fits.Header({"BITPIX": 16, "NAXIS": 2, "NAXIS1": 96, "NAXIS2": 128, "BZERO": 1000.0,
                     "BSCALE": 0.5, "DATASEC": "[1:96,1:128]"})
    ccd = prepare_ccd(stored, h)
    assert ccd.layout == "processed" and not ccd.warnings
    np.testing.assert_array_equal(ccd.data, stored.astype(np.float32) * 0.5 + 1000.0)
    del h["DATASEC"]
    h["CCDSIZE"] = "[1:96,1:128]"
    assert prepare_ccd(stored, h).layout == "processed"
    del h["CCDSIZE"]
    bare = prepare_ccd(stored, h)
    assert bare.layout == "unknown" and bare.data.shape == (128, 96)
    assert "untrimmed" in bare.warnings[0]
