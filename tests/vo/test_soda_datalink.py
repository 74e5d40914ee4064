"""DataLink and SODA on real files: exposures written raw (overscan, WCS counting it) and
processed, ingested through the real ingest service; cutouts opened with astropy and checked
against where the sources really are."""
import datetime as dt
import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse
from astropy.wcs import WCS
from django.test import Client

from archive.models import Exposure, RunAccess
from archive.services.ingest import ingest
from recommender.vo import obscore
from tests.desom import fitsfactory
from tests import factories

SHAPE = (300, 200)   # (ny, nx) science area per CCD
RA, DEC = 150.0, 2.2


@pytest.fixture
def files(db, tmp_path, imaging_config):
    paths, truths = {}, {}
    for expnum, layout in ((2100001, "raw"), (2100002, "processed")):
        path = tmp_path / f"{expnum}{'o' if layout == 'raw' else 'p'}.fits"
        truths[layout] = fitsfactory.write_exposure(
            path, n_ccds=3, shape=SHAPE, layout=layout, seed=expnum % 7, wcs_at=(RA, DEC),
            sky_kw={"n_sources": 25, "margin": 20, "flux_range": (2e4, 6e4)},
            header_kw={"expnum": expnum, "rel_date": "2001-01-01", "ra_deg": RA, "dec_deg": DEC})
        paths[layout] = path
    report = ingest([tmp_path], workers=0, imaging_config=imaging_config, progress=False, with_model=False)
    assert report.failed == 0, report.failures
    return paths, truths


def _did(layout):
    return obscore.publisher_did(Exposure.objects.get(expnum=2100001 if layout == "raw" else 2100002))


def _sky_of(path, ccd, x, y):
    """Sky position of trimmed pixel (x, y) of a CCD, from the file's own header."""
    with fits.open(path) as hdul:
        header = hdul[ccd + 1].header
    offset = fitsfactory.OVERSCAN if "BSECA" in header else 0
    return WCS(header).all_pix2world(x + offset, y, 0)


def _centroid(data, x, y, half=4):
    ix, iy = int(round(x)), int(round(y))
    window = data[iy - half:iy + half + 1, ix - half:ix + half + 1].astype(float)
    window = window - np.median(data)
    window[window < 0] = 0
    ys, xs = np.mgrid[iy - half:iy + half + 1, ix - half:ix + half + 1]
    return float((xs * window).sum() / window.sum()), float((ys * window).sum() / window.sum())


@pytest.mark.parametrize("layout", ["raw", "processed"])
def test_a_cutout_places_its_source_within_a_pixel(files, layout):
    paths, truths = files
    truth = truths[layout][1]
    brightest = int(np.argmax(truth.flux))
    x, y = truth.x[brightest], truth.y[brightest]
    ra, dec = _sky_of(paths[layout], 1, x, y)
    response = Client().get("/soda/sync", {"ID": _did(layout), "CIRCLE": f"{ra} {dec} 0.002"})
    assert response.status_code == 200 and response["Content-Type"] == "application/fits"
    with fits.open(io.BytesIO(response.content)) as hdul:
        assert len(hdul) == 2 and hdul[1].header["EXTNAME"] == "ccd01"
        data = hdul[1].data
        # 0.002 deg is 39 px at 0.185"/px: a box about 78 px wide, overscan never included.
        assert 60 <= data.shape[1] <= 80 and 60 <= data.shape[0] <= 80
        if layout == "raw":
            assert data.dtype.kind == "u" and float(np.median(data)) > 1000  # stored values, bias kept
        px, py = (float(v) for v in WCS(hdul[1].header).all_world2pix(ra, dec, 0))
        cx, cy = _centroid(data, px, py)
    assert np.hypot(px - cx, py - cy) < 1.0, (px, py, cx, cy)


def test_a_region_across_ccds_and_a_ccd_choice(files):
    paths, _ = files
    # CCD 0 is centred on the pointing's column; the gap to CCD 1 lies 100-200 px east of... its edge.
    ra_edge, dec_edge = _sky_of(paths["processed"], 0, SHAPE[1] + 50, SHAPE[0] / 2)  # in the gap
    both = Client().get("/soda/sync", {"ID": _did("processed"), "POS": f"CIRCLE {ra_edge} {dec_edge} 0.01"})
    assert both.status_code == 200
    with fits.open(io.BytesIO(both.content)) as hdul:
        assert [h.header["EXTNAME"] for h in hdul[1:]] == ["ccd00", "ccd01"]
    one = Client().get("/soda/sync", {"ID": _did("processed"), "CIRCLE": f"{ra_edge} {dec_edge} 0.01", "CCD": "ccd01"})
    with fits.open(io.BytesIO(one.content)) as hdul:
        assert [h.header["EXTNAME"] for h in hdul[1:]] == ["ccd01"]
    whole = Client().get("/soda/sync", {"ID": _did("raw"), "CCD": "2"})
    with fits.open(io.BytesIO(whole.content)) as hdul:
        assert hdul[1].data.shape == SHAPE and hdul[1].header["EXTNAME"] == "ccd02"


def _error(response):
    parsed = parse(io.BytesIO(response.content), verify="exception")
    info = next(i for i in parsed.resources[0].infos if i.name == "QUERY_STATUS")
    assert info.value == "ERROR"
    return info.content


def test_cutout_requests_are_bounded_and_checked(files, settings):
    did = _did("processed")
    cases = [
        ({"CIRCLE": "150 2.2 0.01"}, 400, "exactly one exposure"),
        ({"ID": did}, 400, "give a region"),
        ({"ID": did, "CIRCLE": "150 2.2"}, 400, "ra dec radius"),
        ({"ID": did, "CIRCLE": "150 2.2 0.01", "POLYGON": "150 2 151 2 151 3"}, 400, "one region"),
        ({"ID": did, "CIRCLE": "30 -40 0.01"}, 400, "NoOverlap"),
        ({"ID": did, "CCD": "ccd99"}, 400, "no CCD"),
        ({"ID": "ivo://desom.archive/exposures?999", "CCD": "0"}, 404, "NotFoundFault"),
    ]
    for params, status, needle in cases:
        response = Client().get("/soda/sync", params)
        assert response.status_code == status, (params, response.content[:300])
        message = _error(response)
        assert needle in message and message.split(":")[0] in ("UsageFault", "NotFoundFault"), message
    settings.SODA_MAX_PIXELS = 10_000
    big = Client().get("/soda/sync", {"ID": did, "CCD": "0"})
    assert big.status_code == 413 and "at most 10000" in _error(big)


def test_proprietary_cutouts_and_links_follow_the_access_rule(files):
    exposure = Exposure.objects.get(expnum=2100002)
    Exposure.objects.filter(pk=exposure.pk).update(release_date=dt.date.today() + dt.timedelta(days=30), runid="27AQ01")
    did = obscore.publisher_did(exposure)
    pi = factories.user("pi", password="x")
    RunAccess.objects.create(user=pi, runid="27AQ01")
    entitled = Client()
    entitled.force_login(pi)
    for client, allowed in ((Client(), False), (entitled, True)):
        assert client.get("/soda/sync", {"ID": did, "CCD": "0"}).status_code == (200 if allowed else 404)
        table = parse(io.BytesIO(client.get("/datalink/links", {"ID": did}).content)).get_first_table().to_table()
        if allowed:
            assert "#this" in set(table["semantics"])
        else:
            assert len(table) == 1 and str(table["error_message"][0]).startswith("NotFoundFault")


def test_links_list_every_product_of_an_exposure(files):
    did = _did("raw")
    exposure = Exposure.objects.get(expnum=2100001)
    response = Client().get("/datalink/links", {"ID": [did, "ivo://desom.archive/exposures?1"]})
    assert response.status_code == 200 and "content=datalink" in response["Content-Type"]
    parsed = parse(io.BytesIO(response.content), verify="exception")
    table = parsed.get_first_table().to_table()
    mine = table[table["ID"] == did]
    by_local = {str(r["local_semantics"]): r for r in mine}
    assert by_local["file"]["semantics"] == "#this"
    assert by_local["file"]["access_url"].endswith(f"/exposures/{exposure.pk}/download/")
    assert by_local["preview"]["semantics"] == "#preview"
    assert {"ccd ccd00", "ccd ccd01", "ccd ccd02"} <= set(by_local)
    assert by_local["cutout"]["service_def"] == "soda" and by_local["similar"]["service_def"] == "similar"
    assert "quality verdict" in str(by_local["quality"]["description"])
    missing = table[table["ID"] == "ivo://desom.archive/exposures?1"]
    assert len(missing) == 1 and str(missing["error_message"][0]).startswith("NotFoundFault")
    # The per-CCD links are real cutouts of that CCD.
    ccd_link = str(by_local["ccd ccd01"]["access_url"]).replace("http://testserver", "")
    with fits.open(io.BytesIO(Client().get(ccd_link).content)) as hdul:
        assert hdul[1].header["EXTNAME"] == "ccd01" and hdul[1].data.shape == SHAPE
    # The descriptors say how to call SODA and SIMILAR_TO, the ID taken from the row.
    meta = {r.ID: r for r in parsed.resources if r.type == "meta"}
    assert {p.name: p.value for p in meta["soda"].params}["standardID"] == "ivo://ivoa.net/std/SODA#sync-1.0"
    inputs = {p.name: p for p in meta["soda"].groups[0].entries}
    assert inputs["ID"].ref == "ID" and {"CIRCLE", "POLYGON", "POS", "CCD"} <= set(inputs)
    assert {p.name for p in meta["similar"].groups[0].entries} == {"SIMILAR_TO", "K"}
    assert Client().get("/datalink/links").status_code == 400


def test_a_cutout_is_served_like_a_file_resumable_and_conditional(files):
    """The same request gives the same bytes, so a client can resume a cutout with Range and
    revalidate it with its ETag."""
    params = {"ID": _did("raw"), "CCD": "1"}
    client = Client()
    whole = client.get("/soda/sync", params)
    assert whole.status_code == 200 and whole["Accept-Ranges"] == "bytes"
    etag, body = whole["ETag"], whole.content
    assert client.get("/soda/sync", params).content == body          # repeatable bytes
    part = client.get("/soda/sync", params, HTTP_RANGE="bytes=100-2979")
    assert part.status_code == 206 and part.content == body[100:2980]
    assert part["Content-Range"] == f"bytes 100-2979/{len(body)}" and part["Content-Length"] == "2880"
    tail = client.get("/soda/sync", params, HTTP_RANGE="bytes=-500")
    assert tail.status_code == 206 and tail.content == body[-500:]
    assert client.get("/soda/sync", params, HTTP_RANGE=f"bytes={len(body)}-").status_code == 416
    # A range for another version of the cutout (stale If-Range) gets the whole, fresh file.
    stale = client.get("/soda/sync", params, HTTP_RANGE="bytes=0-9", HTTP_IF_RANGE='"0000"')
    assert stale.status_code == 200 and stale.content == body
    assert client.get("/soda/sync", params, HTTP_IF_NONE_MATCH=etag).status_code == 304
    # Errors stay VOTable errors, not ranges of them.
    bad = client.get("/soda/sync", {"ID": _did("raw"), "CCD": "99"}, HTTP_RANGE="bytes=0-9")
    assert bad.status_code == 400 and "VOTABLE" in bad.content.decode().upper()
