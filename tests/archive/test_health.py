import pytest


@pytest.mark.django_db
def test_health_reports_reachable_database(client, settings):
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == "ok"
    # CI runs the suite against PostgreSQL; the reported engine must follow DATABASE_URL.
    import os
    expected = "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    assert body["engine"] == expected
