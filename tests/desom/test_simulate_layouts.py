"""On-disk layouts of simulated exposures: raw (int16 + BZERO, overscan, two amplifiers and
their sections), processed (float32, trimmed, bias removed), calibration frames, headers,
saturation and dead CCDs."""
import datetime as dt
import re

import numpy as np
import pytest
import sep
from astropy.io import fits

from desom.simulate import OVERSCAN_COLS, OVERSCAN_ROWS, SATURATE, simulate_exposure
from desom.simulate.params import date_to_mjd

SHAPE = (256, 192)
PRIMARY_KEYS = ("EXPNUM", "FILENAME", "OBJECT", "OBSTYPE", "EXPTYPE", "EXPTIME", "FILTER", "RA",
                "DEC", "RA_DEG", "DEC_DEG", "DATE-OBS", "UTC-OBS", "MJD-OBS", "AIRMASS", "NEXTEND",
                "NCCDS", "PIXSCAL1", "SATURATE", "RUNID", "REL_DATE", "INSTRUME", "TELESCOP")


def section(text):
    """IRAF '[x0:x1,y0:y1]' (1-based, inclusive) -> numpy slices (rows, cols)."""
    m = re.fullmatch(r"\[(\d+):(\d+),(\d+):(\d+)\]", text)
    assert m, f"not an IRAF section: {text!r}"
    x0, x1, y0, y1 = map(int, m.groups())
    return slice(y0 - 1, y1), slice(x0 - 1, x1)


@pytest.fixture(scope="module")
def raw_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("raw") / "1038843o.fits"
    truth = simulate_exposure("good", 4, path, n_ccds=3, ccd_shape=SHAPE, layout="raw",
                              expnum=1038843, dead_ccd_prob=0.0)
    return path, truth


def test_raw_is_int16_with_bzero_on_disk(raw_file):
    path, _ = raw_file
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        for hdu in hdul[1:]:
            assert hdu.header["BITPIX"] == 16
            assert hdu.header["BZERO"] == 32768 and hdu.header["BSCALE"] == 1
            assert hdu.data.dtype.kind == "i" and hdu.data.dtype.itemsize == 2
    with fits.open(path) as hdul:  # scaled read gives the unsigned counts
        assert hdul[1].data.dtype == np.uint16


def test_raw_sections_agree_with_the_array(raw_file):
    path, truth = raw_file
    ny, nx = SHAPE
    with fits.open(path) as hdul:
        assert len(hdul) == 4 and [h.header["EXTNAME"] for h in hdul[1:]] == ["ccd00", "ccd01", "ccd02"]
        for hdu in hdul[1:]:
            h, data = hdu.header, hdu.data.astype(np.float64)
            assert data.shape == (ny + OVERSCAN_ROWS, nx + 2 * OVERSCAN_COLS)
            assert h["DATASEC"] == f"[{OVERSCAN_COLS + 1}:{OVERSCAN_COLS + nx},1:{ny}]"
            rows, cols = section(h["DATASEC"])
            assert data[rows, cols].shape == SHAPE
            ra, ca = section(h["DSECA"])
            rb, cb = section(h["DSECB"])
            # The two amplifiers tile the data section exactly, left half then right half.
            assert ca.start == cols.start and ca.stop == cb.start and cb.stop == cols.stop
            assert ca.stop - ca.start == cb.stop - cb.start == nx // 2
            oa, ob = data[section(h["BSECA"])], data[section(h["BSECB"])]
            assert section(h["BIASSEC"]) == section(h["BSECA"])
            assert oa.shape == ob.shape == (ny + OVERSCAN_ROWS, OVERSCAN_COLS)
            # Two distinct bias levels, each with the read noise the header states.
            bias_a, bias_b = np.median(oa), np.median(ob)
            assert 150 <= bias_a <= 1800 and 150 <= bias_b <= 1800
            assert abs(bias_a - bias_b) >= 100
            assert np.std(oa) == pytest.approx(h["RDNOISEA"], rel=0.15)
            assert np.std(ob) == pytest.approx(h["RDNOISEB"], rel=0.15)
            # Overscan rows above the science area hold bias only, per amplifier.
            top = data[ny:, :]
            assert np.median(top[:, ca]) == pytest.approx(bias_a, abs=3)
            assert np.median(top[:, cb]) == pytest.approx(bias_b, abs=3)
            # Sky sits on top of the bias in the data section of each amplifier.
            assert np.median(data[ra, ca]) - bias_a == pytest.approx(truth.sky_adu, rel=0.15)
            assert np.median(data[rb, cb]) - bias_b == pytest.approx(truth.sky_adu, rel=0.15)
            assert h["SATURATE"] == SATURATE and h["GAIN"] > 1 and h["RDNOISE"] > 0


def test_primary_header_like_megaprime(raw_file):
    path, truth = raw_file
    h = fits.getheader(path, 0)
    for key in PRIMARY_KEYS:
        assert key in h, key
    assert h["EXPNUM"] == 1038843 and h["FILENAME"] == "1038843o"
    assert h["OBSTYPE"] == h["EXPTYPE"] == "OBJECT"
    assert h["INSTRUME"] == "MegaPrime" and h["PIXSCAL1"] == 0.185 and h["SATURATE"] == 65535
    assert h["NEXTEND"] == h["NCCDS"] == 3
    assert re.fullmatch(r"[ugriz]\.MP9\d01|i\.MP9702", h["FILTER"])
    # Sexagesimal RA/DEC agree with the degrees.
    hh, mm, ss = (float(v) for v in h["RA"].split(":"))
    assert 15 * (hh + mm / 60 + ss / 3600) == pytest.approx(h["RA_DEG"], abs=1e-4)
    sign = -1 if h["DEC"].startswith("-") else 1
    dd, dm, ds = (abs(float(v)) for v in h["DEC"].split(":"))
    assert sign * (dd + dm / 60 + ds / 3600) == pytest.approx(h["DEC_DEG"], abs=1e-4)
    # DATE-OBS / UTC-OBS / MJD-OBS tell the same instant; REL_DATE is a year or two later.
    t = dt.datetime.strptime(h["DATE-OBS"] + " " + h["UTC-OBS"], "%Y-%m-%d %H:%M:%S.%f")
    mjd = date_to_mjd(h["DATE-OBS"]) + (t - t.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds() / 86400
    assert mjd == pytest.approx(h["MJD-OBS"], abs=1e-4)
    years = (dt.date.fromisoformat(h["REL_DATE"]) - t.date()).days / 365.25
    assert 0.99 < years < 2.01
    assert re.fullmatch(r"\d\d[AB]Q\d\d", h["RUNID"])
    assert h["DATE-OBS"] == truth.date_obs and h["REL_DATE"] == truth.rel_date


def test_release_dates_fall_on_both_sides_of_a_date(tmp_path):
    cut = dt.date(2025, 6, 1)
    rel = []
    for seed in range(60):
        t = simulate_exposure("good", seed, tmp_path / "t.fits", n_ccds=1, ccd_shape=(16, 16))
        rel.append(dt.date.fromisoformat(t.rel_date))
    assert any(r < cut for r in rel) and any(r > cut for r in rel)


def test_processed_is_float32_trimmed_bias_removed(tmp_path):
    path = tmp_path / "1038843p.fits"
    truth = simulate_exposure("good", 4, path, n_ccds=2, ccd_shape=SHAPE, layout="processed",
                              expnum=1038843, dead_ccd_prob=0.0)
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        assert hdul[0].header["FILENAME"] == "1038843p"
        for key in PRIMARY_KEYS:
            assert key in hdul[0].header, key
        for hdu in hdul[1:]:
            assert hdu.header["BITPIX"] == -32 and "BZERO" not in hdu.header
            assert hdu.data.shape == SHAPE and hdu.data.dtype.kind == "f"
            assert hdu.header["DATASEC"] == f"[1:{SHAPE[1]}:1:{SHAPE[0]}]".replace(":1:", ",1:")
            assert hdu.header["SKYSUB"] is False
            half = SHAPE[1] // 2
            # Bias gone and amplifiers evened out: both halves sit at the sky level.
            med_a, med_b = np.median(hdu.data[:, :half]), np.median(hdu.data[:, half:])
            assert med_a == pytest.approx(truth.sky_adu, rel=0.1)
            assert med_b == pytest.approx(med_a, rel=0.02)


@pytest.mark.parametrize("layout", ["raw", "processed"])
def test_calibration_frames_have_obstype_and_no_sources(tmp_path, layout):
    for kind, obstype in (("bias", "BIAS"), ("flat", "FLAT")):
        path = tmp_path / f"{kind}.fits"
        truth = simulate_exposure(kind, 3, path, n_ccds=2, ccd_shape=SHAPE, layout=layout)
        assert truth.obstype == obstype and truth.label == "Calibration" and truth.good_bad == ""
        assert truth.n_stars == truth.n_galaxies == truth.n_cosmics == 0
        with fits.open(path) as hdul:
            assert hdul[0].header["OBSTYPE"] == hdul[0].header["EXPTYPE"] == obstype
            if kind == "bias":
                assert hdul[0].header["EXPTIME"] == 0
            for hdu in hdul[1:]:
                data = hdu.data.astype(np.float64)
                if layout == "raw":
                    data = data[section(hdu.header["DATASEC"])]
                    data[:, SHAPE[1] // 2:] -= np.median(hdu.data[:, -OVERSCAN_COLS:])
                    data[:, :SHAPE[1] // 2] -= np.median(hdu.data[:, :OVERSCAN_COLS])
                level = np.median(data)
                if kind == "flat":
                    assert level > 10000
                else:
                    assert abs(level) < 5
                bkg = sep.Background(np.ascontiguousarray(data), bw=32, bh=32)
                objs = sep.extract(data - bkg.back(), 5.0, err=bkg.globalrms, minarea=5)
                assert len(objs) == 0


def test_bright_stars_saturate_and_bleed_along_columns(tmp_path):
    path = tmp_path / "crowded.fits"
    truth = simulate_exposure("bgp_crowded", 2, path, n_ccds=1, ccd_shape=(512, 512),
                              severity=1.0, dead_ccd_prob=0.0,
                              overrides={"exptime": 600.0, "filter_band": "i"})
    assert truth.n_saturated_stars > 0
    data = fits.getdata(path, 1)
    sat = data == SATURATE
    assert sat.any()
    # Some column holds a saturated run far longer than a star is wide: a bleed trail.
    longest = 0
    for col in np.flatnonzero(sat.any(axis=0)):
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, sat[:, col].astype(np.int8), 0])))[::2]
        longest = max(longest, int(runs.max()))
    assert longest > 30


def test_cosmic_rays_are_sharp(tmp_path):
    path = tmp_path / "cr.fits"
    truth = simulate_exposure("good", 6, path, n_ccds=1, ccd_shape=(512, 512), layout="processed",
                              dead_ccd_prob=0.0, overrides={"exptime": 900.0, "star_density": 0.5,
                                                            "seeing_arcsec": 0.8})
    assert truth.n_cosmics > 10
    img = fits.getdata(path, 1).astype(np.float64)
    noise = 1.4826 * np.median(np.abs(img - np.median(img)))
    # A hit stands out from its 4 neighbours by far more than a seeing-blurred source can
    # (a 0.8" star's peak is ~1.6 times its neighbours' mean).
    sky = np.median(img)
    nb = np.mean([np.roll(img, s, a) for s in (-1, 1) for a in (0, 1)], axis=0) - sky
    sharp = (img - sky > 50 * noise) & (img - sky > 3 * np.maximum(nb, noise))
    assert sharp.sum() >= 0.3 * truth.n_cosmics


@pytest.mark.parametrize("layout", ["raw", "processed"])
def test_dead_ccd_holds_no_light(tmp_path, layout):
    path = tmp_path / "dead.fits"
    truth = simulate_exposure("bgp_crowded", 12, path, n_ccds=3, ccd_shape=SHAPE, layout=layout,
                              dead_ccd_prob=1.0, severity=0.5)
    dead = [int(v) for v in truth.dead_ccds.split(";")]
    assert len(dead) == 1
    with fits.open(path) as hdul:
        for i, hdu in enumerate(hdul[1:]):
            data = hdu.data.astype(np.float64)
            sci = data[section(hdu.header["DATASEC"])]
            spread = np.percentile(sci, 99.9) - np.percentile(sci, 50)
            if i in dead:
                assert spread < 30  # constant or bias + read noise
            else:
                assert spread > 300  # a crowded field's stars


def test_fz_compression_is_lossless_for_raw_and_reproducible(tmp_path):
    plain = tmp_path / "1000001o.fits"
    packed = tmp_path / "1000001o.fits.fz"
    again = tmp_path / "again.fits.fz"
    for p in (plain, packed, again):
        simulate_exposure("bt", 5, p, n_ccds=2, ccd_shape=(128, 128), dead_ccd_prob=0.0)
    assert packed.read_bytes() == again.read_bytes()
    assert packed.stat().st_size < plain.stat().st_size
    with fits.open(plain) as a, fits.open(packed) as b:
        assert isinstance(b[1], fits.CompImageHDU)
        for ha, hb in zip(a[1:], b[1:]):
            assert hb.header["EXTNAME"] == ha.header["EXTNAME"]
            assert hb.header["DATASEC"] == ha.header["DATASEC"]
            np.testing.assert_array_equal(hb.data, ha.data)


def test_fz_processed_is_close_to_plain(tmp_path):
    plain, packed = tmp_path / "p.fits", tmp_path / "p.fits.fz"
    for p in (plain, packed):
        simulate_exposure("good", 5, p, n_ccds=1, ccd_shape=(128, 128), layout="processed")
    with fits.open(plain) as a, fits.open(packed) as b:
        noise = 1.4826 * np.median(np.abs(a[1].data - np.median(a[1].data)))
        assert np.max(np.abs(b[1].data - a[1].data)) < noise / 4


@pytest.mark.parametrize("name", ["s.fits", "s.fits.fz"])
def test_streamed_writing_gives_the_same_bytes(tmp_path, monkeypatch, name):
    # Full-size exposures are written CCD by CCD; the file must not depend on that choice.
    import desom.simulate.exposure as exposure
    simulate_exposure("rbt", 8, tmp_path / f"one_{name}", n_ccds=3, ccd_shape=(64, 64))
    monkeypatch.setattr(exposure, "STREAM_ABOVE_PIXELS", 0)
    simulate_exposure("rbt", 8, tmp_path / f"str_{name}", n_ccds=3, ccd_shape=(64, 64))
    assert (tmp_path / f"one_{name}").read_bytes() == (tmp_path / f"str_{name}").read_bytes()
    assert fits.getheader(tmp_path / f"str_{name}", 0)["EXTEND"] is True
