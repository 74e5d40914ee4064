"""The production server as `make serve` runs it (migrate, collectstatic, gunicorn with
config/gunicorn.conf.py, DEBUG off), in a real browser: the pages' CSS and the API docs'
JavaScript load (they answered 404 before WhiteNoise), the static files are cached for long,
and the health endpoints answer."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .test_browser import ARGS, CHROMIUM

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (apt-get install -y chromium)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def production_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("production")
    port = free_port()
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": "browser-test-" + "k" * 40, "ALLOWED_HOSTS": "127.0.0.1",
           "ARCHIVE_DATA_DIR": str(data), "SECURE_SSL_REDIRECT": "0", "WEB_CONCURRENCY": "2",
           "BIND": f"127.0.0.1:{port}", "GUNICORN_ACCESS_LOG": "/dev/null"}
    env.pop("DATABASE_URL", None)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for command in (["migrate", "--noinput", "-v0"], ["collectstatic", "--noinput", "-v0"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, timeout=600)
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", "config/gunicorn.conf.py",
                               "config.wsgi:application"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(url + "/health/live/", timeout=2):
                break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the server did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=60)


def test_production_pages_load_their_css_and_the_api_docs_their_scripts(production_server):
    from playwright.sync_api import sync_playwright

    failed = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page()
            page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
            page.goto(production_server + "/")
            sheets = page.evaluate("() => Array.from(document.styleSheets).map(s => [s.href, s.cssRules.length])")
            ours = [(href, n) for href, n in sheets if href and "/static/pages/site." in href]
            assert ours and ours[0][1] > 10, sheets
            # The stylesheet is applied: the page is not in the browser's default font and margin.
            assert page.evaluate("() => getComputedStyle(document.body).margin") == "0px"

            page.goto(production_server + "/api/docs/")
            page.wait_for_selector(".opblock", timeout=60_000)
            operations = page.locator(".opblock").count()
            assert operations >= 15, operations
            assert page.evaluate("() => typeof SwaggerUIBundle") == "function"
        finally:
            browser.close()
    assert not failed, failed


def test_static_files_are_hashed_compressed_and_cached(production_server):
    html = urllib.request.urlopen(production_server + "/").read().decode()
    css = next(part.split('"')[0] for part in html.split('href="') if part.startswith("/static/pages/site."))
    request = urllib.request.Request(production_server + css, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 200 and "max-age=315360000" in response.headers["Cache-Control"]
        assert response.headers["Content-Encoding"] == "gzip"


def test_health_and_readiness(production_server):
    with urllib.request.urlopen(production_server + "/health/live/") as response:
        assert json.load(response)["status"] == "ok"
    with urllib.request.urlopen(production_server + "/health/ready/") as response:
        checks = json.load(response)["checks"]
    assert all(check["ok"] for check in checks.values()), checks
    assert checks["cache"]["backend"] == "DatabaseCache" and checks["static"]["manifest"].endswith("staticfiles.json")
