"""A real VO client against a live server: pyvo discovers the query endpoint from the VOSI
capabilities, queries, and astropy parses the ObsCore answer."""
import datetime as dt
import urllib.request

import astropy.units as u
import pytest
import pyvo

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

    # A bad query is a DAL error carrying the service's message.
    with pytest.raises(pyvo.dal.DALQueryError, match="UsageFault: CELL"):
        service.search(cell=10 ** 6)
