"""Access tokens for scripts: a username and password in, a secret out; the secret then opens
every route a session opens (API, downloads, previews, figures, VO). Only the secret's sha256
is stored, so a copy of the database gives no working token. A token is revoked on its own
(or all of a user's at once) and expires after ARCHIVE_TOKEN_DAYS."""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from django.conf import settings
from django.contrib.auth import authenticate
from django.utils import timezone

from desom.errors import UserError

from ..models import AccessToken
from ..text import check_text

PREFIX = "desom_"
# How often last_used_at is written: a script making thousands of requests must not turn every
# read into a database write.
LAST_USED_RESOLUTION = dt.timedelta(minutes=10)
MAX_TOKENS_PER_USER = 50


class TokenError(UserError):
    """A token that cannot be issued as asked; the message says why."""


class InvalidCredentials(TokenError):
    """The username and password do not open an active account."""


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def issue_token(user, *, name: str = "", days: int | None = None) -> tuple[AccessToken, str]:
    """A new token for `user`; returns (row, secret). The secret is shown once, never stored."""
    if user is None or not user.is_active:
        raise TokenError("only an active user may hold a token")
    if AccessToken.objects.filter(user=user, revoked_at__isnull=True).count() >= MAX_TOKENS_PER_USER:
        raise TokenError(f"a user may hold at most {MAX_TOKENS_PER_USER} live tokens; revoke one first")
    check_text(name, "a token's name", error=TokenError)
    days = settings.ARCHIVE_TOKEN_DAYS if days is None else days
    secret = PREFIX + secrets.token_urlsafe(32)
    token = AccessToken.objects.create(
        user=user, name=name[:64], prefix=secret[:len(PREFIX) + 6], key_hash=_hash(secret),
        expires_at=timezone.now() + dt.timedelta(days=days) if days else None)
    return token, secret


def token_for_password(request, username: str, password: str, *, name: str = "") -> tuple[AccessToken, str]:
    """Check a username and password (Django's authentication backends) and issue a token."""
    user = authenticate(request, username=username, password=password)
    if user is None:
        raise InvalidCredentials("the username or password is wrong, or the account is inactive")
    return issue_token(user, name=name)


def user_for_secret(secret: str):
    """(user, token) for a live secret, or None: unknown, revoked, expired, or the user is
    inactive."""
    if not secret or len(secret) > 200 or not secret.startswith(PREFIX):
        return None
    token = (AccessToken.objects.select_related("user").filter(key_hash=_hash(secret), revoked_at__isnull=True)
             .first())
    now = timezone.now()
    if token is None or not token.user.is_active or (token.expires_at is not None and token.expires_at <= now):
        return None
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        AccessToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user, token


def revoke(token: AccessToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])


def live_tokens(user):
    now = timezone.now()
    return (AccessToken.objects.filter(user=user, revoked_at__isnull=True)
            .exclude(expires_at__lte=now).order_by("-created_at"))
