"""The simulator makes what it says: each kind measured on the written file with sep and simple
moments, determinism to the byte, the survey's mix and truth.csv, the CLI and bad input."""
import csv
import filecmp
import math

import numpy as np
import pytest
import sep
from astropy.io import fits

from desom.simulate import (BAD_SEEING_ARCSEC, CALIBRATION_KINDS, FIVE_CLASS, GOOD_SEEING_ARCSEC,
                            KINDS, OVERSCAN_COLS, SEEING_THRESHOLD_ARCSEC, TRUTH_COLUMNS,
                            draw_parameters, good_bad, psf_kernel, read_truth_csv,
                            simulate_exposure, simulate_survey)
from desom.simulate.__main__ import main as cli_main

SHAPE = (512, 512)
# Same sky, band and exposure time for every kind; a rich but uncrowded star field gives
# enough bright stars on two small CCDs for stable medians.
COMMON = {"filter_band": "r", "sky_mag": 20.5, "exptime": 300.0, "star_density": 20.0}


def _science(path, ext):
    """Bias-subtracted science area read straight from the raw file's sections."""
    with fits.open(path) as hdul:
        h, raw = hdul[ext].header, hdul[ext].data.astype(np.float64)
    nx = raw.shape[1] - 2 * OVERSCAN_COLS
    ny = int(h["DATASEC"].strip("[]").split(",")[1].split(":")[1])
    sci = raw[:ny, OVERSCAN_COLS:OVERSCAN_COLS + nx]
    sci[:, : nx // 2] -= np.median(raw[:, :OVERSCAN_COLS])
    sci[:, nx // 2:] -= np.median(raw[:, OVERSCAN_COLS + nx:])
    return sci


def measure(path):
    """Source count, and over bright unsaturated non-cosmic sources: median elongation (a/b),
    median FWHM from second moments, median central dip (centre / brightest ring of the radial
    profile; < 1 means a hole), and the large-scale background variation in noise units."""
    sep.set_extract_pixstack(3_000_000)
    sep.set_sub_object_limit(5000)
    n, elong, fwhm, dip, bvar = 0, [], [], [], []
    with fits.open(path) as hdul:
        n_ext = len(hdul) - 1
    for ext in range(1, n_ext + 1):
        img = np.ascontiguousarray(_science(path, ext))
        bkg = sep.Background(img, bw=64, bh=64)
        sub = img - bkg.back()
        rms = bkg.globalrms
        bvar.append(np.std(bkg.back()) / rms)
        objs = sep.extract(sub, 5.0, err=rms, minarea=5)
        n += len(objs)
        # Cosmic rays put most of their flux in one pixel; saturated stars have flat tops.
        ok = ((objs["peak"] > 30 * rms) & (objs["peak"] < 30000) & (objs["flag"] == 0)
              & (objs["npix"] >= 20) & (objs["peak"] < 0.2 * objs["flux"]))
        r = 20
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        for o in objs[ok]:
            elong.append(o["a"] / o["b"])
            fwhm.append(2.355 * math.sqrt((o["a"] ** 2 + o["b"] ** 2) / 2))
            y, x = int(round(o["y"])), int(round(o["x"]))
            if r <= y < img.shape[0] - r and r <= x < img.shape[1] - r:
                stamp = sub[y - r:y + r + 1, x - r:x + r + 1]
                rad = np.hypot(yy - (o["y"] - y), xx - (o["x"] - x)).astype(int).ravel()
                prof = np.bincount(rad, stamp.ravel()) / np.bincount(rad)
                dip.append(prof[0] / prof[1:12].max())
    med = lambda v: float(np.median(v)) if v else float("nan")  # noqa: E731
    return {"n": n, "elong": med(elong), "fwhm": med(fwhm), "dip": med(dip), "n_bright": len(elong),
            "bkg_var": float(np.mean(bvar))}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    d = tmp_path_factory.mktemp("kinds")
    plan = {
        "good": ("good", 0.3, COMMON),
        "bt": ("bt", 1.0, COMMON),
        "rbt": ("rbt", 0.8, COMMON),
        "bad_seeing": ("bad_seeing", 0.8, COMMON),
        "bad_focus": ("bad_focus", 0.8, COMMON),
        "bgp_crowded": ("bgp_crowded", 0.8, {k: v for k, v in COMMON.items() if k != "star_density"}),
        "bgp_low_exposure": ("bgp_low_exposure", 1.0, {k: v for k, v in COMMON.items() if k != "exptime"}),
        "bgp_pattern": ("bgp_pattern", 0.8, {**COMMON, "pattern": "gradient"}),
    }
    out = {}
    for name, (kind, sev, over) in plan.items():
        path = d / f"{name}.fits"
        truth = simulate_exposure(kind, 21, path, n_ccds=2, ccd_shape=SHAPE, severity=sev,
                                  dead_ccd_prob=0.0, overrides=over)
        out[name] = (truth, measure(path))
    return out


def test_good_exposure_has_round_compact_sources(measured):
    truth, m = measured["good"]
    assert truth.seeing_arcsec < SEEING_THRESHOLD_ARCSEC
    assert m["n_bright"] >= 10
    assert m["elong"] < 1.15
    assert m["dip"] > 1.0  # peaked at the centre
    # The measured FWHM follows the seeing put in (within the splat's slight broadening).
    assert truth.fwhm_px * 0.8 < m["fwhm"] < truth.fwhm_px * 1.6


def test_tracking_errors_elongate_sources(measured):
    good, bt, rbt = (measured[k][1]["elong"] for k in ("good", "bt", "rbt"))
    assert bt > good + 0.15
    assert rbt > 2.5
    assert rbt > bt


def test_bad_seeing_broadens_sources(measured):
    good, bad = measured["good"][1], measured["bad_seeing"][1]
    assert bad["fwhm"] > 2.0 * good["fwhm"]
    assert bad["elong"] < 1.2


def test_bad_focus_makes_donuts(measured):
    m = measured["bad_focus"][1]
    assert m["dip"] < 0.6  # a hole in the middle of the radial profile
    assert m["elong"] < 1.2


def test_crowded_and_low_exposure_change_the_source_count(measured):
    good = measured["good"][1]["n"]
    assert measured["bgp_crowded"][1]["n"] > 3 * good
    assert measured["bgp_low_exposure"][1]["n"] < 0.4 * good
    assert measured["bgp_low_exposure"][0].exptime == pytest.approx(2.0)


def test_pattern_shows_in_the_background(measured):
    assert measured["bgp_pattern"][1]["bkg_var"] > 3 * measured["good"][1]["bkg_var"]


@pytest.mark.parametrize("kind", KINDS)
def test_parameters_follow_kind_and_severity(kind):
    rng = np.random.default_rng(0)
    low = draw_parameters(kind, rng, severity=0.0)
    high = draw_parameters(kind, rng, severity=1.0)
    if kind == "good":
        assert GOOD_SEEING_ARCSEC[0] <= low.seeing_arcsec < high.seeing_arcsec < SEEING_THRESHOLD_ARCSEC
    elif kind == "bad_seeing":
        assert SEEING_THRESHOLD_ARCSEC == low.seeing_arcsec < high.seeing_arcsec == BAD_SEEING_ARCSEC[1]
    elif kind in ("bt", "rbt"):
        assert 0 < low.trail_arcsec < high.trail_arcsec
    elif kind == "bad_focus":
        assert 0 < low.defocus_arcsec < high.defocus_arcsec
    elif kind == "bgp_crowded":
        assert 20 < low.star_density < high.star_density
        assert abs(high.galactic_b) < abs(low.galactic_b) < 15
    elif kind == "bgp_low_exposure":
        assert high.exptime < low.exptime
    elif kind == "bgp_pattern":
        assert low.pattern and 0 < low.pattern_amplitude < high.pattern_amplitude
    if kind != "good":
        assert low.seeing_arcsec < SEEING_THRESHOLD_ARCSEC or kind == "bad_seeing"
    assert good_bad(kind) == ("Good" if kind == "good" else "Bad")
    assert FIVE_CLASS[kind] in ("Good", "BT", "RBT", "B-Seeing", "BGP")


def test_borders_touch_so_classes_overlap():
    rng = np.random.default_rng(1)
    top_good = draw_parameters("good", rng, severity=1.0).seeing_arcsec
    bottom_bad = draw_parameters("bad_seeing", rng, severity=0.0).seeing_arcsec
    assert 0 < bottom_bad - top_good <= 0.1
    assert draw_parameters("bt", rng, 1.0).trail_arcsec == draw_parameters("rbt", rng, 0.0).trail_arcsec
    assert FIVE_CLASS["bad_focus"] == "B-Seeing"
    # Star density varies for every kind; crowded fields are its far tail, not a separate island.
    ordinary = [draw_parameters("good", rng).star_density for _ in range(500)]
    crowded = draw_parameters("bgp_crowded", rng, severity=0.0).star_density
    assert max(ordinary) > 5 * min(ordinary)
    assert max(ordinary) < crowded < 1.6 * max(ordinary)


def test_psf_kernel_trail_and_donut_shapes():
    k = psf_kernel(4.0, trail_px=30.0, trail_angle_deg=0.0)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    c = k.shape[0] // 2
    assert k[c, c + 12] > 20 * k[c + 12, c]  # long along x, narrow along y
    d = psf_kernel(3.0, defocus_px=30.0)
    assert d[c_d := d.shape[0] // 2, c_d] < 0.3 * d[c_d, c_d + 11]  # hole in the centre
    with pytest.raises(ValueError, match="FWHM"):
        psf_kernel(0.0)


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    for layout in ("raw", "processed"):
        a = simulate_exposure("bad_focus", 7, tmp_path / f"a_{layout}.fits", n_ccds=2, ccd_shape=(128, 128), layout=layout)
        b = simulate_exposure("bad_focus", 7, tmp_path / f"b_{layout}.fits", n_ccds=2, ccd_shape=(128, 128), layout=layout)
        assert filecmp.cmp(tmp_path / f"a_{layout}.fits", tmp_path / f"b_{layout}.fits", shallow=False)
        assert {**a.to_dict(), "file": ""} == {**b.to_dict(), "file": ""}
    simulate_exposure("bad_focus", 8, tmp_path / "c.fits", n_ccds=2, ccd_shape=(128, 128))
    assert not filecmp.cmp(tmp_path / "a_raw.fits", tmp_path / "c.fits", shallow=False)


def test_survey_is_deterministic_whatever_the_workers(tmp_path):
    kw = dict(seed=3, n_ccds=2, ccd_shape=(128, 128), include_calibration=2, progress=False)
    p1 = simulate_survey(8, tmp_path / "w1", workers=1, **kw)
    p2 = simulate_survey(8, tmp_path / "w2", workers=2, **kw)
    names = sorted(f.name for f in (tmp_path / "w1").iterdir())
    assert names == sorted(f.name for f in (tmp_path / "w2").iterdir())
    assert len(names) == 8 + 2 + 1
    for name in names:
        assert filecmp.cmp(tmp_path / "w1" / name, tmp_path / "w2" / name, shallow=False), name
    assert p1.read_bytes() == p2.read_bytes()


def test_survey_mix_truth_and_odometer(tmp_path):
    path = simulate_survey(12, tmp_path, seed=5, workers=1, n_ccds=1, ccd_shape=(64, 64),
                           good_share=0.5, include_calibration=2, progress=False)
    with open(path) as fh:
        header = next(csv.reader(fh))
    assert header == TRUTH_COLUMNS
    for col in ("file", "expnum", "kind", "label", "good_bad", "severity", "seeing_arcsec",
                "trail_px", "trail_angle_deg", "defocus_arcsec", "exptime", "star_density"):
        assert col in header
    rows = read_truth_csv(path)
    science = [r for r in rows if r["kind"] in KINDS]
    calib = [r for r in rows if r["kind"] in CALIBRATION_KINDS]
    assert len(science) == 12 and len(calib) == 2
    assert sum(r["good_bad"] == "Good" for r in science) == 6
    assert all(r["label"] == FIVE_CLASS[r["kind"]] for r in science)
    # The odometer runs with time, and each file says who it is.
    assert [r["expnum"] for r in rows] == sorted(r["expnum"] for r in rows)
    assert [r["mjd_obs"] for r in rows] == sorted(r["mjd_obs"] for r in rows)
    for r in rows:
        h = fits.getheader(tmp_path / r["file"], 0)
        assert h["EXPNUM"] == r["expnum"] and r["file"].startswith(h["FILENAME"])
        assert h["OBSTYPE"] == r["obstype"]
        assert (h["OBSTYPE"] == "OBJECT") == (r["kind"] in KINDS)


def test_default_mix_spreads_over_every_kind(tmp_path):
    from desom.simulate import plan_survey, SurveyConfig
    jobs = plan_survey(SurveyConfig(n=200, seed=1))
    kinds = [j["kind"] for j in jobs]
    assert set(kinds) == set(KINDS)
    assert 0.45 < kinds.count("good") / 200 < 0.65


def test_cli_writes_a_survey(tmp_path, capsys):
    rc = cli_main(["3", str(tmp_path / "cli"), "--seed", "2", "--workers", "1", "--ccds", "1",
                   "--ccd-shape", "64x64", "--layout", "processed", "--mix", "rbt=1", "--no-progress"])
    assert rc == 0
    rows = read_truth_csv(tmp_path / "cli" / "truth.csv")
    assert [r["kind"] for r in rows] == ["rbt"] * 3
    assert all(r["file"].endswith("p.fits") for r in rows)
    assert cli_main(["2", str(tmp_path / "bad"), "--mix", "nonsense=1", "--no-progress"]) == 2
    assert "nonsense" in capsys.readouterr().err


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown kind 'blurry'"):
        simulate_exposure("blurry", 0, tmp_path / "x.fits", n_ccds=1, ccd_shape=(64, 64))
    with pytest.raises(ValueError, match="nx even"):
        simulate_exposure("good", 0, tmp_path / "x.fits", n_ccds=1, ccd_shape=(64, 63))
    with pytest.raises(ValueError, match="layout"):
        simulate_exposure("good", 0, tmp_path / "x.fits", n_ccds=1, ccd_shape=(64, 64), layout="cooked")
    with pytest.raises(ValueError, match="severity"):
        simulate_exposure("good", 0, tmp_path / "x.fits", n_ccds=1, ccd_shape=(64, 64), severity=1.5)
    with pytest.raises(ValueError, match="overrides"):
        simulate_exposure("good", 0, tmp_path / "x.fits", n_ccds=1, ccd_shape=(64, 64), overrides={"moon": 1})
    with pytest.raises(ValueError, match="good_share"):
        simulate_survey(2, tmp_path, good_share=2.0, progress=False)
    # The survey checks its geometry before starting any worker.
    with pytest.raises(ValueError, match="ccd_shape"):
        simulate_survey(2, tmp_path / "s", ccd_shape=(12, 5), workers=2, progress=False)
    with pytest.raises(ValueError, match="n_ccds"):
        simulate_survey(2, tmp_path / "s", n_ccds=41, workers=2, progress=False)
    assert not list((tmp_path / "s").glob("*.fits"))
    assert not (tmp_path / "x.fits").exists()


def test_gallery_draws_every_kind(tmp_path):
    from PIL import Image
    from desom.simulate.gallery import make_gallery
    out = make_gallery(tmp_path / "g.png", severities=(0.8,), ccd_shape=(256, 256), zoom=128)
    img = np.asarray(Image.open(out).convert("L"), dtype=float)
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert img.std() > 10  # panels drawn, not a blank page
