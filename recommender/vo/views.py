"""VO views (SIA v2, DataLink, SODA, VOSI): thin wrappers over the services of this package.
Every answer a VO client parses is a VOTable or VOSI XML document, errors included (HTTP 400
for a bad request, 404 for an unknown dataset, 503 when the database is down), with a DALI
fault code at the start of each error message."""
import functools
import hashlib
import logging

from django.db import DatabaseError, connection
from django.http import FileResponse, HttpResponse, HttpResponseRedirect
from django.utils.cache import get_conditional_response
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from archive.services import downloads
from desom.errors import UserError

from . import datalink, scs, services, soda, tap, tap_output, tap_upload, uws
from . import tap_examples as tap_examples_doc
from .votable import FATAL, TRANSIENT, USAGE, VOTABLE_MIME, error_votable

logger = logging.getLogger(__name__)
DATABASE_DOWN = "the archive database is unavailable; try again shortly"


def _votable(body: bytes, status: int = 200, content_type: str = VOTABLE_MIME, **headers) -> HttpResponse:
    response = HttpResponse(body, status=status, content_type=f"{content_type}; charset=utf-8")
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _database_down(where: str, exc) -> HttpResponse:
    logger.warning("%s: database unavailable (%s)", where, exc)
    return _votable(error_votable(DATABASE_DOWN, TRANSIENT), 503, Retry_After="30")


def answers_vo_errors(service: str):
    """The VO surface's one translation of errors into answers: a UserError (the client can fix
    it) is a VOTable error with its DALI fault (HTTP 400, or the `code` and `status` the error
    carries), a database that cannot be reached a 503 with Retry-After."""
    def decorate(view):
        @functools.wraps(view)
        def answer(request, *args, **kwargs):
            try:
                return view(request, *args, **kwargs)
            except UserError as exc:
                return _votable(error_votable(str(exc), getattr(exc, "code", USAGE)), getattr(exc, "status", 400))
            except DatabaseError as exc:
                return _database_down(service, exc)
        return answer
    return decorate


def _url(request, name, **kwargs) -> str:
    return request.build_absolute_uri(reverse(name, kwargs=kwargs or None))


def _sia_base(request) -> str:
    return _url(request, "vo:query").rsplit("/query", 1)[0]


# VO clients POST without a CSRF token; these routes change nothing.
@csrf_exempt
@require_http_methods(["GET", "POST"])
@answers_vo_errors("SIA query")
def query(request):
    params = services.collect_parameters(request.GET, request.POST)
    result = services.run_query(params, request.user)
    body = services.results_votable(result, lambda e: _url(request, "archive:download", pk=e.pk),
                                    _sia_base(request), _url(request, "vo:links"))
    return _votable(body)


def _datalink_urls(request) -> datalink.Urls:
    return datalink.Urls(download=lambda e: _url(request, "archive:download", pk=e.pk),
                         preview=lambda e: _url(request, "archive:preview", pk=e.pk),
                         quality=lambda e: _url(request, "archive-api:exposure-detail", pk=e.pk),
                         soda=_url(request, "vo:soda"), sia=_url(request, "vo:query"))


@csrf_exempt
@require_http_methods(["GET", "POST"])
@answers_vo_errors("DataLink")
def links(request):
    try:
        params = services.collect_parameters(request.GET, request.POST)
        ids = datalink.collect_ids(params)
    except UserError as exc:
        return _votable(datalink.error_votable(str(exc), getattr(exc, "code", USAGE)), 400,
                        content_type="application/x-votable+xml;content=datalink")
    body = datalink.links_votable(ids, request.user, _datalink_urls(request))
    return _votable(body, content_type="application/x-votable+xml;content=datalink")


@csrf_exempt
@require_http_methods(["GET", "POST"])
@answers_vo_errors("SODA")
def soda_sync(request):
    try:
        params = services.collect_parameters(request.GET, request.POST)
        made = soda.cutout(params, request.user)
    except MemoryError:
        return _votable(error_votable("the cutout did not fit in the server's memory", FATAL), 500)
    return _cutout_response(request, made)


def _cutout_response(request, made) -> HttpResponse:
    """A cutout is the same bytes for the same request, so it is served like a file: a strong
    ETag (its sha256), conditional requests and one byte range, for clients that resume."""
    content, size = made.content, len(made.content)
    etag = f'"{hashlib.sha256(content).hexdigest()}"'
    conditional = get_conditional_response(request, etag=etag)
    if conditional is not None:          # 304 Not Modified or 412 Precondition Failed
        conditional["ETag"] = etag
        return conditional
    byte_range = None
    if_range = request.headers.get("If-Range")
    if if_range is None or if_range.strip() == etag:
        byte_range = downloads.parse_range(request.headers.get("Range"), size)
    if byte_range == downloads.UNSATISFIABLE:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    if byte_range is not None:
        response = HttpResponse(content[byte_range.start:byte_range.end + 1], status=206,
                                content_type="application/fits")
        response["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"
    else:
        response = HttpResponse(content, content_type="application/fits")
    response["Content-Disposition"] = f'attachment; filename="{made.filename}"'
    response["Content-Length"] = str(len(response.content))
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = etag
    return response


def _capabilities(body: str) -> HttpResponse:
    return HttpResponse(services.capabilities_document(body), content_type="text/xml; charset=utf-8")


@require_GET
def capabilities(request):
    return HttpResponse(services.capabilities_xml(_sia_base(request)), content_type="text/xml; charset=utf-8")


def _service_capabilities(request, service: str, standard_id: str, endpoint: str) -> HttpResponse:
    """A VOSI capabilities document of one service: its own capabilities and availability
    documents (routes vo:<service>-capabilities, vo:<service>-availability) and its endpoint."""
    body = services.vosi_capability("ivo://ivoa.net/std/VOSI#capabilities", _url(request, f"vo:{service}-capabilities"))
    body += services.vosi_capability("ivo://ivoa.net/std/VOSI#availability", _url(request, f"vo:{service}-availability"))
    body += services.vosi_capability(standard_id, _url(request, endpoint))
    return _capabilities(body)


@require_GET
def datalink_capabilities(request):
    return _service_capabilities(request, "datalink", datalink.DATALINK_STANDARD_ID, "vo:links")


@require_GET
def soda_capabilities(request):
    return _service_capabilities(request, "soda", datalink.SODA_STANDARD_ID, "vo:soda")


@require_GET
def availability(request):
    """VOSI availability: the document is always answered (HTTP 200, as VOSI asks); when the
    database cannot be reached it says available=false and why."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        available, note = True, "the service is accepting queries"
    except DatabaseError as exc:
        available, note = False, f"{DATABASE_DOWN} ({exc.__class__.__name__})"
    return HttpResponse(services.availability_xml(available, note), content_type="text/xml; charset=utf-8")


def _site_root(request) -> str:
    return request.build_absolute_uri("/").rstrip("/")


@require_GET
def cone(request):
    """Simple Cone Search 1.03 (RA, DEC, SR, VERB); its errors are SCS's Error INFO."""
    try:
        params = services.collect_parameters(request.GET)
        exposures, verb, overflow, maxrec = scs.search(params, request.user)
    except UserError as exc:
        return _votable(scs.error_votable(str(exc)), 400)
    except DatabaseError as exc:
        return _database_down("cone search", exc)
    body = scs.results_votable(exposures, verb, overflow, maxrec, lambda e: _url(request, "archive:download", pk=e.pk))
    return _votable(body)


@require_GET
def cone_capabilities(request):
    body = services.vosi_capability("ivo://ivoa.net/std/VOSI#capabilities", _url(request, "vo:scs-capabilities"))
    body += services.vosi_capability("ivo://ivoa.net/std/VOSI#availability", _url(request, "vo:scs-availability"))
    body += scs.capabilities_body(_url(request, "vo:scs"))
    return _capabilities(body)


@require_GET
def coverage_map(request, output):
    """The public coverage (MOC) of every band or one (?band=r): moc.fits, moc.json, map.png."""
    from archive.services import coverage

    try:
        path = coverage.coverage_file(request.GET.get("band"), output)
    except coverage.CoverageError as exc:
        return HttpResponse(f"{exc}\n", status=400, content_type="text/plain; charset=utf-8")
    response = FileResponse(open(path, "rb"), content_type=coverage.FORMATS[output])
    response["Cache-Control"] = "public, max-age=3600"
    if output != "png":
        response["Content-Disposition"] = f'inline; filename="{path.name}"'
    return response


@csrf_exempt
@require_http_methods(["GET", "POST"])
@answers_vo_errors("TAP")
def tap_sync(request):
    params = services.collect_parameters(request.GET, request.POST)
    output = tap_output.choose(params)
    uploads = tap_upload.from_request(params, request.FILES)
    result = tap.run_sync(params, request.user, _site_root(request), uploads=uploads)
    body = tap_output.render(result, output, _url(request, "vo:links"))
    return HttpResponse(body, content_type=output.mime)


def _client(request) -> str:
    return uws.client_key(request.user, request.META.get("REMOTE_ADDR", ""))


def _xml(body: bytes, status: int = 200) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/xml; charset=utf-8")


def _job_url(request, job) -> str:
    return _url(request, "vo:tap-job", job_id=job.id)


def _see_job(request, job) -> HttpResponse:
    return HttpResponseRedirect(_job_url(request, job), status=303)


def _tap_ready():
    ok, why = tap.available()
    if not ok:
        raise tap.TapError(why, "FatalFault", 501)


@csrf_exempt
@require_http_methods(["GET", "POST"])
@answers_vo_errors("TAP async")
def tap_async(request):
    """UWS job list: GET lists the caller's jobs (PHASE, AFTER, LAST filter it), POST creates one."""
    _tap_ready()
    params = services.collect_parameters(request.GET, request.POST)
    if request.method == "POST":
        job = uws.create(params, request.FILES, request.user, _client(request), _site_root(request),
                         _url(request, "vo:links"))
        return _see_job(request, job)
    last = params.get("LAST")
    after = None
    if params.get("AFTER"):
        from django.utils.dateparse import parse_datetime

        after = parse_datetime(params["AFTER"][0])
        if after is None:
            raise uws.JobError(f"AFTER: {params['AFTER'][0]!r} is not an ISO 8601 time")
    phases = [p.strip().upper() for p in params.get("PHASE", [])]
    if last and not last[0].strip().isdigit():
        raise uws.JobError(f"LAST: {last[0]!r} is not a whole number")
    jobs = uws.jobs_of(_client(request), phases, after, int(last[0]) if last else None)
    return _xml(uws.jobs_xml(jobs, _url(request, "vo:tap-async").rstrip("/")))


@csrf_exempt
@require_http_methods(["GET", "POST", "DELETE"])
@answers_vo_errors("TAP async")
def tap_job(request, job_id):
    job = uws.owned_job(job_id, _client(request))
    if request.method == "DELETE" or (request.method == "POST" and
                                      request.POST.get("ACTION", "").strip().upper() == "DELETE"):
        uws.destroy(job)
        return HttpResponseRedirect(_url(request, "vo:tap-async"), status=303)
    if request.method == "POST":
        raise uws.JobError("POST on a job: ACTION=DELETE, or POST to its phase, executionduration, destruction "
                           "or parameters")
    params = services.collect_parameters(request.GET)
    job = uws.wait(job, (params.get("WAIT") or [None])[0], (params.get("PHASE") or [None])[0])
    return _xml(uws.job_xml(job, _job_url(request, job)))


@csrf_exempt
@require_http_methods(["GET", "POST"])
@answers_vo_errors("TAP async")
def tap_job_part(request, job_id, part):
    job = uws.owned_job(job_id, _client(request))
    if request.method == "POST":
        params = services.collect_parameters(request.POST)
        if part == "phase":
            phase = (params.get("PHASE") or [""])[0].strip().upper()
            if phase == "RUN":
                uws.run(job)
            elif phase == "ABORT":
                uws.abort(job)
            else:
                raise uws.JobError(f"PHASE: RUN or ABORT, not {phase!r}")
        elif part == "executionduration":
            uws.set_duration(job, (params.get("EXECUTIONDURATION") or [""])[0])
        elif part == "destruction":
            uws.set_destruction(job, (params.get("DESTRUCTION") or [""])[0])
        elif part == "parameters":
            uws.set_parameters(job, params)
        else:
            raise uws.JobError(f"{part} cannot be changed")
        return _see_job(request, job)
    text = {"phase": job.phase, "executionduration": str(job.execution_duration),
            "destruction": uws._time(job.destruction), "quote": "", "runid": job.run_id,
            "owner": job.owner.get_username() if job.owner_id else ""}
    if part in text:
        return HttpResponse(text[part], content_type="text/plain; charset=utf-8")
    if part == "error":
        if job.phase != "ERROR":
            raise uws.JobError(f"the job is {job.phase}: it has no error", "NotFoundFault", 404)
        return _votable(error_votable(job.error))
    if part == "parameters":
        xml = uws.job_xml(job, _job_url(request, job)).decode()
        start, end = xml.index("<uws:parameters>"), xml.index("</uws:parameters>") + len("</uws:parameters>")
        return _xml(('<?xml version="1.0" encoding="UTF-8"?>\n' + xml[start:end].replace(
            "<uws:parameters>", f'<uws:parameters xmlns:uws="{uws.UWS_NS}">', 1) + "\n").encode())
    if part == "results":
        return _xml(uws.results_xml(job, _job_url(request, job)))
    raise uws.JobError(f"a job has no {part!r}", "NotFoundFault", 404)


@require_GET
@answers_vo_errors("TAP async")
def tap_job_result(request, job_id):
    job = uws.owned_job(job_id, _client(request))
    path = uws.result_path(job)
    response = FileResponse(open(path, "rb"), content_type=job.result_mime)
    response["Content-Length"] = str(path.stat().st_size)
    return response


@require_GET
def tap_capabilities(request):
    return _capabilities(tap.capabilities_body(_url(request, "vo:tap-sync").rsplit("/sync", 1)[0]))


@require_GET
def tap_examples(request):
    return HttpResponse(tap_examples_doc.examples_xhtml(), content_type="application/xhtml+xml; charset=utf-8")


@require_GET
def tap_tables(request):
    response = HttpResponse(tap.tables_xml(tap.wants_esa_flags(request.headers.get("User-Agent"))),
                            content_type="text/xml; charset=utf-8")
    response["Vary"] = "User-Agent"
    return response


@require_GET
def tap_availability(request):
    try:
        available, note = tap.available()
    except DatabaseError as exc:
        available, note = False, f"{DATABASE_DOWN} ({exc.__class__.__name__})"
    return HttpResponse(services.availability_xml(available, note), content_type="text/xml; charset=utf-8")
