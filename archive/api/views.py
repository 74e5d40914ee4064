"""The archive's REST API: thin views over `archive.services` and `archive.selectors`.
Reads are public but never show what the user may not see; writes need a staff user."""
from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotAuthenticated, NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from config.errors import error_body
from config.throttling import LoginThrottle, WriteThrottle

from .. import selectors
from ..models import AccessToken, CellAssignment, ExposureVector, IngestRun, ModelVersion, PrototypeFlag
from ..authentication import AccessTokenAuthentication
from ..services import downloads, quality, tokens, versions
from . import renderers, serializers
from .filters import ExposureFilter
from .pagination import ArchivePagination


# What a list or the manifest reads besides the filters.
LIST_PARAMETERS = {"list": {"page", "page_size", "format"}, "manifest": {"page", "output", "format"}}


def refuse_unknown_parameters(request, allowed: set[str]) -> None:
    """A misspelt or unknown query parameter (colour=blue, ordering=-date_obs) is refused with the
    names this route reads, never ignored (which would answer everything)."""
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        names = ", ".join(sorted(allowed))
        raise ValidationError({name: [f"unknown parameter {name!r}; this route reads: {names}"] for name in unknown})


def verdicts_for(exposures) -> dict:
    return {v.exposure_id: v for v in quality.quality_verdicts(exposures)}


class ExposureViewSet(viewsets.ReadOnlyModelViewSet):
    """Exposures with their metadata and quality; filter by cell, label, flag, band, dates,
    exposure time and cone."""

    filterset_class = ExposureFilter
    serializer_class = serializers.ExposureSerializer
    lookup_value_regex = r"[0-9]{1,18}"
    # ?format=csv or ?format=votable: a page of the list (or the manifest) as a table.
    renderer_classes = [*api_settings.DEFAULT_RENDERER_CLASSES, renderers.ExposureCSVRenderer,
                        renderers.ExposureVOTableRenderer]

    def get_queryset(self):
        return selectors.visible_exposures(self.request.user).order_by("expnum")

    def filter_queryset(self, queryset):
        if self.action in ("list", "manifest"):
            refuse_unknown_parameters(self.request, set(ExposureFilter.base_filters) | LIST_PARAMETERS[self.action])
        return super().filter_queryset(queryset)

    def get_serializer_class(self):
        return serializers.ExposureDetailSerializer if self.action == "retrieve" else serializers.ExposureSerializer

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        context = self.get_serializer_context() | {"verdicts": verdicts_for(page)}
        return self.get_paginated_response(serializers.ExposureSerializer(page, many=True, context=context).data)

    def retrieve(self, request, *args, **kwargs):
        exposure = self.get_object()
        desom1 = versions.active_version(ModelVersion.DESOM1)
        vector = (ExposureVector.objects.filter(exposure=exposure, model_version=desom1)
                  .select_related("model_version").first() if desom1 else None)
        context = self.get_serializer_context() | {"verdicts": verdicts_for([exposure]), "vector": vector}
        return Response(serializers.ExposureDetailSerializer(exposure, context=context).data)

    @extend_schema(parameters=[OpenApiParameter("output", str, enum=[*downloads.MANIFEST_OUTPUTS]),
                               OpenApiParameter("page", int)],
                   responses={(200, "text/plain"): str, (200, "application/json"): dict})
    @action(detail=False, url_path="manifest")
    def manifest(self, request):
        """Download URLs and sha256 of every exposure the query selects (the same filters as
        the list), 10 000 a page: `output=urls` for `wget -i`, `curl` for `curl -K`, `sha256`
        for `sha256sum -c`, `json` for everything."""
        output = request.query_params.get("output", "urls")
        if output not in downloads.MANIFEST_OUTPUTS:
            raise ValidationError({"output": f"output must be one of {[*downloads.MANIFEST_OUTPUTS]}"})
        try:
            page = int(request.query_params.get("page", "1"))
        except ValueError:
            raise ValidationError({"page": "page must be a whole number"})
        queryset = self.filter_queryset(self.get_queryset())
        total = queryset.count()
        last = max(1, -(-total // downloads.MANIFEST_PAGE))
        if not 1 <= page <= last:
            raise NotFound(f"page {page} is outside 1..{last}")
        start = (page - 1) * downloads.MANIFEST_PAGE
        rows = downloads.manifest_rows(
            queryset.only("id", "expnum", "filename", "file_size", "checksum")[start:start + downloads.MANIFEST_PAGE],
            request.build_absolute_uri)
        table_format = request.query_params.get("format")
        if table_format in ("csv", "votable"):
            columns = ["id", "expnum", "filename", "size", "sha256", "url"]
            body = (renderers.csv_table(rows, columns) if table_format == "csv" else
                    renderers.votable_table(rows, columns, f"download manifest, page {page} of {last}"))
            content_type = "text/csv" if table_format == "csv" else "application/x-votable+xml"
            output = table_format
        else:
            body, content_type = downloads.render_manifest(rows, output, total=total, page=page)
        response = HttpResponse(body, content_type=content_type)
        response["X-Total-Count"] = str(total)
        if page < last:
            params = request.query_params.copy()
            params["page"] = str(page + 1)
            response["Link"] = f'<{request.build_absolute_uri(request.path)}?{params.urlencode()}>; rel="next"'
        if output != "json":
            response["Content-Disposition"] = f'inline; filename="manifest-{page}.{output}"'
        return response


class QualityCheckView(APIView):
    """The pre-download check for one exposure or a cart: each one's label, flags and reasons.
    Ids the user may not see are reported as not found, never described."""

    @extend_schema(request=serializers.QualityCheckInput, responses={200: dict})
    def post(self, request):
        data = serializers.QualityCheckInput(data=request.data)
        data.is_valid(raise_exception=True)
        ids = list(dict.fromkeys(data.validated_data["ids"]))
        exposures = list(selectors.visible_exposures(request.user).filter(pk__in=ids))
        verdicts = [v.as_dict() for v in quality.quality_verdicts(exposures)]
        found = {v["exposure"] for v in verdicts}
        return Response({"results": verdicts, "not_found": [i for i in ids if i not in found],
                         "all_ok": all(v["ok"] for v in verdicts)})


class ModelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = serializers.ModelVersionSerializer
    queryset = ModelVersion.objects.select_related("trained_on")
    lookup_field = "version_id"
    filterset_fields = ["kind", "is_active"]


class Desom2MapView(APIView):
    """The DESOM-2 map: for each cell, visible members, its label and label probabilities."""

    @extend_schema(responses={200: dict})
    def get(self, request):
        desom2 = versions.active_version(ModelVersion.DESOM2)
        if desom2 is None:
            raise NotFound("no active DESOM-2 yet: train one (manage.py train_desom2)")
        rows, cols = desom2.map_shape
        visible = selectors.visible_exposures(request.user)
        counts = dict(CellAssignment.objects.filter(model_version=desom2, exposure__in=visible)
                      .values("cell").annotate(n=Count("id")).values_list("cell", "n"))
        labels = quality.current_cell_labels(desom2)
        classes, probabilities = quality.label_probabilities(desom2, labels=labels)
        cells = []
        for cell in range(rows * cols):
            row = labels.get(cell)
            cells.append({"cell": cell, "row": cell // cols, "col": cell % cols, "members": counts.get(cell, 0),
                          "label": row.label if row else None,
                          "probabilities": {c: round(float(p), 3) for c, p in zip(classes, probabilities[cell]) if p > 0}
                          if len(classes) else {}})
        return Response({"model_version": desom2.version_id, "rows": rows, "cols": cols, "cells": cells})


class CellViewSet(viewsets.ViewSet):
    """One DESOM-2 cell: its members (visible ones), label and label history; staff label it."""

    lookup_value_regex = r"[0-9]{1,6}"

    def _desom2(self):
        desom2 = versions.active_version(ModelVersion.DESOM2)
        if desom2 is None:
            raise NotFound("no active DESOM-2 yet")
        return desom2

    def _cell(self, desom2, pk):
        rows, cols = desom2.map_shape
        cell = int(pk)
        if not 0 <= cell < rows * cols:
            raise NotFound(f"cell {cell} is outside the {rows}x{cols} map")
        return cell

    @extend_schema(responses={200: dict})
    def retrieve(self, request, pk=None):
        desom2 = self._desom2()
        cell = self._cell(desom2, pk)
        members = quality.in_cells(selectors.visible_exposures(request.user), [cell], desom2)
        paginator = ArchivePagination()
        page = paginator.paginate_queryset(members.order_by("expnum"), request, view=self)
        history = quality.label_history(cell, desom2)
        context = {"request": request, "verdicts": verdicts_for(page)}
        return paginator.get_paginated_response({
            "cell": cell, "row": cell // desom2.map_shape[1], "col": cell % desom2.map_shape[1],
            "label": history[0].label if history else None,
            "history": serializers.CellLabelSerializer(history, many=True, context={"request": request}).data,
            "members": serializers.ExposureSerializer(page, many=True, context=context).data,
        })

    @extend_schema(request=serializers.CellLabelInput, responses={201: serializers.CellLabelSerializer})
    @action(detail=True, methods=["post"], permission_classes=[permissions.IsAdminUser],
            throttle_classes=[WriteThrottle])
    def label(self, request, pk=None):
        desom2 = self._desom2()
        cell = self._cell(desom2, pk)
        data = serializers.CellLabelInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            row = quality.label_cell(cell, data.validated_data["label"], note=data.validated_data.get("note", ""),
                                     user=request.user, desom2=desom2)
        except quality.QualityError as exc:
            raise ValidationError({"label": str(exc)})
        return Response(serializers.CellLabelSerializer(row, context={"request": request}).data,
                        status=status.HTTP_201_CREATED)


class PrototypeFlagViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                           mixins.UpdateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Named sets of DESOM-1 nodes; exposures over the threshold carry the flag."""

    serializer_class = serializers.PrototypeFlagSerializer
    lookup_value_regex = r"[0-9]{1,18}"

    def get_throttles(self):
        return [] if self.action in ("list", "retrieve") else [WriteThrottle()]

    def get_permissions(self):
        if self.action in ("list", "retrieve"):
            return [permissions.AllowAny()]
        return [permissions.IsAdminUser()]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation needs no database
            return PrototypeFlag.objects.none()
        desom1 = versions.active_version(ModelVersion.DESOM1)
        # Exposures carrying the flag among those this user may see: a proprietary exposure
        # is not even counted for those not entitled to it.
        visible = selectors.visible_exposures(self.request.user).values("pk")
        return (PrototypeFlag.objects.filter(model_version=desom1)
                .annotate(n_exposures=Count("exposures", filter=Q(exposures__exposure__in=visible)))
                .order_by("name"))

    def _save(self, serializer, instance=None):
        data = {**({} if instance is None else {f: getattr(instance, f) for f in
                                                ("name", "nodes", "threshold", "mode", "description", "is_active")}),
                **serializer.validated_data}
        try:
            with transaction.atomic():   # a refused rename keeps the old flag
                if instance is not None and data["name"] != instance.name:
                    instance.delete()
                return quality.save_flag(data["name"], data["nodes"], data["threshold"], mode=data.get("mode", "share"),
                                         description=data.get("description", ""), user=self.request.user,
                                         is_active=data.get("is_active", True))
        except quality.QualityError as exc:
            raise ValidationError({"detail": str(exc)})

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        flag = self._save(serializer)
        return Response(self.get_serializer(self.get_queryset().get(pk=flag.pk)).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        instance = self.get_object()
        serializer = self.get_serializer(instance, data=request.data, partial=kwargs.get("partial", False))
        serializer.is_valid(raise_exception=True)
        flag = self._save(serializer, instance)
        return Response(self.get_serializer(self.get_queryset().get(pk=flag.pk)).data)


class IngestRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Ingest runs and their progress; staff also see each failure."""

    serializer_class = serializers.IngestRunSerializer
    queryset = IngestRun.objects.all()
    lookup_value_regex = r"[0-9]{1,18}"

    @extend_schema(responses={200: serializers.IngestFailureSerializer(many=True)})
    @action(detail=True, permission_classes=[permissions.IsAdminUser])
    def failures(self, request, pk=None):
        run = get_object_or_404(IngestRun, pk=pk)
        page = self.paginate_queryset(run.failures.order_by("id"))
        return self.get_paginated_response(serializers.IngestFailureSerializer(page, many=True).data)


class TokenView(APIView):
    """Scripted access. POST a username and password: a new token's secret comes back once
    (send it as `Authorization: Token <secret>` on every route: API, downloads, previews, VO).
    DELETE with a token revokes that token. Password checks are rate-limited per client."""

    # The password (POST) or the token itself (DELETE) is the credential, never a session
    # cookie, so no CSRF token is needed and a page cannot be tricked into minting tokens.
    authentication_classes = [AccessTokenAuthentication]
    permission_classes = [permissions.AllowAny]

    def get_throttles(self):
        return [LoginThrottle()] if self.request.method == "POST" else []

    @extend_schema(request=serializers.TokenRequest, responses={201: serializers.NewTokenSerializer}, auth=[])
    def post(self, request):
        data = serializers.TokenRequest(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            token, secret = tokens.token_for_password(request._request, data.validated_data["username"],
                                                      data.validated_data["password"],
                                                      name=data.validated_data.get("name", ""))
        except tokens.InvalidCredentials as exc:
            return Response(error_body(401, str(exc), "invalid_credentials"), status=status.HTTP_401_UNAUTHORIZED)
        except tokens.TokenError as exc:
            raise ValidationError({"detail": str(exc)})
        return Response(serializers.NewTokenSerializer(token, context={"secret": secret}).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def delete(self, request):
        token = request.auth
        if not isinstance(token, AccessToken):
            raise NotAuthenticated("send the token to revoke as Authorization: Token <secret>")
        tokens.revoke(token)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenViewSet(mixins.ListModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Your live tokens (never their secrets); DELETE one to revoke it."""

    serializer_class = serializers.TokenSerializer
    permission_classes = [permissions.IsAuthenticated]
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AccessToken.objects.none()
        return tokens.live_tokens(self.request.user)

    def perform_destroy(self, instance):
        tokens.revoke(instance)
