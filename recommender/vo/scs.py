"""Simple Cone Search 1.03 over the archive's exposures: RA, DEC, SR (degrees, ICRS) select the
visible science exposures whose footprint meets the cone, with `archive.geometry` (the same
question, and answer, as SIA's POS=CIRCLE and the REST cone). The rows are ObsCore rows
(recommender.vo.obscore) with SCS's UCD1 markers on the id and the position; VERB=1 gives those
three columns, 2 (the default) the useful ones, 3 every ObsCore column. Errors are SCS's: an
INFO named Error at the top of the VOTable (and DALI's QUERY_STATUS for clients that read it)."""
from __future__ import annotations

import math
from dataclasses import replace

from astropy.io.votable.tree import Info, Resource

from desom.errors import UserError

from archive import geometry, selectors
from archive.services import quality

from . import obscore
from .votable import add_table, new_votable, serialise, status_info

SCS_STANDARD_ID = "ivo://ivoa.net/std/ConeSearch"
MAX_SR_DEG = 30.0
DEFAULT_MAXREC = 10_000
MAX_MAXREC = 10_000
# SCS 1.03 names its three required columns by UCD1.
_UCD1 = {"obs_id": "ID_MAIN", "s_ra": "POS_EQ_RA_MAIN", "s_dec": "POS_EQ_DEC_MAIN"}
_VERB2 = ["obs_id", "s_ra", "s_dec", "obs_publisher_did", "access_url", "target_name", "s_region", "t_min",
          "t_exptime", "em_min", "em_max", "desom2_cell", "quality_label", "quality_flags", "label_probability"]


class ConeError(UserError):
    """A cone request the service cannot answer; the message names the parameter."""


def _one(params, name: str, required: bool = True) -> str | None:
    values = params.get(name, [])
    if len(values) > 1:
        raise ConeError(f"{name}: give one value, not {len(values)}")
    if not values or not values[0].strip():
        if required:
            raise ConeError(f"{name}: required (RA, DEC and SR in degrees)")
        return None
    return values[0].strip()


def _number(params, name: str, lo: float, hi: float) -> float:
    text = _one(params, name)
    try:
        value = float(text)
    except ValueError:
        raise ConeError(f"{name}: {text!r} is not a number") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ConeError(f"{name}: {text} must lie in [{lo:g}, {hi:g}]")
    return value


def columns(verb: int):
    named = {c.name: c for c in obscore.COLUMNS}
    names = list(_UCD1) if verb == 1 else _VERB2 if verb == 2 else [c.name for c in obscore.COLUMNS]
    chosen = [named[n] for n in names]
    return [replace(c, ucd=_UCD1[c.name]) if c.name in _UCD1 else c for c in chosen]


def search(params, user):
    """(exposures, verb, overflow, maxrec) of one cone request."""
    ra = _number(params, "RA", 0.0, 360.0)
    dec = _number(params, "DEC", -90.0, 90.0)
    radius = _number(params, "SR", 0.0, MAX_SR_DEG)
    verb_text = _one(params, "VERB", required=False) or "2"
    if verb_text not in ("1", "2", "3"):
        raise ConeError(f"VERB: 1, 2 or 3, not {verb_text!r}")
    maxrec_text = _one(params, "MAXREC", required=False)
    maxrec = DEFAULT_MAXREC
    if maxrec_text is not None:
        if not (maxrec_text.isascii() and maxrec_text.isdigit()):
            raise ConeError(f"MAXREC: {maxrec_text!r} is not a whole number")
        maxrec = min(int(maxrec_text), MAX_MAXREC)
    queryset = selectors.visible_science_exposures(user)
    if radius == 0:     # SCS: SR=0 asks for the columns only
        return [], int(verb_text), False, maxrec
    found = list(geometry.filter_region(queryset, [geometry.Circle(ra % 360.0, dec, radius)])
                 .order_by("expnum")[:maxrec + 1])
    return found[:maxrec], int(verb_text), len(found) > maxrec, maxrec


def results_votable(exposures, verb: int, overflow: bool, maxrec: int, download_url) -> bytes:
    votable = new_votable()
    resource = Resource(type="results")
    votable.resources.append(resource)
    resource.infos.append(status_info("OVERFLOW" if overflow else "OK",
                                      f"more than {maxrec} exposures meet the cone; narrow it" if overflow else ""))
    resource.infos.append(Info(name="standardID", value=SCS_STANDARD_ID))
    verdicts = {v.exposure_id: v for v in quality.quality_verdicts(exposures)}
    rows = [obscore.row(e, verdicts[e.pk], download_url(e)) for e in exposures]
    add_table(votable, resource, columns(verb), rows)
    return serialise(votable)


def error_votable(message: str) -> bytes:
    votable = new_votable()
    votable.infos.append(Info(name="Error", ID="Error", value=message))
    resource = Resource(type="results")
    votable.resources.append(resource)
    resource.infos.append(status_info("ERROR", f"UsageFault: {message}"))
    return serialise(votable)


def capabilities_body(query_url: str) -> str:
    from xml.sax.saxutils import escape

    return f"""  <capability standardID="{SCS_STANDARD_ID}">
    <interface xsi:type="vs:ParamHTTP" role="std" version="1.03">
      <accessURL use="base">{escape(query_url)}</accessURL>
      <queryType>GET</queryType>
      <resultType>application/x-votable+xml</resultType>
    </interface>
  </capability>
"""
