"""Errors turned into each surface's own shape, in one place.

Every error an API route answers, whether DRF raised it, Django's URL resolver found no route
(a malformed id), a middleware refused the request (oversized body, NUL characters) or a view
failed, has one JSON shape:

    {"status": 404, "code": "not_found", "detail": "a sentence for a person",
     "fields": {"k": ["k must lie in 1..200"]}}        # "fields" only for invalid input

VO routes answer a VOTable error document (settings.ARCHIVE_ERROR_SURFACES maps path prefixes
to a renderer; a new VO route adds its prefix there), and pages answer HTML.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.utils.html import escape
from django.utils.module_loading import import_string

log = logging.getLogger(__name__)

CODES = {400: "bad_request", 401: "not_authenticated", 403: "permission_denied", 404: "not_found",
         405: "method_not_allowed", 413: "request_too_large", 415: "unsupported_media_type",
         429: "throttled", 500: "server_error", 503: "unavailable"}


def error_body(status: int, detail: str, code: str | None = None, fields: dict | None = None) -> dict:
    body = {"status": int(status), "code": code or CODES.get(int(status), "error"), "detail": str(detail)}
    if fields:
        body["fields"] = fields
    return body


def json_error(request, status, detail, code=None, fields=None):
    return JsonResponse(error_body(status, detail, code, fields), status=status)


def votable_error(request, status, detail, code=None, fields=None):
    from recommender.vo import votable as vo

    return HttpResponse(vo.error_votable(str(detail)), status=status,
                        content_type=f"{vo.VOTABLE_MIME}; charset=utf-8")


def html_error(request, status, detail, code=None, fields=None):
    title = {404: "Not found", 403: "Forbidden", 413: "Too large", 429: "Too many requests"}.get(
        int(status), "Error" if status < 500 else "Server error")
    body = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p>{escape(detail)}</p><p><a href=\"/\">Search the archive</a></p></body></html>")
    return HttpResponse(body, status=status, content_type="text/html; charset=utf-8")


def surface(path: str) -> str:
    for prefix, renderer in settings.ARCHIVE_ERROR_SURFACES:
        if path.startswith(prefix):
            return renderer
    return "config.errors.html_error"


def error_response(request, status: int, detail: str, code: str | None = None, fields: dict | None = None):
    """The error in the shape of the route `request` asked for."""
    return import_string(surface(request.path_info))(request, status, detail, code, fields)


def _message(exception, default: str) -> str:
    text = str(exception.args[0]) if getattr(exception, "args", None) else ""
    # Django's own 404s carry a dict ("tried" URL patterns) when no route matched.
    return text if text and not text.startswith("{") else default


# --- Django's handler400/403/404/500 (config.urls) ------------------------------------------

def bad_request(request, exception=None):
    name = type(exception).__name__ if exception is not None else ""
    if name == "RequestDataTooBig" or name == "TooManyFieldsSent" or name == "TooManyFilesSent":
        return error_response(request, 413, f"the request is too large ({exception})", "request_too_large")
    return error_response(request, 400, "the request could not be understood", "bad_request")


def permission_denied(request, exception=None):
    return error_response(request, 403, _message(exception, "you may not do this"), "permission_denied")


def page_not_found(request, exception=None):
    return error_response(request, 404, _message(exception, f"nothing at {request.path_info}"), "not_found")


def api_not_found(request, rest=""):
    """The last route under /api/: a path no API route matched is a JSON 404 in every mode
    (Django's handler404 answers only with DEBUG off). A path that matches once a slash is added
    is redirected there, as APPEND_SLASH would."""
    from django.http import HttpResponsePermanentRedirect
    from django.urls import Resolver404, resolve

    path = request.path_info
    if not path.endswith("/"):
        try:
            match = resolve(path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            query = request.META.get("QUERY_STRING", "")
            return HttpResponsePermanentRedirect(request.path + "/" + (f"?{query}" if query else ""))
    return error_response(request, 404, f"no API route at {path} (the routes are listed at /api/ and "
                                        "documented at /api/docs/)", "not_found")


def server_error(request):
    return error_response(request, 500, "the server failed to answer; the failure is logged", "server_error")
