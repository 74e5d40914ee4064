"""The proprietary walk: one exposure still in its proprietary period, and every read path of
the site (API, downloads, previews, similar, search, maps, cells, SIA, pages) asked by the
anonymous visitor, another user, the run's member (RunAccess) and staff. Only the last two
may learn that it exists."""
import io

import pytest
from astropy.io.votable import parse
from rest_framework.test import APIClient

from archive.models import Exposure
from archive.services import quality
from recommender import services as recommender_services

ENTITLED = {"pi", "staff"}


@pytest.fixture
def walk(secret_archive, populated_archive):
    desom1, desom2 = populated_archive
    secret, users = secret_archive
    clients = {"anonymous": APIClient()}
    for name, user in users.items():
        clients[name] = APIClient()
        clients[name].force_login(user)
    # Its nearest public neighbour: the exposure whose similar list would show it.
    neighbour = next(m.exposure for m in recommender_services.similar(secret, k=3))
    cell = quality.cells_of([secret.pk], desom2)[secret.pk]
    return secret, neighbour, cell, clients


def sia_ids(response):
    assert response.status_code == 200, response.content[:300]
    table = parse(io.BytesIO(response.content)).get_first_table().to_table()
    return {int(v) for v in table["obs_id"]}


def test_every_read_path_hides_the_proprietary_exposure(walk):
    secret, neighbour, cell, clients = walk
    everything = recommender_services.MAX_K
    for who, client in clients.items():
        entitled = who in ENTITLED
        seen = 200 if entitled else 404

        def check(condition, path):
            assert condition, f"{who}: {path}"

        listed = client.get(f"/api/exposures/?expnum={secret.expnum}").json()
        check(listed["count"] == (1 if entitled else 0), "API list")
        check(client.get(f"/api/exposures/{secret.pk}/").status_code == seen, "API detail")
        check(client.get(f"/api/exposures/{secret.pk}/similar/").status_code == seen, "similar to it")
        similar = client.get(f"/api/exposures/{neighbour.pk}/similar/?k={everything}").json()
        check((secret.pk in {r["id"] for r in similar["results"]}) is entitled, "similar to a neighbour")
        nodes = ",".join(str(n) for n in range(36))
        by_nodes = client.get(f"/api/search/prototypes/?nodes={nodes}&k={everything}").json()
        check((secret.pk in {r["id"] for r in by_nodes["results"]}) is entitled, "prototype search")
        checked = client.post("/api/quality-check/", {"ids": [secret.pk, neighbour.pk]}, format="json").json()
        check((secret.pk in checked["not_found"]) is not entitled and neighbour.pk not in checked["not_found"],
              "quality check")
        members = client.get(f"/api/desom2/cells/{cell}/?page_size=500").json()
        member_ids = {m["id"] for m in members["results"]["members"]}
        check(members["count"] == len(member_ids), "cell members fit one page")
        check((secret.pk in member_ids) is entitled, "cell members")
        cells = {c["cell"]: c["members"] for c in client.get("/api/desom2/map/").json()["cells"]}
        total = Exposure.objects.filter(cells__cell=cell, cells__model_version__is_active=True).count()
        check(cells[cell] == (total if entitled else total - 1), "DESOM-2 map counts")
        check(client.get(f"/exposures/{secret.pk}/download/").status_code == seen, "download")
        check(client.get(f"/exposures/{secret.pk}/preview.png").status_code == seen, "preview")
        # The VO interface: by identifier, by position, and as a similar result.
        check((secret.expnum in sia_ids(client.get("/sia2/query", {"ID": secret.expnum}))) is entitled, "SIA ID")
        around = f"CIRCLE {secret.ra_deg} {secret.dec_deg} 0.01"
        check((secret.expnum in sia_ids(client.get("/sia2/query", {"POS": around}))) is entitled, "SIA POS")
        check((secret.expnum in sia_ids(client.get("/sia2/query", {"CELL": cell}))) is entitled, "SIA CELL")
        as_target = client.get("/sia2/query", {"SIMILAR_TO": secret.expnum})
        check(as_target.status_code == (200 if entitled else 400), "SIA SIMILAR_TO it")
        ranked = sia_ids(client.get("/sia2/query", {"SIMILAR_TO": neighbour.expnum, "K": everything}))
        check((secret.expnum in ranked) is entitled, "SIA SIMILAR_TO a neighbour")


def test_pages_hide_the_proprietary_exposure(walk):
    """The server-rendered pages (recommender/pages) follow the same rule."""
    secret, neighbour, cell, clients = walk
    link = f'/exposures/{secret.pk}/"'
    for who, client in clients.items():
        entitled = who in ENTITLED
        seen = 200 if entitled else 404
        for path in (f"/exposures/{secret.pk}/", f"/exposures/{secret.pk}/density.png",
                     f"/exposures/{secret.pk}/histo.png", f"/exposures/{secret.pk}/download/confirm/"):
            assert client.get(path).status_code == seen, f"{who}: {path}"
        search = client.get(f"/?expnum={secret.expnum}")
        assert search.status_code == 200 and (link in search.content.decode()) is entitled, f"{who}: search page"
        page = client.get(f"/maps/desom2/cells/{cell}/")
        assert page.status_code == 200, f"{who}: cell page"
        shown = link in page.content.decode()
        # The cell page shows a page of members; the secret may be on a later one for the entitled.
        assert not shown or entitled, f"{who}: cell page"
        detail = client.get(f"/exposures/{neighbour.pk}/")
        assert detail.status_code == 200 and (link not in detail.content.decode() or entitled), f"{who}: neighbour page"
