"""Bad values are refused, not ignored, on every surface (REST, the search page, SIA), naming
the parameter and the values it may take; the REST exposure carries its footprint; lists and
the manifest come as CSV or VOTable too; unknown /api/ routes answer JSON; the OpenAPI schema
lists every operation's errors with the one error shape."""
import csv
import io

import pytest
import yaml
from astropy.io.votable import parse
from django.test import Client
from rest_framework.test import APIClient

from archive import geometry
from archive.models import Exposure, PrototypeFlag
from desom import footprint as fp
from tests import factories

LIST = "/api/exposures/"


@pytest.fixture
def flagged(archive_rows):
    desom1, desom2 = archive_rows
    PrototypeFlag.objects.create(model_version=desom1, name="bad focus", nodes=[1, 2], threshold=0.5)
    factories.label(0, "RBT", desom2)
    for exposure in Exposure.objects.filter(is_science=True):
        geometry.store_footprint(exposure, None)
    return desom1, desom2


def _error(response, status=400):
    assert response.status_code == status, response.content[:300]
    body = response.json()
    assert body["status"] == status and body["detail"]
    return body


@pytest.mark.parametrize("query, parameter", [
    ("colour=blue", "colour"), ("ordering=-date_obs", "ordering"), ("band=r&labl=Good", "labl"),
])
def test_unknown_rest_parameters_are_refused_with_the_names_read(flagged, query, parameter):
    for path in (LIST, LIST + "manifest/"):
        body = _error(APIClient().get(f"{path}?{query}"))
        message = body["fields"][parameter][0]
        assert f"unknown parameter '{parameter}'" in message and "band" in message and "label" in message


@pytest.mark.parametrize("value", ["-3", "0", "abc", "", "1.5", "١٠"])
def test_a_bad_page_size_is_refused(flagged, value):
    body = _error(APIClient().get(f"{LIST}?page_size={value}"))
    assert "whole number from 1" in body["fields"]["page_size"][0]
    assert len(APIClient().get(f"{LIST}?page_size=3").json()["results"]) == 3


def test_unknown_labels_and_flags_are_refused_on_every_surface(flagged):
    body = _error(APIClient().get(f"{LIST}?label=NoSuchLabel"))
    message = body["fields"]["label"][0]
    assert "'NoSuchLabel' is not a quality label" in message and "RBT" in message and "Good" in message
    body = _error(APIClient().get(f"{LIST}?flag=nosuch"))
    assert "'nosuch' is not a prototype flag" in body["fields"]["flag"][0] and "bad focus" in body["fields"]["flag"][0]
    # Known values, even those no exposure carries now, still answer (possibly nothing).
    assert APIClient().get(f"{LIST}?label=bad focus").status_code == 200
    assert APIClient().get(f"{LIST}?flag=BAD FOCUS").status_code == 200
    # The search page shows the same refusal instead of an empty list.
    page = Client().get("/?label=NoSuchLabel")
    assert page.status_code == 200 and b"is not a quality label" in page.content
    # SIA: a UsageFault naming the parameter and the values.
    for query, needle in (("QUALITY=NoSuchLabel", b"QUALITY: &#x27;NoSuchLabel&#x27; is not a quality label"),
                          ("FLAG=nosuch", b"FLAG: &#x27;nosuch&#x27; is not a prototype flag")):
        response = Client().get(f"/sia2/query?{query}")
        assert response.status_code == 400
        status = next(i for i in parse(io.BytesIO(response.content)).resources[0].infos if i.name == "QUERY_STATUS")
        assert status.value == "ERROR" and status.content.startswith("UsageFault: ")
        assert needle.replace(b"&#x27;", b"'").decode() in status.content


def test_the_rest_exposure_carries_its_footprint(flagged):
    exposure = Exposure.objects.filter(is_science=True).first()
    detail = APIClient().get(f"{LIST}{exposure.pk}/").json()
    assert detail["footprint"]["kind"] == exposure.footprint_kind
    assert detail["footprint"]["polygon"] == [[ra, dec] for ra, dec in fp.from_dali(exposure.s_region)]
    listed = {r["id"]: r for r in APIClient().get(f"{LIST}?page_size=100").json()["results"]}
    assert listed[exposure.pk]["footprint"] == detail["footprint"]


def test_lists_and_the_manifest_come_as_csv_and_votable(flagged):
    client = APIClient()
    rows = client.get(f"{LIST}?band=r&page_size=5").json()["results"]
    response = client.get(f"{LIST}?band=r&page_size=5&format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [int(r["id"]) for r in table] == [r["id"] for r in rows]
    assert [r["quality_label"] or None for r in table] == [r["quality"]["label"] for r in rows]
    first = [float(v) for v in table[0]["footprint"].split()]
    assert first == [v for vertex in rows[0]["footprint"]["polygon"] for v in vertex]
    response = client.get(f"{LIST}?band=r&page_size=5&format=votable")
    assert response["Content-Type"].startswith("application/x-votable+xml")
    votable = parse(io.BytesIO(response.content), verify="exception").get_first_table().to_table()
    assert list(votable["id"]) == [r["id"] for r in rows]
    assert str(votable["ra_deg"].unit) == "deg"
    manifest = client.get(f"{LIST}manifest/?output=json").json()["results"]
    response = client.get(f"{LIST}manifest/?format=csv")
    assert [int(r["id"]) for r in csv.DictReader(io.StringIO(response.content.decode()))] == [m["id"] for m in manifest]
    response = client.get(f"{LIST}manifest/?format=votable")
    urls = parse(io.BytesIO(response.content), verify="exception").get_first_table().to_table()["url"]
    assert [str(u) for u in urls] == [m["url"] for m in manifest]
    # An error stays JSON whatever format was asked.
    response = client.get(f"{LIST}?format=csv&colour=blue")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json()["fields"]["colour"]


def test_unknown_api_routes_answer_json_404(db):
    for path in ("/api/nosuch/", "/api/nosuch", "/api/exposures/abc/", "/api/exposures/1/nosuch/"):
        body = _error(Client().get(path), 404)
        assert body["code"] == "not_found" and path in body["detail"]
    assert Client().get("/api/exposures").status_code == 301


def test_every_documented_operation_lists_its_errors_with_the_one_shape(db):
    schema = yaml.safe_load(Client().get("/api/schema/").content)
    assert set(schema["components"]["schemas"]["Error"]["required"]) == {"status", "code", "detail"}
    operations = [(path, method, op) for path, ops in schema["paths"].items() for method, op in ops.items()]
    assert len(operations) > 10
    for path, method, operation in operations:
        codes = {c for c in operation["responses"] if c.startswith("4")}
        assert {"400", "404"} <= codes, (path, method)
        if method in ("post", "patch", "put", "delete"):
            assert {"401", "403"} <= codes, (path, method)
        for code in codes:
            content = operation["responses"][code]["content"]["application/json"]["schema"]
            assert content == {"$ref": "#/components/schemas/Error"}, (path, method, code)
