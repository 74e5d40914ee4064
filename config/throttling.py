"""Rate limits shared by every worker process (they count in Django's default cache, the
database cache unless CACHE_URL says otherwise) and keyed on the real client address that
`config.middleware.ClientAddressMiddleware` put in REMOTE_ADDR, never on a header the client
wrote. An IPv6 client is counted per /64, the block a single subscriber is usually given.

The same classes throttle the API (throttle_classes) and plain Django views (`check`), so the
upload page and the upload API share one budget per client."""
from __future__ import annotations

import ipaddress

from rest_framework.throttling import SimpleRateThrottle

from . import errors


def client_ident(request) -> str:
    address = request.META.get("REMOTE_ADDR", "")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class ArchiveThrottle(SimpleRateThrottle):
    """Per user when authenticated, per client address otherwise."""

    def get_ident(self, request):
        return client_ident(request)

    def get_cache_key(self, request, view):
        user = getattr(request, "user", None)
        ident = f"user-{user.pk}" if user is not None and user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class UploadThrottle(ArchiveThrottle):
    """Searches by an uploaded file (API and page): the expensive ones."""

    scope = "uploads"


class WriteThrottle(ArchiveThrottle):
    """Experts' writes: cell labels and prototype flags."""

    scope = "writes"


class LoginThrottle(ArchiveThrottle):
    """Password checks (the token endpoint and the login page), always per client address, so
    guessing one account's password from one address is slow whoever it claims to be."""

    scope = "login"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def check(request, throttle_class):
    """For a plain Django view: None when the request may go on, else the 429 answer (in the
    route's error shape, with Retry-After)."""
    throttle = throttle_class()
    if throttle.allow_request(request, None):
        return None
    wait = throttle.wait()
    response = errors.error_response(request, 429, "too many requests from this client; "
                                     f"try again in {int(wait or 1)} s", "throttled")
    response["Retry-After"] = str(int(wait or 1))
    return response
