"""The server-rendered pages through Django's test client: every page renders from the
populated archive, proprietary exposures never reach those not entitled, the experts' forms are
staff-only and CSRF-protected, and what the forms change shows on the pages."""
import datetime as dt
import io
import re
from pathlib import Path

import numpy as np
from django.conf import settings
from django.test import Client

from archive.models import CellAssignment, CellLabel, Exposure, ExposureFlag, PrototypeFlag
from archive.services import quality
from recommender import services
from tests import factories


def staff_client():
    user = factories.user("curator", staff=True, password="pw")
    client = Client()
    client.force_login(user)
    return client, user


def member_cell(desom2):
    """The most populated DESOM-2 cell and its members."""
    rows = list(CellAssignment.objects.filter(model_version=desom2).values_list("cell", "exposure_id"))
    cells = [c for c, _ in rows]
    cell = max(set(cells), key=cells.count)
    return cell, [e for c, e in rows if c == cell]


def exposure_links(html: str) -> set[int]:
    return {int(pk) for pk in re.findall(r'/exposures/(\d+)/', html)}


def test_every_page_renders_and_images_are_cached(populated_archive):
    desom1, desom2 = populated_archive
    client = Client()
    science = Exposure.objects.filter(is_science=True).order_by("expnum")
    exposure = science.first()

    page = client.get("/")
    assert page.status_code == 200
    html = page.content.decode()
    # 34 exposures (32 science + bias + flat) at 25 a page: a pager and 25 rows with thumbnails.
    assert html.count('class="thumb"') == 25 and "page=2" in html
    assert f'/exposures/{exposure.pk}/preview.png' in html
    assert len(exposure_links(client.get("/?page=2").content.decode())) == Exposure.objects.count() - 25

    page = client.get(f"/exposures/{exposure.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert str(exposure.expnum) in html and f"/exposures/{exposure.pk}/density.png" in html
    similar = re.search(r'id="similar">(.*?)</section>', html, re.S).group(1)
    assert len(exposure_links(similar) - {exposure.pk}) == 9  # nine similar ones, itself excluded
    # by default as DESOM-2 sees it (its latent space); the reader may ask for the histo-vectors
    assert "<strong>as DESOM-2 sees it</strong>" in html
    by_desom2 = {m.exposure.pk for m in services.similar(exposure, k=9, index="desom2")}
    assert exposure_links(similar) - {exposure.pk} == by_desom2
    html = client.get(f"/exposures/{exposure.pk}/?like=histo").content.decode()
    similar = re.search(r'id="similar">(.*?)</section>', html, re.S).group(1)
    assert "<strong>by histo-vector</strong>" in html
    assert exposure_links(similar) - {exposure.pk} == {m.exposure.pk for m in services.similar(exposure, k=9)}
    refused = client.get(f"/exposures/{exposure.pk}/?like=colour")
    assert refused.status_code == 200 and "must be one of desom2, histo" in refused.content.decode()
    for figure in ("density.png", "histo.png"):
        image = client.get(f"/exposures/{exposure.pk}/{figure}")
        assert image.status_code == 200 and b"".join(image.streaming_content).startswith(b"\x89PNG")

    rows, cols = desom1.map_shape
    page = client.get("/maps/desom1/")
    assert page.status_code == 200 and page.content.decode().count('class="node') == rows * cols
    mosaic = client.get("/maps/desom1/prototypes.png")
    from PIL import Image
    picture = Image.open(io.BytesIO(b"".join(mosaic.streaming_content)))
    assert picture.size == (cols * 64, rows * 64)

    page = client.get("/maps/desom1/nodes/0/")
    assert page.status_code == 200
    assert b"Elongation" in page.content and b"Exposures richest in this prototype" in page.content
    assert b'id="flag-form"' not in page.content  # anonymous users get no staff form
    assert client.get(f"/maps/desom1/nodes/{rows * cols}/").status_code == 404
    assert client.get("/maps/desom1/nodes/3/prototype.png").status_code == 200

    d2_rows, d2_cols = desom2.map_shape
    page = client.get("/maps/desom2/")
    html = page.content.decode()
    assert page.status_code == 200 and html.count('class="cell') == d2_rows * d2_cols
    # The member counts drawn on the map add up to the science exposures.
    assert sum(int(n) for n in re.findall(r'<span class="count">(\d+)</span>', html)) == science.count()

    cell, members = member_cell(desom2)
    page = client.get(f"/maps/desom2/cells/{cell}/?seed=7")
    html = page.content.decode()
    shown = exposure_links(re.search(r'id="members">(.*?)</section>', html, re.S).group(1))
    assert shown <= set(members) and len(shown) == min(9, len(members))
    if len(members) > 9:
        more = client.get(f"/maps/desom2/cells/{cell}/?seed=7&page=2").content.decode()
        assert not exposure_links(re.search(r'id="members">(.*?)</section>', more, re.S).group(1)) & shown

    assert client.get("/search/upload/").status_code == 200
    assert client.get("/accounts/login/").status_code == 200
    assert client.get(f"/maps/desom2/cells/{d2_rows * d2_cols}/").status_code == 404

    # Images are rendered once into the figure cache, then served from it.
    client.get(f"/exposures/{exposure.pk}/density.png")
    cached = list(Path(settings.ARCHIVE_DATA_DIR, "figures", "density").glob(f"{exposure.expnum}-*.png"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    client.get(f"/exposures/{exposure.pk}/density.png")
    assert cached[0].stat().st_mtime_ns == before
    client.get("/maps/desom1/prototypes.png")
    assert list(Path(settings.ARCHIVE_DATA_DIR, "figures", "desom1").glob("*/mosaic-*.png"))
    client.get(f"/exposures/{exposure.pk}/preview.png")
    assert list(Path(settings.ARCHIVE_DATA_DIR, "figures", "previews").glob(f"{exposure.expnum}-*.png"))


def test_search_filters_and_their_errors(populated_archive):
    _, desom2 = populated_archive
    client = Client()
    cell, members = member_cell(desom2)
    html = client.get(f"/?cell={cell}").content.decode()
    assert exposure_links(html) == set(members)
    html = client.get("/?ra=10&dec=5").content.decode()
    assert "a cone search needs ra, dec and radius together" in html and 'class="thumb"' not in html
    quality.label_cell(cell, "RBT")
    # The cell's members, and those of unlabelled cells that take RBT from their neighbours.
    labelled_rbt = {v.exposure_id for v in quality.quality_verdicts(Exposure.objects.all()) if v.label == "RBT"}
    assert set(members) <= exposure_links(client.get("/?label=rbt").content.decode()) == labelled_rbt


def test_proprietary_exposures_never_reach_anonymous_users(populated_archive):
    desom1, desom2 = populated_archive
    cell, members = member_cell(desom2)
    hidden = Exposure.objects.get(pk=members[0])
    hidden.release_date = dt.date.today() + dt.timedelta(days=365)
    hidden.save()
    Exposure.objects.exclude(pk=hidden.pk).update(release_date=dt.date(2000, 1, 1))
    anonymous = Client()
    staff, _ = staff_client()

    pages = ["/", "/?page=2", f"/?cell={cell}", "/maps/desom2/", "/maps/desom1/"]
    pages += [f"/exposures/{pk}/" for pk in Exposure.objects.exclude(pk=hidden.pk).values_list("pk", flat=True)]
    pages += [f"/maps/desom2/cells/{cell}/?seed={seed}&page={p}" for seed in (1, 2, 3) for p in (1, 2, 3)]
    pages += [f"/maps/desom1/nodes/{node}/" for node in range(desom1.map_shape[0] * desom1.map_shape[1])]
    for url in pages:
        response = anonymous.get(url)
        assert response.status_code == 200, url
        assert hidden.pk not in exposure_links(response.content.decode()), url
        assert str(hidden.expnum) not in response.content.decode(), url
    for url in (f"/exposures/{hidden.pk}/", f"/exposures/{hidden.pk}/preview.png",
                f"/exposures/{hidden.pk}/density.png", f"/exposures/{hidden.pk}/histo.png",
                f"/exposures/{hidden.pk}/download/confirm/", f"/exposures/{hidden.pk}/download/"):
        assert anonymous.get(url).status_code == 404, url
        assert staff.get(url).status_code == 200, url
    # The cell's member count shown to the public leaves the proprietary member out.
    html = anonymous.get(f"/maps/desom2/cells/{cell}/").content.decode()
    assert f"{len(members) - 1} member" in html
    assert f"{len(members)} member" in staff.get(f"/maps/desom2/cells/{cell}/").content.decode()
    assert hidden.pk in exposure_links(staff.get(f"/?cell={cell}").content.decode())

    # Uploading the hidden exposure's own file: its archive copy would be the nearest match,
    # but only staff are shown it.
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = Path(hidden.file_path).read_bytes()
    for client, shown in ((anonymous, False), (staff, True)):
        page = client.post("/search/upload/", {"kind": "exposure", "k": 5,
                                               "file": SimpleUploadedFile(hidden.filename, data)})
        assert page.status_code == 200
        assert (hidden.pk in exposure_links(page.content.decode())) is shown


def test_labelling_a_cell_shows_on_its_members(populated_archive):
    _, desom2 = populated_archive
    client, user = staff_client()
    cell, members = member_cell(desom2)
    page = client.get(f"/maps/desom2/cells/{cell}/")
    assert b'id="label-form"' in page.content
    response = client.post(f"/maps/desom2/cells/{cell}/", {"label": "RBT", "note": "streaks everywhere"})
    assert response.status_code == 302
    member = Client().get(f"/exposures/{members[0]}/").content.decode()
    assert re.search(r'id="quality-label">RBT<', member) and "cell label" in member
    assert 'data-label="RBT"' in Client().get("/maps/desom2/").content.decode()

    # A free-text label, then "mixed": the history keeps all three, the newest wins.
    client.post(f"/maps/desom2/cells/{cell}/", {"label": "__other__", "other": "satellite trail"})
    assert "satellite trail" in Client().get(f"/exposures/{members[0]}/").content.decode()
    client.post(f"/maps/desom2/cells/{cell}/", {"label": "mixed"})
    history = Client().get(f"/maps/desom2/cells/{cell}/").content.decode()
    table = re.search(r'id="history">(.*?)</table>', history, re.S).group(1)
    assert table.index("mixed") < table.index("satellite trail") < table.index("RBT")
    assert CellLabel.objects.filter(cell=cell).count() == 3 and "streaks everywhere" in table

    # "other" without text is refused with a message, and nothing is stored.
    page = client.post(f"/maps/desom2/cells/{cell}/", {"label": "__other__", "other": " "})
    assert page.status_code == 200 and b"type the label" in page.content
    assert CellLabel.objects.filter(cell=cell).count() == 3


def test_forms_are_staff_only_and_csrf_protected(populated_archive):
    _, desom2 = populated_archive
    cell, _ = member_cell(desom2)
    visitor = factories.user("visitor", password="pw")
    logged_in = Client()
    logged_in.force_login(visitor)
    for client in (Client(), logged_in):
        assert b'id="label-form"' not in client.get(f"/maps/desom2/cells/{cell}/").content
        assert client.post(f"/maps/desom2/cells/{cell}/", {"label": "Good"}).status_code == 403
        assert client.post("/maps/desom1/nodes/0/", {"name": "x", "nodes": "0", "threshold": 0.1,
                                                      "mode": "share"}).status_code == 403
    assert not CellLabel.objects.exists() and not PrototypeFlag.objects.filter(name="x").exists()
    # Staff too must send the CSRF token.
    user = factories.user("curator", staff=True, password="pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(f"/maps/desom2/cells/{cell}/", {"label": "Good"}).status_code == 403
    assert client.post("/maps/desom1/nodes/0/", {"name": "x", "nodes": "0", "threshold": 0.1,
                                                  "mode": "share"}).status_code == 403
    assert not CellLabel.objects.exists()
    page = client.get(f"/maps/desom2/cells/{cell}/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = client.post(f"/maps/desom2/cells/{cell}/", {"label": "Good", "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and CellLabel.objects.get(cell=cell).label == "Good"

    # Logging in and out through the pages.
    client = Client()
    page = client.post("/accounts/login/", {"username": "curator", "password": "wrong"})
    assert b"did not match" in page.content
    assert client.post("/accounts/login/", {"username": "curator", "password": "pw",
                                            "next": "/maps/desom2/"})["Location"] == "/maps/desom2/"
    assert b"Log out" in client.get("/").content
    client.post("/accounts/logout/")
    assert b"Staff log in" in client.get("/").content


def test_flagging_a_node_warns_before_download(populated_archive):
    desom1, _ = populated_archive
    client, _ = staff_client()
    exposure = Exposure.objects.filter(is_science=True).first()
    histo = exposure.vectors.get(model_version=desom1).histo_array
    node = int(np.argmax(histo))
    share = histo[node] / histo.sum()
    page = client.get(f"/maps/desom1/nodes/{node}/").content.decode()
    assert 'id="flag-form"' in page and f'value="{node}"' in page

    response = client.post(f"/maps/desom1/nodes/{node}/", {"name": "streaky", "nodes": f"{node}",
                                                           "threshold": f"{share * 0.9:.4f}", "mode": "share"})
    assert response.status_code == 302
    assert ExposureFlag.objects.filter(exposure=exposure, flag__name="streaky").exists()
    node_page = client.get(f"/maps/desom1/nodes/{node}/").content.decode()
    # The exposures richest in the node carry the new flag on their cards.
    richest = re.search(r'id="richest">(.*?)</section>', node_page, re.S).group(1)
    assert re.search(r'<a href="/exposures/%d/">.*?class="flag"[^>]*>⚑ streaky' % exposure.pk, richest, re.S)

    html = Client().get(f"/exposures/{exposure.pk}/").content.decode()
    assert "js-confirm-download" in html and f'href="/exposures/{exposure.pk}/download/confirm/"' in html
    assert "streaky:" in re.search(r'id="warnings">(.*?)</div>', html, re.S).group(1)
    confirm = Client().get(f"/exposures/{exposure.pk}/download/confirm/").content.decode()
    assert "streaky:" in confirm and f'href="/exposures/{exposure.pk}/download/"' in confirm

    # An unflagged, good exposure links the download directly.
    clean = Exposure.objects.filter(is_science=True).exclude(flags__isnull=False).first()
    quality.label_cell(quality.cells_of([clean.pk])[clean.pk], "Good")
    html = Client().get(f"/exposures/{clean.pk}/").content.decode()
    assert "js-confirm-download" not in html and f'href="/exposures/{clean.pk}/download/"' in html

    # A bad flag form comes back with the problem named.
    page = client.post(f"/maps/desom1/nodes/{node}/", {"name": "bad", "nodes": "1, x", "threshold": 0.1,
                                                       "mode": "share"})
    assert page.status_code == 200 and b"whole numbers" in page.content
    page = client.post(f"/maps/desom1/nodes/{node}/", {"name": "bad", "nodes": "99999", "threshold": 0.1,
                                                       "mode": "share"})
    assert b"nodes must lie in" in page.content


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_upload_finds_exposures_and_names_problems(populated_archive, science_files):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = Client()
    y, x = np.indices((32, 32)) - 15.5
    stamp = (100 * np.exp(-0.5 * (x ** 2 + y ** 2) / 2.0 ** 2) + 5).astype(np.float32)
    page = client.post("/search/upload/", {"kind": "cutout", "k": 6,
                                           "file": SimpleUploadedFile("star.npy", npy_bytes(stamp))})
    html = page.content.decode()
    assert page.status_code == 200 and "lands on" in html
    assert len(exposure_links(re.search(r'id="matches">(.*?)</section>', html, re.S).group(1))) == 6

    page = client.post("/search/upload/", {"kind": "cutout", "k": 6,
                                           "file": SimpleUploadedFile("big.npy", npy_bytes(np.zeros((40, 40))))})
    assert page.status_code == 400 and b"32x32" in page.content
    page = client.post("/search/upload/", {"kind": "cutout", "k": 6,
                                           "file": SimpleUploadedFile("notes.txt", b"hello")})
    assert page.status_code == 400 and b"not an image" in page.content
    page = client.post("/search/upload/", {"kind": "exposure", "k": 6,
                                           "file": SimpleUploadedFile("x.fits", b"not fits at all")})
    assert page.status_code == 400 and b"x.fits: the upload is not a FITS file" in page.content

    exposure_file = Path(science_files[0])
    page = client.post("/search/upload/", {"kind": "exposure", "k": 5,
                                           "file": SimpleUploadedFile(exposure_file.name, exposure_file.read_bytes())})
    html = page.content.decode()
    assert page.status_code == 200 and "detected sources" in html
    same = Exposure.objects.get(filename=exposure_file.name)
    # The archive's copy of the uploaded exposure is its nearest neighbour.
    first = re.search(r'id="matches">.*?/exposures/(\d+)/', html, re.S).group(1)
    assert int(first) == same.pk
    # placed by the active DESOM-2 (the page's default), in the cell of its archived copy
    cell = CellAssignment.objects.get(exposure=same, model_version=populated_archive[1]).cell
    assert f'DESOM-2 places it in <a href="/maps/desom2/cells/{cell}/">cell {cell}</a>' in html


def test_pages_say_not_yet_without_a_model(db):
    client = Client()
    for url in ("/maps/desom1/", "/maps/desom2/", "/maps/desom2/cells/0/", "/maps/desom1/nodes/0/",
                "/search/upload/"):
        page = client.get(url)
        assert page.status_code == 200 and b"manage.py demo" in page.content, url
    assert b"Not yet" in client.get("/").content
