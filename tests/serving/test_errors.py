"""One error shape for the API, whatever raised the error (DRF, Django's URL resolver, a
middleware, a parser), VOTables for the VO routes, HTML for pages; hostile bodies (deeply
nested JSON, oversized documents, NUL characters) are clean 4xx answers."""
import pytest
from django.test import Client

from config.parsers import MAX_JSON_DEPTH, json_depth

SHAPE = {"status", "code", "detail"}


def check_shape(response, status, code=None):
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert SHAPE <= body.keys() and body["status"] == status and isinstance(body["detail"], str), body
    assert code is None or body["code"] == code, body
    return body


@pytest.mark.django_db
def test_every_api_error_has_one_json_shape(settings):
    client = Client()
    check_shape(client.get("/api/exposures/abc/"), 404, "not_found")              # no route matched
    check_shape(client.get("/api/exposures/99999999/"), 404, "not_found")         # DRF's 404
    check_shape(client.get("/api/exposures/1/similar/?k=0"), 404)
    check_shape(client.get("/api/nowhere/"), 404)
    check_shape(client.delete("/api/exposures/"), 405, "method_not_allowed")
    check_shape(client.get("/api/exposures/?date_from=yesterday"), 400, "invalid")
    check_shape(client.get("/api/ingest-runs/1/failures/"), 401, "not_authenticated")
    body = check_shape(client.post("/api/quality-check/", {"ids": ["x"]}, content_type="application/json"),
                       400, "invalid")
    assert "ids" in body["fields"] and "ids" in body["detail"]
    check_shape(client.post("/api/quality-check/", "{not json", content_type="application/json"), 400, "parse_error")
    big = '{"ids": [' + ",".join(["1"] * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 2)) + "]}"
    check_shape(client.post("/api/quality-check/", big, content_type="application/json"), 413, "request_too_large")
    check_shape(client.get("/api/exposures/?object=a%00b"), 400, "nul_character")
    check_shape(client.get("/api/exposures/?o%00bject=x"), 400, "nul_character")


@pytest.mark.django_db
def test_deeply_nested_json_is_a_400_not_a_crash():
    client = Client()
    for depth in (MAX_JSON_DEPTH + 1, 100_000):
        nested = "[" * depth + "]" * depth
        body = check_shape(client.post("/api/quality-check/", nested, content_type="application/json"),
                           400, "parse_error")
        assert "nests deeper" in body["detail"]
    ok = {"ids": [1, 2]}
    assert client.post("/api/quality-check/", ok, content_type="application/json").status_code == 200
    assert json_depth('{"a": "[[[[[[", "b": [[1]]}') == 3
    assert json_depth('["\\"[[["]') == 1


@pytest.mark.django_db
def test_other_surfaces_answer_in_their_own_shape():
    client = Client()
    page = client.get("/exposures/abc/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")
    vo = client.get("/sia2/query", {"TARGET": "M31\x00"})
    assert vo.status_code == 400 and b"VOTABLE" in vo.content and b"QUERY_STATUS" in vo.content
    assert client.get("/sia2/nowhere").status_code == 404
    assert b"VOTABLE" in client.get("/sia2/nowhere").content
    form = client.post("/accounts/login/", "username=a%00&password=b", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 400 and form["Content-Type"].startswith("text/html")
