"""The archive's REST API, downloads and the proprietary rules."""
import datetime as dt

import pytest
from rest_framework.test import APIClient

from archive.models import Exposure, RunAccess
from tests import factories


@pytest.fixture
def proprietary(populated_archive):
    """One science exposure whose proprietary period ends next year."""
    exposure = Exposure.objects.filter(is_science=True).order_by("expnum").first()
    exposure.release_date = dt.date.today() + dt.timedelta(days=365)
    exposure.runid = "26BQ99"
    exposure.save()
    # Everything else is public for these tests.
    Exposure.objects.exclude(pk=exposure.pk).update(release_date=dt.date(2000, 1, 1))
    return exposure


def proprietary_versions():
    from archive.services import versions

    return versions.active_version("desom1")


def clients():
    staff = factories.user("staff", staff=True, password="x")
    pi = factories.user("pi", password="x")
    other = factories.user("other", password="x")
    RunAccess.objects.create(user=pi, runid="26BQ99")
    made = {"anonymous": APIClient()}
    for name, user in (("staff", staff), ("pi", pi), ("other", other)):
        made[name] = APIClient()
        made[name].force_login(user)  # session login reaches plain Django views too
    return made


def test_proprietary_exposures_are_hidden_from_those_not_entitled(proprietary):
    who = clients()
    for name, client in who.items():
        entitled = name in ("staff", "pi")
        listed = {row["id"] for row in client.get("/api/exposures/?page_size=500").json()["results"]}
        assert (proprietary.pk in listed) is entitled, name
        assert client.get(f"/api/exposures/{proprietary.pk}/").status_code == (200 if entitled else 404), name
        download = client.get(f"/exposures/{proprietary.pk}/download/")
        assert download.status_code == (200 if entitled else 404), name
        checked = client.post("/api/quality-check/", {"ids": [proprietary.pk]}, format="json").json()
        assert (checked["not_found"] == []) is entitled, name


def test_download_streams_the_file_with_its_quality(proprietary):
    from archive.services import quality

    public = Exposure.objects.filter(is_science=True).exclude(pk=proprietary.pk).first()
    desom1 = proprietary_versions()
    quality.save_flag("everything", list(range(desom1.map_shape[0] * desom1.map_shape[1])), 0.01)
    response = APIClient().get(f"/exposures/{public.pk}/download/")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body[:9] == b"SIMPLE  =" and len(body) == public.file_size
    assert response["X-Quality-Flags"] == "everything"
    assert "everything" in response["X-Quality-Warnings"]
    assert response["Content-Disposition"].startswith("attachment")


def test_exposure_list_filters(populated_archive):
    client = APIClient()
    all_rows = client.get("/api/exposures/?page_size=500").json()
    assert all_rows["count"] == Exposure.objects.count()
    band = Exposure.objects.exclude(band="").first().band
    by_band = client.get(f"/api/exposures/?band={band}").json()
    assert by_band["count"] == Exposure.objects.filter(band=band).count()
    science = client.get("/api/exposures/?is_science=false").json()
    assert {r["obstype"] for r in science["results"]} == {"BIAS", "FLAT"}

    target = Exposure.objects.filter(ra_deg__isnull=False).first()
    cone = client.get(f"/api/exposures/?ra={target.ra_deg}&dec={target.dec_deg}&radius=0.01").json()
    assert target.pk in {r["id"] for r in cone["results"]}
    # The cone finds the exposures whose footprint meets it (archive.geometry, as SIA's POS).
    from archive import geometry
    from desom.footprint import from_dali

    circle = geometry.Circle(target.ra_deg, target.dec_deg, 0.01)
    expected = {e.pk for e in Exposure.objects.exclude(s_region="") if geometry.intersects(from_dali(e.s_region), circle)}
    assert {r["id"] for r in cone["results"]} == expected
    assert client.get("/api/exposures/?ra=10&dec=5").status_code == 400  # radius missing
    assert client.get("/api/exposures/?ra=10&dec=95&radius=1").status_code == 400

    _, desom2 = populated_archive
    from archive.models import CellAssignment
    from archive.services import quality

    cell = CellAssignment.objects.filter(model_version=desom2).first().cell
    in_cell = set(CellAssignment.objects.filter(model_version=desom2, cell=cell).values_list("exposure_id", flat=True))
    assert {r["id"] for r in client.get(f"/api/exposures/?cell={cell}&page_size=500").json()["results"]} == in_cell
    quality.label_cell(cell, "BT")
    labelled = client.get("/api/exposures/?label=bt&page_size=500").json()
    # The cell's members, and those of unlabelled cells that take BT from their neighbours.
    labelled_bt = {v.exposure_id for v in quality.quality_verdicts(Exposure.objects.all()) if v.label == "BT"}
    assert in_cell <= {r["id"] for r in labelled["results"]} == labelled_bt
    assert all(r["quality"]["label"] == "BT" for r in labelled["results"])


def test_the_total_is_counted_up_to_a_ceiling(populated_archive, settings):
    """Past API_COUNT_CAP matches the count stops (count_exact false) and later pages are out of
    range; under it the count is exact."""
    client = APIClient()
    total = client.get("/api/exposures/").json()
    assert total["count_exact"] is True and total["count"] == Exposure.objects.count() > 4
    settings.API_COUNT_CAP = 4
    capped = client.get("/api/exposures/?page_size=2").json()
    assert capped["count"] == 4 and capped["count_exact"] is False and len(capped["results"]) == 2
    assert client.get("/api/exposures/?page_size=2&page=2").json()["results"]
    assert client.get("/api/exposures/?page_size=2&page=3").status_code == 404
    band = Exposure.objects.exclude(band="").values_list("band", flat=True).first()
    few = Exposure.objects.filter(band=band).count()
    settings.API_COUNT_CAP = few
    exact = client.get(f"/api/exposures/?band={band}").json()
    assert exact["count"] == few and exact["count_exact"] is True


def test_exposure_detail_has_its_histo_vector_and_density_map(populated_archive):
    desom1, _ = populated_archive
    exposure = Exposure.objects.filter(is_science=True).first()
    body = APIClient().get(f"/api/exposures/{exposure.pk}/").json()
    rows, cols = desom1.map_shape
    assert len(body["histo_vector"]) == rows * cols
    assert len(body["density_map"]) == rows and len(body["density_map"][0]) == cols
    assert sum(body["histo_vector"]) == pytest.approx(exposure.n_detected, rel=1e-3, abs=1)
    assert body["quality"]["cell"] is not None
    assert body["model_version"] == desom1.version_id


def test_maps_and_cells(populated_archive):
    _, desom2 = populated_archive
    client = APIClient()
    grid = client.get("/api/desom2/map/").json()
    rows, cols = desom2.map_shape
    assert len(grid["cells"]) == rows * cols
    assert sum(c["members"] for c in grid["cells"]) == Exposure.objects.filter(is_science=True).count()
    occupied = next(c for c in grid["cells"] if c["members"])
    cell = client.get(f"/api/desom2/cells/{occupied['cell']}/").json()
    assert cell["count"] == occupied["members"]
    assert client.get(f"/api/desom2/cells/{rows * cols}/").status_code == 404


def test_ingest_runs_report_progress(populated_archive):
    runs = APIClient().get("/api/ingest-runs/").json()["results"]
    assert runs[0]["status"] == "finished" and runs[0]["progress"] == 1.0
    assert APIClient().get(f"/api/ingest-runs/{runs[0]['id']}/failures/").status_code in (401, 403)
