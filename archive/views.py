"""Plain Django views of the archive: health and readiness, download and preview. Pages come
with the templates; the REST API lives in `archive.api`. A token (archive.authentication)
opens these exactly as a session does."""
import logging
import os

from django.db import connection
from django.http import FileResponse, Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.cache import get_conditional_response
from django.views.decorators.http import require_http_methods

from . import selectors
from .services import downloads, figures, health as health_checks, quality
from .text import header_safe

log = logging.getLogger(__name__)


def health(request):
    """Liveness and database reachability, for load balancers and the VO availability check."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        database = "ok"
        status = 200
    except Exception as exc:  # the DB being down is the case this endpoint exists to report
        database = f"unavailable: {exc.__class__.__name__}"
        status = 503
    return JsonResponse({"status": "ok" if status == 200 else "degraded", "database": database,
                         "engine": connection.vendor}, status=status)


def live(request):
    """Liveness: the process answers (nothing else is asked, so a slow database never gets a
    healthy worker restarted)."""
    return JsonResponse({"status": "ok", "pid": os.getpid()})


def ready(request):
    """Readiness: this worker can serve searches now (database, shared cache, static files,
    index files of the active model). 503 with the failing checks otherwise."""
    checks = health_checks.readiness()
    ok = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503)


@require_http_methods(["GET", "HEAD"])
def download(request, pk):
    """The exposure's FITS file: its sha256 in ETag/Repr-Digest, byte ranges (resumable), and
    its quality in X-Quality-* headers."""
    exposure = selectors.visible_exposure_or_404(request.user, pk)
    try:
        handle = open(exposure.file_path, "rb")
    except OSError:
        raise Http404("the exposure's file is not available on this server")
    size = os.fstat(handle.fileno()).st_size
    if exposure.file_size and size != exposure.file_size:
        handle.close()
        log.error("exposure %s: %s holds %d bytes, the archive recorded %d", exposure.pk, exposure.file_path,
                  size, exposure.file_size)
        raise Http404("the exposure's file on this server does not match the archive's record")
    headers = downloads.digest_headers(exposure)
    conditional = get_conditional_response(request, etag=headers.get("ETag"))
    if conditional is not None:          # 304 Not Modified or 412 Precondition Failed
        handle.close()
        for name, value in headers.items():
            conditional[name] = value
        return conditional
    byte_range = None
    if_range = request.headers.get("If-Range")
    if if_range is None or if_range.strip() == headers.get("ETag"):
        byte_range = downloads.parse_range(request.headers.get("Range"), size)
    if byte_range == downloads.UNSATISFIABLE:
        handle.close()
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    name = downloads.download_name(exposure)
    if request.method == "HEAD":
        handle.close()
        response = HttpResponse(content_type="application/fits")
        response["Content-Disposition"] = f'attachment; filename="{name}"'
    elif byte_range is not None:
        response = StreamingHttpResponse(downloads.iter_range(handle, byte_range), status=206,
                                         content_type="application/fits")
        response["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
    else:
        response = FileResponse(handle, as_attachment=True, filename=name, content_type="application/fits")
    response["Content-Length"] = str(byte_range.length if byte_range is not None and request.method != "HEAD"
                                      else size)
    response["Accept-Ranges"] = "bytes"
    for header, value in headers.items():
        response[header] = value
    response["Cache-Control"] = "public, max-age=3600" if exposure.is_public else "private, max-age=3600"
    verdict = quality.quality_verdicts([exposure])[0]
    response["X-Quality-Label"] = header_safe(verdict.label or "unlabelled")
    response["X-Quality-Cell"] = "" if verdict.cell is None else str(verdict.cell)
    response["X-Quality-Flags"] = header_safe(",".join(f["name"] for f in verdict.flags))
    response["X-Quality-Warnings"] = header_safe(" | ".join(verdict.warnings))
    return response


def preview(request, pk):
    exposure = selectors.visible_exposure_or_404(request.user, pk)
    try:
        path = figures.exposure_preview(exposure)
    except Exception as exc:  # an unreadable file should not take the page down
        raise Http404(f"no preview: {exc}")
    response = FileResponse(open(path, "rb"), content_type="image/png")
    response["Cache-Control"] = "public, max-age=86400" if exposure.is_public else "private, max-age=3600"
    return response
