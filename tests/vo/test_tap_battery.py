"""TAP's answers against an independent computation over the same rows (the ORM and numpy):
aggregates, output columns of one name, expressions, joins with TAP_SCHEMA, geometry. A
service that silently returns a wrong number is worse than one that refuses, so every column
of every answer is checked by position and by value."""
import datetime as dt

import numpy as np
import pytest
from django.db.models import Avg, Count
from django.test import Client

from archive import geometry
from archive.models import Exposure
from desom import footprint as fp
from recommender.vo import obscore, tap

from .test_tap import _rows, _status, _sync, needs_postgres

BANDS = ["u", "g", "r", "i", "z"]


@pytest.fixture
def survey(db):
    """Exposures in five bands with distinct times and exposure times, one proprietary."""
    rng = np.random.default_rng(11)
    made = []
    for i in range(30):
        e = Exposure.objects.create(
            expnum=4_000_000 + i, file_path=f"/nowhere/b{i}.fits", checksum=f"b{i}", band=BANDS[i % 5],
            ra_deg=float(30 + rng.normal(0, 1.5)), dec_deg=float(-5 + rng.normal(0, 1.5)),
            mjd_obs=float(52_000 + rng.uniform(0, 3000)), exptime=float(rng.choice([30.0, 120.0, 300.0, 600.0])),
            runid="10AQ01", release_date=dt.date(2001, 1, 1), object_name=f"F{i % 4}")
        geometry.store_footprint(e, None)
        made.append(e)
    secret = made[3]
    Exposure.objects.filter(pk=secret.pk).update(release_date=dt.date.today() + dt.timedelta(days=300),
                                                 runid="27BQ09", mjd_obs=40_000.0)
    public = Exposure.objects.filter(is_science=True).exclude(pk=secret.pk)
    return public, secret


def _one_row(response):
    table = _rows(response)
    assert len(table) == 1
    return table, [table[name][0] for name in table.colnames]


def _edges(exposures, index):
    return [obscore.MEGAPRIME_BANDS_M[e.band][index] for e in exposures]


@needs_postgres
def test_aggregates_of_one_name_each_keep_their_own_value(survey):
    public, secret = survey
    rows = list(public)
    expected = [min(e.mjd_obs for e in rows), max(e.mjd_obs + e.exptime / 86400 for e in rows),
                min(_edges(rows, 0)), max(_edges(rows, 1)), len(rows)]
    for query in ("SELECT MIN(t_min), MAX(t_max), MIN(em_min), MAX(em_max), COUNT(*) FROM ivoa.obscore",
                  "SELECT MIN(t_min) AS a, MAX(t_max) AS b, MIN(em_min) AS c, MAX(em_max) AS d, COUNT(*) AS n "
                  "FROM ivoa.obscore"):
        table, values = _one_row(_sync(Client(), query))
        assert len(table.colnames) == 5 and len(set(table.colnames)) == 5
        assert np.allclose([float(v) for v in values], expected, rtol=1e-12, atol=0), (query, values, expected)
    # The proprietary exposure's early date never reaches the minimum.
    assert expected[0] > 40_000


@needs_postgres
def test_repeated_names_and_aliases_keep_values_and_metadata_by_position(survey):
    public, _ = survey
    by_id = {str(e.expnum): e for e in public}
    query = ("SELECT a.obs_id, b.obs_id, a.t_min, a.s_ra AS t_min, (a.t_max - a.t_min) * 86400 AS duration, "
             "a.t_exptime * 2, b.s_dec FROM ivoa.obscore AS a JOIN ivoa.obscore AS b ON a.target_name = b.target_name "
             "WHERE a.obs_id < b.obs_id")
    response = _sync(Client(), query)
    table = _rows(response)
    parsed, _, _ = _status(response)
    fields = parsed.get_first_table().fields
    assert [f.name for f in fields][:4] == ["obs_id", "obs_id_2", "t_min", "t_min_2"]
    assert len({f.ID for f in fields}) == len(fields)
    # The alias t_min_2 copies s_ra: it carries s_ra's unit and UCD, not t_min's.
    assert (fields[2].unit, fields[2].ucd) == ("d", "time.start;obs.exposure")
    assert (str(fields[3].unit), fields[3].ucd) == ("deg", "pos.eq.ra")
    pairs = [(a, b) for a in public for b in public if a.object_name == b.object_name and str(a.expnum) < str(b.expnum)]
    assert len(table) == len(pairs) > 0
    for row in table:
        a, b = by_id[str(row[0])], by_id[str(row[1])]
        assert a.object_name == b.object_name and a.pk != b.pk
        assert float(row[2]) == pytest.approx(a.mjd_obs, abs=1e-9)
        assert float(row[3]) == pytest.approx(a.ra_deg, abs=1e-12)
        assert float(row[4]) == pytest.approx(a.exptime, abs=1e-3)
        assert float(row[5]) == pytest.approx(2 * a.exptime)
        assert float(row[6]) == pytest.approx(b.dec_deg, abs=1e-12)


@needs_postgres
def test_group_by_agrees_with_the_orm(survey):
    public, _ = survey
    expected = {obscore.MEGAPRIME_BANDS_M[g["band"]][0]: (g["n"], g["mean"])
                for g in public.values("band").annotate(n=Count("id"), mean=Avg("exptime"))}
    table = _rows(_sync(Client(), "SELECT em_min, COUNT(*) AS n, AVG(t_exptime) FROM ivoa.obscore GROUP BY em_min"))
    got = {float(r[0]): (int(r[1]), float(r[2])) for r in table}
    assert set(got) == set(expected)
    for edge, (n, mean) in expected.items():
        assert got[edge][0] == n and got[edge][1] == pytest.approx(mean)


@needs_postgres
def test_joins_within_tap_schema_agree_with_the_published_columns(survey):
    table = _rows(_sync(Client(), "SELECT t.table_name, COUNT(*) AS n, MIN(c.column_index), MAX(c.column_index) "
                                  "FROM TAP_SCHEMA.tables AS t JOIN TAP_SCHEMA.columns AS c "
                                  "ON c.table_name = t.table_name GROUP BY t.table_name"))
    got = {str(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in table}
    expected = {name: (len(cols), 0, len(cols) - 1) for name, cols in tap.published_columns().items()}
    assert got == expected


@needs_postgres
def test_geometry_functions_agree_with_the_geometry_module(survey):
    public, _ = survey
    ra0, dec0 = 30.5, -4.5
    table = _rows(_sync(Client(), f"SELECT obs_id, DISTANCE(POINT('ICRS', s_ra, s_dec), POINT('ICRS', {ra0}, {dec0})), "
                                  f"s_ra, s_dec FROM ivoa.obscore"))
    by_id = {str(e.expnum): e for e in public}
    assert len(table) == len(by_id)
    for row in table:
        e = by_id[str(row[0])]
        assert float(row[1]) == pytest.approx(fp.angular_distance(ra0, dec0, e.ra_deg, e.dec_deg), abs=1e-9)
        assert (float(row[2]), float(row[3])) == (e.ra_deg, e.dec_deg)
    circle = geometry.Circle(ra0, dec0, 1.2)
    table = _rows(_sync(Client(), f"SELECT COUNT(*) AS n, MIN(t_min) FROM ivoa.obscore WHERE "
                                  f"INTERSECTS(s_region, CIRCLE('ICRS', {ra0}, {dec0}, 1.2)) = 1"))
    meeting = [e for e in public if geometry.intersects(fp.from_dali(e.s_region), circle)]
    assert int(table[0][0]) == len(meeting) > 0
    assert float(table[0][1]) == pytest.approx(min(e.mjd_obs for e in meeting))
