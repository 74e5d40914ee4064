"""A real VO client against a live server: pyvo discovers the query endpoint from the VOSI
capabilities, queries, and astropy parses the ObsCore answer."""
import datetime as dt
import urllib.request

import astropy.units as u
import pytest
import pyvo
from django.db import connection

from archive.models import Exposure
from archive.services import quality


@pytest.mark.django_db(transaction=True)
def test_pyvo_queries_the_archive(live_server, populated_archive):
    desom1, desom2 = populated_archive
    Exposure.objects.update(release_date=dt.date(2000, 1, 1))
    science = list(Exposure.objects.filter(is_science=True).order_by("expnum"))
    service = pyvo.dal.SIA2Service(live_server.url + "/sia2")
    assert service.query_ep == live_server.url + "/sia2/query"

    everything = service.search(maxrec=1000).to_table()
    assert sorted(int(v) for v in everything["obs_id"]) == [e.expnum for e in science]

    centre = science[0]
    near = service.search(pos=(centre.ra_deg * u.deg, centre.dec_deg * u.deg, 0.1 * u.deg))
    records = list(near)
    assert centre.expnum in {int(r.obs_id) for r in records}
    record = next(r for r in records if int(r.obs_id) == centre.expnum)
    assert record.dataproduct_type == "image" and record.access_format == "application/fits"
    # The access URL is absolute and serves the FITS file.
    assert record.access_url.startswith(live_server.url)
    with urllib.request.urlopen(record.access_url) as response:
        assert response.read(9) == b"SIMPLE  ="

    # A truncated answer says so in its status.
    truncated = service.search(maxrec=3)
    assert len(truncated) == 3 and truncated.status[0] == "OVERFLOW"
    assert service.search(maxrec=len(science)).status[0] == "OK"

    # Our own content parameter, passed through pyvo as a custom keyword.
    cells = quality.cells_of([e.pk for e in science], desom2)
    chosen = max(set(cells.values()), key=list(cells.values()).count)
    quality.label_cell(chosen, "RBT")
    verdicts = {v.exposure_id: v.label for v in quality.quality_verdicts(science)}
    expected = sorted(e.expnum for e in science if verdicts[e.pk] == "RBT")
    table = service.search(quality="RBT").to_table()
    assert sorted(int(v) for v in table["obs_id"]) == expected and expected
    assert set(table["quality_label"]) == {"RBT"}

    # Cell 0: pyvo drops a custom keyword whose value is falsy (cell=0 sends no CELL at all, so
    # the whole archive comes back); written as "0" or [0] it reaches the service (README).
    in_zero = sorted(e.expnum for e in science if cells.get(e.pk) == 0)
    for value in ("0", [0]):
        table = service.search(cell=value, maxrec=1000).to_table()
        assert sorted(int(v) for v in table["obs_id"]) == in_zero
    assert len(service.search(cell=0, maxrec=1000)) == len(science)

    # A bad query is a DAL error carrying the service's message.
    with pytest.raises(pyvo.dal.DALQueryError, match="UsageFault: CELL"):
        service.search(cell=10 ** 6)


def _ingest_factory_files(tmp_path):
    """Two real exposures (raw with overscan, processed) with a WCS, ingested without models."""
    from archive.services.ingest import ingest
    from desom.pipeline import ImagingConfig
    from tests.desom import fitsfactory

    truths = {}
    for expnum, layout in ((2200001, "raw"), (2200002, "processed")):
        truths[layout] = fitsfactory.write_exposure(
            tmp_path / f"{expnum}.fits", n_ccds=2, shape=(300, 200), layout=layout, seed=3, wcs_at=(150.0, 2.2),
            sky_kw={"n_sources": 20, "margin": 20, "flux_range": (2e4, 6e4)},
            header_kw={"expnum": expnum, "rel_date": "2001-01-01", "ra_deg": 150.0, "dec_deg": 2.2})
    report = ingest([tmp_path], workers=0, imaging_config=ImagingConfig(detector="sep"), progress=False,
                    with_model=False)
    assert report.failed == 0, report.failures
    return truths


@pytest.mark.django_db(transaction=True)
def test_pyvo_follows_datalink_to_a_soda_cutout(live_server, tmp_path):
    """SIA row -> getdatalink() -> the SODA service descriptor -> a cutout that opens in astropy,
    with the source where the cutout's WCS says it is."""
    import io

    import numpy as np
    from astropy.io import fits
    from astropy.wcs import WCS

    from tests.desom import fitsfactory

    truths = _ingest_factory_files(tmp_path)
    service = pyvo.dal.SIA2Service(live_server.url + "/sia2")
    records = [r for r in service.search(pos=(150.0 * u.deg, 2.2 * u.deg, 0.05 * u.deg)) if int(r.obs_id) == 2200001]
    assert len(records) == 1
    links = records[0].getdatalink()
    semantics = set(links.to_table()["semantics"])
    assert {"#this", "#preview", "#cutout", "#auxiliary"} <= semantics
    this = next(links.bysemantics("#this", include_narrower=False))
    assert this.access_url.endswith("/download/")

    truth = truths["raw"][1]
    k = int(np.argmax(truth.flux))
    with fits.open(tmp_path / "2200001.fits") as hdul:
        ra, dec = (float(v) for v in WCS(hdul[2].header).all_pix2world(truth.x[k] + fitsfactory.OVERSCAN, truth.y[k], 0))
    cutout = links.get_first_proc()
    assert cutout.semantics == "#cutout"
    stream = cutout.processed(circle=[ra, dec, 0.002] * u.deg)
    with fits.open(io.BytesIO(stream.read())) as cut:
        image = cut[1]
        x, y = (float(v) for v in WCS(image.header).all_world2pix(ra, dec, 0))
        ix, iy = int(round(x)), int(round(y))
        window = image.data[iy - 4:iy + 5, ix - 4:ix + 5].astype(float) - np.median(image.data)
        window[window < 0] = 0
        ys, xs = np.mgrid[iy - 4:iy + 5, ix - 4:ix + 5]
        cx, cy = (xs * window).sum() / window.sum(), (ys * window).sum() / window.sum()
    assert np.hypot(cx - x, cy - y) < 1.0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="TAP runs on PostgreSQL with pgSphere (CI)")
@pytest.mark.django_db(transaction=True)
def test_pyvo_tap_agrees_with_sia_and_the_rest_cone(live_server, populated_archive):
    """The same cone and quality condition through TAP (ADQL), SIA and the REST API."""
    desom1, desom2 = populated_archive
    Exposure.objects.update(release_date=dt.date(2000, 1, 1))
    science = list(Exposure.objects.filter(is_science=True).order_by("expnum"))
    cells = quality.cells_of([e.pk for e in science], desom2)
    chosen = max(set(cells.values()), key=list(cells.values()).count)
    quality.label_cell(chosen, "RBT")
    verdicts = {v.exposure_id: v.label for v in quality.quality_verdicts(science)}
    centre = science[0]
    ra, dec, radius = centre.ra_deg, centre.dec_deg, 30.0

    tap = pyvo.dal.TAPService(live_server.url + "/tap")
    adql = (f"SELECT obs_id, obs_publisher_did, quality_label FROM ivoa.obscore "
            f"WHERE INTERSECTS(s_region, CIRCLE('ICRS', {ra}, {dec}, {radius})) = 1 AND quality_label = 'RBT'")
    by_tap = sorted(int(v) for v in tap.run_sync(adql).to_table()["obs_id"])
    sia = pyvo.dal.SIA2Service(live_server.url + "/sia2")
    by_sia = sorted(int(v) for v in sia.search(pos=(ra * u.deg, dec * u.deg, radius * u.deg), quality="RBT",
                                               maxrec=1000).to_table()["obs_id"])
    with urllib.request.urlopen(f"{live_server.url}/api/exposures/?ra={ra}&dec={dec}&radius={radius}"
                                f"&is_science=true&page_size=500") as response:
        import json

        listed = json.load(response)["results"]
    by_rest = sorted(r["expnum"] for r in listed if verdicts[r["id"]] == "RBT")
    assert by_tap == by_sia == by_rest and by_tap

    # The pointing cone of ADQL: CONTAINS(POINT, CIRCLE) on s_ra, s_dec.
    small = 3.0
    adql = (f"SELECT obs_id FROM ivoa.obscore WHERE "
            f"CONTAINS(POINT('ICRS', s_ra, s_dec), CIRCLE('ICRS', {ra}, {dec}, {small})) = 1")
    from desom.footprint import angular_distance

    assert sorted(int(v) for v in tap.run_sync(adql).to_table()["obs_id"]) == sorted(
        e.expnum for e in science if angular_distance(ra, dec, e.ra_deg, e.dec_deg) <= small)

    # DataLink from a TAP row.
    row = next(iter(tap.run_sync("SELECT TOP 1 obs_id, obs_publisher_did FROM ivoa.obscore")))
    assert "#this" in set(row.getdatalink().to_table()["semantics"])
