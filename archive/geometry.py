"""The one place that answers spatial questions about the archive: which exposures (and which of
their CCDs) meet a circle, a polygon or an RA/Dec range. The REST cone, SIA's POS, DataLink and
SODA all come here; TAP's ADQL geometry runs in pgSphere over the same stored footprints
(`s_region`), and the tests hold the two to the same answers.

The index is a table of HEALPix cells (nested scheme, depth `DEPTH`, about 0.46 degrees): every
cell an exposure's footprint touches. A region becomes a few ranges of cell numbers (coarser
cells are contiguous ranges of finer ones), the database returns the exposures in them, and
only those candidates are tested exactly against their footprints (great-circle polygons,
`desom.footprint`). No query scans the archive.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from django.db import connection, models, transaction
from django.db.models import F, Func, Q
from django.db.models.expressions import RawSQL

from desom import footprint as fp
from desom.errors import UserError

from .models import CCDFootprint, Exposure, SkyCell

DEPTH = 7
MAX_RANGES = 256          # a region coarser than this many cell ranges is looked up at a lower depth
MAX_POLYGON_VERTICES = 200
MAX_POLYGON_REACH_DEG = 80.0
TEST_BATCH = 10_000       # candidate footprints tested exactly as one array
MAX_LISTED_CANDIDATES = 20_000   # more candidates than this are read through a subquery


class GeometryError(UserError):
    """A region the archive cannot search with; the message says why."""


@dataclass(frozen=True)
class Circle:
    ra: float
    dec: float
    radius: float

    def dali(self) -> str:
        return f"{self.ra:g} {self.dec:g} {self.radius:g}"


@dataclass(frozen=True)
class Range:
    ra1: float
    ra2: float
    dec1: float
    dec2: float


@dataclass(frozen=True)
class Polygon:
    vertices: tuple


def _number(text: str, name: str, *, finite: bool = True) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise GeometryError(f"{name}: {text!r} is not a number") from None
    if math.isnan(value) or (finite and math.isinf(value)):
        raise GeometryError(f"{name}: {text!r} is not a finite number")
    return value


def _check_dec(dec: float, name: str):
    if not -90 <= dec <= 90:
        raise GeometryError(f"{name}: declination {dec} is outside [-90, 90]")


def circle(numbers, name: str = "CIRCLE") -> Circle:
    if len(numbers) != 3:
        raise GeometryError(f"{name}: a circle is ra dec radius (degrees), got {' '.join(numbers)!r}")
    ra, dec, radius = (_number(n, name) for n in numbers)
    _check_dec(dec, name)
    if not 0 <= radius <= 180:
        raise GeometryError(f"{name}: radius {radius} must lie in [0, 180] degrees")
    return Circle(ra % 360.0, dec, radius)


def polygon(numbers, name: str = "POLYGON") -> Polygon:
    if len(numbers) < 6 or len(numbers) % 2:
        raise GeometryError(f"{name}: a polygon takes at least three ra dec pairs, got {' '.join(numbers)!r}")
    if len(numbers) > 2 * MAX_POLYGON_VERTICES:
        raise GeometryError(f"{name}: a polygon has at most {MAX_POLYGON_VERTICES} vertices")
    values = [_number(n, name) for n in numbers]
    vertices = [(values[i] % 360.0, values[i + 1]) for i in range(0, len(values), 2)]
    for _, dec in vertices:
        _check_dec(dec, name)
    try:
        reach = fp.enclosing_circle(vertices)[2]
    except fp.FootprintError as exc:
        raise GeometryError(f"{name}: {exc}") from None
    if reach > MAX_POLYGON_REACH_DEG:
        raise GeometryError(f"{name}: a polygon must lie within {MAX_POLYGON_REACH_DEG:g} degrees of its centre")
    try:
        fp.orient(vertices)
    except fp.FootprintError as exc:
        raise GeometryError(f"{name}: {exc}") from None
    return Polygon(tuple(vertices))


def box(numbers, name: str = "RANGE") -> Range:
    if len(numbers) != 4:
        raise GeometryError(f"{name}: a range is ra1 ra2 dec1 dec2, got {' '.join(numbers)!r}")
    ra1, ra2, dec1, dec2 = (_number(n, name, finite=False) for n in numbers)
    if ra1 > ra2 or dec1 > dec2:
        raise GeometryError(f"{name}: the range {' '.join(numbers)!r} is empty (each pair is lo hi)")
    return Range(ra1, ra2, max(dec1, -90.0), min(dec2, 90.0))


def parse_pos(text: str, name: str = "POS"):
    """SIA/SODA POS: CIRCLE ra dec radius | RANGE ra1 ra2 dec1 dec2 | POLYGON ra dec ... (deg)."""
    parts = text.split()
    if not parts:
        raise GeometryError(f"{name}: empty value; use CIRCLE, RANGE or POLYGON")
    shape, numbers = parts[0].upper(), parts[1:]
    makers = {"CIRCLE": circle, "RANGE": box, "POLYGON": polygon}
    if shape not in makers:
        raise GeometryError(f"{name}: unknown shape {parts[0]!r}; use CIRCLE, RANGE or POLYGON")
    return makers[shape](numbers, f"{name} {shape}")


# --- exact tests -----------------------------------------------------------------------------

def intersects(footprint, shape) -> bool:
    """Does a footprint (list of (ra, dec)) meet the shape?"""
    if isinstance(shape, Circle):
        return fp.polygon_intersects_circle(footprint, shape.ra, shape.dec, shape.radius)
    if isinstance(shape, Polygon):
        return fp.polygon_intersects_polygon(footprint, shape.vertices)
    return fp.polygon_intersects_box(footprint, shape.ra1, shape.ra2, shape.dec1, shape.dec2)


# --- the HEALPix index -------------------------------------------------------------------------

def _lonlat(ra, dec):
    import astropy.units as u
    from astropy.coordinates import Latitude, Longitude

    return Longitude(np.asarray(ra, float) * u.deg), Latitude(np.asarray(dec, float) * u.deg)


def cells_of(footprint) -> list[int]:
    """HEALPix cells (depth DEPTH) that the footprint touches, vertices' own cells included."""
    from cdshealpix import nested

    pts = np.asarray(footprint, float)
    lon, lat = _lonlat(pts[:, 0], pts[:, 1])
    ipix, _, _ = nested.polygon_search(lon, lat, depth=DEPTH, flat=True)
    corners = nested.lonlat_to_healpix(lon, lat, DEPTH)
    return sorted({int(c) for c in ipix} | {int(c) for c in corners})


def _moc(shape, depth: int):
    """(ipix, depth) cells covering the shape, at most `depth` deep."""
    import astropy.units as u
    from cdshealpix import nested

    if isinstance(shape, Circle):
        if shape.radius >= 179.9:
            return np.arange(12, dtype=np.uint64), np.zeros(12, np.uint8)
        lon, lat = _lonlat(shape.ra, shape.dec)
        ipix, depths, _ = nested.cone_search(lon, lat, shape.radius * u.deg, depth=depth, flat=False)
        return ipix, depths
    if isinstance(shape, Polygon):
        pts = np.asarray(shape.vertices, float)
        lon, lat = _lonlat(pts[:, 0], pts[:, 1])
        ipix, depths, _ = nested.polygon_search(lon, lat, depth=depth, flat=False)
        return ipix, depths
    # RANGE: a box in RA/Dec, covered by cones over a grid (conservative, then tested exactly).
    if shape.ra2 - shape.ra1 >= 360 and shape.dec1 <= -90 and shape.dec2 >= 90:
        return np.arange(12, dtype=np.uint64), np.zeros(12, np.uint8)
    return _box_cells(shape, depth)


def _box_cells(shape: Range, depth: int):
    import astropy.units as u
    from cdshealpix import nested

    full_ra = shape.ra2 - shape.ra1 >= 360
    ra1, ra2 = (0.0, 360.0) if full_ra else (shape.ra1, shape.ra2)
    step = max(0.5, min(5.0, max(ra2 - ra1, shape.dec2 - shape.dec1) / 16))
    decs = np.arange(shape.dec1, shape.dec2 + step, step).clip(-90, 90)
    cells, depths = [], []
    for dec in decs:
        width = step / max(math.cos(math.radians(min(abs(dec) + step, 90.0))), 1e-3)
        ras = np.arange(ra1, ra2 + width, min(width, 360.0))
        for ra in ras:
            lon, lat = _lonlat(ra % 360.0, dec)
            ipix, ds, _ = nested.cone_search(lon, lat, step * 1.5 * u.deg, depth=depth, flat=False)
            cells.append(ipix)
            depths.append(ds)
    return np.concatenate(cells), np.concatenate(depths)


def cell_ranges(shape) -> list[tuple[int, int]]:
    """Inclusive ranges of depth-DEPTH cell numbers covering the shape, merged, at most
    MAX_RANGES of them (a coarser covering when the finest has more)."""
    depth = DEPTH
    while True:
        ipix, depths = _moc(shape, depth)
        ranges = []
        for cell, d in sorted(zip(ipix.tolist(), depths.tolist())):
            shift = 2 * (DEPTH - int(d))
            lo, hi = int(cell) << shift, ((int(cell) + 1) << shift) - 1
            ranges.append((lo, hi))
        ranges.sort()
        merged: list[list[int]] = []
        for lo, hi in ranges:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        if len(merged) <= MAX_RANGES or depth <= 2:
            return [(lo, hi) for lo, hi in merged]
        depth -= 1


def _ranges_q(ranges) -> Q:
    q = Q(pk__in=[])
    for lo, hi in ranges:
        q |= Q(cell=lo) if lo == hi else Q(cell__gte=lo, cell__lte=hi)
    return q


def candidates(shape):
    """Exposure ids whose cells meet the shape's covering, each once (a subquery; no exact test
    yet)."""
    return SkyCell.objects.filter(_ranges_q(cell_ranges(shape))).values("exposure_id").distinct()


def meeting(regions: list[str], shape) -> np.ndarray:
    """Which of the footprints (DALI polygons) meet the shape: `intersects` for many at once.
    A circle (the REST cone, SIA's CIRCLE) tests the footprints of each vertex count as one
    array; the other shapes one footprint at a time."""
    if not isinstance(shape, Circle):
        return np.array([intersects(fp.from_dali(region), shape) for region in regions], bool)
    meets = np.zeros(len(regions), bool)
    if not regions:
        return meets
    values = np.array(" ".join(regions).split(), dtype=float)
    sizes = np.array([region.count(" ") + 1 for region in regions])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for size in np.unique(sizes):
        rows = np.flatnonzero(sizes == size)
        vertices = values[starts[rows, None] + np.arange(size)].reshape(len(rows), size // 2, 2)
        meets[rows] = fp.polygons_intersect_circle(vertices, shape.ra, shape.dec, shape.radius)
    return meets


def _among(ids: list[int]):
    """The rows whose id is one of `ids`. On PostgreSQL one array parameter (`id = ANY(%s)`,
    the plan IN would get): Django prepares every member of an IN list again each time the
    query is compiled, 10-15 ms for a 5-degree cone's 2 000 ids, and a list page compiles it
    twice (the count and the page)."""
    if ids and connection.vendor == "postgresql":
        # RawSQL: the list goes to psycopg as it is (an ArrayField Value would prepare each id)
        array = RawSQL("%s::bigint[]", ([int(i) for i in ids],))
        return Func(F("pk"), array, template="(%(expressions)s))", arg_joiner=" = ANY(",
                    output_field=models.BooleanField())
    return Q(pk__in=list(ids))


def filter_region(queryset, shapes):
    """The exposures of `queryset` whose footprint meets any of the shapes."""
    shapes = list(shapes)
    if not shapes:
        return queryset
    keep: set[int] = set()
    for shape in shapes:
        # The candidates' ids first, as a list: given the subquery, PostgreSQL guesses about ten
        # times too many rows (an exposure has ~10 sky cells) and reads the whole exposure
        # table (1.3 s for a 5-degree cone at 1M); given the ids it looks each one up.
        ids = list(candidates(shape).values_list("exposure_id", flat=True)[:MAX_LISTED_CANDIDATES + 1])
        listed = len(ids) <= MAX_LISTED_CANDIDATES
        rows = (queryset.filter(_among(ids) if listed else Q(pk__in=candidates(shape))).exclude(s_region="")
                .order_by().values_list("pk", "s_region"))
        # a few thousand rows at once; more through a server-side cursor (a PostgreSQL cursor
        # WITH HOLD copies its whole result first: 8 ms for a 5-degree cone's 2 400 rows)
        rows = iter(rows) if listed else rows.iterator(chunk_size=TEST_BATCH)
        # a batch at a time: memory stays bounded for a region holding much of the archive
        while batch := list(itertools.islice(rows, TEST_BATCH)):
            met = meeting([region for _, region in batch], shape)
            keep.update(pk for (pk, _), hit in zip(batch, met) if hit)
    return queryset.filter(_among(sorted(keep)))


# --- writing footprints ------------------------------------------------------------------------

def footprint_fields(found, ra, dec) -> dict:
    """Exposure field values for a footprint from the WCS (`found`), else the nominal field
    about the pointing, else nothing (no coordinates at all)."""
    if found is None and ra is not None and dec is not None:
        found = fp.nominal_footprint(ra, dec)
    if found is None:
        return dict(s_region="", footprint_kind="", s_fov=None, s_resolution=None, s_xel1=None, s_xel2=None)
    return dict(s_region=fp.to_dali(found.polygon), footprint_kind=found.kind, s_fov=found.fov_deg,
                s_resolution=found.pixel_scale_arcsec, s_xel1=found.xel1, s_xel2=found.xel2)


@transaction.atomic
def store_footprint(exposure: Exposure, found) -> None:
    """Record an exposure's footprint (the WCS one, `found`, or the nominal stand-in), its CCDs
    and its index cells, replacing what was there."""
    fields = footprint_fields(found, exposure.ra_deg, exposure.dec_deg)
    Exposure.objects.filter(pk=exposure.pk).update(**fields)
    for name, value in fields.items():
        setattr(exposure, name, value)
    CCDFootprint.objects.filter(exposure=exposure).delete()
    SkyCell.objects.filter(exposure=exposure).delete()
    if found is not None and found.kind == "wcs":
        CCDFootprint.objects.bulk_create([
            CCDFootprint(exposure=exposure, position=c.position, hdu_index=c.hdu_index, extname=c.extname[:32],
                         s_region=fp.to_dali(c.polygon), nx=c.nx, ny=c.ny, pixel_scale=c.pixel_scale_arcsec)
            for c in found.ccds])
    if fields["s_region"]:
        SkyCell.objects.bulk_create([SkyCell(exposure=exposure, cell=c)
                                     for c in cells_of(fp.from_dali(fields["s_region"]))])
