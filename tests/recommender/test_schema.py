"""The OpenAPI schema describes the API, and no request generated from it (valid or not)
makes the server fail: schemathesis against the in-process WSGI app, bounded in examples."""
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from config.wsgi import application

EXAMPLES_PER_OPERATION = 12


@pytest.fixture
def wsgi_keeps_the_test_connection():
    """Calling the raw WSGI app fires request_finished, whose handler closes the database
    connection (and with it the test's transaction); Django's test client disconnects it, so
    do the same while schemathesis drives the app."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.mark.slow
def test_no_generated_request_makes_the_server_fail(populated_archive, wsgi_keeps_the_test_connection):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", application)
    failures, operations = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call()
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query} -> {response.status_code}")

        check()
    assert operations >= 15, f"the schema lists only {operations} operations"
    assert not failures, "\n".join(sorted(set(failures))[:20])


def test_schema_and_docs_are_served_without_a_cdn(client):
    document = client.get("/api/schema/")
    assert document.status_code == 200 and b"/api/exposures/{id}/similar/" in document.content
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html
    # Nothing is loaded from another host (a CDN). Not a bare "cdn" substring: the page's random
    # CSRF token once contained one.
    external = re.findall(r"""(?:src|href|url)\s*[=(:]\s*["']?((?:https?:)?//[^"')\s]+)""", html)
    assert not external, external
    assert not any(host in html.lower() for host in ("cdn.", "jsdelivr", "unpkg", "cdnjs"))
