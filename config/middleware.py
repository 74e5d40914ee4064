"""Middleware of the site as a whole: who the client really is, limits every request meets
before a view runs, and the privacy of authenticated answers.

Order (config.settings.MIDDLEWARE): ClientAddressMiddleware first, so nothing downstream (the
HTTPS redirect, throttles, logs) ever reads a forwarded header a client wrote itself;
RequestLimitsMiddleware before sessions and CSRF read the body; PrivateAnswersMiddleware last
to run on the way out of the authentication middlewares.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.utils.cache import patch_cache_control, patch_vary_headers

from . import errors

# Headers a proxy writes. From a peer that is not a configured trusted proxy they are dropped,
# so neither Django (SECURE_PROXY_SSL_HEADER, USE_X_FORWARDED_HOST) nor our code can be fooled.
FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                     "HTTP_X_FORWARDED_PORT", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
PEER_KEY = "archive.peer_address"


@lru_cache(maxsize=8)
def _networks(spec: tuple[str, ...]):
    return tuple(ipaddress.ip_network(item, strict=False) for item in spec)


def trusted_networks():
    return _networks(tuple(settings.TRUSTED_PROXIES))


def _parse_ip(text: str):
    text = (text or "").strip()
    if text.startswith("[") and "]" in text:          # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:                         # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_trusted(address, networks) -> bool:
    return address is not None and any(address in network for network in networks)


def client_address(peer: str, forwarded_for: str | None, networks) -> str:
    """The real client of a request: the peer itself unless the peer is a trusted proxy; then
    the X-Forwarded-For chain is read from the right, skipping trusted proxies, and the first
    address no trusted proxy vouches for is the client. A garbled entry stops the walk at the
    last hop that was trusted (whatever a client prepends to the header is never believed)."""
    current = _parse_ip(peer)
    if not _is_trusted(current, networks) or not forwarded_for:
        return str(current) if current is not None else (peer or "")
    for item in reversed(forwarded_for.split(",")):
        hop = _parse_ip(item)
        if hop is None:
            break
        current = hop
        if not _is_trusted(hop, networks):
            break
    return str(current)


class ClientAddressMiddleware:
    """REMOTE_ADDR becomes the real client address (see `client_address`); the peer's own
    address is kept under META["archive.peer_address"]. Forwarded headers from an untrusted peer
    are removed."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        meta = request.META
        peer = meta.get("REMOTE_ADDR", "")
        networks = trusted_networks()
        meta[PEER_KEY] = peer
        if _is_trusted(_parse_ip(peer), networks):
            meta["REMOTE_ADDR"] = client_address(peer, meta.get("HTTP_X_FORWARDED_FOR"), networks)
        else:
            for header in FORWARDED_HEADERS:
                meta.pop(header, None)
        return self.get_response(request)


def _has_nul(querydict) -> bool:
    return any("\x00" in key or any("\x00" in value for value in values) for key, values in querydict.lists())


class RequestLimitsMiddleware:
    """Limits every route meets before its view: a body larger than the route allows is
    refused from its Content-Length before a byte of it is read (413), and a NUL character in
    a query or form parameter is a 400 (PostgreSQL cannot store NUL, and no parameter of this
    archive means anything with one). Errors answer in the route's own shape (config.errors)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return errors.error_response(request, 400, "the Content-Length header is not a number", "bad_request")
        limit = body_limit(request.path_info)
        if length > limit:
            return errors.error_response(
                request, 413, f"the request body is {length} bytes; this route accepts at most {limit}",
                "request_too_large")
        if _has_nul(request.GET):
            return errors.error_response(request, 400, "query parameters must not contain NUL characters",
                                         "nul_character")
        content_type = request.META.get("CONTENT_TYPE", "")
        if request.method == "POST" and content_type.startswith("application/x-www-form-urlencoded"):
            if _has_nul(request.POST):
                return errors.error_response(request, 400, "form fields must not contain NUL characters",
                                             "nul_character")
        return self.get_response(request)


def body_limit(path: str) -> int:
    """Largest request body a route accepts: the upload routes take a file up to their limit
    (plus room for the multipart envelope); every other route a small form or JSON document."""
    envelope = 64 * 1024
    for prefix, setting in settings.ARCHIVE_UPLOAD_ROUTES.items():
        if path.startswith(prefix):
            return int(getattr(settings, setting)) + envelope
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) + envelope


class PrivateAnswersMiddleware:
    """An answer to an authenticated user (session or token) is theirs: `Cache-Control:
    private`, so no shared cache stores and replays it to someone else. Every answer varies on
    Authorization, because a token changes what the same URL shows."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        patch_vary_headers(response, ("Authorization",))
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            cache_control = response.get("Cache-Control", "")
            if "public" in cache_control:
                directives = [d.strip() for d in cache_control.split(",") if d.strip() and d.strip() != "public"]
                response["Cache-Control"] = ", ".join(directives)
            patch_cache_control(response, private=True)
        return response
