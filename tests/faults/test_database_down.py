"""The database briefly unreachable: the API, the health check and the VO endpoints answer 503
(or VOSI available=false) with a clear message instead of crashing; when it is back, all is well.
(The SIA query's own case is in tests/vo/test_sia.py.)"""
from unittest import mock

import pytest
from django.db import OperationalError, connections
from rest_framework.test import APIClient


def database_down():
    return mock.patch.object(type(connections["default"]), "create_cursor",
                             side_effect=OperationalError("could not connect to server"))


@pytest.mark.django_db
def test_api_health_and_vo_answer_503_while_the_database_is_down():
    client = APIClient()
    with database_down():
        api = client.get("/api/exposures/")
        health = client.get("/health/")
        sia = client.get("/sia2/query", {"MAXREC": "1"})
    assert api.status_code == 503 and "database is unavailable" in api.json()["detail"]
    assert api["Retry-After"] == "30"
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert sia.status_code == 503 and b"QUERY_STATUS" in sia.content and b"ERROR" in sia.content
    # Back up: the same requests succeed.
    assert client.get("/api/exposures/").status_code == 200
    assert client.get("/health/").status_code == 200
    assert client.get("/sia2/query", {"MAXREC": "1"}).status_code == 200
