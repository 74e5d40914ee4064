"""TAP async: UWS 1.1 jobs over the sync query path.

A job is a `recommender.models.TapJob` row and a folder under ARCHIVE_DATA_DIR/tap_jobs/<id>
(its uploaded tables, then its result). RUN queues it on the task runner, django-tasks with its
database backend (`manage.py tap_worker` runs the queue "tap"); the worker runs it through
`tap.run_sync` (the access rule, the translator's checks and every limit of a sync query, with
the job's executionDuration as the statement timeout) as the job's owner, and writes the result
in the format asked for.

- Owner isolation: a user's job is seen only by that user, an anonymous job only by anonymous
  callers from the client address that made it; anybody else gets the 404 of a job that does
  not exist.
- Bounds: at most TAP_ASYNC_MAX_ACTIVE jobs of one client queued or running, TAP_ASYNC_MAX_JOBS
  kept; executionDuration at most TAP_ASYNC_MAX_DURATION_S; every job and its result are
  destroyed at its destruction time (TAP_ASYNC_LIFETIME_S after creation by default).
- A worker that dies: a running job beats every STALL/5 seconds; one whose beat is older than
  TAP_ASYNC_STALL_S (or that ran past its executionDuration) is put in ERROR by `reap`, which
  every read of a job and the worker itself call. No job stays EXECUTING forever.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import shutil
import threading
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import connection, connections, transaction
from django.utils import timezone

from desom.errors import UserError

from . import tap_output, tap_upload

try:
    from django.tasks import task as _task
except ImportError:       # Django 5.2: the django-tasks backport
    from django_tasks import task as _task

logger = logging.getLogger(__name__)

UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
# Parameters that steer the job, not the query (UWS 1.1, section 2.2.3).
CONTROL = {"PHASE", "RUNID", "EXECUTIONDURATION", "DESTRUCTION", "ACTION", "WAIT", "LAST", "AFTER"}
ACTIVE = ("QUEUED", "EXECUTING")
FINAL = ("COMPLETED", "ERROR", "ABORTED")
MAX_WAIT_S = 10


class JobError(UserError):
    def __init__(self, message: str, code: str = "UsageFault", status: int = 400):
        super().__init__(message)
        self.code, self.status = code, status


def _setting(name: str, default):
    return type(default)(getattr(settings, name, default))


def default_duration() -> int:
    return _setting("TAP_ASYNC_DEFAULT_DURATION_S", 600)


def max_duration() -> int:
    return _setting("TAP_ASYNC_MAX_DURATION_S", 3600)


def lifetime() -> dt.timedelta:
    return dt.timedelta(seconds=_setting("TAP_ASYNC_LIFETIME_S", 7 * 24 * 3600))


def stall_s() -> float:
    return _setting("TAP_ASYNC_STALL_S", 30.0)


def jobs_root() -> Path:
    return Path(settings.ARCHIVE_DATA_DIR) / "tap_jobs"


def job_dir(job) -> Path:
    return jobs_root() / job.id


def client_key(user, address: str) -> str:
    return f"user:{user.pk}" if user is not None and user.is_authenticated else f"addr:{address}"


# --- the jobs' lives ----------------------------------------------------------------------------

def reap() -> None:
    """Jobs whose worker stopped beating become ERROR; jobs past their destruction time go,
    with their folders."""
    from django_tasks_db.models import DBTaskResult

    from recommender.models import TapJob

    now = timezone.now()
    stalled = TapJob.objects.filter(phase=TapJob.EXECUTING, heartbeat_at__lt=now - dt.timedelta(seconds=stall_s()))
    for job in list(stalled.only("id", "task_id", "backend_pid", "started_at")):
        changed = TapJob.objects.filter(pk=job.pk, phase=TapJob.EXECUTING).update(
            phase=TapJob.ERROR, ended_at=now,
            error="TransientFault: the worker running this job stopped before it finished; run the job again")
        if changed:
            logger.warning("TAP job %s: its worker stopped; the job is in ERROR", job.pk)
            DBTaskResult.objects.filter(pk=job.task_id or None, status="RUNNING").update(status="FAILED",
                                                                                     finished_at=now)
            _end_orphan_query(job)
    for job in TapJob.objects.filter(phase=TapJob.EXECUTING, started_at__isnull=False).only(
            "id", "started_at", "execution_duration"):
        if job.started_at + dt.timedelta(seconds=job.execution_duration + stall_s()) < now:
            TapJob.objects.filter(pk=job.pk, phase=TapJob.EXECUTING).update(
                phase=TapJob.ERROR, ended_at=now,
                error=f"UsageFault: the job ran past its executionDuration of {job.execution_duration} s")
    for job in list(TapJob.objects.filter(destruction__lt=now).only("id")):
        destroy(job)


def _end_orphan_query(job) -> None:
    """The dead worker's query may still run in PostgreSQL (it notices a gone client only when it
    answers): end that backend, if it is still the one the job started on."""
    if not job.backend_pid or connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s AND backend_start <= %s",
                       [job.backend_pid, job.started_at])


def destroy(job) -> None:
    from recommender.models import TapJob

    abort(job)
    TapJob.objects.filter(pk=job.pk).delete()
    shutil.rmtree(job_dir(job), ignore_errors=True)


def owned_job(job_id: str, client: str):
    """The job, if this client made it; the 404 of a missing job otherwise (another's job too)."""
    from recommender.models import TapJob

    reap()
    job = TapJob.objects.filter(pk=str(job_id)[:32], client=client).first()
    if job is None:
        raise JobError(f"no job {job_id!r} here", "NotFoundFault", 404)
    return job


def jobs_of(client: str, phases=(), after=None, last: int | None = None):
    from recommender.models import TapJob

    reap()
    jobs = TapJob.objects.filter(client=client)
    if phases:
        jobs = jobs.filter(phase__in=phases)
    else:
        jobs = jobs.exclude(phase="ARCHIVED")
    if after is not None:
        jobs = jobs.filter(created_at__gt=after)
    jobs = jobs.order_by("-created_at")
    return list(jobs[:last] if last is not None else jobs[:1000])


def _duration(text: str) -> int:
    try:
        value = int(text.strip())
    except (TypeError, ValueError):
        raise JobError(f"EXECUTIONDURATION: {text!r} is not a whole number of seconds") from None
    if value < 0:
        raise JobError("EXECUTIONDURATION: must not be negative")
    # 0 means "no limit" in UWS; this service always has one.
    return max_duration() if value == 0 else min(value, max_duration())


def _destruction(text: str, job) -> dt.datetime:
    from django.utils.dateparse import parse_datetime

    value = parse_datetime(text.strip()) if text else None
    if value is None:
        raise JobError(f"DESTRUCTION: {text!r} is not an ISO 8601 time (e.g. 2030-01-01T00:00:00Z)")
    if timezone.is_naive(value):
        value = timezone.make_aware(value, dt.timezone.utc)
    latest = job.created_at + lifetime()
    return min(value, latest)      # kept no longer than this service keeps jobs


def create(params: dict[str, list[str]], files, user, client: str, base_url: str, links_url: str):
    """A PENDING job (QUEUED at once with PHASE=RUN), its uploads stored in its folder."""
    from recommender.models import TapJob

    reap()
    if TapJob.objects.filter(client=client).count() >= _setting("TAP_ASYNC_MAX_JOBS", 100):
        raise JobError(f"you keep {_setting('TAP_ASYNC_MAX_JOBS', 100)} jobs here already, the most one client may; "
                       "delete some (DELETE on a job's URL)", status=429)
    phase = (params.get("PHASE") or [""])[0].strip().upper()
    if phase not in ("", "RUN"):
        raise JobError(f"PHASE: only RUN is meaningful when a job is created, not {phase!r}")
    if phase == "RUN":
        _check_active_bound(client)      # refused before a job is made, not left PENDING behind
    query = {k: v for k, v in params.items() if k not in CONTROL}
    pairs = tap_upload.parse_upload_parameter(query.get("UPLOAD", []))
    for name, part in pairs:
        if tap_upload.is_url(part):
            continue
        uploaded = files.get(part)
        if uploaded is None:
            raise JobError(f"UPLOAD: table {name} names the part {part!r}, which the request does not carry")
        tap_upload.check_size(name, uploaded.size)
    now = timezone.now()
    job = TapJob(id=secrets.token_hex(16), owner=user if user.is_authenticated else None, client=client,
                 parameters=query, base_url=base_url, links_url=links_url, execution_duration=default_duration(),
                 destruction=now + lifetime(), run_id=(params.get("RUNID") or [""])[0][:64])
    job.created_at = now
    if params.get("EXECUTIONDURATION"):
        job.execution_duration = _duration(params["EXECUTIONDURATION"][0])
    if params.get("DESTRUCTION"):
        job.destruction = _destruction(params["DESTRUCTION"][0], job)
    folder = job_dir(job)
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in pairs:
        with open(folder / f"upload_{name}.xml", "wb") as out:
            if tap_upload.is_url(part):
                out.write(tap_upload.fetch(name, part))
            else:
                for chunk in files[part].chunks():
                    out.write(chunk)
        job.uploads.append([name, f"upload_{name}.xml"])
    job.save()
    if phase == "RUN":
        run(job)
    return job


def _check_active_bound(client: str) -> None:
    from recommender.models import TapJob

    most = _setting("TAP_ASYNC_MAX_ACTIVE", 3)
    if TapJob.objects.filter(client=client, phase__in=ACTIVE).count() >= most:
        raise JobError(f"you have {most} jobs queued or running, the most one client may; run this one when "
                       "one of them has finished", status=429)


def run(job) -> None:
    """PENDING (or a job that may run again) to QUEUED, on the task runner's queue."""
    from recommender.models import TapJob

    if job.phase in ACTIVE:
        return
    if job.phase != TapJob.PENDING:
        raise JobError(f"the job is {job.phase}; only a PENDING job can be run")
    _check_active_bound(job.client)
    with transaction.atomic():
        if not TapJob.objects.filter(pk=job.pk, phase=TapJob.PENDING).update(phase=TapJob.QUEUED):
            return
        result = execute_job.enqueue(job.pk)
        TapJob.objects.filter(pk=job.pk).update(task_id=str(result.id))
    job.refresh_from_db()


def abort(job) -> None:
    """PENDING, QUEUED or EXECUTING to ABORTED; a running query is cancelled in PostgreSQL."""
    from recommender.models import TapJob

    if job.phase in FINAL:
        return
    changed = TapJob.objects.filter(pk=job.pk, phase__in=("PENDING", "QUEUED", "EXECUTING")).update(
        phase=TapJob.ABORTED, ended_at=timezone.now())
    if changed and job.backend_pid and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_cancel_backend(%s)", [job.backend_pid])
    job.refresh_from_db()


def set_duration(job, text: str) -> None:
    if job.phase != "PENDING":
        raise JobError(f"the job is {job.phase}; executionDuration can change only while it is PENDING")
    job.execution_duration = _duration(text)
    job.save(update_fields=["execution_duration"])


def set_destruction(job, text: str) -> None:
    job.destruction = _destruction(text, job)
    job.save(update_fields=["destruction"])


def set_parameters(job, params: dict[str, list[str]]) -> None:
    if job.phase != "PENDING":
        raise JobError(f"the job is {job.phase}; its parameters can change only while it is PENDING")
    if "UPLOAD" in params:
        raise JobError("UPLOAD: tables are given when the job is created")
    job.parameters = {**job.parameters, **{k: v for k, v in params.items() if k not in CONTROL}}
    job.save(update_fields=["parameters"])


def wait(job, seconds: str | None, phase: str | None):
    """UWS 1.1 blocking: wait up to WAIT seconds (at most MAX_WAIT_S here) while the job is
    active (or in the phase named) and unchanged."""
    import time

    from recommender.models import TapJob

    if seconds is None:
        return job
    try:
        limit = float(seconds)
    except ValueError:
        raise JobError(f"WAIT: {seconds!r} is not a number of seconds") from None
    limit = MAX_WAIT_S if limit < 0 else min(limit, MAX_WAIT_S)
    deadline = time.monotonic() + limit
    start = job.phase
    if start in FINAL or (phase and phase.upper() != start):
        return job
    while time.monotonic() < deadline:
        time.sleep(0.2)
        current = TapJob.objects.filter(pk=job.pk).values_list("phase", flat=True).first()
        if current != start:
            break
    job.refresh_from_db()
    return job


# --- running one, on the worker ---------------------------------------------------------------------

class _Heartbeat(threading.Thread):
    def __init__(self, job_id: str):
        super().__init__(daemon=True, name=f"tap-job-{job_id}")
        self.job_id, self.stopped = job_id, threading.Event()

    def run(self):
        from recommender.models import TapJob

        try:
            while not self.stopped.wait(max(stall_s() / 5, 0.2)):
                TapJob.objects.filter(pk=self.job_id, phase=TapJob.EXECUTING).update(heartbeat_at=timezone.now())
        finally:
            connections.close_all()


def _owner(job):
    return job.owner if job.owner_id else AnonymousUser()


def execute(job_id: str) -> str:
    """Run one queued job to COMPLETED or ERROR (ABORTED jobs are left as they are)."""
    from recommender.models import TapJob

    from . import tap

    now = timezone.now()
    if not TapJob.objects.filter(pk=job_id, phase=TapJob.QUEUED).update(
            phase=TapJob.EXECUTING, started_at=now, heartbeat_at=now, backend_pid=_backend_pid()):
        return "not queued"
    job = TapJob.objects.get(pk=job_id)
    beat = _Heartbeat(job_id)
    beat.start()
    try:
        output = tap_output.choose(job.parameters)
        uploads = [tap_upload.parse_table(name, (job_dir(job) / file).read_bytes()) for name, file in job.uploads]
        result = tap.run_sync(job.parameters, _owner(job), job.base_url, uploads=uploads,
                              timeout=job.execution_duration)
        body = tap_output.render(result, output, job.links_url)
        name = f"result.{output.extension}"
        partial = job_dir(job) / f".{name}.part"
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(body)
        os.replace(partial, job_dir(job) / name)
        done = dict(phase=TapJob.COMPLETED, result_file=name, result_mime=output.mime, result_rows=len(result.rows),
                    result_bytes=len(body))
    except UserError as exc:
        from .votable import fault

        done = dict(phase=TapJob.ERROR, error=fault(getattr(exc, "code", "UsageFault"), str(exc)))
    except Exception:
        logger.exception("TAP job %s failed", job_id)
        done = dict(phase=TapJob.ERROR, error="FatalFault: the job failed on the server")
    finally:
        beat.stopped.set()
        beat.join(5)
    TapJob.objects.filter(pk=job_id, phase=TapJob.EXECUTING).update(ended_at=timezone.now(), **done)
    return done["phase"]


def _backend_pid() -> int | None:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


@_task(queue_name="tap")
def execute_job(job_id: str) -> str:
    """The task the worker runs (django-tasks finds it by this module path)."""
    return execute(job_id)


# --- documents ------------------------------------------------------------------------------

def _time(value) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if value else ""


def _nil(tag: str) -> str:
    return f'  <uws:{tag} xsi:nil="true"/>\n'


def job_xml(job, job_url: str) -> bytes:
    def element(tag, value):
        return f"  <uws:{tag}>{escape(str(value))}</uws:{tag}>\n" if value not in (None, "") else _nil(tag)

    owner = job.owner.get_username() if job.owner_id else None
    body = [element("jobId", job.id)]
    if job.run_id:
        body.append(element("runId", job.run_id))
    body += [element("ownerId", owner), element("phase", job.phase), _nil("quote"),
             element("creationTime", _time(job.created_at)), element("startTime", _time(job.started_at)),
             element("endTime", _time(job.ended_at)), element("executionDuration", job.execution_duration),
             element("destruction", _time(job.destruction)), "  <uws:parameters>\n"]
    for name, values in sorted(job.parameters.items()):
        for value in values:
            body.append(f"    <uws:parameter id={quoteattr(name.lower())}>{escape(value)}</uws:parameter>\n")
    body.append("  </uws:parameters>\n  <uws:results>\n")
    if job.phase == "COMPLETED" and job.result_file:
        body.append(f'    <uws:result id="result" xlink:type="simple" xlink:href={quoteattr(job_url + "/results/result")} '
                    f"mime-type={quoteattr(job.result_mime)} size=\"{job.result_bytes or 0}\"/>\n")
    body.append("  </uws:results>\n")
    if job.phase == "ERROR":
        body.append('  <uws:errorSummary type="transient" hasDetail="true">\n'
                    f"    <uws:message>{escape(job.error)}</uws:message>\n  </uws:errorSummary>\n")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:job xmlns:uws="{UWS_NS}" '
            'xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            f'version="1.1">\n{"".join(body)}</uws:job>\n').encode()


def results_xml(job, job_url: str) -> bytes:
    body = ""
    if job.phase == "COMPLETED" and job.result_file:
        body = (f'  <uws:result id="result" xlink:type="simple" xlink:href={quoteattr(job_url + "/results/result")} '
                f"mime-type={quoteattr(job.result_mime)} size=\"{job.result_bytes or 0}\"/>\n")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:results xmlns:uws="{UWS_NS}" '
            f'xmlns:xlink="http://www.w3.org/1999/xlink">\n{body}</uws:results>\n').encode()


def jobs_xml(jobs, list_url: str) -> bytes:
    refs = []
    for job in jobs:
        refs.append(f'  <uws:jobref id={quoteattr(job.id)} xlink:type="simple" '
                    f'xlink:href={quoteattr(list_url + "/" + job.id)}>\n'
                    f"    <uws:phase>{job.phase}</uws:phase>\n"
                    + (f"    <uws:runId>{escape(job.run_id)}</uws:runId>\n" if job.run_id else "")
                    + f"    <uws:creationTime>{_time(job.created_at)}</uws:creationTime>\n  </uws:jobref>\n")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<uws:jobs xmlns:uws="{UWS_NS}" '
            'xmlns:xlink="http://www.w3.org/1999/xlink" version="1.1">\n' + "".join(refs) + "</uws:jobs>\n").encode()


def result_path(job) -> Path:
    if job.phase != "COMPLETED" or not job.result_file:
        raise JobError(f"the job is {job.phase}: it has no result", "NotFoundFault", 404)
    path = job_dir(job) / job.result_file
    if not path.exists():
        raise JobError("the job's result is no longer kept", "NotFoundFault", 404)
    return path
