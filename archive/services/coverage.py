"""The archive's public coverage as a MOC (desom.coverage): the footprints of the science
exposures anyone may see (the access rule for an anonymous user, so no proprietary footprint
shapes it), all bands or one. Built once per state of the archive and day (an exposure becomes
public on its release date) and kept as files beside the other figures."""
from __future__ import annotations

import datetime as dt
import hashlib

from django.contrib.auth.models import AnonymousUser
from django.db.models import Count, Max

from desom import coverage
from desom import footprint as fp
from desom.errors import UserError

from .. import selectors
from .figures import cache_dir, cached_png

BANDS = ("u", "g", "r", "i", "z")
FORMATS = {"fits": "application/fits", "json": "application/json", "png": "image/png"}


class CoverageError(UserError):
    """A coverage request for a band or format the archive does not have."""


def public_exposures(band: str | None = None):
    queryset = selectors.visible_science_exposures(AnonymousUser()).exclude(s_region="")
    return queryset.filter(band__iexact=band) if band else queryset


def check_band(band: str | None) -> str | None:
    if band in (None, ""):
        return None
    if band.strip().lower() not in BANDS:
        raise CoverageError(f"band: {band!r} is not one of {', '.join(BANDS)} (or leave it out for all bands)")
    return band.strip().lower()


def _stamp(band: str | None) -> str:
    state = public_exposures(band).aggregate(n=Count("id"), last=Max("id"), changed=Max("updated_at"))
    return hashlib.sha256(repr((band, state, dt.date.today(), coverage.DEFAULT_DEPTH)).encode()).hexdigest()[:16]


def coverage_moc(band: str | None = None):
    rows = public_exposures(band).order_by("pk").values_list("s_region", flat=True).iterator(chunk_size=2000)
    return coverage.footprints_moc(fp.from_dali(text) for text in rows)


def coverage_file(band: str | None, output: str):
    """The cached file of the public coverage of `band` (None: every band) as fits, json or png."""
    band = check_band(band)
    if output not in FORMATS:
        raise CoverageError(f"format: {output!r} is not one of {', '.join(FORMATS)}")
    name = f"moc-{band or 'all'}-{_stamp(band)}.{output}"
    title = f"public coverage, {band} band" if band else "public coverage, all bands"

    def render() -> bytes:
        moc = coverage_moc(band)
        return {"fits": coverage.moc_fits, "json": coverage.moc_json,
                "png": lambda m: coverage.coverage_png(m, title)}[output](moc)

    return cached_png(cache_dir("coverage") / name, render)
