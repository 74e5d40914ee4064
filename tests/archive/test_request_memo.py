"""What a request reads several times it reads once (archive.memo), and a write in the same
request is seen by what follows it."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from archive import memo
from archive.models import ModelVersion
from archive.services import quality, versions
from tests import factories

pytestmark = pytest.mark.django_db


def _queries_on(table: str, captured) -> int:
    return sum(f'FROM "{table}"' in q["sql"] for q in captured.captured_queries)


def test_a_filtered_list_reads_the_active_model_and_the_labels_once(archive_rows):
    _, desom2 = archive_rows
    factories.label(0, "Good", desom2)
    with CaptureQueriesContext(connection) as captured:
        body = APIClient().get("/api/exposures/?label=Good").json()
    assert body["count"] >= 2 and all(r["quality"]["label"] == "Good" for r in body["results"])
    assert _queries_on("archive_modelversion", captured) == 1
    assert _queries_on("archive_celllabel", captured) == 1


def test_outside_a_request_nothing_is_remembered(archive_rows):
    with CaptureQueriesContext(connection) as captured:
        versions.active_version(ModelVersion.DESOM2)
        versions.active_version(ModelVersion.DESOM2)
    assert _queries_on("archive_modelversion", captured) == 2


def test_a_label_written_in_the_request_is_seen_by_what_follows(archive_rows):
    _, desom2 = archive_rows
    with memo.request_scope():
        assert quality.CellQualityMap.of().label(4)[0] is None
        quality.label_cell(4, "BT", desom2=desom2)
        assert quality.CellQualityMap.of().label(4) == ("BT", quality.SOURCE_EXPERT)


def test_an_activation_in_the_request_is_seen_by_what_follows(archive_rows):
    _, desom2 = archive_rows
    other = factories.model_version(ModelVersion.DESOM2, rows=3, cols=3, active=False)
    with memo.request_scope():
        assert versions.active_version(ModelVersion.DESOM2).pk == desom2.pk
        versions.activate_version(other)
        assert versions.active_version(ModelVersion.DESOM2).pk == other.pk
