"""Token authentication in one place for every route.

`TokenAuthenticationMiddleware` reads `Authorization: Token <secret>` (or `Bearer <secret>`)
on every request, so the API, downloads, previews, figures, pages and the VO routes all see the
token's user through `request.user`, exactly as they see a session's: no view needs to know
about tokens. A token that is unknown, revoked or expired is a 401 (never a silent fall back to
anonymous, which would hide a script's broken credentials behind empty answers). A request
authenticated by a token carries no cookie, so it needs no CSRF token.

`AccessTokenAuthentication` hands DRF what the middleware found."""
from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed

from config import errors

from .services import tokens

SCHEMES = ("token", "bearer")
INVALID = "the token is unknown, revoked or expired"
CHALLENGE = 'Token realm="desom-archive"'


class InvalidToken(Exception):
    pass


def from_header(value: str):
    """(user, token) for an Authorization header of our schemes, None for no such header (or
    another scheme); InvalidToken for a token that does not open anything."""
    scheme, _, secret = (value or "").strip().partition(" ")
    if scheme.lower() not in SCHEMES:
        return None
    found = tokens.user_for_secret(secret.strip())
    if found is None:
        raise InvalidToken(INVALID)
    return found


class TokenAuthenticationMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        header = request.META.get("HTTP_AUTHORIZATION")
        if header:
            try:
                found = from_header(header)
            except InvalidToken as exc:
                response = errors.error_response(request, 401, str(exc), "invalid_token")
                response["WWW-Authenticate"] = CHALLENGE
                return response
            if found is not None:
                request.user, request.access_token = found
                request._dont_enforce_csrf_checks = True
        return self.get_response(request)


class AccessTokenAuthentication(BaseAuthentication):
    """DRF's view of the same token: the middleware's result, or (for a request that did not
    pass through the middleware stack) the header read here."""

    def authenticate(self, request):
        token = getattr(request._request, "access_token", None)
        if token is not None:
            return token.user, token
        try:
            return from_header(request.META.get("HTTP_AUTHORIZATION", ""))
        except InvalidToken as exc:
            raise AuthenticationFailed(str(exc))

    def authenticate_header(self, request):
        return CHALLENGE


class AccessTokenScheme(OpenApiAuthenticationExtension):
    target_class = "archive.authentication.AccessTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Token <secret>`; obtain a secret from POST /api/token/ with your username and password"}
