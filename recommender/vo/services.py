"""IVOA SIA v2 over the archive: parse a query (DALI/SIA 2.0 parameters plus our own content
parameters), select the visible science exposures it matches, and write the answer as an
ObsCore VOTable; VOSI capabilities and availability documents.

Parameter names are case-insensitive and repeatable: values of one parameter are OR-ed, the
parameters AND-ed. Errors are `SiaError` (a message for the user, answered with HTTP 400 in a
VOTable whose QUERY_STATUS is ERROR).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from astropy.io.votable.tree import Field, Info, Resource, TableElement, VOTableFile
from django.conf import settings
from django.db.models import F, FloatField, Q, Value
from django.db.models.functions import Coalesce
from xml.sax.saxutils import escape

from archive import selectors
from archive.api.filters import cone
from archive.models import Exposure, ExposureFlag, ModelVersion
from archive.services import quality, versions

SIA2_STANDARD_ID = "ivo://ivoa.net/std/SIA#query-2.0"
DEFAULT_MAXREC = 1000
MAX_MAXREC = 10000
DEFAULT_SIMILAR_K = 10
# Longest value of any one parameter, and most values of one parameter: a query is a request
# line, not a payload.
MAX_VALUE_LENGTH = 4000
MAX_VALUES_PER_PARAMETER = 100
MAX_POLYGON_VERTICES = 200

# MegaCam's field of view is about 0.96 x 0.94 deg; no per-exposure WCS footprint is stored, so
# each exposure is described (and matched) as the 1-degree-wide circle around its pointing.
FIELD_DIAMETER_DEG = 1.0
PIXEL_SCALE_ARCSEC = 0.187  # MegaCam E2V CCD pixels: the spatial sampling, the best resolution reported
FACILITY = "CFHT"
COLLECTION = "DESOM"
ACCESS_FORMAT = "application/fits"
DATAPRODUCT_TYPE = "image"
VOTABLE_MIME = "application/x-votable+xml"
RESPONSE_FORMATS = {"votable", "application/x-votable+xml", "text/xml", "application/xml",
                    "application/x-votable+xml;serialization=tabledata"}

# MegaPrime filter bandpasses (wavelengths where the transmission crosses 50%, in metres; the
# z band's red edge is set by the CCDs' quantum efficiency). Approximate: CFHT's published
# curves differ slightly between the MP93xx/MP94xx generations of filters.
MEGAPRIME_BANDS_M = {
    "u": (3.37e-7, 4.11e-7),
    "g": (4.14e-7, 5.59e-7),
    "r": (5.63e-7, 6.85e-7),
    "i": (6.90e-7, 8.19e-7),
    "z": (8.23e-7, 1.00e-6),
}
CALIB_BY_LAYOUT = {"processed": 2}  # anything else is a raw exposure in the instrument's format: level 1

KNOWN_PARAMETERS = {
    "POS", "BAND", "TIME", "POL", "FOV", "SPATRES", "EXPTIME", "ID", "COLLECTION", "FACILITY",
    "INSTRUMENT", "DPTYPE", "CALIB", "TARGET", "TIMERES", "SPECRP", "FORMAT", "MAXREC",
    "RESPONSEFORMAT", "REQUEST", "QUALITY", "FLAG", "CELL", "SIMILAR_TO", "K", "RUNID",
}


class SiaError(ValueError):
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


@dataclass
class Circle:
    ra: float
    dec: float
    radius: float


@dataclass
class Range:
    ra1: float
    ra2: float
    dec1: float
    dec2: float


@dataclass
class Polygon:
    vertices: list[tuple[float, float]]


def _check_dec(dec: float, name: str = "POS"):
    if not -90 <= dec <= 90:
        raise SiaError(f"{name}: declination {dec} is outside [-90, 90]")


def parse_pos(text: str):
    """CIRCLE ra dec radius | RANGE ra1 ra2 dec1 dec2 | POLYGON ra1 dec1 ra2 dec2 ra3 dec3 ... (deg)."""
    parts = text.split()
    if not parts:
        raise SiaError("POS: empty value; use CIRCLE, RANGE or POLYGON")
    shape, numbers = parts[0].upper(), parts[1:]
    if shape == "CIRCLE":
        if len(numbers) != 3:
            raise SiaError(f"POS: CIRCLE takes ra dec radius, got {text!r}")
        ra, dec, radius = (_number(n, "POS", allow_infinite=False) for n in numbers)
        _check_dec(dec)
        if not 0 <= radius <= 180:
            raise SiaError(f"POS: CIRCLE radius {radius} must lie in [0, 180] degrees")
        return Circle(ra % 360.0, dec, radius)
    if shape == "RANGE":
        if len(numbers) != 4:
            raise SiaError(f"POS: RANGE takes ra1 ra2 dec1 dec2, got {text!r}")
        ra1, ra2, dec1, dec2 = (_number(n, "POS") for n in numbers)
        if ra1 > ra2 or dec1 > dec2:
            raise SiaError(f"POS: RANGE {text!r} is empty (each pair is lo hi)")
        return Range(ra1, ra2, max(dec1, -90.0), min(dec2, 90.0))
    if shape == "POLYGON":
        if len(numbers) < 6 or len(numbers) % 2:
            raise SiaError(f"POS: POLYGON takes at least three ra dec pairs, got {text!r}")
        if len(numbers) > 2 * MAX_POLYGON_VERTICES:
            raise SiaError(f"POS: a POLYGON has at most {MAX_POLYGON_VERTICES} vertices")
        values = [_number(n, "POS", allow_infinite=False) for n in numbers]
        vertices = [(values[i] % 360.0, values[i + 1]) for i in range(0, len(values), 2)]
        for _, dec in vertices:
            _check_dec(dec)
        return Polygon(vertices)
    raise SiaError(f"POS: unknown shape {parts[0]!r}; use CIRCLE, RANGE or POLYGON")


# --- geometry (small fields, so a tangent plane is accurate enough) --------------------------------

def _unit(ra, dec):
    ra, dec = math.radians(ra), math.radians(dec)
    return np.array([math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec)])


def angular_distance(ra1, dec1, ra2, dec2) -> float:
    dot = float(np.clip(_unit(ra1, dec1) @ _unit(ra2, dec2), -1.0, 1.0))
    return math.degrees(math.acos(dot))


def _gnomonic(ra, dec, ra0, dec0):
    """Tangent-plane coordinates (deg) of (ra, dec) about (ra0, dec0)."""
    ra, dec, ra0, dec0 = map(math.radians, (ra, dec, ra0, dec0))
    cos_c = math.sin(dec0) * math.sin(dec) + math.cos(dec0) * math.cos(dec) * math.cos(ra - ra0)
    if cos_c <= 1e-9:
        return None
    x = math.cos(dec) * math.sin(ra - ra0) / cos_c
    y = (math.cos(dec0) * math.sin(dec) - math.sin(dec0) * math.cos(dec) * math.cos(ra - ra0)) / cos_c
    return math.degrees(x), math.degrees(y)


def _segment_distance(p, a, b) -> float:
    ax, ay = a
    bx, by = b
    px, py = p
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))


def _inside(p, polygon) -> bool:
    x, y = p
    inside = False
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def polygon_touches_field(polygon: Polygon, ra: float, dec: float, field_radius: float) -> bool:
    """Does the field (a circle of `field_radius` deg around the pointing) meet the polygon?"""
    projected = [_gnomonic(r, d, ra, dec) for r, d in polygon.vertices]
    if any(p is None for p in projected):  # a vertex more than 90 deg away: fall back to the centre test
        return False
    if _inside((0.0, 0.0), projected):
        return True
    return min(_segment_distance((0.0, 0.0), a, b)
               for a, b in zip(projected, projected[1:] + projected[:1])) <= field_radius


def _polygon_centre(polygon: Polygon) -> tuple[float, float, float]:
    centre = sum(_unit(r, d) for r, d in polygon.vertices)
    centre = centre / max(np.linalg.norm(centre), 1e-12)
    ra = math.degrees(math.atan2(centre[1], centre[0])) % 360.0
    dec = math.degrees(math.asin(float(np.clip(centre[2], -1, 1))))
    reach = max(angular_distance(ra, dec, r, d) for r, d in polygon.vertices)
    return ra, dec, reach


# --- the query -------------------------------------------------------------------------------

@dataclass
class SiaQuery:
    maxrec: int = DEFAULT_MAXREC
    similar_to: Exposure | None = None
    k: int = DEFAULT_SIMILAR_K
    polygons: list[Polygon] = field(default_factory=list)
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
    lo, hi = parse_interval(text, "EXPTIME")
    q = Q(exptime__isnull=False)
    if math.isfinite(lo):
        q &= Q(exptime__gte=lo)
    if math.isfinite(hi):
        q &= Q(exptime__lte=hi)
    return q


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
    text = text.strip()
    prefix = publisher_did_prefix()
    if text.lower().startswith(prefix.lower()):
        text = text[len(prefix):]
    if text.isdigit() and len(text) <= 18:
        return Q(expnum=int(text))
    return Q(pk__in=[])


def _quality_cells(desom2, wanted: set[str]) -> list[int]:
    """Cells whose quality label (the experts' label, else the guess from neighbouring labelled
    cells, exactly as `quality.quality_verdicts` reports it) is one of `wanted`."""
    labels = quality.current_cell_labels(desom2)
    classes, probabilities = quality.label_probabilities(desom2, labels=labels)
    rows, cols = desom2.map_shape
    cells = []
    for cell in range(rows * cols):
        label = quality.effective_label(labels.get(cell))
        if not label and len(classes) and probabilities[cell].max() >= quality.MIN_GUESS_CONFIDENCE:
            label = classes[int(np.argmax(probabilities[cell]))]
        if label and label.lower() in wanted:
            cells.append(cell)
    return cells


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
        options.maxrec = _int_value(maxrec, "MAXREC", 0, MAX_MAXREC)

    queryset = (selectors.visible_exposures(user, Exposure.objects.filter(is_science=True))
                .alias(t_end=F("mjd_obs") + Coalesce(F("exptime"), Value(0.0), output_field=FloatField()) / 86400.0))
    shapes = [parse_pos(v) for v in params.get("POS", [])]
    half = FIELD_DIAMETER_DEG / 2
    if shapes:
        q = Q(pk__in=[])
        for shape in shapes:
            if isinstance(shape, Circle):
                within = cone(Exposure.objects.all(), shape.ra, shape.dec, min(shape.radius + half, 180.0))
                q |= Q(pk__in=within.values("pk"))
            elif isinstance(shape, Range):
                q |= _range_q(shape, half)
            else:
                ra, dec, reach = _polygon_centre(shape)
                near = cone(Exposure.objects.all(), ra, dec, min(reach + half, 180.0)).values_list("pk", "ra_deg", "dec_deg")
                ids = [pk for pk, r, d in near if polygon_touches_field(shape, r, d, half)]
                q |= Q(pk__in=ids)
        queryset = queryset.filter(q)

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
    for name, make in simple.items():
        if params.get(name):
            queryset = queryset.filter(_or(params[name], make))

    # Constraints on constants of this archive: met by all, or by none.
    constants = {"COLLECTION": COLLECTION, "FACILITY": FACILITY, "DPTYPE": DATAPRODUCT_TYPE, "FORMAT": ACCESS_FORMAT}
    for name, constant in constants.items():
        values = params.get(name)
        if values and constant.lower() not in {v.strip().lower() for v in values}:
            options.empty = True

    for name in ("FOV", "SPATRES", "SPECRP", "TIMERES"):
        for value in params.get(name, []):
            parse_interval(value, name)  # validated; every exposure has the same field and sampling
    fov = params.get("FOV")
    if fov and not any(lo <= FIELD_DIAMETER_DEG <= hi for lo, hi in (parse_interval(v, "FOV") for v in fov)):
        options.empty = True
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
                queryset = queryset.filter(cells__model_version=desom2, cells__cell__in=cells)
            if params.get("QUALITY"):
                wanted = {v.strip().lower() for v in params["QUALITY"]}
                queryset = queryset.filter(pk__in=Exposure.objects.filter(
                    cells__model_version=desom2, cells__cell__in=_quality_cells(desom2, wanted)).values("pk"))

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
    return queryset, options


def _range_q(shape: Range, half: float) -> Q:
    dec_lo, dec_hi = shape.dec1 - half, shape.dec2 + half
    q = Q(dec_deg__gte=dec_lo, dec_deg__lte=dec_hi)
    if shape.ra2 - shape.ra1 >= 360:
        return q
    widest = max(abs(dec_lo), abs(dec_hi))
    pad = 180.0 if widest >= 89.9 else half / math.cos(math.radians(widest))
    lo, hi = shape.ra1 - pad, shape.ra2 + pad
    if hi - lo >= 360:
        return q
    lo, hi = lo % 360.0, hi % 360.0
    ra_q = Q(ra_deg__gte=lo, ra_deg__lte=hi) if lo <= hi else (Q(ra_deg__gte=lo) | Q(ra_deg__lte=hi))
    return q & ra_q


def _reference_exposure(text: str, user) -> Exposure:
    """SIA2 SIMILAR_TO: an archive id, an obs_id (expnum) or an obs_publisher_did, visible to the user."""
    prefix = publisher_did_prefix()
    visible = selectors.visible_exposures(user, Exposure.objects.filter(is_science=True))
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

def publisher_did_prefix() -> str:
    authority = getattr(settings, "VO_AUTHORITY", "desom.archive")
    return f"ivo://{authority}/exposures?"


# name, datatype, unit, ucd, utype, description
OBSCORE_COLUMNS = [
    ("dataproduct_type", "char", None, "meta.code.class", "obscore:ObsDataset.dataProductType", "data product type"),
    ("calib_level", "short", None, "meta.code;obs.calib", "obscore:ObsDataset.calibLevel",
     "1 raw exposure in instrument format, 2 processed"),
    ("obs_collection", "char", None, "meta.id", "obscore:DataID.Collection", "collection"),
    ("obs_id", "char", None, "meta.id", "obscore:DataID.observationID", "exposure number (odometer)"),
    ("obs_publisher_did", "char", None, "meta.ref.ivoid", "obscore:Curation.PublisherDID", "publisher's identifier"),
    ("access_url", "char", None, "meta.ref.url", "obscore:Access.Reference", "download URL of the FITS file"),
    ("access_format", "char", None, "meta.code.mime", "obscore:Access.Format", "MIME type of the file"),
    ("access_estsize", "long", "kbyte", "phys.size;meta.file", "obscore:Access.Size", "file size"),
    ("target_name", "char", None, "meta.id;src", "obscore:Target.Name", "OBJECT keyword"),
    ("s_ra", "double", "deg", "pos.eq.ra", "obscore:Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C1",
     "pointing RA (ICRS)"),
    ("s_dec", "double", "deg", "pos.eq.dec", "obscore:Char.SpatialAxis.Coverage.Location.Coord.Position2D.Value2.C2",
     "pointing Dec (ICRS)"),
    ("s_fov", "double", "deg", "phys.angSize;instr.fov", "obscore:Char.SpatialAxis.Coverage.Bounds.Extent.diameter",
     "diameter of the field"),
    ("s_region", "char", None, "pos.outline;obs.field", "obscore:Char.SpatialAxis.Coverage.Support.Area",
     "footprint (DALI shape, ICRS degrees)"),
    ("s_resolution", "double", "arcsec", "pos.angResolution", "obscore:Char.SpatialAxis.Resolution.Refval.value",
     "pixel scale (seeing is not measured)"),
    ("t_min", "double", "d", "time.start;obs.exposure", "obscore:Char.TimeAxis.Coverage.Bounds.Limits.StartTime",
     "start (MJD)"),
    ("t_max", "double", "d", "time.end;obs.exposure", "obscore:Char.TimeAxis.Coverage.Bounds.Limits.StopTime",
     "end (MJD)"),
    ("t_exptime", "double", "s", "time.duration;obs.exposure", "obscore:Char.TimeAxis.Coverage.Support.Extent",
     "exposure time"),
    ("t_resolution", "double", "s", "time.resolution", "obscore:Char.TimeAxis.Resolution.Refval.value",
     "time resolution (the exposure)"),
    ("em_min", "double", "m", "em.wl;stat.min", "obscore:Char.SpectralAxis.Coverage.Bounds.Limits.LoLimit",
     "blue edge of the filter"),
    ("em_max", "double", "m", "em.wl;stat.max", "obscore:Char.SpectralAxis.Coverage.Bounds.Limits.HiLimit",
     "red edge of the filter"),
    ("em_res_power", "double", None, "spect.resolution", "obscore:Char.SpectralAxis.Resolution.ResolPower.refVal",
     "central wavelength over bandwidth"),
    ("o_ucd", "char", None, "meta.ucd", "obscore:Char.ObservableAxis.ucd", "what the pixels measure"),
    ("pol_states", "char", None, "meta.code;phys.polarization", "obscore:Char.PolarizationAxis.stateList",
     "polarisation states (none)"),
    ("facility_name", "char", None, "meta.id;instr.tel", "obscore:Provenance.ObsConfig.Facility.name", "telescope"),
    ("instrument_name", "char", None, "meta.id;instr", "obscore:Provenance.ObsConfig.Instrument.name", "instrument"),
    ("desom2_cell", "int", None, "meta.code", None, "DESOM-2 cell under the active model"),
    ("quality_label", "char", None, "meta.code.qual", None, "quality label (cell label or neighbouring cells)"),
    ("quality_flags", "char", None, "meta.code.qual", None, "prototype flags the exposure carries, comma-separated"),
]
SIMILARITY_COLUMN = ("similarity_distance", "double", None, "stat.value", None,
                     "distance to the SIMILAR_TO exposure (lower is more similar), in rank order")


def exposure_row(exposure: Exposure, verdict, download_url: str) -> dict:
    band = MEGAPRIME_BANDS_M.get((exposure.band or "").lower())
    ra, dec = exposure.ra_deg, exposure.dec_deg
    t_max = None
    if exposure.mjd_obs is not None:
        t_max = exposure.mjd_obs + (exposure.exptime or 0.0) / 86400.0
    return {
        "dataproduct_type": DATAPRODUCT_TYPE,
        "calib_level": CALIB_BY_LAYOUT.get(exposure.layout, 1),
        "obs_collection": COLLECTION,
        "obs_id": str(exposure.expnum),
        "obs_publisher_did": f"{publisher_did_prefix()}{exposure.expnum}",
        "access_url": download_url,
        "access_format": ACCESS_FORMAT,
        "access_estsize": int(math.ceil((exposure.file_size or 0) / 1024)),
        "target_name": exposure.object_name or None,
        "s_ra": ra,
        "s_dec": dec,
        "s_fov": FIELD_DIAMETER_DEG if ra is not None else None,
        "s_region": None if ra is None or dec is None else f"CIRCLE {ra:.6f} {dec:.6f} {FIELD_DIAMETER_DEG / 2:g}",
        "s_resolution": PIXEL_SCALE_ARCSEC,
        "t_min": exposure.mjd_obs,
        "t_max": t_max,
        "t_exptime": exposure.exptime,
        "t_resolution": exposure.exptime,
        "em_min": band[0] if band else None,
        "em_max": band[1] if band else None,
        "em_res_power": (band[0] + band[1]) / 2 / (band[1] - band[0]) if band else None,
        "o_ucd": "phot.count",
        "pol_states": None,
        "facility_name": FACILITY,
        "instrument_name": exposure.instrument or None,
        "desom2_cell": verdict.cell,
        "quality_label": verdict.label,
        "quality_flags": ",".join(flag["name"] for flag in verdict.flags) or None,
    }


def _field(votable, name, datatype, unit, ucd, utype, description):
    kwargs = {"arraysize": "*"} if datatype == "char" else {}
    made = Field(votable, name=name, ID=name, datatype=datatype, unit=unit, ucd=ucd, utype=utype, **kwargs)
    made.description = description
    return made


def _status_info(votable, value: str, text: str = "") -> Info:
    info = Info(name="QUERY_STATUS", value=value)
    info.content = text
    return info


def _serialise(votable: VOTableFile) -> bytes:
    out = io.BytesIO()
    votable.to_xml(out, tabledata_format="tabledata")
    return out.getvalue()


def results_votable(result: SiaResult, download_url) -> bytes:
    """The answer: RESOURCE type=results, QUERY_STATUS OK (or OVERFLOW) and one ObsCore row per
    exposure. `download_url(exposure)` gives the absolute access URL. Quality comes from one
    bulk `quality_verdicts` call."""
    columns = list(OBSCORE_COLUMNS) + ([SIMILARITY_COLUMN] if result.scores else [])
    votable = VOTableFile(version="1.4")
    resource = Resource(type="results")
    votable.resources.append(resource)
    resource.infos.append(_status_info(votable, "OK"))
    resource.infos.append(Info(name="standardID", value=SIA2_STANDARD_ID))
    for name in result.ignored:
        resource.infos.append(Info(name="WARNING", value=f"parameter {name} is not supported and was ignored"))
    table = TableElement(votable, name="results")
    resource.tables.append(table)
    table.fields.extend(_field(votable, *column) for column in columns)
    table.create_arrays(len(result.exposures))
    verdicts = {v.exposure_id: v for v in quality.quality_verdicts(result.exposures)}
    names = [c[0] for c in columns]
    for i, exposure in enumerate(result.exposures):
        row = exposure_row(exposure, verdicts[exposure.pk], download_url(exposure))
        if result.scores:
            row["similarity_distance"] = result.scores.get(exposure.pk)
        values, mask = [], []
        for name, column in zip(names, columns):
            value = row[name]
            missing = value is None or (isinstance(value, float) and not math.isfinite(value))
            mask.append(missing)
            values.append(_placeholder(column[1]) if missing else value)
        table.array[i] = tuple(values)
        table.array.mask[i] = tuple(mask)
    if result.overflow:
        # DALI: a truncated answer ends with QUERY_STATUS OVERFLOW after the table.
        resource.infos[0].value = "OVERFLOW"
        resource.infos[0].content = f"more than MAXREC={result.maxrec} records match; narrow the query"
    return _serialise(votable)


def _placeholder(datatype):
    return "" if datatype == "char" else (0.0 if datatype == "double" else 0)


def error_votable(message: str) -> bytes:
    votable = VOTableFile(version="1.4")
    resource = Resource(type="results")
    votable.resources.append(resource)
    resource.infos.append(_status_info(votable, "ERROR", message))
    return _serialise(votable)


# --- VOSI --------------------------------------------------------------------------------------

def capabilities_xml(base_url: str) -> bytes:
    """VOSI capabilities: the SIA 2.0 query interface, and the capabilities and availability
    endpoints. `base_url` is the absolute URL of /sia2 (no trailing slash)."""
    base = escape(base_url.rstrip("/"))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0"
    xmlns:vr="http://www.ivoa.net/xml/VOResource/v1.0"
    xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <capability standardID="ivo://ivoa.net/std/VOSI#capabilities">
    <interface xsi:type="vs:ParamHTTP" role="std">
      <accessURL use="full">{base}/capabilities</accessURL>
    </interface>
  </capability>
  <capability standardID="ivo://ivoa.net/std/VOSI#availability">
    <interface xsi:type="vs:ParamHTTP" role="std">
      <accessURL use="full">{base}/availability</accessURL>
    </interface>
  </capability>
  <capability standardID="{SIA2_STANDARD_ID}">
    <interface xsi:type="vs:ParamHTTP" role="std" version="2.0">
      <accessURL use="base">{base}/query</accessURL>
      <queryType>GET</queryType>
      <resultType>{VOTABLE_MIME}</resultType>
    </interface>
  </capability>
</vosi:capabilities>
""".encode()


def availability_xml(available: bool, note: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">
  <vosi:available>{"true" if available else "false"}</vosi:available>
  <vosi:note>{escape(note)}</vosi:note>
</vosi:availability>
""".encode()
