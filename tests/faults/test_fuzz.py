"""Fuzzing the readers with hypothesis: mutated bytes of small valid files must either be read
or be refused with the documented error type (ExposureReadError for exposures,
recommender.uploads.UploadError for search stamps), never anything else. Bounded: tens of examples each."""
import io

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from desom.fits_io import ExposureReadError
from desom.pipeline import ImagingConfig, summarise_exposure
from recommender.uploads import UploadError, read_stamp

from tests.desom.fitsfactory import write_exposure

CONFIG = ImagingConfig(detector="sep")
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@pytest.fixture(scope="module")
def valid_exposure(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "valid.fits"
    write_exposure(path, n_ccds=1, shape=(96, 96), layout="raw", seed=3)
    return path.read_bytes()


def mutate(data: bytes, edits, cut) -> bytes:
    buffer = bytearray(data)
    for position, value in edits:
        buffer[position % len(buffer)] = value
    return bytes(buffer[:max(1, int(len(buffer) * cut))])


# Most edits land in the headers (the first two 2880-byte blocks of each HDU hold them), where
# a flipped byte changes meaning; the rest anywhere.
EDITS = st.lists(st.tuples(st.one_of(st.integers(0, 2 * 2880), st.integers(0, 10 ** 6)), st.integers(0, 255)),
                 min_size=1, max_size=12)
CUTS = st.one_of(st.just(1.0), st.floats(0.01, 1.0))


@FUZZ
@given(edits=EDITS, cut=CUTS)
def test_summarise_exposure_reads_or_refuses_mutated_files(valid_exposure, tmp_path_factory, edits, cut):
    path = tmp_path_factory.mktemp("case") / "mutated.fits"
    path.write_bytes(mutate(valid_exposure, edits, cut))
    try:
        summary = summarise_exposure(path, config=CONFIG)
    except ExposureReadError as exc:
        assert str(exc).strip()
    else:
        assert summary.metadata is not None


def _stamp_fits() -> bytes:
    out = io.BytesIO()
    yy, xx = np.mgrid[:32, :32]
    fits.PrimaryHDU(np.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / 8).astype(np.float32)).writeto(out)
    return out.getvalue()


def _stamp_npy() -> bytes:
    out = io.BytesIO()
    np.save(out, np.arange(32 * 32, dtype=np.float32).reshape(32, 32))
    return out.getvalue()


def _stamp_png() -> bytes:
    out = io.BytesIO()
    Image.fromarray((np.arange(32 * 32) % 256).astype(np.uint8).reshape(32, 32)).save(out, format="PNG")
    return out.getvalue()


STAMPS = {"fits": _stamp_fits(), "npy": _stamp_npy(), "png": _stamp_png()}


@FUZZ
@given(kind=st.sampled_from(sorted(STAMPS)), edits=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)),
                                                             min_size=1, max_size=8), cut=CUTS)
def test_read_stamp_reads_or_refuses_mutated_stamps(kind, edits, cut):
    data = mutate(STAMPS[kind], edits, cut)
    try:
        image = read_stamp(data, f"stamp.{kind}")
    except UploadError as exc:
        assert str(exc)  # refused with a message for the user
    else:
        assert image.ndim == 2 and image.dtype == np.float32
