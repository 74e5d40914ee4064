"""ObsTAP: ADQL over ivoa.obscore and TAP_SCHEMA on PostgreSQL with pgSphere (CI), the clear
refusal on SQLite, and the attacks a public SQL endpoint meets: other tables, functions,
writes, long queries, proprietary rows."""
import datetime as dt
import io

import numpy as np
import pytest
from astropy.io.votable import parse
from django.db import connection
from django.test import Client

from archive import geometry
from archive.models import Exposure, RunAccess
from desom import footprint as fp
from tests import factories


ON_POSTGRES = connection.vendor == "postgresql"
needs_postgres = pytest.mark.skipif(not ON_POSTGRES, reason="TAP runs on PostgreSQL with pgSphere (CI); "
                                    "this run uses SQLite")
SYNC = "/tap/sync"


def _sync(client, query, **extra):
    return client.post(SYNC, {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query, **extra})


def _status(response):
    parsed = parse(io.BytesIO(response.content), verify="exception")
    info = next(i for i in parsed.resources[0].infos if i.name == "QUERY_STATUS")
    return parsed, info.value, info.content or ""


def _rows(response):
    assert response.status_code == 200, response.content[:500]
    parsed, value, _ = _status(response)
    assert value in ("OK", "OVERFLOW")
    return parsed.get_first_table().to_table()


def _refused(response, needle):
    parsed, value, message = _status(response)
    assert response.status_code >= 400 and value == "ERROR", response.content[:300]
    assert needle.lower() in message.lower() and message.startswith(("UsageFault: ", "FatalFault: ")), message
    return message


@pytest.mark.skipif(ON_POSTGRES, reason="the SQLite answer; on PostgreSQL TAP runs")
def test_sqlite_says_tap_needs_postgresql(db):
    response = _sync(Client(), "SELECT TOP 1 obs_id FROM ivoa.obscore")
    assert response.status_code == 501
    _refused(response, "needs PostgreSQL")
    assert b"<vosi:available>false</vosi:available>" in Client().get("/tap/availability").content


@needs_postgres
def test_adql_cone_and_footprint_queries_match_the_geometry_module(sky):
    made, secret = sky
    public = [e for e in made if e.pk != secret.pk]
    rng = np.random.default_rng(5)
    for _ in range(6):
        ra, dec, r = float(30 + rng.normal(0, 1)), float(-5 + rng.normal(0, 1)), float(rng.uniform(0.3, 2))
        table = _rows(_sync(Client(), f"SELECT obs_id FROM ivoa.obscore WHERE "
                                      f"INTERSECTS(s_region, CIRCLE('ICRS', {ra}, {dec}, {r})) = 1"))
        expected = sorted(str(e.expnum) for e in public if geometry.intersects(fp.from_dali(e.s_region),
                                                                                geometry.Circle(ra, dec, r)))
        assert sorted(table["obs_id"]) == expected
        table = _rows(_sync(Client(), f"SELECT obs_id FROM ivoa.obscore WHERE "
                                      f"CONTAINS(POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', {ra}, {dec}, {r})) = 1"))
        expected = sorted(str(e.expnum) for e in public if fp.angular_distance(ra, dec, e.ra_deg, e.dec_deg) <= r)
        assert sorted(table["obs_id"]) == expected
    # s_region comes back as an ADQL region (an STC-S polygon, no unit), equal to the stored footprint.
    row = _rows(_sync(Client(), f"SELECT s_region, obs_publisher_did FROM ivoa.obscore WHERE obs_id = '{public[0].expnum}'"))
    parsed, _, _ = _status(_sync(Client(), f"SELECT s_region FROM ivoa.obscore WHERE obs_id = '{public[0].expnum}'"))
    field = parsed.get_first_table().fields[0]
    assert (field.xtype, field.datatype, field.unit) == ("adql:REGION", "char", None)
    words = str(row["s_region"][0]).split()
    assert words[:2] == ["POLYGON", "ICRS"]
    assert np.allclose([float(v) for v in words[2:]], [float(v) for v in public[0].s_region.split()], atol=1e-9)


@needs_postgres
def test_anonymous_tap_never_returns_a_proprietary_row(sky):
    made, secret = sky
    anonymous = Client()
    ids = {int(v) for v in _rows(_sync(anonymous, "SELECT obs_id FROM ivoa.obscore"))["obs_id"]}
    assert secret.expnum not in ids and len(ids) == len(made) - 1
    count = _rows(_sync(anonymous, f"SELECT COUNT(*) AS n FROM ivoa.obscore WHERE obs_id = '{secret.expnum}'"))
    assert int(count["n"][0]) == 0
    # Through a sub-query, a join of the view with itself, and TAP_SCHEMA: still invisible.
    joined = _rows(_sync(anonymous, "SELECT a.obs_id FROM ivoa.obscore AS a JOIN ivoa.obscore AS b "
                                    "ON a.obs_id = b.obs_id WHERE a.obs_id IN (SELECT obs_id FROM ivoa.obscore)"))
    assert str(secret.expnum) not in set(joined["obs_id"])
    pi, other = factories.user("pi", password="x"), factories.user("other", password="x")
    RunAccess.objects.create(user=pi, runid="27BQ09")
    RunAccess.objects.create(user=other, runid="10AQ01")
    for user, sees in ((pi, True), (other, False), (factories.user("boss", staff=True, password="x"), True)):
        client = Client()
        client.force_login(user)
        ids = {int(v) for v in _rows(_sync(client, "SELECT obs_id FROM ivoa.obscore"))["obs_id"]}
        assert (secret.expnum in ids) is sees, user.username


@needs_postgres
@pytest.mark.parametrize("query, needle", [
    ("SELECT * FROM archive_exposure", "schema"),
    ("SELECT usename FROM pg_catalog.pg_user", "not published"),
    ("SELECT * FROM ivoa.obscore WHERE obs_id IN (SELECT usename FROM pg_catalog.pg_user)", "not published"),
    ("SELECT * FROM tap_internal.obscore_all", "not published"),
    ("SELECT pg_sleep(5) FROM ivoa.obscore", "does not offer"),
    ("SELECT current_setting('desom.base_url') FROM ivoa.obscore", "does not offer"),
    ("DELETE FROM ivoa.obscore", "syntax error"),
    ("INSERT INTO ivoa.obscore (obs_id) VALUES ('1')", "syntax error"),
    ("UPDATE ivoa.obscore SET obs_id = '1'", "syntax error"),
    ("DROP TABLE archive_exposure", "syntax error"),
    ("SELECT * FROM obscore", "schema"),
    ("SELECT nonsense FROM ivoa.obscore", "failed"),
])
def test_queries_outside_the_published_tables_or_writing_are_refused(sky, query, needle):
    _refused(_sync(Client(), query), needle)
    assert Exposure.objects.count() == len(sky[0])


@needs_postgres
def test_a_long_query_is_stopped_and_rows_are_capped(sky, settings):
    settings.TAP_TIMEOUT_S = 0.2
    heavy = ("SELECT COUNT(*) AS n FROM ivoa.obscore AS t1, ivoa.obscore AS t2, ivoa.obscore AS t3, "
             "ivoa.obscore AS t4, ivoa.obscore AS t5 WHERE t1.s_ra + t2.s_ra + t3.s_ra + t4.s_ra + t5.s_ra > 0")
    _refused(_sync(Client(), heavy), "limit of 0.2 s")
    settings.TAP_TIMEOUT_S = 10
    parsed, value, message = _status(_sync(Client(), "SELECT obs_id FROM ivoa.obscore", MAXREC="5"))
    assert value == "OVERFLOW" and len(parsed.get_first_table().array) == 5
    # A literal that names the table is data, not a table reference.
    assert len(_rows(_sync(Client(), "SELECT obs_id FROM ivoa.obscore WHERE target_name = 'ivoa.obscore'"))) == 0


@needs_postgres
def test_tap_schema_describes_obscore(sky):
    table = _rows(_sync(Client(), "SELECT column_name, datatype, xtype, ucd FROM TAP_SCHEMA.columns "
                                  "WHERE table_name = 'ivoa.obscore'"))
    columns = {str(r["column_name"]): r for r in table}
    for name in ("obs_publisher_did", "s_region", "s_xel1", "s_xel2", "t_xel", "em_xel", "pol_xel",
                 "desom2_cell", "quality_label", "quality_flags", "label_probability"):
        assert name in columns, name
    assert str(columns["s_region"]["xtype"]) == "adql:REGION" and str(columns["s_region"]["datatype"]) == "char"
    tables = set(_rows(_sync(Client(), "SELECT table_name FROM TAP_SCHEMA.tables"))["table_name"])
    assert {"ivoa.obscore", "tap_schema.columns"} <= tables


@needs_postgres
def test_quality_columns_follow_the_labels(populated_archive):
    from archive.services import quality

    desom1, desom2 = populated_archive
    Exposure.objects.update(release_date=dt.date(2000, 1, 1))
    science = list(Exposure.objects.filter(is_science=True))
    cells = quality.cells_of([e.pk for e in science], desom2)
    chosen = max(set(cells.values()), key=list(cells.values()).count)
    quality.label_cell(chosen, "RBT")
    verdicts = {v.exposure_id: v for v in quality.quality_verdicts(science)}
    table = _rows(_sync(Client(), "SELECT obs_id, desom2_cell, quality_label FROM ivoa.obscore WHERE quality_label = 'RBT'"))
    expected = sorted(str(e.expnum) for e in science if verdicts[e.pk].label == "RBT")
    assert sorted(table["obs_id"]) == expected and expected
    quality.label_cell(chosen, "Good")
    table = _rows(_sync(Client(), f"SELECT quality_label FROM ivoa.obscore WHERE desom2_cell = {chosen}"))
    assert set(table["quality_label"]) == {"Good"}
