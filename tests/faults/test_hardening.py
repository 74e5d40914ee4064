"""Limits a hostile or careless client meets: page size, k, upload size and type, write rate,
CSRF on pages, and the deployment checks with DEBUG off."""
import io
import os
import subprocess
import sys
from pathlib import Path

from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient
from config.throttling import ArchiveThrottle

from archive.api.pagination import ArchivePagination
from archive.models import Exposure
from recommender import services
from tests import factories

ROOT = Path(__file__).resolve().parents[2]


def test_page_size_is_client_chosen_but_capped(archive_rows, monkeypatch):
    client = APIClient()
    assert len(client.get("/api/exposures/?page_size=2").json()["results"]) == 2
    monkeypatch.setattr(ArchivePagination, "max_page_size", 3)
    capped = client.get("/api/exposures/?page_size=100000").json()
    assert len(capped["results"]) == 3 and capped["count"] == Exposure.objects.count()


def test_k_is_bounded(archive_rows):
    exposure = Exposure.objects.filter(is_science=True).first()
    client = APIClient()
    too_many = client.get(f"/api/exposures/{exposure.pk}/similar/?k={services.MAX_K + 1}")
    assert too_many.status_code == 400 and str(services.MAX_K) in too_many.content.decode()
    assert client.get(f"/api/search/prototypes/?nodes=1&k={services.MAX_K + 1}").status_code == 400


def test_upload_size_and_type_limits(populated_archive, settings):
    """An upload over its route's limit is refused from its Content-Length (413, unread); a
    file of the wrong type is a 400 naming the problem."""
    client = APIClient()
    big = io.BytesIO(b"\0" * (600 * 1024))
    big.name = "big.npy"
    response = client.post("/api/search/cutout/", {"file": big}, format="multipart")
    assert response.status_code == 413 and str(settings.ARCHIVE_CUTOUT_MAX_BYTES + 64 * 1024) in response.json()["detail"]
    settings.ARCHIVE_MAX_UPLOAD_BYTES = 10_000
    fits_like = io.BytesIO(b"SIMPLE  =                    T" + b" " * 200_000)
    fits_like.name = "x.fits"
    response = client.post("/api/search/exposure/", {"file": fits_like}, format="multipart")
    assert response.status_code == 413 and response.json()["code"] == "request_too_large"
    text = io.BytesIO(b"hello, not a FITS file")
    text.name = "notes.txt"
    response = client.post("/api/search/exposure/", {"file": text}, format="multipart")
    assert response.status_code == 400 and "not a FITS file" in str(response.json()["fields"]["file"])


def test_label_and_flag_writes_are_rate_limited(archive_rows, monkeypatch):
    monkeypatch.setattr(ArchiveThrottle, "THROTTLE_RATES", {**ArchiveThrottle.THROTTLE_RATES, "writes": "2/min"})
    cache.clear()
    staff = factories.user("curator", staff=True)
    client = APIClient()
    client.force_authenticate(staff)
    codes = [client.post("/api/desom2/cells/0/label/", {"label": "Good"}, format="json").status_code
             for _ in range(3)]
    assert codes == [201, 201, 429]
    cache.clear()  # labels and flags share one write budget per user; start the flags afresh
    flag = {"name": "donuts", "nodes": [1, 2], "threshold": 0.2}
    assert client.post("/api/flags/", flag, format="json").status_code == 201
    assert client.post("/api/flags/", {**flag, "name": "more"}, format="json").status_code == 201
    assert client.post("/api/flags/", {**flag, "name": "third"}, format="json").status_code == 429
    # Reads are not throttled.
    assert all(client.get("/api/flags/").status_code == 200 for _ in range(5))
    cache.clear()


def test_pages_and_session_api_writes_need_a_csrf_token(populated_archive):
    staff = factories.user("curator", staff=True, password="x")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(staff)
    assert browser.post("/maps/desom2/cells/0/", {"label": "Good"}).status_code == 403
    assert browser.post("/api/desom2/cells/0/label/", {"label": "Good"},
                        content_type="application/json").status_code == 403
    # With the token taken from the page, the same form is accepted.
    page = browser.get("/maps/desom2/cells/0/")
    token = page.cookies.get("csrftoken") or browser.cookies.get("csrftoken")
    assert token is not None
    accepted = browser.post("/maps/desom2/cells/0/", {"label": "Good", "csrfmiddlewaretoken": token.value})
    assert accepted.status_code in (200, 302)


def test_deploy_checks_are_clean_with_debug_off(tmp_path):
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": "k" * 20 + "-q8Zr!x2Lw0p#Vt5sN7m@J4e&Hc9yB6u",
           "ALLOWED_HOSTS": "archive.example.org", "ARCHIVE_DATA_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    done = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert "security." not in output, output
    settings_check = subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; "
         "django.setup(); from django.conf import settings as s; "
         "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0)"],
        cwd=ROOT, env={**env, "SECURE_SSL_REDIRECT": "0"}, capture_output=True, text=True, timeout=60)
    assert settings_check.stdout.split() == ["False", "True", "True", "True"], settings_check.stderr
