"""The list page's fast paths give what the slow ones gave: the planned serialiser against DRF's
own loop, the links reversed once against reverse() per row, the cells read from the exposure
rows against the assignments, and the `cell` filter against the assignment table."""
import datetime as dt

import pytest
from django.urls import reverse
from rest_framework import serializers as drf
from rest_framework.test import APIClient

from archive.api import serializers
from archive.models import CellAssignment, Exposure, ModelVersion
from archive.services import quality
from tests import factories

pytestmark = pytest.mark.django_db


def _drf_rows(serializer_class, rows, context):
    """What DRF's own to_representation makes of the rows, bypassing the planned one."""
    serializer = serializer_class(context=context)
    return [drf.ModelSerializer.to_representation(serializer, row) for row in rows]


def test_planned_rows_equal_drf_rows(archive_rows):
    odd = factories.exposure(object_name="", airmass=None, exptime=None, date_obs=None, release_date=None,
                             ra_deg=None, dec_deg=None, n_detected=0, status=Exposure.STATUS_NO_SOURCES)
    late = factories.exposure(date_obs=dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone.utc),
                              release_date=dt.date(2999, 1, 1), airmass=1.234, object_name="Field \u00e9")
    rows = list(Exposure.objects.filter(pk__in=[odd.pk, late.pk]) | Exposure.objects.all()[:6])
    verdicts = {v.exposure_id: v for v in quality.quality_verdicts(rows)}
    context = {"verdicts": verdicts}
    planned = serializers.ExposureSerializer(rows, many=True, context=context).data
    assert [dict(r) for r in planned] == _drf_rows(serializers.ExposureSerializer, rows, {"verdicts": verdicts})
    by_id = {r["id"]: r for r in planned}
    assert by_id[odd.pk]["airmass"] is None and by_id[odd.pk]["quality"]["warnings"]
    assert by_id[late.pk]["date_obs"].startswith("2024-05-06T07:08:09") and by_id[late.pk]["is_public"] is False


def test_planned_detail_equals_drf_detail(archive_rows):
    row = Exposure.objects.filter(is_science=True).first()
    context = {"verdicts": {v.exposure_id: v for v in quality.quality_verdicts([row])}, "vector": None}
    planned = serializers.ExposureDetailSerializer(row, context=context).data
    assert dict(planned) == _drf_rows(serializers.ExposureDetailSerializer, [row], context)[0]
    assert set(planned) > set(serializers.ExposureSerializer(row, context=context).data)


def test_links_are_the_reversed_urls_and_resolve(archive_rows):
    client = APIClient()
    body = client.get("/api/exposures/?page_size=5").json()
    assert len(body["results"]) == 5
    for row in body["results"]:
        pk = row["id"]
        assert row["links"] == {"self": reverse("archive-api:exposure-detail", args=[pk]),
                                "download": reverse("archive:download", args=[pk]),
                                "preview": reverse("archive:preview", args=[pk]),
                                "similar": reverse("recommender-api:similar", args=[pk])}
    assert client.get(body["results"][0]["links"]["self"]).json()["id"] == body["results"][0]["id"]


def test_verdict_cells_from_the_rows_equal_the_assignments(archive_rows):
    _, desom2 = archive_rows
    full = list(Exposure.objects.all())
    deferred = list(Exposure.objects.only("id", "expnum", "is_science", "status"))
    from_rows = {v.exposure_id: v.cell for v in quality.quality_verdicts(full)}
    from_assignments = {v.exposure_id: v.cell for v in quality.quality_verdicts(deferred)}
    expected = dict(CellAssignment.objects.filter(model_version=desom2).values_list("exposure_id", "cell"))
    assert from_rows == from_assignments
    assert {k: v for k, v in from_rows.items() if v is not None} == expected and len(expected) == 18


def test_cell_filter_reads_the_active_cells_and_an_inactive_version_its_assignments(archive_rows):
    _, desom2 = archive_rows
    client = APIClient()
    expected = set(CellAssignment.objects.filter(model_version=desom2, cell=4).values_list("exposure_id", flat=True))
    assert len(expected) == 2
    assert {r["id"] for r in client.get("/api/exposures/?cell=4").json()["results"]} == expected
    # an older version's cells come from its assignments, never from the active copy
    older = factories.model_version(ModelVersion.DESOM2, rows=3, cols=3, active=False)
    member = Exposure.objects.filter(is_science=True).exclude(pk__in=expected).first()
    CellAssignment.objects.create(exposure=member, model_version=older, cell=4)
    assert set(quality.in_cells(Exposure.objects.all(), [4], older).values_list("pk", flat=True)) == {member.pk}
    assert set(quality.in_cells(Exposure.objects.all(), [4]).values_list("pk", flat=True)) == expected
    assert client.get("/api/exposures/?cell=99").json()["count"] == 0


def test_a_serializer_with_a_field_that_reads_the_request_is_not_planned(archive_rows):
    class WithRelation(serializers.PlannedRowsMixin, drf.ModelSerializer):
        trained_on = drf.SlugRelatedField(slug_field="version_id", read_only=True)

        class Meta:
            model = ModelVersion
            fields = ["version_id", "kind", "is_active", "trained_on", "created_at"]

    desom1, desom2 = archive_rows
    rows = [desom1, desom2]
    planned = WithRelation(rows, many=True).data
    assert WithRelation.__dict__["_planned_rows"] is None
    assert [dict(r) for r in planned] == _drf_rows(WithRelation, rows, {})
    assert planned[1]["trained_on"] == desom1.version_id
