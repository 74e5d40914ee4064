"""Downloads as a data centre offers them: the archive's sha256 in ETag and Repr-Digest, byte
ranges that resume a broken transfer, conditional requests, and manifests that wget, curl and
sha256sum read as they are. A label stored with a control character never breaks one."""
import base64
import hashlib
import json
from pathlib import Path

from django.test import Client

from archive.models import CellLabel, Exposure
from archive.services import quality
from tests import factories


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_range_requests_resume_a_download_and_checksums_match(populated_archive):
    exposure = Exposure.objects.filter(is_science=True).first()
    data = Path(exposure.file_path).read_bytes()
    size = len(data)
    digest = hashlib.sha256(data).hexdigest()
    client = Client()
    url = f"/exposures/{exposure.pk}/download/"

    full = client.get(url)
    assert full.status_code == 200 and body(full) == data
    assert full["ETag"] == f'"{digest}"' and full["Accept-Ranges"] == "bytes"
    assert full["Repr-Digest"] == f"sha-256=:{base64.b64encode(bytes.fromhex(digest)).decode()}:"
    assert int(full["Content-Length"]) == size

    # A transfer broken after 1000 bytes resumes with If-Range, and the pieces make the file.
    head = client.get(url, HTTP_RANGE="bytes=0-999")
    assert head.status_code == 206 and head["Content-Range"] == f"bytes 0-999/{size}"
    rest = client.get(url, HTTP_RANGE="bytes=1000-", HTTP_IF_RANGE=full["ETag"])
    assert rest.status_code == 206 and int(rest["Content-Length"]) == size - 1000
    assert hashlib.sha256(body(head) + body(rest)).hexdigest() == digest

    assert body(client.get(url, HTTP_RANGE="bytes=-100")) == data[-100:]
    assert body(client.get(url, HTTP_RANGE=f"bytes=10-{size + 500}")) == data[10:]
    unsatisfiable = client.get(url, HTTP_RANGE=f"bytes={size}-")
    assert unsatisfiable.status_code == 416 and unsatisfiable["Content-Range"] == f"bytes */{size}"
    # Several ranges, a garbled header, or a stale If-Range: the whole file, as RFC 9110 allows.
    for headers in ({"HTTP_RANGE": "bytes=0-1,5-9"}, {"HTTP_RANGE": "pages=1-2"}, {"HTTP_RANGE": "bytes=9-2"},
                    {"HTTP_RANGE": "bytes=0-9", "HTTP_IF_RANGE": '"not-the-etag"'}):
        answer = client.get(url, **headers)
        assert answer.status_code == 200 and body(answer) == data, headers
    # Conditional requests: unchanged file, no body.
    assert client.get(url, HTTP_IF_NONE_MATCH=full["ETag"]).status_code == 304
    head_only = client.head(url)
    assert head_only.status_code == 200 and int(head_only["Content-Length"]) == size and head_only["ETag"]


def test_manifests_list_what_the_query_selects_with_checksums(secret_archive):
    secret, users = secret_archive
    client = Client()
    visible = Exposure.objects.exclude(pk=secret.pk).order_by("expnum")
    urls = client.get("/api/exposures/manifest/")
    assert urls.status_code == 200 and urls["Content-Type"].startswith("text/plain")
    lines = urls.content.decode().splitlines()
    assert len(lines) == visible.count() == int(urls["X-Total-Count"])
    assert lines[0] == f"http://testserver/exposures/{visible[0].pk}/download/"
    assert not any(f"/exposures/{secret.pk}/" in line for line in lines)
    # Every URL downloads, and its bytes match the sha256 list.
    sums = dict(reversed(line.split("  ", 1)) for line in
                client.get("/api/exposures/manifest/?output=sha256").content.decode().splitlines())
    first = client.get(lines[0].replace("http://testserver", ""))
    name = first["Content-Disposition"].split('filename="', 1)[1].rstrip('"')
    assert hashlib.sha256(body(first)).hexdigest() == sums[name]
    # The list's filters apply (here: the science frames of one band).
    band = visible.filter(is_science=True).first().band
    curl = client.get(f"/api/exposures/manifest/?output=curl&is_science=true&band={band}").content.decode()
    expected = visible.filter(is_science=True, band__iexact=band)
    assert curl.count("url = ") == expected.count() == curl.count("output = ")
    listing = json.loads(client.get("/api/exposures/manifest/?output=json").content)
    assert listing["count"] == visible.count() and {"url", "sha256", "size", "filename"} <= listing["results"][0].keys()
    assert client.get("/api/exposures/manifest/?output=zip").status_code == 400
    assert client.get("/api/exposures/manifest/?page=2").json()["code"] == "not_found"


def test_a_label_with_control_characters_is_refused_and_downloads_keep_working(populated_archive):

    _, desom2 = populated_archive
    staff = factories.user("curator", staff=True, password="x")
    client = Client()
    client.force_login(staff)
    cells = quality.cells_of(Exposure.objects.filter(is_science=True).values_list("pk", flat=True), desom2)
    exposure_id, cell = next(iter(cells.items()))
    exposure = Exposure.objects.get(pk=exposure_id)
    for label in ("Good\r\nX-Injected: 1", "BT\x00", "bad\u202efocus", "tab\there"):
        refused = client.post(f"/api/desom2/cells/{cell}/label/", {"label": label}, content_type="application/json")
        assert refused.status_code == 400 and "label" in refused.json()["fields"], label
    flag = client.post("/api/flags/", {"name": "don\x1buts", "nodes": [1], "threshold": 0.2},
                       content_type="application/json")
    assert flag.status_code == 400
    page = client.post(f"/maps/desom2/cells/{cell}/", {"label": "__other__", "other": "RBT\x1b[31m"})
    assert page.status_code == 200 and "control" in page.content.decode()
    assert not CellLabel.objects.filter(cell=cell, model_version=desom2).exists()
    # A label written before the checks existed (straight into the database) cannot break the
    # download's headers.
    CellLabel.objects.create(model_version=desom2, cell=cell, label="Good\r\nX-Injected: 1\x07")
    download = Client().get(f"/exposures/{exposure.pk}/download/")
    assert download.status_code == 200 and "X-Injected" not in download.headers
    assert "\r" not in download["X-Quality-Label"] and "\n" not in download["X-Quality-Label"]
    assert body(download) == Path(exposure.file_path).read_bytes()
