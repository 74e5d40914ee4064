"""Reading MegaCam exposures: formats, metadata from real-style headers, and bad files."""
import hashlib
import importlib.util
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from desom.fits_io import (ExposureReadError, band_from_filter, file_checksum,
                           metadata_from_headers, open_exposure, parse_section, read_metadata)

_spec = importlib.util.spec_from_file_location("fitsfactory", Path(__file__).with_name("fitsfactory.py"))
ff = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ff)

SHAPE = (512, 256)


# ---------------------------------------------------------------- headers ------------------
def test_metadata_from_a_real_style_primary_header():
    md = metadata_from_headers(ff.primary_header(expnum=1034567, n_ccds=36), path="/a/1034567o.fits",
                               n_ccds=36)
    assert md.expnum == 1034567
    assert md.filename == "1034567o.fits"
    assert md.object == "D3_1"
    assert md.obstype == "OBJECT" and md.is_science
    assert md.ra_deg == pytest.approx(135.409417) and md.dec_deg == pytest.approx(-2.4)
    assert md.mjd_obs == pytest.approx(55270.34206667)
    assert md.date_obs.isoformat().startswith("2010-03-15T08:12:34")
    assert md.exptime == 300.0 and md.airmass == pytest.approx(1.182)
    assert md.filter_name == "i.MP9702" and md.band == "i"
    assert md.instrument == "MegaPrime"
    assert md.runid == "10AQ01"
    assert md.release_date == date(2011, 3, 15)
    assert md.n_ccds == 36


def test_sexagesimal_coordinates_when_degrees_are_missing():
    h = ff.primary_header(drop=("RA_DEG", "DEC_DEG"), ra="9:01:38.26", dec="-2:24:00.0")
    md = metadata_from_headers(h)
    # 9h01m38.26s = (9 + 1/60 + 38.26/3600) * 15 degrees
    assert md.ra_deg == pytest.approx((9 + 1 / 60 + 38.26 / 3600) * 15, abs=1e-6)
    assert md.dec_deg == pytest.approx(-2.4, abs=1e-9)
    h = ff.primary_header(drop=("RA_DEG", "DEC_DEG"), ra="23:59:59.9", dec="+45:30:00")
    md = metadata_from_headers(h)
    assert md.ra_deg == pytest.approx(359.99958, abs=1e-4) and md.dec_deg == pytest.approx(45.5)


def test_crval_fallback_and_bad_coordinates():
    h = ff.primary_header(drop=("RA_DEG", "DEC_DEG", "RA", "DEC"))
    ext = fits.Header({"CRVAL1": 210.5, "CRVAL2": 54.25})
    md = metadata_from_headers(h, ext)
    assert (md.ra_deg, md.dec_deg) == (210.5, 54.25)
    h = ff.primary_header(drop=("RA_DEG", "DEC_DEG"), ra="not a ra", dec="-99:00:00")
    md = metadata_from_headers(h)
    assert md.ra_deg is None and md.dec_deg is None


def test_missing_and_malformed_keywords_are_none():
    h = fits.Header()
    h["EXPTIME"] = "abc"
    h["AIRMASS"] = "n/a"
    h["REL_DATE"] = "someday"
    h["MJD-OBS"] = "yesterday"
    h["EXPNUM"] = "12x"
    md = metadata_from_headers(h)
    for name in ("expnum", "object", "obstype", "ra_deg", "dec_deg", "mjd_obs", "date_obs",
                 "exptime", "filter_name", "band", "airmass", "instrument", "release_date",
                 "runid"):
        assert getattr(md, name) is None, name
    assert md.is_science   # no OBSTYPE: taken as science
    assert metadata_from_headers(None).expnum is None


def test_mjd_from_date_and_utc_when_mjd_missing():
    h = ff.primary_header(drop=("MJD-OBS",))
    md = metadata_from_headers(h)
    assert md.mjd_obs == pytest.approx(55270.34206667, abs=1e-6)
    h = ff.primary_header(drop=("MJD-OBS", "UTC-OBS"), extra={"DATE-OBS": "2010-03-15T06:00:00"})
    assert metadata_from_headers(h).mjd_obs == pytest.approx(55270.25, abs=1e-6)


def test_release_date_past_and_future():
    today = date.today()
    future = today + timedelta(days=400)
    past = metadata_from_headers(ff.primary_header(rel_date="2005-01-31")).release_date
    fut = metadata_from_headers(ff.primary_header(rel_date=future.isoformat())).release_date
    assert past == date(2005, 1, 31) and past < today
    assert fut == future and fut > today
    with_time = metadata_from_headers(ff.primary_header(rel_date="2012-07-01T00:00:00")).release_date
    assert with_time == date(2012, 7, 1)
    assert metadata_from_headers(ff.primary_header(rel_date="2012-13-45")).release_date is None


@pytest.mark.parametrize("name,band", [("i.MP9702", "i"), ("r.MP9602", "r"), ("u.MP9301", "u"),
                                       ("z.MP9801", "z"), ("i2.MP9703", "i"), ("Ha.MP9603", "Ha"),
                                       ("gri.MP9605", "gri"), ("", None), (None, None)])
def test_band_from_filter(name, band):
    assert band_from_filter(name) == band


def test_obstype_from_exptype_and_calibration_frames():
    h = ff.primary_header(obstype="FLAT", drop=("OBSTYPE",))
    md = metadata_from_headers(h)
    assert md.obstype == "FLAT" and not md.is_science
    assert not metadata_from_headers(ff.primary_header(obstype="bias")).is_science


def test_expnum_from_megacam_file_name_when_keyword_missing():
    h = ff.primary_header(drop=("EXPNUM",))
    assert metadata_from_headers(h, path="/x/2045678p.fits.fz").expnum == 2045678
    assert metadata_from_headers(h, path="/x/exposure.fits").expnum == 1234567   # FILENAME
    h = ff.primary_header(drop=("EXPNUM", "FILENAME"))
    assert metadata_from_headers(h, path="/x/exposure.fits").expnum is None


def test_parse_section():
    assert parse_section("[33:2080,1:4612]") == (slice(0, 4612), slice(32, 2080))
    assert parse_section("[2080:33,4612:1]") == (slice(0, 4612), slice(32, 2080))
    assert parse_section("[33:2080,1:4612]", shape=(4644, 2112)) is not None
    assert parse_section("[33:2200,1:4612]", shape=(4644, 2112)) is None
    for bad in ("33:2080,1:4612", "[a:b,1:2]", "[0:10,1:5]", None, 42):
        assert parse_section(bad) is None


# ---------------------------------------------------------------- formats ------------------
@pytest.fixture(scope="module")
def exposures(tmp_path_factory):
    d = tmp_path_factory.mktemp("fitsio")
    out = {}
    for layout in ("raw", "processed"):
        for comp, suffix in ((None, ".fits"), ("fz", ".fits.fz"), ("gz", ".fits.gz")):
            p = d / f"{layout}{suffix}"
            ff.write_exposure(p, n_ccds=3, shape=SHAPE, layout=layout, compression=comp, seed=3)
            out[layout, comp] = p
    return out


def test_raw_int16_bzero_is_stored_as_archives_store_it(exposures):
    with fits.open(exposures["raw", None], do_not_scale_image_data=True) as hl:
        assert hl[1].header["BITPIX"] == 16 and hl[1].header["BZERO"] == 32768
        assert hl[1].data.dtype.kind == "i"


@pytest.mark.parametrize("layout", ["raw", "processed"])
def test_every_format_gives_the_same_pixels(exposures, layout):
    read = {}
    for comp in (None, "fz", "gz"):
        with open_exposure(exposures[layout, comp]) as r:
            assert len(r) == 3 and [c.extname for c in r.ccds] == ["ccd00", "ccd01", "ccd02"]
            ccd = r.read_ccd(1)
            assert ccd.data.shape == SHAPE and ccd.data.dtype == np.float32
            assert ccd.data.flags.c_contiguous and ccd.data.dtype.isnative
            assert ccd.layout == layout
            read[comp] = ccd.data
    np.testing.assert_array_equal(read[None], read["gz"])
    if layout == "raw":     # integer RICE compression is lossless
        np.testing.assert_array_equal(read[None], read["fz"])
    else:                   # float RICE quantises: far below the noise (20 ADU)
        assert np.abs(read[None] - read["fz"]).max() < 5.0
    # the sky level, not the bias or BZERO, is what remains
    assert abs(float(np.median(read[None])) - 1200.0) < 5.0


def test_plain_files_are_memory_mapped_per_ccd(exposures):
    with open_exposure(exposures["raw", None]) as r:
        raw = r.read_raw(0)
        assert isinstance(raw, np.memmap) and raw.shape == (SHAPE[0] + 32, SHAPE[1] + 64)
    with open_exposure(exposures["raw", "fz"]) as r:
        assert not isinstance(r.read_raw(0), np.memmap)


def test_read_metadata_counts_ccds_and_layout(exposures, tmp_path):
    md = read_metadata(exposures["raw", "fz"])
    assert md.n_ccds == 3 and md.layout == "raw" and md.expnum == 1234567
    assert read_metadata(exposures["processed", "gz"]).layout == "processed"
    for n in (36, 40):
        p = tmp_path / f"e{n}.fits"
        ff.write_exposure(p, n_ccds=n, shape=(64, 64), layout="processed")
        assert read_metadata(p).n_ccds == n


def test_checksum_is_sha256_of_the_file(exposures):
    p = exposures["raw", "gz"]
    assert file_checksum(p) == hashlib.sha256(Path(p).read_bytes()).hexdigest()


# ---------------------------------------------------------------- bad files ----------------
@pytest.mark.parametrize("comp,suffix", [(None, ".fits"), ("fz", ".fits.fz"), ("gz", ".fits.gz")])
def test_truncated_file_is_a_clear_error(tmp_path, comp, suffix):
    p = tmp_path / f"trunc{suffix}"
    ff.write_exposure(p, n_ccds=4, shape=SHAPE, layout="raw", compression=comp)
    ff.truncate(p, 0.6)
    with pytest.raises(ExposureReadError) as err:
        with open_exposure(p) as r:
            for k in range(len(r)):
                r.read_ccd(k)
    assert str(p) in str(err.value)
    assert "truncated" in str(err.value) or "cannot read" in str(err.value)
    if comp is None:   # the extension where the data stop is named
        assert err.value.extension is not None and "ccd0" in err.value.extension


def test_not_fits_empty_missing(tmp_path):
    p = tmp_path / "notes.fits"
    p.write_text("this is not a FITS file\n" * 200)
    with pytest.raises(ExposureReadError, match="not a readable FITS file") as err:
        open_exposure(p)
    assert str(p) in str(err.value)
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    with pytest.raises(ExposureReadError, match="empty"):
        read_metadata(empty)
    with pytest.raises(ExposureReadError, match="does not exist"):
        read_metadata(tmp_path / "nope.fits")


def test_table_where_an_image_was_expected(tmp_path):
    p = tmp_path / "table.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="flux", format="E",
                                                       array=np.arange(5.0))], name="CATALOG")
    fits.HDUList([fits.PrimaryHDU(header=ff.primary_header(n_ccds=1)), table]).writeto(p)
    with pytest.raises(ExposureReadError) as err:
        read_metadata(p)
    assert str(p) in str(err.value) and "CATALOG" in str(err.value)
    assert "table" in str(err.value) and err.value.extension.startswith("1")


def test_table_among_ccds_is_skipped_with_a_warning(tmp_path):
    p = tmp_path / "mixed.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="x", format="E", array=np.ones(3))],
                                          name="EXTRA")
    ff.write_exposure(p, n_ccds=2, shape=SHAPE, extra_hdus=[table])
    with open_exposure(p) as r:
        assert len(r) == 2
        assert any("EXTRA" in w and "table" in w for w in r.warnings)


def test_no_image_extensions(tmp_path):
    p = tmp_path / "headeronly.fits"
    fits.HDUList([fits.PrimaryHDU(header=ff.primary_header(n_ccds=0))]).writeto(p)
    with pytest.raises(ExposureReadError, match="no image extensions"):
        read_metadata(p)


def test_single_image_in_the_primary_is_one_ccd(tmp_path):
    p = tmp_path / "single.fits"
    fits.PrimaryHDU(np.ones((64, 48), np.float32)).writeto(p)
    with open_exposure(p) as r:
        assert len(r) == 1 and r.read_ccd(0).data.shape == (64, 48)


def test_error_pickles(tmp_path):
    import pickle
    e = ExposureReadError("/x/a.fits", "file truncated", "3 'ccd02'")
    e2 = pickle.loads(pickle.dumps(e))
    assert str(e2) == str(e) and e2.extension == "3 'ccd02'"


def _replace_card(raw: bytearray, key: bytes, card: bytes):
    i = raw.find(key.ljust(8) + b"=")
    assert i >= 0
    raw[i:i + 80] = card.ljust(80)


def test_malformed_cards_in_the_file_become_none(tmp_path):
    """Cards astropy cannot parse (as found in old archive headers) give None, not a crash."""
    p = tmp_path / "badcards.fits"
    ff.write_exposure(p, n_ccds=1, shape=(128, 128))
    raw = bytearray(p.read_bytes())
    _replace_card(raw, b"EXPTIME", b"EXPTIME =              12.3.4 / two decimal points")
    _replace_card(raw, b"AIRMASS", b"AIRMASS = 1.2e")
    _replace_card(raw, b"MJD-OBS", b"MJD-OBS = 'not a number'")
    p.write_bytes(bytes(raw))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # nothing leaks out as a warning either
        md = read_metadata(p)
    assert md.exptime is None and md.airmass is None
    assert md.mjd_obs == pytest.approx(55270.34206667, abs=1e-6)   # from DATE-OBS + UTC-OBS
    assert md.band == "i" and md.expnum == 1234567


def test_non_2d_extensions_are_skipped_with_a_warning(tmp_path):
    p = tmp_path / "cube.fits"
    cube = fits.ImageHDU(np.zeros((3, 16, 16), np.float32), name="CUBE")
    empty = fits.ImageHDU(name="EMPTY")
    ff.write_exposure(p, n_ccds=2, shape=(128, 128), extra_hdus=[cube, empty])
    with open_exposure(p) as r:
        assert [c.extname for c in r.ccds] == ["ccd00", "ccd01"]
        assert any("CUBE" in w and "2-D" in w for w in r.warnings)
