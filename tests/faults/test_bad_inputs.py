"""A corpus of bad exposure files, each met with a clear error (or, for a readable file with
nothing in it, clear warnings) by `desom.pipeline.summarise_exposure` and by the upload search
API. A corrupted FAISS index file is covered by tests/recommender/test_search.py
(test_a_corrupt_index_file_is_rebuilt)."""
import gzip
import io

import numpy as np
import pytest
from astropy.io import fits
from rest_framework.test import APIClient

from desom.fits_io import ExposureReadError
from desom.pipeline import ImagingConfig, summarise_exposure

from tests.desom.fitsfactory import primary_header, truncate, write_exposure

CONFIG = ImagingConfig(detector="sep")


def _truncated(path):
    write_exposure(path, n_ccds=1, shape=(128, 128), layout="processed")
    truncate(path, 0.6)


def _not_fits(path):
    path.write_bytes(b"this is not a FITS file\n" * 200)


def _fits_table(path):
    table = fits.BinTableHDU.from_columns([fits.Column(name="flux", format="E", array=np.arange(5.0))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)


def _nan_only(path):
    write_exposure(path, n_ccds=1, shape=(128, 128), layout="processed", nan_ccds=(0,))


def _enormous_header(path):
    header = primary_header(n_ccds=1)
    for i in range(20_000):
        header.append(("COMMENT", f"filler card {i}"))
    image = fits.ImageHDU(np.random.default_rng(0).normal(100, 5, (64, 64)).astype(np.float32))
    fits.HDUList([fits.PrimaryHDU(header=header), image]).writeto(path)


def _cube(path):
    fits.HDUList([fits.PrimaryHDU(header=primary_header(n_ccds=1)),
                  fits.ImageHDU(np.ones((4, 64, 64), np.float32))]).writeto(path)


def _one_dimensional(path):
    fits.HDUList([fits.PrimaryHDU(header=primary_header(n_ccds=1)),
                  fits.ImageHDU(np.ones(64, np.float32))]).writeto(path)


# name: (writer, "error" or "warning", what the message must say)
CORPUS = {
    "truncated": (_truncated, "error", "truncated"),
    "not FITS": (_not_fits, "error", "FITS file"),
    "FITS table": (_fits_table, "error", "table"),
    "NaN only": (_nan_only, "warning", "NaN"),
    "20 000 header cards": (_enormous_header, "warning", "no sources"),
    "3-D cube": (_cube, "error", "no image extensions"),
    "1-D array": (_one_dimensional, "error", "no image extensions"),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_summarise_exposure_names_the_problem(tmp_path, name):
    writer, outcome, needle = CORPUS[name]
    path = tmp_path / "bad.fits"
    writer(path)
    if outcome == "error":
        with pytest.raises(ExposureReadError) as caught:
            summarise_exposure(path, config=CONFIG)
        assert needle in str(caught.value) and str(path) in str(caught.value)
    else:
        summary = summarise_exposure(path, config=CONFIG)
        assert any(needle in w for w in summary.warnings), summary.warnings
        assert summary.n_detected == 0 if hasattr(summary, "n_detected") else True


def test_upload_api_answers_every_bad_file_with_a_400(populated_archive, tmp_path):
    client = APIClient()
    for name, (writer, outcome, needle) in CORPUS.items():
        path = tmp_path / f"{name.replace(' ', '_')}.fits"
        writer(path)
        upload = io.BytesIO(path.read_bytes())
        upload.name = path.name
        response = client.post("/api/search/exposure/", {"file": upload}, format="multipart")
        assert response.status_code == 400, (name, response.status_code, response.content[:300])
        message = str(response.json())
        # The error names the problem and never leaks the server's temporary path.
        assert "/tmp" not in message and "upload-" not in message, (name, message)
        if outcome == "error":
            assert needle in message, (name, message)
        else:
            assert "source" in message.lower(), (name, message)


def _gzip_bomb(path, side: int):
    """A .fits.gz of a few hundred kB whose one CCD declares side x side int16 pixels of zeros."""
    header = fits.ImageHDU(np.zeros((2, 2), np.int16)).header
    header["NAXIS1"], header["NAXIS2"], header["EXTNAME"] = side, side, "ccd00"
    with gzip.open(path, "wb", compresslevel=6) as out:
        out.write(fits.PrimaryHDU(header=primary_header(n_ccds=1)).header.tostring().encode())
        out.write(header.tostring().encode())
        left, block = side * side * 2, bytes(1 << 24)
        while left:
            out.write(block[:min(left, len(block))])
            left -= min(left, len(block))
        out.write(bytes((-(side * side * 2)) % 2880))


def test_a_gzip_bomb_is_refused(tmp_path):
    """A .gz of under 1 MB declaring a 10000x10000 image is refused before its data are read."""
    path = tmp_path / "bomb.fits.gz"
    _gzip_bomb(path, 10_000)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(ExposureReadError, match="(?i)pixels|too large|size"):
        summarise_exposure(path, config=CONFIG)
