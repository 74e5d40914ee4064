"""IVOA SIA v2 over the archive: parse a query (DALI/SIA 2.0 parameters plus our own content
parameters), select the visible science exposures it matches, and write the answer as an
ObsCore VOTable with its self-description; VOSI capabilities and availability documents.

Parameter names are case-insensitive and repeatable: values of one parameter are OR-ed, the
parameters AND-ed. Errors are `SiaError` (a message for the user, answered with HTTP 400 in a
VOTable whose QUERY_STATUS is ERROR and whose message starts with UsageFault). Spatial
constraints are answered by `archive.geometry`, the same module as the REST cone and SODA.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from astropy.io.votable.tree import Info, Resource
from django.db.models import F, FloatField, Q, Value
from django.db.models.functions import Coalesce
from xml.sax.saxutils import escape

from desom.errors import UserError

from archive import geometry, selectors
from archive.models import Exposure, ExposureFlag, ModelVersion
from archive.services import quality, versions

from . import obscore
from .obscore import (ACCESS_FORMAT, CALIB_BY_LAYOUT, COLLECTION, DATAPRODUCT_TYPE, FACILITY,
                      MEGAPRIME_BANDS_M, publisher_did_prefix)
from .votable import (VOTABLE_MIME, Column, ServiceParam, add_table, new_votable,
                      serialise, service_descriptor, status_info)

SIA2_STANDARD_ID = "ivo://ivoa.net/std/SIA#query-2.0"
DATALINK_STANDARD_ID = "ivo://ivoa.net/std/DataLink#links-1.1"
DEFAULT_MAXREC = 1000
MAX_MAXREC = 10000
DEFAULT_SIMILAR_K = 10
# Longest value of any one parameter, and most values of one parameter: a query is a request
# line, not a payload.
MAX_VALUE_LENGTH = 4000
MAX_VALUES_PER_PARAMETER = 100
RESPONSE_FORMATS = {"votable", "application/x-votable+xml", "text/xml", "application/xml",
                    "application/x-votable+xml;serialization=tabledata"}

KNOWN_PARAMETERS = {
    "POS", "BAND", "TIME", "POL", "FOV", "SPATRES", "EXPTIME", "ID", "COLLECTION", "FACILITY",
    "INSTRUMENT", "DPTYPE", "CALIB", "TARGET", "TIMERES", "SPECRP", "FORMAT", "MAXREC",
    "RESPONSEFORMAT", "REQUEST", "QUALITY", "FLAG", "CELL", "SIMILAR_TO", "K", "RUNID",
}


class SiaError(UserError):
    """A query the service cannot answer as asked; the message names the parameter."""


# --- parameters ------------------------------------------------------------------------------

def collect_parameters(*querydicts) -> dict[str, list[str]]:
    """Upper-cased parameter names to their values (GET and POST together), bounded in size."""
    params: dict[str, list[str]] = {}
    for querydict in querydicts:
        for name in querydict.keys():
            values = [v for v in querydict.getlist(name)]
            params.setdefault(name.strip().upper(), []).extend(values)
    for name, values in params.items():
        if len(values) > MAX_VALUES_PER_PARAMETER:
            raise SiaError(f"{name}: at most {MAX_VALUES_PER_PARAMETER} values")
        for value in values:
            if len(value) > MAX_VALUE_LENGTH:
                raise SiaError(f"{name}: a value is longer than {MAX_VALUE_LENGTH} characters")
    return params


def _number(text: str, name: str, *, allow_infinite: bool = True) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise SiaError(f"{name}: {text!r} is not a number") from None
    if math.isnan(value) or (not allow_infinite and math.isinf(value)):
        raise SiaError(f"{name}: {text!r} is not a finite number")
    return value


def parse_interval(text: str, name: str) -> tuple[float, float]:
    """A DALI interval 'lo hi' (either may be -Inf/+Inf); one number means that exact value."""
    parts = text.split()
    if len(parts) == 1:
        value = _number(parts[0], name, allow_infinite=False)
        return value, value
    if len(parts) != 2:
        raise SiaError(f"{name}: an interval is two numbers 'lo hi', got {text!r}")
    lo, hi = (_number(p, name) for p in parts)
    if lo > hi:
        raise SiaError(f"{name}: the interval {text!r} is empty (lo > hi)")
    return lo, hi


# --- the query -------------------------------------------------------------------------------

@dataclass
class SiaQuery:
    maxrec: int = DEFAULT_MAXREC
    similar_to: Exposure | None = None
    k: int = DEFAULT_SIMILAR_K
    empty: bool = False  # a constraint no exposure can meet (DPTYPE=cube, FORMAT=image/png ...)
    ignored: list[str] = field(default_factory=list)  # parameters this service does not know


@dataclass
class SiaResult:
    exposures: list[Exposure]
    overflow: bool
    maxrec: int
    scores: dict[int, float] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def _or(values, make) -> Q:
    q = Q(pk__in=[])
    for value in values:
        q |= make(value)
    return q


def _band_q(text: str) -> Q:
    lo, hi = parse_interval(text, "BAND")
    if lo < 0:
        raise SiaError(f"BAND: wavelengths are positive (metres), got {text!r}")
    bands = [band for band, (em_min, em_max) in MEGAPRIME_BANDS_M.items() if em_min <= hi and em_max >= lo]
    return Q(band__in=bands)


def _time_q(text: str) -> Q:
    lo, hi = parse_interval(text, "TIME")
    q = Q(mjd_obs__isnull=False)
    if math.isfinite(hi):
        q &= Q(mjd_obs__lte=hi)
    if math.isfinite(lo):
        # The exposure overlaps the interval when it ends after lo.
        q &= Q(t_end__gte=lo)
    return q


def _exptime_q(text: str) -> Q:
    return _interval_q(text, "EXPTIME", "exptime")


def _calib_q(text: str) -> Q:
    try:
        level = int(text)
    except ValueError:
        raise SiaError(f"CALIB: {text!r} is not a calibration level (0-4)") from None
    processed = [layout for layout, lvl in CALIB_BY_LAYOUT.items() if lvl == level]
    if level == 1:
        return ~Q(layout__in=list(CALIB_BY_LAYOUT))
    return Q(layout__in=processed)


def _id_q(text: str) -> Q:
    expnum = obscore.expnum_from_id(text)
    return Q(pk__in=[]) if expnum is None else Q(expnum=expnum)


def _int_value(text: str, name: str, lo: int, hi: int) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise SiaError(f"{name}: {text!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise SiaError(f"{name}: {value} must lie in {lo}..{hi}")
    return value


def _single(params, name):
    values = params.get(name, [])
    if len(values) > 1:
        raise SiaError(f"{name}: give one value, not {len(values)}")
    return values[0] if values else None


def build_queryset(params: dict[str, list[str]], user) -> tuple:
    """The visible science exposures matching every constraint, and the query's options."""
    from recommender import services as recommender_services

    unknown = set(params) - KNOWN_PARAMETERS
    options = SiaQuery()
    request_value = _single(params, "REQUEST")
    if request_value is not None and request_value.lower() != "query":
        raise SiaError(f"REQUEST: only 'query' is supported, not {request_value!r}")
    response_format = _single(params, "RESPONSEFORMAT")
    if response_format is not None and response_format.strip().lower().replace(" ", "") not in RESPONSE_FORMATS:
        raise SiaError(f"RESPONSEFORMAT: only VOTable ({VOTABLE_MIME}) is available, not {response_format!r}")
    maxrec = _single(params, "MAXREC")
    if maxrec is not None:
        # DALI: a MAXREC above the service's limit is served up to the limit (OVERFLOW says so).
        options.maxrec = min(_int_value(maxrec, "MAXREC", 0, 2 ** 63 - 1), MAX_MAXREC)

    queryset = (selectors.visible_science_exposures(user)
                .alias(t_end=F("mjd_obs") + Coalesce(F("exptime"), Value(0.0), output_field=FloatField()) / 86400.0))
    try:
        shapes = [geometry.parse_pos(v) for v in params.get("POS", [])]
    except geometry.GeometryError as exc:
        raise SiaError(str(exc)) from None
    simple = {
        "BAND": _band_q,
        "TIME": _time_q,
        "EXPTIME": _exptime_q,
        "CALIB": _calib_q,
        "ID": _id_q,
        "INSTRUMENT": lambda v: Q(instrument__iexact=v.strip()),
        "TARGET": lambda v: Q(object_name__iexact=v.strip()),
        "RUNID": lambda v: Q(runid__iexact=v.strip()),
        "FLAG": lambda v: Q(pk__in=ExposureFlag.objects.filter(flag__name__iexact=v.strip(), flag__is_active=True)
                            .values("exposure_id")),
    }
    for name, check in (("QUALITY", quality.check_labels), ("FLAG", quality.check_flags)):
        try:
            check(params.get(name, []), name)      # a label or flag that does not exist: refused, not empty
        except quality.UnknownValue as exc:
            raise SiaError(str(exc)) from None
    for name, make in simple.items():
        if params.get(name):
            queryset = queryset.filter(_or(params[name], make))

    # Constraints on constants of this archive: met by all, or by none.
    constants = {"COLLECTION": COLLECTION, "FACILITY": FACILITY, "DPTYPE": DATAPRODUCT_TYPE, "FORMAT": ACCESS_FORMAT}
    for name, constant in constants.items():
        values = params.get(name)
        if values and constant.lower() not in {v.strip().lower() for v in values}:
            options.empty = True

    for name in ("SPECRP", "TIMERES"):
        for value in params.get(name, []):
            parse_interval(value, name)  # validated; every exposure has the same sampling
    for name, column in (("FOV", "s_fov"), ("SPATRES", "s_resolution")):
        if params.get(name):
            queryset = queryset.filter(_or(params[name], lambda v, n=name, c=column: _interval_q(v, n, c)))
    if params.get("POL"):
        options.empty = True  # MegaCam images carry no polarisation

    if params.get("CELL") or params.get("QUALITY"):
        desom2 = versions.active_version(ModelVersion.DESOM2)
        if desom2 is None:
            options.empty = True
        else:
            rows, cols = desom2.map_shape
            if params.get("CELL"):
                cells = [_int_value(v, "CELL", 0, rows * cols - 1) for v in params["CELL"]]
                queryset = quality.in_cells(queryset, cells, desom2)
            if params.get("QUALITY"):
                queryset = quality.filter_by_quality_label(queryset, params["QUALITY"], desom2)

    target = _single(params, "SIMILAR_TO")
    if target is not None:
        options.similar_to = _reference_exposure(target.strip(), user)
    k = _single(params, "K")
    if k is not None:
        if options.similar_to is None:
            raise SiaError("K: only meaningful with SIMILAR_TO")
        options.k = _int_value(k, "K", 1, recommender_services.MAX_K)
    if unknown:
        # DALI: unknown parameters are ignored; they are listed in the response instead.
        options.ignored = sorted(unknown)
    if shapes and not options.empty:
        # Last, so that only exposures meeting every other constraint are tested exactly.
        queryset = geometry.filter_region(queryset, shapes)
    return queryset, options


def _interval_q(text: str, name: str, column: str) -> Q:
    lo, hi = parse_interval(text, name)
    q = Q(**{f"{column}__isnull": False})
    if math.isfinite(lo):
        q &= Q(**{f"{column}__gte": lo})
    if math.isfinite(hi):
        q &= Q(**{f"{column}__lte": hi})
    return q


def _reference_exposure(text: str, user) -> Exposure:
    """SIA2 SIMILAR_TO: an archive id, an obs_id (expnum) or an obs_publisher_did, visible to the user."""
    prefix = publisher_did_prefix()
    visible = selectors.visible_science_exposures(user)
    found = None
    if text.lower().startswith(prefix.lower()):
        text = text[len(prefix):]
    if text.isdigit() and len(text) <= 18:
        found = visible.filter(expnum=int(text)).first() or visible.filter(pk=int(text)).first()
    if found is None:
        # Proprietary exposures get the same answer as absent ones.
        raise SiaError(f"SIMILAR_TO: no science exposure {text!r} (give an obs_id or archive id)")
    return found


def run_query(params: dict[str, list[str]], user) -> SiaResult:
    from recommender import services as recommender_services

    queryset, options = build_queryset(params, user)
    result = _run(queryset, options, user, recommender_services)
    result.ignored = options.ignored
    return result


def _run(queryset, options, user, recommender_services) -> SiaResult:
    if options.empty or (options.maxrec == 0 and options.similar_to is None):
        overflow = not options.empty and queryset.exists()
        return SiaResult([], overflow, options.maxrec)
    if options.similar_to is not None:
        k = min(options.k, options.maxrec) if options.maxrec else options.k
        try:
            matches = recommender_services.similar(options.similar_to, k=max(k, 1), user=user, queryset=queryset)
        except recommender_services.SearchError as exc:
            raise SiaError(f"SIMILAR_TO: {exc}") from None
        matches = matches[:options.maxrec]
        return SiaResult([m.exposure for m in matches], options.maxrec < options.k, options.maxrec,
                         {m.exposure.pk: m.score for m in matches})
    rows = list(queryset.order_by("expnum")[:options.maxrec + 1])
    return SiaResult(rows[:options.maxrec], len(rows) > options.maxrec, options.maxrec)


# --- the VOTable -----------------------------------------------------------------------------

SIMILARITY_COLUMN = Column("similarity_distance", "double", None, "stat.value", None,
                           "distance to the SIMILAR_TO exposure (lower is more similar), in rank order")

# The query's own parameters, for the self-description (SIA 2.0 section 2.6 / DALI service
# descriptors): the standard ones, then this archive's content parameters.
INPUT_PARAMETERS = [
    ServiceParam("POS", description="region: CIRCLE ra dec radius | RANGE ra1 ra2 dec1 dec2 | POLYGON ra dec ... (deg, ICRS); "
                 "an exposure matches when its footprint meets the region"),
    ServiceParam("BAND", "double", "wavelength interval (m)", unit="m", xtype="interval", arraysize="2"),
    ServiceParam("TIME", "double", "time interval (MJD)", unit="d", xtype="interval", arraysize="2"),
    ServiceParam("POL", description="polarisation states (none here)"),
    ServiceParam("FOV", "double", "field-of-view interval (deg)", unit="deg", xtype="interval", arraysize="2"),
    ServiceParam("SPATRES", "double", "spatial resolution interval (arcsec)", unit="arcsec", xtype="interval",
                 arraysize="2"),
    ServiceParam("EXPTIME", "double", "exposure time interval (s)", unit="s", xtype="interval", arraysize="2"),
    ServiceParam("ID", description="obs_publisher_did or obs_id"),
    ServiceParam("COLLECTION", options=[COLLECTION]),
    ServiceParam("FACILITY", options=[FACILITY]),
    ServiceParam("INSTRUMENT"),
    ServiceParam("DPTYPE", options=[DATAPRODUCT_TYPE]),
    ServiceParam("CALIB", "int", "calibration level (1 raw, 2 processed)", options=[1, 2]),
    ServiceParam("TARGET"),
    ServiceParam("TIMERES", "double", "time resolution interval (s)", unit="s", xtype="interval", arraysize="2"),
    ServiceParam("SPECRP", "double", "spectral resolving power interval", xtype="interval", arraysize="2"),
    ServiceParam("FORMAT", options=[ACCESS_FORMAT]),
    ServiceParam("MAXREC", "int", f"most records returned (at most {MAX_MAXREC}; more is served up to the limit)"),
    ServiceParam("QUALITY", description="quality label of the exposure's DESOM-2 cell: Good, BT, RBT, B-Seeing, BGP, "
                 "bad focus, low exposure, or another label the curators gave"),
    ServiceParam("FLAG", description="a prototype flag the exposure carries (for example 'bad focus')"),
    ServiceParam("CELL", "int", "DESOM-2 cell under the active model"),
    ServiceParam("SIMILAR_TO", description="obs_id or obs_publisher_did: the exposures most like it, in rank order"),
    ServiceParam("K", "int", "with SIMILAR_TO: how many"),
]


def self_descriptor(votable, base_url: str) -> Resource:
    return service_descriptor(votable, "sia2-query", SIA2_STANDARD_ID, f"{base_url}/query", INPUT_PARAMETERS,
                              "this SIA 2.0 query service and its parameters, content ones included")


def datalink_descriptor(votable, links_url: str) -> Resource:
    """How to reach each row's DataLink links: obs_publisher_did is the ID."""
    return service_descriptor(votable, "datalink", DATALINK_STANDARD_ID, links_url,
                              [ServiceParam("ID", ref="obs_publisher_did", description="publisher's identifier")],
                              "links of each exposure: file, preview, cutouts, similar exposures, quality")


def results_votable(result: SiaResult, download_url, base_url: str, links_url: str) -> bytes:
    """The answer: RESOURCE type=results, QUERY_STATUS OK (or OVERFLOW) and one ObsCore row per
    exposure, then the service's self-description and the DataLink descriptor.
    `download_url(exposure)` gives the absolute access URL. Quality comes from one bulk
    `quality_verdicts` call."""
    columns = list(obscore.COLUMNS) + ([SIMILARITY_COLUMN] if result.scores else [])
    votable = new_votable()
    resource = Resource(type="results")
    votable.resources.append(resource)
    resource.infos.append(status_info("OK"))
    resource.infos.append(Info(name="standardID", value=SIA2_STANDARD_ID))
    for name in result.ignored:
        resource.infos.append(Info(name="WARNING", value=f"parameter {name} is not supported and was ignored"))
    verdicts = {v.exposure_id: v for v in quality.quality_verdicts(result.exposures)}
    rows = []
    for exposure in result.exposures:
        row = obscore.row(exposure, verdicts[exposure.pk], download_url(exposure))
        if result.scores:
            row["similarity_distance"] = result.scores.get(exposure.pk)
        rows.append(row)
    add_table(votable, resource, columns, rows)
    if result.overflow:
        # DALI: a truncated answer says so with QUERY_STATUS OVERFLOW.
        resource.infos[0].value = "OVERFLOW"
        resource.infos[0].content = f"more than MAXREC={result.maxrec} records match; narrow the query"
    votable.resources.append(self_descriptor(votable, base_url))
    votable.resources.append(datalink_descriptor(votable, links_url))
    return serialise(votable)


# --- VOSI --------------------------------------------------------------------------------------

def vosi_capability(standard_id: str, url: str) -> str:
    return f"""  <capability standardID="{standard_id}">
    <interface xsi:type="vs:ParamHTTP" role="std">
      <accessURL use="full">{escape(url)}</accessURL>
    </interface>
  </capability>
"""


def capabilities_document(body: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0"
    xmlns:vr="http://www.ivoa.net/xml/VOResource/v1.0"
    xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1"
    xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
{body}</vosi:capabilities>
""".encode()


def capabilities_xml(base_url: str) -> bytes:
    """VOSI capabilities: the SIA 2.0 query interface (GET and POST), and the capabilities and
    availability endpoints. `base_url` is the absolute URL of /sia2 (no trailing slash)."""
    base = base_url.rstrip("/")
    body = vosi_capability("ivo://ivoa.net/std/VOSI#capabilities", f"{base}/capabilities")
    body += vosi_capability("ivo://ivoa.net/std/VOSI#availability", f"{base}/availability")
    body += f"""  <capability standardID="{SIA2_STANDARD_ID}">
    <interface xsi:type="vs:ParamHTTP" role="std" version="2.0">
      <accessURL use="base">{escape(base)}/query</accessURL>
      <queryType>GET</queryType>
      <queryType>POST</queryType>
      <resultType>{VOTABLE_MIME}</resultType>
    </interface>
  </capability>
"""
    return capabilities_document(body)


def availability_xml(available: bool, note: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">
  <vosi:available>{"true" if available else "false"}</vosi:available>
  <vosi:note>{escape(note)}</vosi:note>
</vosi:availability>
""".encode()
