"""Simple Cone Search 1.03 (pyvo's SCS client and STILTS' cone against a live server, the
same answers as the geometry module and SIA), and the MOC of the public coverage: every public
footprint inside, a proprietary one outside, per band, in FITS and JSON, drawn on the search page."""
import datetime as dt
import io
import json
import shutil
import subprocess

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse
from django.test import Client
from mocpy import MOC

from archive import geometry
from archive.models import Exposure
from archive.services import coverage
from desom import footprint as fp

STILTS = shutil.which("stilts")


def _meeting(exposures, ra, dec, radius):
    circle = geometry.Circle(ra, dec, radius)
    return sorted(e.expnum for e in exposures if geometry.intersects(fp.from_dali(e.s_region), circle))


def test_cone_search_answers_as_the_geometry_module_and_sia(sky):
    made, secret = sky
    public = [e for e in made if e.pk != secret.pk]
    rng = np.random.default_rng(2)
    for _ in range(5):
        ra, dec, radius = float(30 + rng.normal(0, 1)), float(-5 + rng.normal(0, 1)), float(rng.uniform(0.2, 2))
        response = Client().get("/scs/query", {"RA": ra, "DEC": dec, "SR": radius})
        assert response.status_code == 200
        # (astropy knows UCD1+ only: SCS 1.03's UCD1 ID_MAIN would stop its strict mode)
        table = parse(io.BytesIO(response.content)).get_first_table()
        assert sorted(int(v) for v in table.array["obs_id"]) == _meeting(public, ra, dec, radius)
        sia = Client().get("/sia2/query", {"POS": f"CIRCLE {ra} {dec} {radius}"})
        sia_ids = parse(io.BytesIO(sia.content)).get_first_table().array["obs_id"]
        assert sorted(int(v) for v in sia_ids) == sorted(int(v) for v in table.array["obs_id"])
    ucds = {f.name: f.ucd for f in table.fields}
    assert (ucds["obs_id"], ucds["s_ra"], ucds["s_dec"]) == ("ID_MAIN", "POS_EQ_RA_MAIN", "POS_EQ_DEC_MAIN")
    verb1 = parse(io.BytesIO(Client().get("/scs/query", {"RA": 30, "DEC": -5, "SR": 1, "VERB": 1}).content))
    assert [f.name for f in verb1.get_first_table().fields] == ["obs_id", "s_ra", "s_dec"]


@pytest.mark.parametrize("query, needle", [
    ({"RA": 30, "DEC": -5}, "SR: required"), ({"RA": "x", "DEC": 0, "SR": 1}, "RA: 'x' is not a number"),
    ({"RA": 30, "DEC": 95, "SR": 1}, "DEC: 95 must lie in"), ({"RA": 30, "DEC": 0, "SR": 90}, "SR: 90 must lie in"),
    ({"RA": 30, "DEC": 0, "SR": 1, "VERB": 7}, "VERB: 1, 2 or 3"),
])
def test_bad_cones_are_scs_errors(db, query, needle):
    response = Client().get("/scs/query", query)
    assert response.status_code == 400
    votable = parse(io.BytesIO(response.content))
    error = next(i for i in votable.infos if i.name == "Error")
    assert needle in error.value


@pytest.mark.django_db(transaction=True)
def test_pyvo_and_stilts_cone_search_a_live_server(live_server, sky, tmp_path):
    import pyvo

    made, secret = sky
    public = [e for e in made if e.pk != secret.pk]
    import requests

    with requests.Session() as session:     # closed after: no kept-alive request holds a database session
        service = pyvo.dal.SCSService(live_server.url + "/scs/query", session=session)
        results = service.search(pos=(30.5 * u.deg, -4.8 * u.deg), radius=1.0 * u.deg)
    assert sorted(int(r["obs_id"]) for r in results) == _meeting(public, 30.5, -4.8, 1.0)
    if STILTS:
        out = tmp_path / "cone.csv"
        done = subprocess.run([STILTS, "cone", f"serviceurl={live_server.url}/scs/query?", "lon=30.5", "lat=-4.8",
                               "radius=1.0", f"out={out}", "ofmt=csv"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        lines = out.read_text().splitlines()
        column = lines[0].split(",").index("obs_id")
        assert sorted(int(line.split(",")[column]) for line in lines[1:]) == _meeting(public, 30.5, -4.8, 1.0)


@pytest.fixture
def spread(sky, settings, tmp_path):
    """The sky, some of it in g; the proprietary exposure moved far from the others."""
    settings.ARCHIVE_DATA_DIR = tmp_path
    made, secret = sky
    Exposure.objects.filter(pk__in=[e.pk for e in made[:10]]).update(band="g")
    Exposure.objects.filter(pk=secret.pk).update(ra_deg=200.0, dec_deg=40.0)
    secret.refresh_from_db()
    geometry.store_footprint(secret, None)
    return list(Exposure.objects.filter(pk__in=[e.pk for e in made])), Exposure.objects.get(pk=secret.pk)


def _contains(moc, ra, dec) -> bool:
    return bool(moc.contains_lonlat(np.array([ra]) * u.deg, np.array([dec]) * u.deg)[0])


def test_the_public_coverage_moc_holds_every_public_footprint_and_no_proprietary_one(spread, tmp_path):
    made, secret = spread
    public = [e for e in made if e.pk != secret.pk]
    for band, members in ((None, public), ("g", [e for e in public if e.band == "g"]),
                          ("r", [e for e in public if e.band == "r"])):
        query = {"band": band} if band else {}
        response = Client().get("/coverage/moc.fits", query)
        assert response.status_code == 200 and response["Content-Type"] == "application/fits"
        path = tmp_path / f"moc-{band}.fits"
        path.write_bytes(b"".join(response.streaming_content))
        with fits.open(path) as hdul:
            assert hdul[1].header.get("MOCORDER") or hdul[1].header.get("MOCORD_S")
        moc = MOC.from_fits(str(path))
        for e in members:
            assert all(_contains(moc, ra, dec) for ra, dec in fp.from_dali(e.s_region)[:1]), e.expnum
            assert _contains(moc, e.ra_deg, e.dec_deg)
        others = [e for e in public if e not in members]
        assert not _contains(moc, secret.ra_deg, secret.dec_deg)
        assert not all(_contains(moc, e.ra_deg, e.dec_deg) for e in others) or not others
        as_json = json.loads(b"".join(Client().get("/coverage/moc.json", query).streaming_content))
        assert MOC.from_json(as_json) == moc
    assert Client().get("/coverage/moc.fits", {"band": "y"}).status_code == 400
    # The search page draws it.
    page = Client().get("/?band=g")
    assert b'src="/coverage/map.png?band=g"' in page.content
    png = b"".join(Client().get("/coverage/map.png", {"band": "g"}).streaming_content)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    blue = (image[..., 2] - image[..., 0] > 60).sum()      # the coverage's fill, blue over white
    assert blue > 0.002 * image[..., 0].size


def test_a_newly_public_exposure_changes_the_coverage(spread):
    made, secret = spread
    before = MOC.from_fits(str(coverage.coverage_file(None, "fits")))
    Exposure.objects.filter(pk=secret.pk).update(release_date=dt.date(2001, 1, 1), runid="10AQ01")
    after = MOC.from_fits(str(coverage.coverage_file(None, "fits")))
    assert not _contains(before, secret.ra_deg, secret.dec_deg) and _contains(after, secret.ra_deg, secret.dec_deg)
