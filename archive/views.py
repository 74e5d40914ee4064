"""Plain Django views of the archive: health, download and preview. Pages come with the
templates; the REST API lives in `archive.api`."""
from django.db import connection
from django.http import FileResponse, Http404, JsonResponse

from . import selectors
from .services import figures, quality


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


def _visible_or_404(request, pk):
    exposure = selectors.visible_exposures(request.user).filter(pk=pk).first()
    if exposure is None:
        # Proprietary exposures are not described to those not entitled: the same answer as absent.
        raise Http404("no such exposure, or it is still proprietary")
    return exposure


def _header_text(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii").replace("\n", " ")[:900]


def download(request, pk):
    """Stream the exposure's FITS file; its quality travels in the response headers."""
    exposure = _visible_or_404(request, pk)
    try:
        handle = open(exposure.file_path, "rb")
    except OSError:
        raise Http404("the exposure's file is not available on this server")
    verdict = quality.quality_verdicts([exposure])[0]
    response = FileResponse(handle, as_attachment=True, filename=exposure.filename or f"{exposure.expnum}.fits",
                            content_type="application/fits")
    response["X-Quality-Label"] = _header_text(verdict.label or "unlabelled")
    response["X-Quality-Cell"] = "" if verdict.cell is None else str(verdict.cell)
    response["X-Quality-Flags"] = _header_text(",".join(f["name"] for f in verdict.flags))
    response["X-Quality-Warnings"] = _header_text(" | ".join(verdict.warnings))
    return response


def preview(request, pk):
    exposure = _visible_or_404(request, pk)
    try:
        path = figures.exposure_preview(exposure)
    except Exception as exc:  # an unreadable file should not take the page down
        raise Http404(f"no preview: {exc}")
    response = FileResponse(open(path, "rb"), content_type="image/png")
    response["Cache-Control"] = "public, max-age=86400" if exposure.is_public else "private, max-age=3600"
    return response
