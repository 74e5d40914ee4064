"""SIA v2 query and VOSI endpoints: every constraint against the same selection made directly
from the database, the ObsCore columns, errors, overflow, and the database being down."""
import datetime as dt
import io
import math
import xml.etree.ElementTree as ET
from unittest import mock

import numpy as np
import pytest
from astropy.io.votable import parse
from django.db import OperationalError, connections
from django.test import Client

from archive.models import Exposure
from archive.services import quality
from recommender import services as recommender_services
from archive import geometry
from desom.footprint import angular_distance, polygon_contains
from recommender.vo import services as vo

QUERY = "/sia2/query"


def votable(response):
    assert response["Content-Type"].startswith("application/x-votable+xml"), response["Content-Type"]
    return parse(io.BytesIO(response.content))


def status_of(table_file):
    resource = table_file.resources[0]
    assert resource.type == "results"
    info = next(i for i in resource.infos if i.name == "QUERY_STATUS")
    return info.value, (info.content or "")


def rows(response):
    parsed = votable(response)
    assert status_of(parsed)[0] in ("OK", "OVERFLOW")
    return parsed.get_first_table().to_table()


def obs_ids(response) -> list[int]:
    return [int(v) for v in rows(response)["obs_id"]]


def science():
    return Exposure.objects.filter(is_science=True).order_by("expnum")


@pytest.fixture
def public_archive(populated_archive):
    Exposure.objects.update(release_date=dt.date(2000, 1, 1))
    return populated_archive


def test_capabilities_list_the_sia_interface_and_vosi(db):
    response = Client().get("/sia2/capabilities")
    assert response.status_code == 200
    root = ET.fromstring(response.content)
    standards = {c.get("standardID"): c for c in root.iter("capability")}
    assert set(standards) == {vo.SIA2_STANDARD_ID, "ivo://ivoa.net/std/VOSI#capabilities",
                              "ivo://ivoa.net/std/VOSI#availability"}
    url = standards[vo.SIA2_STANDARD_ID].find("interface/accessURL").text
    assert url == "http://testserver/sia2/query"
    # Both methods the query answers are declared.
    assert [q.text for q in standards[vo.SIA2_STANDARD_ID].iter("queryType")] == ["GET", "POST"]


def test_availability_reports_a_database_outage(db):
    ns = {"vosi": "http://www.ivoa.net/xml/VOSIAvailability/v1.0"}
    up = ET.fromstring(Client().get("/sia2/availability").content)
    assert up.find("vosi:available", ns).text == "true"
    with mock.patch.object(type(connections["default"]), "create_cursor", side_effect=OperationalError("server closed")):
        response = Client().get("/sia2/availability")
    assert response.status_code == 200
    down = ET.fromstring(response.content)
    assert down.find("vosi:available", ns).text == "false"
    assert "database is unavailable" in down.find("vosi:note", ns).text


def test_query_lists_science_exposures_with_obscore_columns(public_archive):
    response = Client().get(QUERY)
    assert response.status_code == 200
    parsed = votable(response)
    assert status_of(parsed)[0] == "OK"
    fields = {f.name: f for f in parsed.get_first_table().fields}
    for name in ("dataproduct_type", "calib_level", "obs_collection", "obs_id", "obs_publisher_did",
                 "access_url", "access_format", "access_estsize", "target_name", "s_ra", "s_dec", "s_fov",
                 "s_region", "s_resolution", "t_min", "t_max", "t_exptime", "t_resolution", "em_min",
                 "em_max", "em_res_power", "o_ucd", "pol_states", "facility_name", "instrument_name",
                 "desom2_cell", "quality_label", "quality_flags"):
        assert name in fields, name
    assert fields["s_ra"].utype.endswith("Position2D.Value2.C1") and fields["s_ra"].ucd == "pos.eq.ra"
    assert fields["em_min"].unit == "m" and fields["access_estsize"].unit == "kbyte"
    table = parsed.get_first_table().to_table()
    assert [int(v) for v in table["obs_id"]] == list(science().values_list("expnum", flat=True))
    first = science().first()
    row = table[0]
    assert row["dataproduct_type"] == "image" and row["access_format"] == "application/fits"
    assert row["access_url"] == f"http://testserver/exposures/{first.pk}/download/"
    assert row["access_estsize"] == math.ceil(first.file_size / 1024)
    # The footprint: a DALI polygon (double array, xtype polygon) from the CCDs' WCS, holding the pointing.
    assert fields["s_region"].xtype == "polygon" and fields["s_region"].datatype == "double"
    assert first.footprint_kind == "wcs"
    region = [float(v) for v in row["s_region"]]
    assert len(region) >= 8 and len(region) % 2 == 0
    assert np.allclose(region, [float(v) for v in first.s_region.split()])
    assert polygon_contains(list(zip(region[0::2], region[1::2])), first.ra_deg, first.dec_deg)
    # Spatial sizes from the WCS (the simulator writes MegaCam's 0.185"/px, 2 CCDs of 256 x 512).
    assert abs(row["s_resolution"] - 0.185) < 1e-6
    assert row["s_xel1"] >= 256 and row["s_xel2"] >= 512
    assert 0.02 < row["s_fov"] < 0.2
    assert (row["t_xel"], row["em_xel"]) == (1, 1) and np.ma.is_masked(row["pol_xel"])
    assert abs(row["t_max"] - row["t_min"] - first.exptime / 86400) < 1e-9
    band = vo.MEGAPRIME_BANDS_M[first.band]
    assert (row["em_min"], row["em_max"]) == band
    # The access URL really serves the file.
    download = Client().get(f"/exposures/{first.pk}/download/")
    assert download.status_code == 200 and b"".join(download.streaming_content)[:6] == b"SIMPLE"
    # Calibration frames are not images of the sky: never listed.
    assert not set(table["obs_id"]) & {str(e) for e in Exposure.objects.filter(is_science=False)
                                       .values_list("expnum", flat=True)}


def _corners(exposure):
    values = [float(v) for v in exposure.s_region.split()]
    return list(zip(values[0::2], values[1::2]))


def test_position_constraints_match_the_footprints(public_archive):
    """POS meets the footprints: a circle just off a footprint's corner misses it, one reaching
    over the corner finds it; a brute-force pass over every footprint gives the same answer."""
    exposures = list(science())
    centre = exposures[0]
    corner = _corners(centre)[0]
    # A point 0.05 deg beyond the corner, away from the field's centre.
    ra0, dec0 = centre.ra_deg, centre.dec_deg
    away = np.subtract(corner, (ra0, dec0))
    away[0] *= math.cos(math.radians(dec0))
    away /= np.hypot(*away)
    point = (corner[0] + 0.05 * away[0] / math.cos(math.radians(corner[1])), corner[1] + 0.05 * away[1])
    gap = float(angular_distance(*point, *corner))
    for radius, inside in ((gap * 0.8, False), (gap * 1.2, True)):
        got = obs_ids(Client().get(QUERY, {"pos": f"CIRCLE {point[0]} {point[1]} {radius}"}))
        assert (centre.expnum in got) is inside, (radius, gap)
        expected = sorted(e.expnum for e in exposures
                          if geometry.intersects(_corners(e), geometry.Circle(point[0], point[1], radius)))
        assert got == expected
        # The REST cone asks the same question and gets the same answer.
        rest = Client().get("/api/exposures/", {"ra": point[0], "dec": point[1], "radius": radius,
                                                 "is_science": "true", "page_size": 500}).json()
        assert sorted(r["expnum"] for r in rest["results"]) == got

    radius = 2.0
    got = obs_ids(Client().get(QUERY, {"pos": f"CIRCLE {ra0} {dec0} {radius}"}))
    expected = sorted(e.expnum for e in exposures if geometry.intersects(_corners(e), geometry.Circle(ra0, dec0, radius)))
    assert got == expected and centre.expnum in got

    decs = sorted(e.dec_deg for e in exposures)
    lo, hi = decs[len(decs) // 4], decs[len(decs) // 2]
    expected = sorted(e.expnum for e in exposures
                      if min(d for _, d in _corners(e)) <= hi and max(d for _, d in _corners(e)) >= lo)
    got = obs_ids(Client().get(QUERY, {"POS": f"RANGE -Inf +Inf {lo} {hi}"}))
    assert got == expected and 0 < len(got) < len(exposures)

    # A small triangle around one pointing finds it; one far away finds nothing near it.
    r, d = ra0, dec0
    triangle = f"POLYGON {r - 0.01} {d - 0.01} {r + 0.01} {d - 0.01} {r} {d + 0.01}"
    assert centre.expnum in obs_ids(Client().get(QUERY, {"POS": triangle}))
    far = [((r + 180) % 360, -d), ((r + 180.2) % 360, -d), ((r + 180.1) % 360, -d + 0.2)]
    far_text = "POLYGON " + " ".join(f"{a} {b}" for a, b in far)
    assert obs_ids(Client().get(QUERY, {"POS": far_text})) == sorted(
        e.expnum for e in exposures if geometry.intersects(_corners(e), geometry.Polygon(tuple(far))))


def test_band_time_exptime_and_identity_constraints(public_archive):
    exposures = list(science())
    bands = {e.band for e in exposures}
    band = sorted(bands)[0]
    em_min, em_max = vo.MEGAPRIME_BANDS_M[band]
    middle = (em_min + em_max) / 2
    got = obs_ids(Client().get(QUERY, {"BAND": f"{middle} {middle + 1e-9}"}))
    assert got == [e.expnum for e in exposures if e.band == band]
    assert obs_ids(Client().get(QUERY, {"BAND": "1e-3 2e-3"})) == []  # radio: none

    mjds = sorted(e.mjd_obs for e in exposures)
    lo, hi = mjds[3], mjds[10]
    expected = [e.expnum for e in exposures if e.mjd_obs <= hi and e.mjd_obs + e.exptime / 86400 >= lo]
    assert obs_ids(Client().get(QUERY, {"TIME": f"{lo} {hi}"})) == expected

    times = sorted({e.exptime for e in exposures})
    got = obs_ids(Client().get(QUERY, {"EXPTIME": f"{times[0]} {times[0]}"}))
    assert got == [e.expnum for e in exposures if e.exptime == times[0]]

    one, two = exposures[2], exposures[5]
    assert obs_ids(Client().get(QUERY, [("ID", str(one.expnum))])) == [one.expnum]
    did = f"{vo.publisher_did_prefix()}{two.expnum}"
    # Repeated values of one parameter are OR-ed.
    response = Client().get(f"{QUERY}?ID={one.expnum}&id={did}")
    assert obs_ids(response) == sorted([one.expnum, two.expnum])
    assert rows(response)["obs_publisher_did"][-1] == did

    if one.object_name:
        expected = [e.expnum for e in exposures if e.object_name.lower() == one.object_name.lower()]
        assert obs_ids(Client().get(QUERY, {"TARGET": one.object_name.upper()})) == expected
    assert len(obs_ids(Client().get(QUERY, {"DPTYPE": "image", "CALIB": "1", "COLLECTION": "desom",
                                             "FACILITY": "CFHT", "FORMAT": "application/fits"}))) == len(exposures)
    assert obs_ids(Client().get(QUERY, {"DPTYPE": "cube"})) == []
    assert obs_ids(Client().get(QUERY, {"FORMAT": "image/png"})) == []
    assert obs_ids(Client().get(QUERY, {"INSTRUMENT": "not-an-instrument"})) == []


def test_content_constraints_quality_flag_cell(public_archive):
    desom1, desom2 = public_archive
    exposures = list(science())
    cells = quality.cells_of([e.pk for e in exposures], desom2)
    busiest = max(set(cells.values()), key=list(cells.values()).count)
    quality.label_cell(busiest, "bad focus")
    verdicts = {v.exposure_id: v for v in quality.quality_verdicts(exposures)}
    expected = [e.expnum for e in exposures if verdicts[e.pk].label == "bad focus"]
    table = rows(Client().get(QUERY, {"QUALITY": "Bad Focus"}))
    assert [int(v) for v in table["obs_id"]] == expected and expected
    assert set(table["quality_label"]) == {"bad focus"}

    got = obs_ids(Client().get(QUERY, [("CELL", str(busiest))]))
    assert got == [e.expnum for e in exposures if cells.get(e.pk) == busiest]

    n_nodes = desom1.map_shape[0] * desom1.map_shape[1]
    quality.save_flag("crowded", list(range(n_nodes // 2)), 0.5)
    flagged = [e.expnum for e in exposures if any(f["name"] == "crowded" for f in
                                                  quality.quality_verdicts([e])[0].flags)]
    table = rows(Client().get(QUERY, {"FLAG": "CROWDED"}))
    assert [int(v) for v in table["obs_id"]] == flagged
    assert all("crowded" in str(v) for v in table["quality_flags"])


def test_similar_to_ranks_like_the_recommender(public_archive):
    target = science()[4]
    expected = [m.exposure.expnum for m in recommender_services.similar(target, k=5)]
    table = rows(Client().get(QUERY, {"SIMILAR_TO": str(target.expnum), "K": "5"}))
    assert [int(v) for v in table["obs_id"]] == expected
    distances = list(table["similarity_distance"])
    assert distances == sorted(distances)
    # Combined with a constraint, the ranking keeps only what passes it.
    band = target.band
    got = obs_ids_unsorted(Client().get(QUERY, {"SIMILAR_TO": str(target.expnum), "K": "3", "BAND":
                                                 " ".join(str(x) for x in vo.MEGAPRIME_BANDS_M[band])}))
    assert len(got) == 3 and all(Exposure.objects.get(expnum=n).band == band for n in got)


def obs_ids_unsorted(response):
    return [int(v) for v in rows(response)["obs_id"]]


def test_maxrec_overflow_and_post(public_archive):
    n = science().count()
    response = Client().get(QUERY, {"MAXREC": "5"})
    parsed = votable(response)
    assert status_of(parsed)[0] == "OVERFLOW" and len(parsed.get_first_table().array) == 5
    parsed = votable(Client().get(QUERY, {"MAXREC": "0"}))
    assert status_of(parsed)[0] == "OVERFLOW" and len(parsed.get_first_table().array) == 0
    assert status_of(votable(Client().get(QUERY, {"MAXREC": str(n)})))[0] == "OK"
    # POST takes the same parameters (form-encoded); no CSRF token is needed for a query.
    client = Client(enforce_csrf_checks=True)
    posted = client.post(QUERY, {"MAXREC": "3", "RESPONSEFORMAT": "votable"})
    assert posted.status_code == 200 and len(votable(posted).get_first_table().array) == 3


@pytest.mark.parametrize("params, needle", [
    ({"POS": "CIRCLE 10 20"}, "a circle is ra dec radius"),
    ({"POS": "CIRCLE 10 95 1"}, "declination"),
    ({"POS": "BOX 1 2 3 4"}, "unknown shape"),
    ({"POS": "POLYGON 1 2 3 4"}, "at least three"),
    ({"POS": "CIRCLE a b c"}, "not a number"),
    ({"BAND": "5e-7 4e-7"}, "empty"),
    ({"BAND": "nan 1"}, "not a finite number"),
    ({"TIME": "1 2 3"}, "two numbers"),
    ({"MAXREC": "-1"}, "MAXREC"),
    ({"CALIB": "raw"}, "calibration level"),
    ({"CELL": "9999"}, "CELL"),
    ({"SIMILAR_TO": "123456789"}, "no science exposure"),
    ({"K": "3"}, "only meaningful with SIMILAR_TO"),
    ({"RESPONSEFORMAT": "text/csv"}, "RESPONSEFORMAT"),
    ({"REQUEST": "getCapabilities"}, "REQUEST"),
])
def test_bad_parameters_are_400_votable_errors(public_archive, params, needle):
    response = Client().get(QUERY, params)
    assert response.status_code == 400
    value, message = status_of(votable(response))
    assert value == "ERROR" and needle in message, message
    assert message.startswith("UsageFault: "), message


def test_maxrec_above_the_limit_is_capped_with_overflow(public_archive, monkeypatch):
    """DALI: a MAXREC above the service's limit is served up to the limit, flagged OVERFLOW."""
    monkeypatch.setattr(vo, "MAX_MAXREC", 4)
    parsed = votable(Client().get(QUERY, {"MAXREC": str(10 ** 9)}))
    assert status_of(parsed)[0] == "OVERFLOW" and len(parsed.get_first_table().array) == 4


def test_self_description_lists_our_content_parameters(public_archive):
    """Every answer describes the service (RESOURCE type=meta, adhoc:service) and how to reach
    each row's DataLink links; MAXREC=0 is the DALI way to ask for just that."""
    parsed = votable(Client().get(QUERY, {"MAXREC": "0"}))
    meta = {r.ID: r for r in parsed.resources if r.type == "meta"}
    assert set(meta) == {"sia2-query", "datalink"} and all(r.utype == "adhoc:service" for r in meta.values())
    params = {p.name: p.value for p in meta["sia2-query"].params}
    assert params["standardID"] == vo.SIA2_STANDARD_ID and params["accessURL"] == "http://testserver/sia2/query"
    inputs = {p.name for p in meta["sia2-query"].groups[0].entries}
    assert {"POS", "BAND", "TIME", "MAXREC", "QUALITY", "FLAG", "CELL", "SIMILAR_TO", "K"} <= inputs
    link = meta["datalink"]
    assert {p.name: p.value for p in link.params}["accessURL"] == "http://testserver/datalink/links"
    assert link.groups[0].entries[0].ref == "obs_publisher_did"


def test_similar_to_k_above_the_limit_is_refused(public_archive):
    target = science().first()
    response = Client().get(QUERY, {"SIMILAR_TO": target.expnum, "K": recommender_services.MAX_K + 1})
    assert response.status_code == 400 and "K" in status_of(votable(response))[1]


def test_unknown_parameters_are_ignored_with_a_warning(public_archive):
    parsed = votable(Client().get(QUERY, {"FLAVOUR": "vanilla", "MAXREC": "2"}))
    warnings = [i.value for i in parsed.resources[0].infos if i.name == "WARNING"]
    assert any("FLAVOUR" in w for w in warnings)


def test_database_down_is_a_503_votable_error(db):
    with mock.patch.object(type(connections["default"]), "create_cursor", side_effect=OperationalError("connection refused")):
        response = Client().get(QUERY, {"MAXREC": "3"})
        health = Client().get("/health/")
    assert response.status_code == 503 and response["Retry-After"] == "30"
    value, message = status_of(votable(response))
    assert value == "ERROR" and "database is unavailable" in message and message.startswith("TransientFault: ")
    assert health.status_code == 503 and health.json()["database"].startswith("unavailable")


def test_query_cost_does_not_grow_with_the_rows(public_archive):
    """Quality comes from one bulk verdict call: 2 rows or 20 cost the same number of queries."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for maxrec in (2, 20):
        with CaptureQueriesContext(connection) as captured:
            assert len(rows(Client().get(QUERY, {"MAXREC": str(maxrec)}))) == maxrec
        counts.append(len(captured))
    assert counts[0] == counts[1], counts
