"""The clients astronomers use, unmodified, against a live server as `make serve` runs it
(gunicorn and `manage.py tap_worker`, over this run's PostgreSQL test database): pyvo run_async
and run_sync with uploads, astroquery's TapPlus (launch_job_async, load_tables), STILTS
tapquery in its default async mode, STILTS taplint with no error; and a worker killed mid-job,
whose job ends in ERROR rather than EXECUTING forever."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table
from django.db import connection

from archive.models import Exposure, RunAccess
from archive.services import tokens
from desom import footprint as fp
from tests import factories

ROOT = Path(__file__).resolve().parents[2]
STILTS = shutil.which("stilts")
STALL_S = 3

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="TAP runs on PostgreSQL with pgSphere (CI)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class Service:
    """gunicorn and one TAP worker, started as `make serve` starts them."""

    def __init__(self, data: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DATABASE_URL": _database_url(), "ARCHIVE_DATA_DIR": str(data), "DEBUG": "1",
                    "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "4", "BIND": f"127.0.0.1:{self.port}",
                    "GUNICORN_ACCESS_LOG": "/dev/null", "TAP_ASYNC_STALL_S": str(STALL_S), "LOG_LEVEL": "warning"}
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.web = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", "config/gunicorn.conf.py",
                                     "config.wsgi:application"], cwd=ROOT, env=self.env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.worker = self.start_worker()
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health/live/", timeout=2):
                    break
            except OSError:
                if self.web.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the server did not start: {self.web.stderr.read().decode()[-2000:]}")
                time.sleep(0.3)

    def start_worker(self):
        return subprocess.Popen([sys.executable, "manage.py", "tap_worker", "-v0"], cwd=ROOT, env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        for process in (self.worker, self.web):
            if process.poll() is None:
                process.terminate()
        for process in (self.worker, self.web):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def service(django_db_setup, django_db_blocker, tmp_path_factory):
    running = Service(tmp_path_factory.mktemp("tap-service"))
    yield running
    running.stop()


@pytest.fixture
def archive(transactional_db, service):
    """The sky of tests/vo/conftest.py's `sky`, committed, and a PI entitled to its secret run."""
    rng = np.random.default_rng(3)
    from archive import geometry
    import datetime as dt

    made = []
    for i in range(40):
        e = Exposure.objects.create(expnum=3_100_000 + i, file_path=f"/nowhere/c{i}.fits", checksum=f"c{i}",
                                    ra_deg=float(30 + rng.normal(0, 1.5)), dec_deg=float(-5 + rng.normal(0, 1.5)),
                                    band="r", mjd_obs=55000 + i, exptime=300.0, runid="10AQ01",
                                    release_date=dt.date(2001, 1, 1), object_name=f"F{i}")
        geometry.store_footprint(e, None)
        made.append(e)
    secret = made[7]
    Exposure.objects.filter(pk=secret.pk).update(release_date=dt.date.today() + dt.timedelta(days=300), runid="27BQ09")
    pi = factories.user("pi")
    RunAccess.objects.create(user=pi, runid="27BQ09")
    _, token = tokens.issue_token(pi)
    return made, secret, token


def _public(made, secret):
    return {e.expnum for e in made if e.pk != secret.pk}


def test_pyvo_runs_async_and_uploads(service, archive):
    import pyvo
    import requests

    made, secret, token = archive
    tap = pyvo.dal.TAPService(service.url + "/tap")
    ids = {int(v) for v in tap.run_async("SELECT obs_id FROM ivoa.obscore").to_table()["obs_id"]}
    assert ids == _public(made, secret)
    # The PI's token opens the secret run, in an async job as in sync.
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    pi_tap = pyvo.dal.TAPService(service.url + "/tap", session=session)
    assert secret.expnum in {int(v) for v in pi_tap.run_async("SELECT obs_id FROM ivoa.obscore").to_table()["obs_id"]}
    # A job is its owner's: the anonymous client cannot read the PI's job.
    job = pi_tap.submit_job("SELECT TOP 1 obs_id FROM ivoa.obscore")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(job.url)
    assert refused.value.code == 404
    with pytest.raises(pyvo.dal.DALServiceError):
        pyvo.dal.AsyncTAPJob(job.url).phase
    assert job.phase == "PENDING"
    job.delete()
    # A target list crossmatched with run_sync(uploads=...): the secret exposure stays hidden.
    targets = Table({"ra": [secret.ra_deg, made[0].ra_deg], "dec": [secret.dec_deg, made[0].dec_deg],
                     "name": ["secret", "public"]})
    query = ("SELECT t.name, o.obs_id FROM ivoa.obscore AS o JOIN TAP_UPLOAD.targets AS t "
             "ON 1 = CONTAINS(POINT('ICRS', o.s_ra, o.s_dec), CIRCLE('ICRS', t.ra, t.dec, 0.5))")
    rows = tap.run_sync(query, uploads={"targets": targets}).to_table()
    expected = {(name, e.expnum) for name, (ra, dec) in (("secret", (secret.ra_deg, secret.dec_deg)),
                                                         ("public", (made[0].ra_deg, made[0].dec_deg)))
                for e in made if e.pk != secret.pk and fp.angular_distance(ra, dec, e.ra_deg, e.dec_deg) <= 0.5}
    assert {(str(r["name"]), int(r["obs_id"])) for r in rows} == expected
    async_rows = tap.run_async(query, uploads={"targets": targets}).to_table()
    assert {(str(r["name"]), int(r["obs_id"])) for r in async_rows} == expected


def test_astroquery_tapplus_loads_tables_and_runs_async_jobs(service, archive):
    from astroquery.utils.tap.core import TapPlus

    made, secret, _ = archive
    tap = TapPlus(url=service.url + "/tap", verbose=False)
    tables = {t.get_qualified_name() for t in tap.load_tables(verbose=False)}
    assert {"ivoa.obscore", "tap_schema.columns", "tap_schema.keys"} <= tables
    for output_format in ("votable", "csv"):
        job = tap.launch_job_async("SELECT obs_id, s_ra FROM ivoa.obscore", output_format=output_format, verbose=False)
        assert {int(v) for v in job.get_results()["obs_id"]} == _public(made, secret), output_format
    assert len(tap.launch_job("SELECT TOP 3 obs_id FROM ivoa.obscore", verbose=False).get_results()) == 3


@pytest.mark.skipif(STILTS is None, reason="Debian's stilts is absent (apt-get install stilts)")
def test_stilts_tapquery_in_its_default_async_mode_with_an_upload(service, archive, tmp_path):
    made, secret, _ = archive
    out = tmp_path / "out.csv"
    done = subprocess.run([STILTS, "tapquery", f"tapurl={service.url}/tap", "adql=SELECT obs_id FROM ivoa.obscore",
                           f"out={out}", "ofmt=csv"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {int(line) for line in out.read_text().split()[1:]} == _public(made, secret)
    targets = tmp_path / "targets.csv"
    targets.write_text(f"ra,dec\n{made[0].ra_deg},{made[0].dec_deg}\n")
    done = subprocess.run([STILTS, "tapquery", f"tapurl={service.url}/tap", "nupload=1", f"upload1={targets}",
                           "ufmt1=csv", "upname1=targets", f"out={out}", "ofmt=csv",
                           "adql=SELECT o.obs_id FROM ivoa.obscore AS o JOIN TAP_UPLOAD.targets AS t ON "
                           "1 = CONTAINS(POINT('ICRS', o.s_ra, o.s_dec), CIRCLE('ICRS', t.ra, t.dec, 0.01))"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert made[0].expnum in {int(line) for line in out.read_text().split()[1:]}


@pytest.mark.skipif(STILTS is None, reason="Debian's stilts is absent (apt-get install stilts)")
def test_taplint_finds_no_error(service, archive):
    done = subprocess.run([STILTS, "taplint", f"tapurl={service.url}/tap", "report=EW", "maxrepeat=3"],
                          capture_output=True, text=True, timeout=600)
    summary = [line for line in done.stdout.splitlines() if line.startswith("Totals:")]
    errors = [line for line in done.stdout.splitlines() if line.startswith("E-")]
    assert summary and "Errors: 0;" in summary[0], "\n".join(errors) or done.stdout[-3000:]
    # The warnings left are the ones README "TAP: taplint" explains.
    warnings = {line.split()[0].rsplit("-", 1)[0] for line in done.stdout.splitlines() if line.startswith("W-")}
    assert warnings <= {"W-CAP-CPSM", "W-CAP-CPI2"}, warnings


def test_a_killed_worker_leaves_its_job_in_error_not_executing(service, archive):
    import pyvo

    tap = pyvo.dal.TAPService(service.url + "/tap")
    heavy = ("SELECT COUNT(*) AS n FROM ivoa.obscore AS t1, ivoa.obscore AS t2, ivoa.obscore AS t3, "
             "ivoa.obscore AS t4, ivoa.obscore AS t5 WHERE t1.s_ra + t2.s_ra + t3.s_ra + t4.s_ra + t5.s_ra > 0")
    job = tap.submit_job(heavy)
    job.execution_duration = 300
    job.run()
    deadline = time.time() + 60
    while job.phase != "EXECUTING" and time.time() < deadline:
        time.sleep(0.2)
    assert job.phase == "EXECUTING"
    service.worker.send_signal(signal.SIGKILL)
    service.worker.wait(timeout=10)
    killed_at = time.time()
    while job.phase == "EXECUTING" and time.time() < killed_at + STALL_S * 5:
        time.sleep(0.5)
    assert job.phase == "ERROR"
    assert "worker running this job stopped" in job.job.errorsummary.message.content
    # A new worker takes the next job; the dead one's query was ended in PostgreSQL.
    service.worker = service.start_worker()
    assert len(tap.run_async("SELECT TOP 2 obs_id FROM ivoa.obscore").to_table()) == 2
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                       ["%t5.s_ra%"])
        assert cursor.fetchone()[0] == 0
