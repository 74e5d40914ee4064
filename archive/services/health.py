"""Readiness checks. The archive checks what it owns (database, shared cache, static files);
other apps register their own (the recommender its index files) with `register`, so the archive
never imports them."""
from __future__ import annotations

import time
import uuid
from typing import Callable

from django.conf import settings
from django.core.cache import cache
from django.db import connection

_checks: dict[str, Callable[[], dict]] = {}


def register(name: str, check: Callable[[], dict]) -> None:
    """`check()` returns {"ok": bool, ...details}; an exception counts as not ok."""
    _checks[name] = check


def _database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True, "engine": connection.vendor}


def _cache() -> dict:
    key, value = f"readiness-{uuid.uuid4().hex}", str(time.time())
    cache.set(key, value, 30)
    ok = cache.get(key) == value
    cache.delete(key)
    return {"ok": ok, "backend": settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]}


def _static() -> dict:
    backend = settings.STORAGES["staticfiles"]["BACKEND"]
    if "Manifest" not in backend:
        return {"ok": True, "manifest": False}
    manifest = settings.STATIC_ROOT / "staticfiles.json"
    return {"ok": manifest.exists(), "manifest": str(manifest) if manifest.exists() else "missing: run collectstatic"}


def readiness() -> dict[str, dict]:
    results = {}
    for name, check in {"database": _database, "cache": _cache, "static": _static, **_checks}.items():
        try:
            results[name] = check()
        except Exception as exc:  # a failing check is what readiness reports
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return results
