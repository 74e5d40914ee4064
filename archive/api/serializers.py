import copy

from django.urls import reverse
from rest_framework import serializers

from desom import footprint as fp

from .. import selectors
from ..models import AccessToken, CellLabel, Exposure, IngestFailure, IngestRun, ModelVersion, PrototypeFlag


def _is_staff(serializer) -> bool:
    request = serializer.context.get("request")
    return selectors.is_staff(getattr(request, "user", None))


def is_count_key(key: str) -> bool:
    """Metrics that count exposures or their cutouts: they would count proprietary data too,
    so only staff see them."""
    key = key.lower()
    return key.startswith("n_") or "exposures" in key or "cutouts" in key or key.endswith("_count")


# An id no exposure has, reversed in place of the real one: each link is reversed once per
# response and the id substituted, since a reverse() per link and row was 5 of the 13 ms that
# serialising a 50-row page took.
_LINK_MARKER = "987654321987654321"
_LINK_VIEWS = {"self": "archive-api:exposure-detail", "download": "archive:download",
               "preview": "archive:preview", "similar": "recommender-api:similar"}


def _link_templates(context: dict) -> dict[str, str]:
    """Each exposure link with _LINK_MARKER for the id, reversed once per serializer context
    (the context is per request, so the script prefix it was reversed under is the request's)."""
    templates = context.get("_link_templates")
    if templates is None:
        templates = {name: reverse(view, args=[_LINK_MARKER]) for name, view in _LINK_VIEWS.items()}
        context["_link_templates"] = templates
    return templates


# DRF fields whose representation of a value that is not None is exactly this conversion.
_PLAIN_FIELDS = {serializers.CharField: str, serializers.IntegerField: int, serializers.FloatField: float,
                 serializers.BooleanField: bool}


# DRF fields whose representation of a value depends on the value alone (never on the
# request or the serializer they are bound to), so one copy can serve every request.
_VALUE_ONLY_FIELDS = (serializers.IntegerField, serializers.FloatField, serializers.CharField,
                      serializers.BooleanField, serializers.DateTimeField, serializers.DateField,
                      serializers.TimeField, serializers.ChoiceField, serializers.DecimalField,
                      serializers.UUIDField)


class PlannedRowsMixin:
    """DRF's to_representation with its per-field dispatch planned once per class: a plain
    column is read and converted directly, a date or a choice goes through an unbound copy of
    its field's to_representation, and method fields call the method on this serializer. A
    class with any other kind of field (a relation, a hyperlink: they read the request) is not
    planned and runs DRF's own loop. The output is DRF's (tests/archive/test_api_serialisation.py
    compares them); DRF's generic loop and building the fields on every request were most of
    the time of a 50-row list page."""

    def _row_plan(self) -> list[tuple] | None:
        cls = type(self)
        if "_planned_rows" not in cls.__dict__:
            plan = []
            for field in self.fields.values():
                if field.write_only:
                    continue
                if isinstance(field, serializers.SerializerMethodField):
                    plan.append((field.field_name, "method", field.method_name))
                elif len(field.source_attrs) != 1:
                    plan = None
                    break
                elif type(field) in _PLAIN_FIELDS:
                    plan.append((field.field_name, "plain", (field.source_attrs[0], _PLAIN_FIELDS[type(field)])))
                elif isinstance(field, _VALUE_ONLY_FIELDS):
                    # a fresh, unbound copy: the bound field would keep this request's serializer
                    plan.append((field.field_name, "value", (field.source_attrs[0], copy.deepcopy(field))))
                else:
                    plan = None
                    break
            cls._planned_rows = plan
        return cls.__dict__["_planned_rows"]

    def to_representation(self, instance):
        plan = self._row_plan()
        if plan is None:
            return super().to_representation(instance)
        row = {}
        for name, how, what in plan:
            if how == "method":
                row[name] = getattr(self, what)(instance)
                continue
            value = getattr(instance, what[0])
            if value is None:
                row[name] = None
            elif how == "plain":
                row[name] = what[1](value)
            else:
                row[name] = what[1].to_representation(value)
        return row


class ExposureSerializer(PlannedRowsMixin, serializers.ModelSerializer):
    """An exposure with its quality (cell, label, flags, warnings). The quality verdicts for a
    whole page are computed in bulk by the view and passed in the context."""

    quality = serializers.SerializerMethodField()
    is_public = serializers.BooleanField(read_only=True)
    footprint = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    class Meta:
        model = Exposure
        fields = ["id", "expnum", "filename", "obstype", "is_science", "layout", "object_name", "ra_deg", "dec_deg",
                  "mjd_obs", "date_obs", "exptime", "filter_name", "band", "airmass", "instrument", "n_ccds",
                  "runid", "n_detected", "n_sampled", "status", "release_date", "is_public", "quality", "footprint",
                  "links"]

    def get_footprint(self, exposure) -> dict | None:
        """The footprint as SIA and TAP publish it (s_region): its (ra, dec) vertices in degrees,
        ICRS, and whether it came from the files' WCS or MegaCam's nominal field."""
        vertices = fp.from_dali(exposure.s_region)
        if not vertices:
            return None
        return {"kind": exposure.footprint_kind or None, "polygon": [[float(ra), float(dec)] for ra, dec in vertices]}

    def get_quality(self, exposure) -> dict | None:
        verdict = self.context.get("verdicts", {}).get(exposure.pk)
        return verdict.as_dict() if verdict else None

    def get_links(self, exposure) -> dict:
        pk = str(exposure.pk)
        return {name: template.replace(_LINK_MARKER, pk) for name, template in _link_templates(self.context).items()}


class ExposureDetailSerializer(ExposureSerializer):
    histo_vector = serializers.SerializerMethodField()
    density_map = serializers.SerializerMethodField()
    model_version = serializers.SerializerMethodField()

    class Meta(ExposureSerializer.Meta):
        fields = ExposureSerializer.Meta.fields + ["warnings", "timings", "checksum", "file_size",
                                                   "model_version", "histo_vector", "density_map"]

    def _vector(self):
        return self.context.get("vector")

    def get_model_version(self, exposure) -> str | None:
        vector = self._vector()
        return vector.model_version.version_id if vector else None

    def get_histo_vector(self, exposure) -> list[float] | None:
        vector = self._vector()
        return [round(float(v), 3) for v in vector.histo_array] if vector else None

    def get_density_map(self, exposure) -> list[list[float]] | None:
        vector = self._vector()
        if not vector:
            return None
        rows, cols = vector.model_version.map_shape
        histo = vector.histo_array
        return [[round(float(v), 3) for v in histo[r * cols:(r + 1) * cols]] for r in range(rows)]


class ModelVersionSerializer(serializers.ModelSerializer):
    trained_on = serializers.SlugRelatedField(slug_field="version_id", read_only=True)
    metrics = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = ["version_id", "kind", "is_active", "config", "metrics", "trained_on", "created_at", "activated_at"]

    def get_metrics(self, version) -> dict:
        metrics = dict(version.metrics or {})
        return metrics if _is_staff(self) else {k: v for k, v in metrics.items() if not is_count_key(k)}


class CellLabelSerializer(serializers.ModelSerializer):
    labelled_by = serializers.SerializerMethodField(help_text="the expert's user name (shown to staff only)")

    class Meta:
        model = CellLabel
        fields = ["cell", "label", "note", "labelled_by", "created_at"]

    def get_labelled_by(self, row) -> str | None:
        return row.labelled_by.username if row.labelled_by is not None and _is_staff(self) else None


class CellLabelInput(serializers.Serializer):
    label = serializers.CharField(max_length=64, allow_blank=True,
                                  help_text="Good, BT, RBT, B-Seeing, BGP, bad focus, low exposure, a new "
                                            "label, or 'mixed' / empty for an unlabelled cell")
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class PrototypeFlagSerializer(serializers.ModelSerializer):
    n_exposures = serializers.IntegerField(read_only=True, required=False)

    class Meta:
        model = PrototypeFlag
        fields = ["id", "name", "nodes", "threshold", "mode", "description", "is_active", "n_exposures",
                  "updated_at"]
        read_only_fields = ["id", "updated_at", "n_exposures"]


class QualityCheckInput(serializers.Serializer):
    ids = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=5000,
                                help_text="exposure ids (database ids), a download cart")


class IngestFailureSerializer(serializers.ModelSerializer):
    class Meta:
        model = IngestFailure
        fields = ["path", "reason", "created_at"]


class IngestRunSerializer(serializers.ModelSerializer):
    """An ingest run's progress. Its counts include proprietary files, so only staff see them
    (and the scheduler's address); everyone sees the status and the fraction done."""

    progress = serializers.FloatField(read_only=True)
    STAFF_ONLY = ("scheduler", "n_files", "n_done", "n_ingested", "n_skipped", "n_failed", "n_calibration")

    class Meta:
        model = IngestRun
        fields = ["id", "status", "scheduler", "n_files", "n_done", "n_ingested", "n_skipped", "n_failed",
                  "n_calibration", "progress", "started_at", "updated_at", "finished_at"]

    def to_representation(self, run):
        data = super().to_representation(run)
        if not _is_staff(self):
            for key in self.STAFF_ONLY:
                data.pop(key, None)
        return data


class TokenRequest(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})
    name = serializers.CharField(max_length=64, required=False, allow_blank=True,
                                 help_text="what the token is for (a script, a machine)")


class TokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = AccessToken
        fields = ["id", "name", "prefix", "created_at", "expires_at", "last_used_at"]


class NewTokenSerializer(TokenSerializer):
    token = serializers.SerializerMethodField(help_text="the secret, shown this once")
    header = serializers.SerializerMethodField()

    class Meta(TokenSerializer.Meta):
        fields = ["token", "header"] + TokenSerializer.Meta.fields

    def get_token(self, token) -> str:
        return self.context["secret"]

    def get_header(self, token) -> str:
        return f"Authorization: Token {self.context['secret']}"
