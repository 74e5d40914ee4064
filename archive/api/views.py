"""The archive's REST API: thin views over `archive.services` and `archive.selectors`.
Reads are public but never show what the user may not see; writes need a staff user."""
from django.db.models import Count
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from .. import selectors
from ..models import CellAssignment, ExposureVector, IngestRun, ModelVersion, PrototypeFlag
from ..services import quality, versions
from . import serializers
from .filters import ExposureFilter
from .pagination import ArchivePagination


def verdicts_for(exposures) -> dict:
    return {v.exposure_id: v for v in quality.quality_verdicts(exposures)}


class ExposureViewSet(viewsets.ReadOnlyModelViewSet):
    """Exposures with their metadata and quality; filter by cell, label, flag, band, dates,
    exposure time and cone."""

    filterset_class = ExposureFilter
    serializer_class = serializers.ExposureSerializer
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self):
        return selectors.visible_exposures(self.request.user).order_by("expnum")

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
    throttle_scope = "writes"  # rate limit (settings) on the label action only

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
        members = selectors.visible_exposures(request.user).filter(cells__model_version=desom2, cells__cell=cell)
        paginator = ArchivePagination()
        page = paginator.paginate_queryset(members.order_by("expnum"), request, view=self)
        history = quality.label_history(cell, desom2)
        context = {"request": request, "verdicts": verdicts_for(page)}
        return paginator.get_paginated_response({
            "cell": cell, "row": cell // desom2.map_shape[1], "col": cell % desom2.map_shape[1],
            "label": history[0].label if history else None,
            "history": serializers.CellLabelSerializer(history, many=True).data,
            "members": serializers.ExposureSerializer(page, many=True, context=context).data,
        })

    @extend_schema(request=serializers.CellLabelInput, responses={201: serializers.CellLabelSerializer})
    @action(detail=True, methods=["post"], permission_classes=[permissions.IsAdminUser],
            throttle_classes=[ScopedRateThrottle])
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
        return Response(serializers.CellLabelSerializer(row).data, status=status.HTTP_201_CREATED)


class PrototypeFlagViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                           mixins.UpdateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Named sets of DESOM-1 nodes; exposures over the threshold carry the flag."""

    serializer_class = serializers.PrototypeFlagSerializer
    lookup_value_regex = r"[0-9]{1,18}"
    throttle_scope = "writes"

    def get_throttles(self):
        return [] if self.action in ("list", "retrieve") else [ScopedRateThrottle()]

    def get_permissions(self):
        if self.action in ("list", "retrieve"):
            return [permissions.AllowAny()]
        return [permissions.IsAdminUser()]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation needs no database
            return PrototypeFlag.objects.none()
        desom1 = versions.active_version(ModelVersion.DESOM1)
        return (PrototypeFlag.objects.filter(model_version=desom1).annotate(n_exposures=Count("exposures"))
                .order_by("name"))

    def _save(self, serializer, instance=None):
        data = {**({} if instance is None else {f: getattr(instance, f) for f in
                                                ("name", "nodes", "threshold", "mode", "description", "is_active")}),
                **serializer.validated_data}
        try:
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
