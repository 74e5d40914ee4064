"""TAP async (UWS 1.1) through Django's test client: the job list, creation, phases, RUN and
ABORT, results and the error document, executionDuration and destruction, owner isolation,
the per-client bound, proprietary rows, stalled workers. The job is run here by the task the
worker runs (`uws.execute_job`), in this process; tests/vo/test_tap_clients.py runs the real
worker beside a real server."""
import datetime as dt
import io
import xml.etree.ElementTree as ET

import pytest
from astropy.io.votable import parse
from django.test import Client
from django.utils import timezone

from archive.models import RunAccess
from archive.services import tokens
from recommender.models import TapJob
from recommender.vo import uws
from tests import factories

from .test_tap import ON_POSTGRES, needs_postgres

ASYNC = "/tap/async"
NS = {"uws": uws.UWS_NS}


@pytest.fixture(autouse=True)
def _jobs_in_tmp(settings, tmp_path):
    settings.ARCHIVE_DATA_DIR = tmp_path


def _create(client, query, **extra):
    response = client.post(ASYNC, {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": query, **extra})
    assert response.status_code == 303, response.content[:400]
    return response["Location"].rsplit("/", 1)[-1]


def _job(client, job_id):
    response = client.get(f"{ASYNC}/{job_id}")
    assert response.status_code == 200, response.content[:300]
    return ET.fromstring(response.content)


def _phase(client, job_id) -> str:
    return client.get(f"{ASYNC}/{job_id}/phase").content.decode()


def _run_queued(job_id):
    """What the worker does with the queued job: the registered task, called as it calls it."""
    return uws.execute_job.call(job_id)


def _result_ids(client, job_id) -> set[int]:
    response = client.get(f"{ASYNC}/{job_id}/results/result")
    assert response.status_code == 200
    table = parse(io.BytesIO(b"".join(response.streaming_content))).get_first_table().to_table()
    return {int(v) for v in table["obs_id"]}


@pytest.mark.skipif(ON_POSTGRES, reason="the SQLite answer")
def test_async_on_sqlite_says_tap_needs_postgresql(db):
    response = Client().post(ASYNC, {"LANG": "ADQL", "QUERY": "SELECT TOP 1 obs_id FROM ivoa.obscore"})
    assert response.status_code == 501 and b"needs PostgreSQL" in response.content


@needs_postgres
def test_a_job_goes_from_pending_to_completed_with_its_result(sky):
    made, secret = sky
    client = Client()
    job_id = _create(client, "SELECT obs_id FROM ivoa.obscore", RUNID="mine", EXECUTIONDURATION="30")
    job = _job(client, job_id)
    assert job.find("uws:phase", NS).text == "PENDING" and job.find("uws:runId", NS).text == "mine"
    assert job.find("uws:executionDuration", NS).text == "30"
    assert {p.get("id") for p in job.find("uws:parameters", NS)} >= {"query", "lang"}
    # The job list shows it; RUN queues it on the task runner.
    listing = ET.fromstring(client.get(ASYNC).content)
    assert [r.get("id") for r in listing.findall("uws:jobref", NS)] == [job_id]
    assert client.post(f"{ASYNC}/{job_id}/phase", {"PHASE": "RUN"}).status_code == 303
    assert _phase(client, job_id) == "QUEUED"
    from django_tasks_db.models import DBTaskResult

    assert DBTaskResult.objects.filter(pk=TapJob.objects.get(pk=job_id).task_id, queue_name="tap").exists()
    assert _run_queued(job_id) == "COMPLETED"
    job = _job(client, job_id)
    assert job.find("uws:phase", NS).text == "COMPLETED" and job.find("uws:startTime", NS).text
    result = job.find("uws:results/uws:result", NS)
    assert result.get("{http://www.w3.org/1999/xlink}href").endswith(f"/tap/async/{job_id}/results/result")
    assert _result_ids(client, job_id) == {e.expnum for e in made if e.pk != secret.pk}
    # The result lies on disk in the job's folder until the job is destroyed.
    stored = uws.job_dir(TapJob.objects.get(pk=job_id))
    assert (stored / "result.xml").exists()
    assert client.delete(f"{ASYNC}/{job_id}").status_code == 303
    assert not stored.exists() and client.get(f"{ASYNC}/{job_id}").status_code == 404


@needs_postgres
def test_a_bad_query_ends_in_error_with_its_document(sky):
    client = Client()
    job_id = _create(client, "SELECT nonsense FROM ivoa.obscore", PHASE="RUN")
    assert _run_queued(job_id) == "ERROR"
    job = _job(client, job_id)
    assert job.find("uws:phase", NS).text == "ERROR"
    assert "UsageFault" in job.find("uws:errorSummary/uws:message", NS).text
    error = client.get(f"{ASYNC}/{job_id}/error")
    info = next(i for i in parse(io.BytesIO(error.content)).resources[0].infos if i.name == "QUERY_STATUS")
    assert info.value == "ERROR" and info.content.startswith("UsageFault: the query failed")
    assert client.get(f"{ASYNC}/{job_id}/results/result").status_code == 404


@needs_postgres
def test_abort_stops_a_queued_job_and_the_worker_leaves_it(sky):
    client = Client()
    job_id = _create(client, "SELECT obs_id FROM ivoa.obscore", PHASE="RUN")
    assert client.post(f"{ASYNC}/{job_id}/phase", {"PHASE": "ABORT"}).status_code == 303
    assert _phase(client, job_id) == "ABORTED"
    assert _run_queued(job_id) == "not queued" and _phase(client, job_id) == "ABORTED"
    # A finished job cannot be run again; an unknown phase is refused by name.
    assert client.post(f"{ASYNC}/{job_id}/phase", {"PHASE": "RUN"}).status_code == 400
    assert b"RUN or ABORT" in client.post(f"{ASYNC}/{job_id}/phase", {"PHASE": "GO"}).content


@needs_postgres
def test_jobs_are_seen_only_by_who_made_them(sky):
    made, secret = sky
    pi, other = factories.user("pi"), factories.user("other")
    RunAccess.objects.create(user=pi, runid="27BQ09")
    _, pi_token = tokens.issue_token(pi)
    pi_client = Client(HTTP_AUTHORIZATION=f"Token {pi_token}")
    other_client, anonymous, elsewhere = Client(), Client(), Client(REMOTE_ADDR="10.9.8.7")
    other_client.force_login(other)
    job_id = _create(pi_client, "SELECT obs_id FROM ivoa.obscore", PHASE="RUN")
    anonymous_job = _create(anonymous, "SELECT obs_id FROM ivoa.obscore", PHASE="RUN")
    for outsider in (other_client, anonymous, elsewhere):
        for path in ("", "/phase", "/results", "/results/result", "/parameters", "/error"):
            assert outsider.get(f"{ASYNC}/{job_id}{path}").status_code == 404, path
        assert outsider.post(f"{ASYNC}/{job_id}/phase", {"PHASE": "ABORT"}).status_code == 404
        assert outsider.delete(f"{ASYNC}/{job_id}").status_code == 404
    assert elsewhere.get(f"{ASYNC}/{anonymous_job}").status_code == 404
    assert pi_client.get(f"{ASYNC}/{anonymous_job}").status_code == 404
    assert [r.get("id") for r in ET.fromstring(pi_client.get(ASYNC).content).findall("uws:jobref", NS)] == [job_id]
    assert ET.fromstring(other_client.get(ASYNC).content).findall("uws:jobref", NS) == []
    # Each job runs as its owner: the proprietary exposure reaches the PI's result only.
    _run_queued(job_id)
    _run_queued(anonymous_job)
    assert secret.expnum in _result_ids(pi_client, job_id)
    assert secret.expnum not in _result_ids(anonymous, anonymous_job)
    owner = pi_client.get(f"{ASYNC}/{job_id}/owner").content.decode()
    assert owner == "pi"


@needs_postgres
def test_an_upload_join_never_reaches_a_row_its_owner_may_not_see(sky):
    made, secret = sky
    from django.core.files.uploadedfile import SimpleUploadedFile

    from .test_tap_upload import targets_votable

    body = targets_votable([(secret.ra_deg, secret.dec_deg, "secret"), (made[0].ra_deg, made[0].dec_deg, "public")])
    client = Client()
    response = client.post(ASYNC, {"LANG": "ADQL", "PHASE": "RUN", "UPLOAD": "t,param:targets",
                                   "targets": SimpleUploadedFile("t.xml", body, "application/x-votable+xml"),
                                   "QUERY": "SELECT o.obs_id, t.name FROM ivoa.obscore AS o JOIN TAP_UPLOAD.t AS t "
                                            "ON 1 = CONTAINS(POINT('ICRS', o.s_ra, o.s_dec), "
                                            "CIRCLE('ICRS', t.ra, t.dec, 0.001))"})
    job_id = response["Location"].rsplit("/", 1)[-1]
    assert _run_queued(job_id) == "COMPLETED"
    assert _result_ids(client, job_id) == {made[0].expnum}


@needs_postgres
def test_one_client_may_queue_only_so_many_jobs(sky, settings):
    settings.TAP_ASYNC_MAX_ACTIVE = 2
    client, neighbour = Client(), Client(REMOTE_ADDR="10.1.1.1")
    first = [_create(client, "SELECT TOP 1 obs_id FROM ivoa.obscore", PHASE="RUN") for _ in range(2)]
    third = _create(client, "SELECT TOP 1 obs_id FROM ivoa.obscore")
    refused = client.post(f"{ASYNC}/{third}/phase", {"PHASE": "RUN"})
    assert refused.status_code == 429 and b"2 jobs queued or running" in refused.content
    assert _phase(client, third) == "PENDING"
    # Created with PHASE=RUN past the bound: refused, and no job is left behind.
    before = TapJob.objects.count()
    assert client.post(ASYNC, {"LANG": "ADQL", "QUERY": "SELECT 1 FROM ivoa.obscore", "PHASE": "RUN"}).status_code == 429
    assert TapJob.objects.count() == before
    # Another client's queue is its own; a finished job frees a place.
    assert _phase(neighbour, _create(neighbour, "SELECT TOP 1 obs_id FROM ivoa.obscore", PHASE="RUN")) == "QUEUED"
    _run_queued(first[0])
    assert client.post(f"{ASYNC}/{third}/phase", {"PHASE": "RUN"}).status_code == 303
    settings.TAP_ASYNC_MAX_JOBS = 3   # it keeps three
    assert client.post(ASYNC, {"LANG": "ADQL", "QUERY": "SELECT 1 FROM ivoa.obscore"}).status_code == 429


@needs_postgres
def test_duration_and_destruction_are_bounded_and_destruction_deletes(sky, settings):
    settings.TAP_ASYNC_MAX_DURATION_S = 120
    client = Client()
    job_id = _create(client, "SELECT obs_id FROM ivoa.obscore", EXECUTIONDURATION="100000")
    assert client.get(f"{ASYNC}/{job_id}/executionduration").content == b"120"
    client.post(f"{ASYNC}/{job_id}/executionduration", {"EXECUTIONDURATION": "15"})
    assert client.get(f"{ASYNC}/{job_id}/executionduration").content == b"15"
    assert client.post(f"{ASYNC}/{job_id}/executionduration", {"EXECUTIONDURATION": "-3"}).status_code == 400
    # Asked to be kept past the service's lifetime, it is kept for the lifetime only.
    client.post(f"{ASYNC}/{job_id}/destruction", {"DESTRUCTION": "2999-01-01T00:00:00Z"})
    job = TapJob.objects.get(pk=job_id)
    assert job.destruction <= job.created_at + uws.lifetime()
    client.post(f"{ASYNC}/{job_id}/phase", {"PHASE": "RUN"})
    _run_queued(job_id)
    folder = uws.job_dir(job)
    assert folder.exists()
    TapJob.objects.filter(pk=job_id).update(destruction=timezone.now() - dt.timedelta(seconds=1))
    assert client.get(f"{ASYNC}/{job_id}").status_code == 404
    assert not folder.exists() and not TapJob.objects.filter(pk=job_id).exists()


@needs_postgres
def test_a_job_whose_worker_stopped_beating_is_an_error_not_executing_forever(sky, settings):
    settings.TAP_ASYNC_STALL_S = 5
    client = Client()
    job_id = _create(client, "SELECT obs_id FROM ivoa.obscore", PHASE="RUN")
    # As a worker killed mid-query leaves it: EXECUTING, its last beat long ago.
    TapJob.objects.filter(pk=job_id).update(phase="EXECUTING", started_at=timezone.now(),
                                            heartbeat_at=timezone.now() - dt.timedelta(seconds=60))
    job = _job(client, job_id)
    assert job.find("uws:phase", NS).text == "ERROR"
    assert "worker running this job stopped" in job.find("uws:errorSummary/uws:message", NS).text
