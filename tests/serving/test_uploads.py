"""Uploads that cannot hurt the server: a gzip bomb, an exposure with too many extensions and
one declaring absurd sizes are refused from their headers, before the imaging path is entered,
with bounded memory and no temporary file left; cheap parameters are checked before the file
is looked at. (Refusal times and peak RSS of a server process: benchmarks/bench_uploads.py.)"""
import gzip
import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from django.core.cache import cache
from django.test import Client

from desom import fits_io
from recommender import services

from tests.desom.fitsfactory import absurd_header, gzip_bomb, many_extensions


CASES = {"bomb.fits.gz": (gzip_bomb, "pixels"), "many.fits": (many_extensions, "HDUs"),
         "absurd.fits": (absurd_header, "pixels")}


@pytest.fixture
def no_imaging(monkeypatch):
    """The imaging path must never be entered for a refused upload."""
    import desom.pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("summarise_exposure ran on an upload that should have been refused")

    monkeypatch.setattr(desom.pipeline, "summarise_exposure", refuse)


@pytest.fixture
def upload_dir(tmp_path, settings, monkeypatch):
    """Every temporary file of an upload (Django's and ours) goes here, to be counted."""
    import tempfile

    folder = tmp_path / "uploads"
    folder.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024    # Django spills every upload to a file here
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    cache.clear()
    yield folder
    cache.clear()


def post(client, path, name, data, **params):
    upload = io.BytesIO(data)
    upload.name = name
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return client.post(f"{path}?{query}" if query else path, {"file": upload})


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_uploads_are_refused_from_their_headers(populated_archive, no_imaging, upload_dir, name):
    make, needle = CASES[name]
    data = make()
    tracemalloc.start()
    try:
        response = post(Client(), "/api/search/exposure/", name, data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 400, response.content[:300]
    message = response.json()["fields"]["file"][0]
    assert needle in message and "refused" in message and "/tmp" not in message, message
    # Memory: the upload itself, the multipart parse and a few header blocks; the 800 MB to
    # 8 TB the file declares are never decoded.
    assert peak < 16 * 2 ** 20 + 2 * len(data), peak
    assert list(upload_dir.iterdir()) == []


def test_the_upload_page_refuses_them_too(populated_archive, no_imaging, upload_dir):
    client = Client()
    page = client.post("/search/upload/", {"kind": "exposure", "k": 5,
                                           "file": _named(gzip_bomb(), "bomb.fits.gz")})
    assert page.status_code == 400 and "pixels" in page.content.decode()
    assert list(upload_dir.iterdir()) == []


def _named(data, name):
    upload = io.BytesIO(data)
    upload.name = name
    return upload


def test_cheap_parameters_are_checked_before_the_file(populated_archive, upload_dir, monkeypatch):
    def untouched(*args, **kwargs):
        raise AssertionError("the file was scanned although k was invalid")

    monkeypatch.setattr(fits_io, "scan_structure", untouched)
    client = Client()
    for params, field in (({"k": 0}, "k"), ({"k": "many"}, "k"), ({"k": 5, "radius": 3}, None)):
        response = post(client, "/api/search/exposure/", "bomb.fits.gz", gzip_bomb(2000), **params)
        assert response.status_code == 400, params
        assert field is None or field in response.json()["detail"], response.json()
    assert list(upload_dir.iterdir()) == []


def test_an_honest_upload_within_the_limits_is_searched(populated_archive, science_files, upload_dir, settings):
    data = Path(science_files[0]).read_bytes()
    structure = fits_io.scan_structure(science_files[0], services.upload_limits())
    assert structure.n_images >= 1 and structure.pixels > 0
    response = post(Client(), "/api/search/exposure/", "mine.fits", data, k=3)
    assert response.status_code == 200 and len(response.json()["results"]) == 3
    assert list(upload_dir.iterdir()) == []
    # The same file is refused when the limits are lowered below what it holds.
    settings.ARCHIVE_UPLOAD_MAX_PIXELS = structure.pixels - 1
    assert "pixels" in post(Client(), "/api/search/exposure/", "mine.fits", data).json()["detail"]


def test_the_scanner_reads_compressed_and_tile_compressed_files(tmp_path):
    limits = fits_io.FitsLimits(max_hdus=41, max_pixels=10 ** 8, max_bytes=10 ** 8)
    images = [np.arange(64 * 48, dtype=np.int16).reshape(48, 64) + i for i in range(3)]
    plain = tmp_path / "e.fits"
    fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(a) for a in images]).writeto(plain)
    packed = tmp_path / "e.fits.fz"
    fits.HDUList([fits.PrimaryHDU()] + [fits.CompImageHDU(a) for a in images]).writeto(packed)
    zipped = tmp_path / "e.fits.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed, zipped):
        found = fits_io.scan_structure(path, limits)
        assert (found.n_hdus, found.n_images, found.pixels) == (4, 3, 3 * 64 * 48), path
        assert found.images[0] == (1, (48, 64))
    with pytest.raises(fits_io.FitsLimitError, match="bytes"):
        fits_io.scan_structure(zipped, fits_io.FitsLimits(41, 10 ** 8, 10_000))
    cut = tmp_path / "cut.fits.gz"
    cut.write_bytes(zipped.read_bytes()[:-200])
    with pytest.raises(fits_io.ExposureReadError):
        fits_io.scan_structure(cut, limits)
