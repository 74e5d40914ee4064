"""The survey "with real sky": every kind, Good included, carries wind shake, an optics pattern,
moonlight, cirrus, fringes, satellites, halos and bad columns; a low-exposure frame is low in
signal, not a keyword. Measured on the written files, and on the PSF kernels themselves."""
import filecmp
import math

import numpy as np
import pytest
from astropy.io import fits

from desom.simulate import nuisances as N
from desom.simulate import psf_kernel, read_truth_csv, simulate_exposure, simulate_survey
from desom.simulate.params import draw_parameters

from .test_simulate import _science, measure

SHAPE = (256, 256)


def _moment_ellipticity(kernel):
    k = kernel.astype(np.float64)
    y, x = np.mgrid[: k.shape[0], : k.shape[1]]
    w = k / k.sum()
    my, mx = (w * y).sum(), (w * x).sum()
    qxx = (w * (x - mx) ** 2).sum()
    qyy = (w * (y - my) ** 2).sum()
    qxy = (w * (x - mx) * (y - my)).sum()
    return (qxx - qyy) / (qxx + qyy), 2 * qxy / (qxx + qyy)


def test_elliptical_psf_has_the_asked_ellipticity_and_area():
    round_k = psf_kernel(5.0)
    for e1, e2 in ((0.08, 0.0), (0.0, -0.06), (0.05, 0.05)):
        k = psf_kernel(5.0, e1=e1, e2=e2)
        m1, m2 = _moment_ellipticity(k)
        # a Moffat's wings are truncated by the kernel's box: the measured shape is close, not exact
        assert m1 == pytest.approx(e1, abs=0.015) and m2 == pytest.approx(e2, abs=0.015)
        # the area is kept: the peak moves by a few percent at most
        assert k.max() == pytest.approx(round_k.max(), rel=0.05)
    assert max(abs(v) for v in _moment_ellipticity(round_k)) < 1e-6
    with pytest.raises(ValueError, match="ellipticity"):
        psf_kernel(5.0, e1=0.95)


def test_optics_pattern_is_tangential_and_grows_towards_the_edge():
    n = N.Nuisances(optics_e_edge=0.06)     # no wind
    fp = (1000, 1800)
    centre = N.ccd_ellipticity(n, (450, 850), (100, 100), fp)
    edge = N.ccd_ellipticity(n, (450, 1700), (100, 100), fp)        # on the x axis, near the edge
    corner = N.ccd_ellipticity(n, (900, 1700), (100, 100), fp)
    assert math.hypot(*centre) < 1e-9
    assert 0 < math.hypot(*edge) < math.hypot(*corner) <= 0.06 + 1e-9
    # on the x axis, tangential means stretched along y: e1 < 0, e2 ~ 0
    assert edge[0] < 0 and abs(edge[1]) < 1e-9
    wind = N.ccd_ellipticity(N.Nuisances(wind_e=0.04, wind_angle_deg=0.0), (450, 850), (100, 100), fp)
    assert wind == pytest.approx((0.04, 0.0), abs=1e-12)


def test_moonlight_and_fringes_shape_the_sky():
    fp = SHAPE     # one CCD is the whole mosaic
    moon = N.sky_factor(N.Nuisances(moon_gradient=0.03, moon_angle_deg=0.0), "r", *SHAPE, (0, 0), fp)
    assert moon is not None and 0.97 < moon.min() < 1.0 < moon.max() < 1.03
    assert N.sky_factor(N.Nuisances(), "r", *SHAPE, (0, 0), fp) is None
    fringes = N.sky_factor(N.Nuisances(fringe_amplitude=0.01), "z", *SHAPE, (0, 0), fp)
    assert 0.985 < fringes.min() < 0.995 and 1.005 < fringes.max() < 1.015
    # the band's pattern is the instrument's: the same for every exposure of the band
    rng = np.random.default_rng(0)
    assert N.draw_nuisances("good", "r", rng).fringe_amplitude == 0.0
    assert N.draw_nuisances("good", "z", rng).fringe_amplitude > 0.0
    y, x = np.mgrid[:8, :8]
    np.testing.assert_array_equal(N.band_fringes("z", y, x), N.band_fringes("z", y, x))
    assert not np.allclose(N.band_fringes("z", y, x), N.band_fringes("i", y, x))


def test_base_draws_do_not_move_and_the_same_seed_gives_the_same_bytes(tmp_path):
    plain = simulate_exposure("bt", 5, tmp_path / "plain.fits", n_ccds=2, ccd_shape=SHAPE, dead_ccd_prob=0)
    a = simulate_exposure("bt", 5, tmp_path / "a.fits", n_ccds=2, ccd_shape=SHAPE, dead_ccd_prob=0, nuisances=True)
    simulate_exposure("bt", 5, tmp_path / "b.fits", n_ccds=2, ccd_shape=SHAPE, dead_ccd_prob=0, nuisances=True)
    assert filecmp.cmp(tmp_path / "a.fits", tmp_path / "b.fits", shallow=False)
    assert not filecmp.cmp(tmp_path / "plain.fits", tmp_path / "a.fits", shallow=False)
    for field in ("seeing_arcsec", "trail_arcsec", "trail_angle_deg", "filter", "severity", "ra_deg"):
        assert getattr(plain, field) == getattr(a, field)
    assert plain.nuisances == 0 and a.nuisances == 1
    assert a.wind_e >= 0 and N.OPTICS_E_EDGE[0] <= a.optics_e_edge <= N.OPTICS_E_EDGE[1]


def test_low_exposure_means_low_signal_and_good_can_be_short():
    rng = np.random.default_rng(1)
    clouded, short = 0, 0
    for _ in range(400):
        severity = float(rng.uniform())
        exptime, transparency = N.exposure_time_with_nuisances("bgp_low_exposure", severity, 30.0, rng)
        effective = exptime * transparency
        # the effective exposure runs from 20 s (severity 0) down to 2 s (severity 1)
        assert effective == pytest.approx(20.0 * 0.1 ** severity, rel=0.01, abs=0.06)
        clouded += exptime >= 80
        short += exptime <= 20
    assert clouded > 150 and short > 150          # about half through cloud with a normal EXPTIME
    goods = [N.exposure_time_with_nuisances("good", 0.3, 300.0, rng) for _ in range(1000)]
    short_goods = [t for t, _ in goods if t < 80]
    assert 100 < len(short_goods) < 200 and min(short_goods) >= 20.0
    # the plain simulator's draws are untouched
    assert draw_parameters("good", np.random.default_rng(2)).transparency == 1.0


def test_clouded_low_exposure_frame_is_as_empty_as_a_short_one(tmp_path):
    """Two low-exposure frames of the same field and effective exposure, one short and one long
    through cloud: about as many sources, while the long one's EXPTIME says nothing is wrong."""
    over = {"filter_band": "r", "sky_mag": 20.5, "star_density": 20.0, "galaxy_density": 150.0}
    long_cloud = simulate_exposure("good", 9, tmp_path / "cloud.fits", n_ccds=1, ccd_shape=(512, 512),
                                   dead_ccd_prob=0, overrides={**over, "exptime": 400.0, "transparency": 0.02})
    short = simulate_exposure("good", 9, tmp_path / "short.fits", n_ccds=1, ccd_shape=(512, 512),
                              dead_ccd_prob=0, overrides={**over, "exptime": 8.0})
    simulate_exposure("good", 9, tmp_path / "normal.fits", n_ccds=1, ccd_shape=(512, 512),
                               dead_ccd_prob=0, overrides={**over, "exptime": 400.0})
    n_cloud, n_short, n_normal = (measure(tmp_path / f)["n"] for f in ("cloud.fits", "short.fits", "normal.fits"))
    assert long_cloud.exptime == 400.0 and short.exptime == 8.0
    assert n_cloud < 0.5 * n_normal and n_short < 0.5 * n_normal
    assert abs(n_cloud - n_short) < 0.35 * max(n_cloud, n_short)


def test_satellites_halos_and_bad_columns_are_drawn(tmp_path, monkeypatch):
    monkeypatch.setattr(N, "SATELLITE_RATE", 4.0)
    monkeypatch.setattr(N, "BAD_COLUMNS_PER_CCD", 3.0)
    truth = simulate_exposure("good", 11, tmp_path / "busy.fits", n_ccds=2, ccd_shape=SHAPE, dead_ccd_prob=0,
                              nuisances=True, overrides={"star_density": 60.0, "exptime": 300.0})
    assert truth.n_satellites >= 1 and truth.n_bad_columns >= 1 and truth.n_halos >= 1
    # a trail is a straight bright line: some row profile holds a sharp peak well above the sky
    image = _science(tmp_path / "busy.fits", 1)
    assert image.max() > np.median(image) + 10 * np.std(image[:32, :32])


def test_survey_with_nuisances_writes_them_in_the_truth(tmp_path):
    truth = simulate_survey(6, tmp_path, seed=3, workers=1, n_ccds=1, ccd_shape=(128, 128), progress=False,
                            nuisances=True)
    rows = read_truth_csv(truth)
    assert all(r["nuisances"] == 1 for r in rows)
    assert {"transparency", "wind_e", "moon_gradient", "n_satellites", "n_bad_columns"} <= set(rows[0])
    with fits.open(tmp_path / rows[0]["file"]) as hdul:
        assert hdul[0].header["EXPTIME"] == rows[0]["exptime"]
