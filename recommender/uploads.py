"""Search by an uploaded file, the one path for the API and the upload page: the size bound,
reading a source stamp or a private temporary copy of an exposure, then `services.by_cutout` or
`services.by_exposure_file`. A file the archive refuses raises `UploadError`; a search that
cannot be answered raises `services.SearchError`; each surface turns them into its answer."""
from __future__ import annotations

import io
import os
import tempfile

import numpy as np
from django.conf import settings

from desom.fits_io import ExposureReadError

from . import services

CUTOUT_MAX_BYTES = settings.ARCHIVE_CUTOUT_MAX_BYTES
# A stamp is 32x32; a picture much larger than that is refused before it is decoded.
MAX_STAMP_PIXELS = 4096


class UploadError(services.SearchError):
    """The uploaded file itself is refused (too large, unreadable, the wrong kind)."""


def check_size(upload, limit: int, what: str) -> None:
    if upload.size > limit:
        raise UploadError(f"the upload is {upload.size} bytes; {what} may be at most {limit} bytes")


def search_by_cutout(upload, *, k, user, queryset=None):
    """Exposures rich in sources like the uploaded 32x32 stamp: (the stamp's BMU, matches)."""
    check_size(upload, CUTOUT_MAX_BYTES, "a cutout")
    image = read_stamp(upload.read(), upload.name or "")
    return services.by_cutout(image, k=k, user=user, queryset=queryset)


def search_by_exposure(upload, *, k, user, queryset=None, index: str | None = "histo"):
    """The archive's exposures most like an uploaded one, by `index` (services.upload_index):
    (the upload's summary, matches)."""
    check_size(upload, settings.ARCHIVE_MAX_UPLOAD_BYTES, "an exposure")
    return search_uploaded_exposure(upload, k=k, user=user, queryset=queryset, index=index)


def search_uploaded_exposure(upload, *, k, user, queryset=None, index: str | None = "histo"):
    """Type check, a private temporary copy, services.by_exposure_file, the copy removed
    whatever happens. Errors never name the server's temporary path."""
    head = upload.read(2880)
    upload.seek(0)
    if not (head.startswith(b"SIMPLE  =") or head[:2] == b"\x1f\x8b"):
        raise UploadError("the upload is not a FITS file (no SIMPLE card; .fits, .fits.gz, .fits.fz)")
    suffix = ".fits.gz" if head[:2] == b"\x1f\x8b" else ".fits"
    fd, path = tempfile.mkstemp(suffix=suffix, prefix="upload-", dir=settings.FILE_UPLOAD_TEMP_DIR)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in upload.chunks():
                handle.write(chunk)
        try:
            return services.by_exposure_file(path, k=k, user=user, queryset=queryset, index=index)
        except services.SearchError as exc:
            raise type(exc)(str(exc).replace(path, "the upload")) from None
        except (ExposureReadError, ValueError, OSError) as exc:
            message = str(exc).replace(path, "the upload")
            raise UploadError(f"cannot read the uploaded exposure: {message}") from None
    finally:
        os.unlink(path)


def read_stamp(data: bytes, name: str) -> np.ndarray:
    """A 2-D float32 image from FITS (first image HDU), .npy, or PNG/JPEG bytes; UploadError
    with a message for the user otherwise."""
    if data.startswith(b"SIMPLE  ="):
        from astropy.io import fits

        try:
            with fits.open(io.BytesIO(data)) as hdus:
                image = next((h.data for h in hdus if h.is_image and h.data is not None and h.data.ndim == 2), None)
        except Exception as exc:
            raise UploadError(f"unreadable FITS stamp: {exc}") from None
        if image is None:
            raise UploadError("the FITS stamp holds no 2-D image")
        return np.asarray(image, dtype=np.float32)
    if data.startswith(b"\x93NUMPY"):
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:
            raise UploadError(f"unreadable .npy stamp: {exc}") from None
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
            raise UploadError(f"the .npy stamp must be a 2-D numeric array, not {array.dtype} {array.shape}")
        return array.astype(np.float32)
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as picture:
            if picture.width * picture.height > MAX_STAMP_PIXELS:
                raise UploadError(f"a cutout must be 32x32 pixels, not {picture.width}x{picture.height}")
            return np.asarray(picture.convert("F"), dtype=np.float32)
    except UploadError:
        raise
    except Exception:
        raise UploadError(f"{name or 'the upload'} is not an image: send a 32x32 FITS, .npy or PNG stamp") from None
