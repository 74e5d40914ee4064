"""Search endpoints: find-similar, by prototypes, by an example cutout, by an uploaded
exposure. Thin: parse and validate, call `recommender.services`, serialise."""
import io
import os
import tempfile

import numpy as np
from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from archive import selectors
from config.throttling import UploadThrottle
from desom.fits_io import ExposureReadError
from archive.api.filters import ExposureFilter

from . import services

MATCHES = inline_serializer("Matches", fields={"results": serializers.ListField(child=serializers.DictField())})


def _respond(matches, **extra):
    return Response({**extra, "count": len(matches), "results": [m.as_dict() for m in matches]})


def _filtered_queryset(request):
    """The same filters as the exposure list (band, dates, cell, label, flag, cone...)."""
    params = request.query_params.copy()
    for name in ("k", "index", "nodes", "spread", "radius_nodes", "format", "page"):
        params.pop(name, None)
    filterset = ExposureFilter(params, queryset=selectors.visible_exposures(request.user))
    if not filterset.is_valid():
        raise ValidationError(filterset.errors)
    return filterset.qs


def _search(call):
    try:
        return call()
    except services.SearchError as exc:
        raise ValidationError({"detail": str(exc)})


class SimilarView(APIView):
    """Exposures most like this one. `index=histo` (default) compares histo-vectors as
    distributions; `index=activation` compares mean prototype activations."""

    @extend_schema(parameters=[OpenApiParameter("k", int), OpenApiParameter("index", str, enum=["histo", "activation"])],
                   responses={200: MATCHES})
    def get(self, request, pk):
        exposure = selectors.visible_exposure_or_404(request.user, pk)
        index = request.query_params.get("index", services.HISTO)
        matches = _search(lambda: services.similar(exposure, k=request.query_params.get("k", 10), index=index,
                                                   user=request.user, queryset=_filtered_queryset(request)))
        return _respond(matches, exposure=exposure.pk, index=index)


class PrototypeSearchView(APIView):
    """Exposures whose sources crowd into the given DESOM-1 nodes: `nodes=12,13:0.5,40`."""

    @extend_schema(parameters=[OpenApiParameter("nodes", str, required=True), OpenApiParameter("k", int),
                               OpenApiParameter("spread", float)], responses={200: MATCHES})
    def get(self, request):
        nodes = request.query_params.get("nodes")
        if not nodes:
            raise ValidationError({"nodes": "give DESOM-1 nodes, e.g. nodes=12,13:0.5"})
        try:
            spread = float(request.query_params.get("spread", 0))
        except ValueError:
            raise ValidationError({"spread": "spread must be a number of map units"})
        if not 0 <= spread <= 5:
            raise ValidationError({"spread": "spread must lie in [0, 5]"})
        matches = _search(lambda: services.by_prototypes(nodes, k=request.query_params.get("k", 10), user=request.user,
                                                         spread=spread, queryset=_filtered_queryset(request)))
        return _respond(matches)


class _UploadView(APIView):
    """A search by an uploaded file. Before the file is looked at: the shared upload throttle,
    the body's size (config.middleware refuses an oversized body from its Content-Length,
    unread), then the cheap parameters (k, filters); only then is the file read, bounded by its
    headers (services.check_upload), and its temporary copy is always removed."""

    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [UploadThrottle]

    def cheap_checks(self, request):
        k = _search(lambda: services._check_k(request.query_params.get("k", 10)))
        return k, _filtered_queryset(request)

    def uploaded_file(self, request, max_bytes):
        upload = request.FILES.get("file")
        if upload is None:
            raise ValidationError({"file": "attach the file as multipart form field 'file'"})
        if upload.size > max_bytes:
            raise ValidationError({"file": f"the upload is {upload.size} bytes; the limit is {max_bytes}"})
        return upload


CUTOUT_MAX_BYTES = settings.ARCHIVE_CUTOUT_MAX_BYTES


class CutoutSearchView(_UploadView):
    """Upload a 32x32 source stamp (FITS, .npy, or PNG); find exposures rich in sources like it."""

    @extend_schema(request={"multipart/form-data": inline_serializer("CutoutUpload", fields={
        "file": serializers.FileField()})}, responses={200: MATCHES})
    def post(self, request):
        k, queryset = self.cheap_checks(request)
        upload = self.uploaded_file(request, CUTOUT_MAX_BYTES)
        image = read_stamp(upload.read(), upload.name or "")
        info, matches = _search(lambda: services.by_cutout(image, k=k, user=request.user, queryset=queryset))
        return _respond(matches, cutout=info)


class ExposureSearchView(_UploadView):
    """Upload a FITS exposure that is not in the archive; find the archive's most similar.
    Refused in milliseconds when its headers declare more HDUs, pixels or decompressed bytes
    than the archive takes (settings ARCHIVE_UPLOAD_MAX_*)."""

    @extend_schema(request={"multipart/form-data": inline_serializer("ExposureUpload", fields={
        "file": serializers.FileField()})}, responses={200: MATCHES})
    def post(self, request):
        k, queryset = self.cheap_checks(request)
        upload = self.uploaded_file(request, settings.ARCHIVE_MAX_UPLOAD_BYTES)
        try:
            info, matches = search_uploaded_exposure(upload, k=k, user=request.user, queryset=queryset)
        except services.SearchError as exc:
            raise ValidationError({"file": str(exc)})
        return _respond(matches, upload=info)


def search_uploaded_exposure(upload, *, k, user, queryset=None):
    """The one path of an uploaded exposure (API and page): type check, a private temporary
    copy, services.by_exposure_file, the copy removed whatever happens. Raises SearchError with
    a message that never names the server's temporary path."""
    head = upload.read(2880)
    upload.seek(0)
    if not (head.startswith(b"SIMPLE  =") or head[:2] == b"\x1f\x8b"):
        raise services.SearchError("the upload is not a FITS file (no SIMPLE card; .fits, .fits.gz, .fits.fz)")
    suffix = ".fits.gz" if head[:2] == b"\x1f\x8b" else ".fits"
    fd, path = tempfile.mkstemp(suffix=suffix, prefix="upload-", dir=settings.FILE_UPLOAD_TEMP_DIR)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in upload.chunks():
                handle.write(chunk)
        try:
            return services.by_exposure_file(path, k=k, user=user, queryset=queryset)
        except services.SearchError as exc:
            raise services.SearchError(str(exc).replace(path, "the upload")) from None
        except (ExposureReadError, ValueError, OSError) as exc:
            message = str(exc).replace(path, "the upload")
            raise services.SearchError(f"cannot read the uploaded exposure: {message}") from None
    finally:
        os.unlink(path)


def read_stamp(data: bytes, name: str) -> np.ndarray:
    """A 32x32 image from FITS (first image HDU), .npy, or PNG/JPEG bytes; a clear 400 otherwise."""
    if data.startswith(b"SIMPLE  ="):
        from astropy.io import fits

        try:
            with fits.open(io.BytesIO(data)) as hdus:
                image = next((h.data for h in hdus if h.is_image and h.data is not None and h.data.ndim == 2), None)
        except Exception as exc:
            raise ValidationError({"file": f"unreadable FITS stamp: {exc}"})
        if image is None:
            raise ValidationError({"file": "the FITS stamp holds no 2-D image"})
        return np.asarray(image, dtype=np.float32)
    if data.startswith(b"\x93NUMPY"):
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:
            raise ValidationError({"file": f"unreadable .npy stamp: {exc}"})
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
            raise ValidationError({"file": f"the .npy stamp must be a 2-D numeric array, not {array.dtype} {array.shape}"})
        return array.astype(np.float32)
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as picture:
            if picture.width * picture.height > 4096:
                raise ValidationError({"file": f"a cutout must be 32x32 pixels, not {picture.width}x{picture.height}"})
            return np.asarray(picture.convert("F"), dtype=np.float32)
    except ValidationError:
        raise
    except Exception:
        raise ValidationError({"file": f"{name or 'the upload'} is not an image: send a 32x32 FITS, .npy or PNG stamp"})
