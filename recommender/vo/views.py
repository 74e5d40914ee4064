"""SIA v2 and VOSI views: thin wrappers over `recommender.vo.services`. Every answer is a
VOTable or VOSI XML document, errors included (HTTP 400 for a bad query, 503 when the
database is down), so VO clients always get something they can parse."""
import logging

from django.db import DatabaseError, connection
from django.http import HttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from . import services

logger = logging.getLogger(__name__)
DATABASE_DOWN = "the archive database is unavailable; try again shortly"


def _votable(body: bytes, status: int = 200, **headers) -> HttpResponse:
    response = HttpResponse(body, status=status, content_type=f"{services.VOTABLE_MIME}; charset=utf-8")
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _base_url(request) -> str:
    return request.build_absolute_uri(reverse("vo:query")).rsplit("/query", 1)[0]


# A query changes nothing, and VO clients POST without a CSRF token (SIA 2.0 allows POST).
@csrf_exempt
@require_http_methods(["GET", "POST"])
def query(request):
    try:
        params = services.collect_parameters(request.GET, request.POST)
        result = services.run_query(params, request.user)
        body = services.results_votable(result, lambda e: request.build_absolute_uri(
            reverse("archive:download", kwargs={"pk": e.pk})))
    except services.SiaError as exc:
        return _votable(services.error_votable(str(exc)), 400)
    except DatabaseError as exc:
        logger.warning("SIA query: database unavailable (%s)", exc)
        return _votable(services.error_votable(DATABASE_DOWN), 503, Retry_After="30")
    return _votable(body)


@require_GET
def capabilities(request):
    return HttpResponse(services.capabilities_xml(_base_url(request)), content_type="text/xml; charset=utf-8")


@require_GET
def availability(request):
    """VOSI availability: the document is always answered (HTTP 200, as VOSI asks); when the
    database cannot be reached it says available=false and why."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        available, note = True, "the SIA service is accepting queries"
    except DatabaseError as exc:
        available, note = False, f"{DATABASE_DOWN} ({exc.__class__.__name__})"
    return HttpResponse(services.availability_xml(available, note), content_type="text/xml; charset=utf-8")
