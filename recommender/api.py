"""Search endpoints: find-similar, by prototypes, by an example cutout, by an uploaded
exposure. Thin: parse and validate, call `recommender.services`, serialise."""
import functools

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from archive import selectors
from config.throttling import UploadThrottle
from archive.api.filters import ExposureFilter

from . import services, uploads
from .indexes import HISTO, index_kind_names, index_kinds

MATCHES = inline_serializer("Matches", fields={"results": serializers.ListField(child=serializers.DictField())})


def _respond(matches, **extra):
    return Response({**extra, "count": len(matches), "results": [m.as_dict() for m in matches]})


def _filtered_queryset(request):
    """The same filters as the exposure list (band, dates, cell, label, flag, cone...)."""
    params = request.query_params.copy()
    for name in ("k", "index", "nodes", "spread", "radius_nodes", "format", "page"):
        params.pop(name, None)
    if not params:
        # no filter asked: what the user may see (building the filter form costs a few ms a search)
        return selectors.visible_exposures(request.user)
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
    """Exposures most like this one, by the index kind `index` (default histo: histo-vectors
    compared as distributions); the kinds are those registered in `recommender.indexes.kinds`."""

    @extend_schema(parameters=[OpenApiParameter("k", int), OpenApiParameter(
        "index", str, enum=index_kind_names(), default=HISTO.name,
        description="; ".join(f"{kind.name}: {kind.description}" for kind in index_kinds()))],
        responses={200: MATCHES})
    def get(self, request, pk):
        exposure = selectors.visible_exposure_or_404(request.user, pk)
        index = request.query_params.get("index", HISTO.name)
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

    def uploaded_file(self, request):
        upload = request.FILES.get("file")
        if upload is None:
            raise ValidationError({"file": "attach the file as multipart form field 'file'"})
        return upload

    def search_upload(self, request, search, info_name: str, file_errors=(uploads.UploadError,)):
        """Cheap checks, the file, then `search(upload, k=, user=, queryset=) -> (info, matches)`;
        `file_errors` are answered as the file's problem, other search errors as the request's."""
        k, queryset = self.cheap_checks(request)
        upload = self.uploaded_file(request)
        try:
            info, matches = search(upload, k=k, user=request.user, queryset=queryset)
        except file_errors as exc:
            raise ValidationError({"file": str(exc)})
        except services.SearchError as exc:
            raise ValidationError({"detail": str(exc)})
        return _respond(matches, **{info_name: info})


class CutoutSearchView(_UploadView):
    """Upload a 32x32 source stamp (FITS, .npy, or PNG); find exposures rich in sources like it."""

    @extend_schema(request={"multipart/form-data": inline_serializer("CutoutUpload", fields={
        "file": serializers.FileField()})}, responses={200: MATCHES})
    def post(self, request):
        return self.search_upload(request, uploads.search_by_cutout, "cutout")


class ExposureSearchView(_UploadView):
    """Upload a FITS exposure that is not in the archive; find the archive's most similar.
    Refused in milliseconds when its headers declare more HDUs, pixels or decompressed bytes
    than the archive takes (settings ARCHIVE_UPLOAD_MAX_*)."""

    @extend_schema(request={"multipart/form-data": inline_serializer("ExposureUpload", fields={
        "file": serializers.FileField()})}, responses={200: MATCHES},
        parameters=[OpenApiParameter("k", int), OpenApiParameter(
            "index", str, enum=list(services.UPLOAD_INDEXES), default=HISTO.name,
            description="histo: the upload's histo-vector (Hellinger); desom2: the upload placed by the active "
                        "DESOM-2 (its cell in the answer), compared by latent code")])
    def post(self, request):
        index = request.query_params.get("index", HISTO.name)
        _search(lambda: services.upload_index(index))     # before the file is looked at
        # Whatever stops an uploaded exposure's search after that is about the file (no sources,
        # a calibration frame, headers over the limits).
        return self.search_upload(request, functools.partial(uploads.search_by_exposure, index=index), "upload",
                                  file_errors=(uploads.UploadError, services.SearchError))
