"""Where an exposure lies on the sky: footprints from each CCD's WCS, and the spherical
geometry that every spatial question of the archive is answered with.

A CCD's footprint is the quadrilateral through the sky positions of the outer corners of its
science area (DATASEC; a raw file's WCS counts overscan columns, so the corners are placed in
the stored array's pixel frame). The exposure's footprint is the convex hull of its CCDs'
corners. Polygons are lists of (ra, dec) in degrees, ICRS, with great-circle edges, ordered
like DALI's own example (``polygon 10 10 10.2 10 10.2 10.2 10 10.2``: right ascension
increasing along the southern edge), each vertex once (the polygon closes itself).

Plain numpy and astropy: no Django.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CCDFootprint", "ExposureFootprint", "ccd_footprint", "exposure_footprint", "nominal_footprint",
    "read_footprint", "unit", "angular_distance", "polygon_contains", "polygon_intersects_circle",
    "polygon_intersects_polygon", "polygon_intersects_box", "convex_hull", "orient", "to_dali",
    "from_dali", "enclosing_circle", "FootprintError",
]


class FootprintError(ValueError):
    """A polygon the geometry cannot work with (too few vertices, too large, degenerate)."""


@dataclass
class CCDFootprint:
    position: int                 # 0-based order of the CCD in the file
    hdu_index: int
    extname: str
    polygon: list                 # [(ra, dec)] x 4, degrees
    nx: int                       # science-area width (pixels)
    ny: int
    pixel_scale_arcsec: float


@dataclass
class ExposureFootprint:
    polygon: list                 # the exposure's outline, [(ra, dec)], degrees
    ccds: list = field(default_factory=list)
    fov_deg: float | None = None  # diameter of the smallest circle about the centre holding it
    pixel_scale_arcsec: float | None = None
    xel1: int | None = None       # extent in pixels along the first spatial axis (gaps included)
    xel2: int | None = None
    kind: str = "wcs"             # "wcs" (from the CCDs' WCS) or "nominal" (no WCS in the file)


# --- vectors ------------------------------------------------------------------------------------

def unit(ra, dec) -> np.ndarray:
    """Unit vectors (..., 3) of (ra, dec) in degrees."""
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _radec(v) -> tuple[float, float]:
    v = np.asarray(v, float)
    v = v / np.linalg.norm(v)
    return float(math.degrees(math.atan2(v[1], v[0])) % 360.0), float(math.degrees(math.asin(np.clip(v[2], -1, 1))))


def angular_distance(ra1, dec1, ra2, dec2):
    """Great-circle distance in degrees (broadcasts)."""
    a, b = unit(ra1, dec1), unit(ra2, dec2)
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    return np.degrees(np.arctan2(cross, np.sum(a * b, axis=-1)))


def _centre(polygon) -> np.ndarray:
    c = unit(*np.asarray(polygon, float).T).sum(axis=0)
    norm = np.linalg.norm(c)
    if norm < 1e-12:
        raise FootprintError("the polygon's vertices have no well-defined centre")
    return c / norm


def _gnomonic(vectors, centre) -> np.ndarray | None:
    """Tangent-plane (x, y) of unit vectors about `centre`; None if any is 90 deg or more away."""
    z = np.array([0.0, 0.0, 1.0]) if abs(centre[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    east = np.cross(z, centre)
    east /= np.linalg.norm(east)
    north = np.cross(centre, east)
    vectors = np.atleast_2d(vectors)
    depth = vectors @ centre
    if np.any(depth <= 1e-9):
        return None
    return np.stack([(vectors @ east) / depth, (vectors @ north) / depth], axis=-1)


# --- polygons -----------------------------------------------------------------------------------

def orient(polygon) -> list:
    """The polygon with its vertices in the archive's (DALI) order, duplicates dropped."""
    points = [(float(r) % 360.0, float(d)) for r, d in polygon]
    cleaned = []
    for p in points:
        if not cleaned or angular_distance(*cleaned[-1], *p) > 1e-10:
            cleaned.append(p)
    if len(cleaned) > 1 and angular_distance(*cleaned[0], *cleaned[-1]) <= 1e-10:
        cleaned.pop()
    if len(cleaned) < 3:
        raise FootprintError("a polygon needs at least three distinct vertices")
    v = unit(*np.asarray(cleaned).T)
    signed = float(np.sum(np.cross(v, np.roll(v, -1, axis=0)) @ _centre(cleaned)))
    if abs(signed) < 1e-15:
        raise FootprintError("the polygon has no area")
    return cleaned if signed > 0 else cleaned[::-1]


def convex_hull(points) -> list:
    """Convex hull (on the tangent plane about the points' centre, where great circles are
    straight lines) of (ra, dec) points, in the archive's vertex order."""
    points = np.asarray(points, float)
    centre = _centre(points)
    xy = _gnomonic(unit(*points.T), centre)
    if xy is None:
        raise FootprintError("points spread over more than a hemisphere")
    order = sorted(range(len(xy)), key=lambda i: (xy[i][0], xy[i][1]))

    def turn(o, a, b):
        # Cross product, less a tolerance: points within ~1e-6 rad of a straight edge (WCS rounding
        # of the CCDs' aligned corners) are dropped, so a rectangle of CCDs has four vertices.
        ax, ay = xy[a][0] - xy[o][0], xy[a][1] - xy[o][1]
        bx, by = xy[b][0] - xy[o][0], xy[b][1] - xy[o][1]
        return ax * by - ay * bx - 1e-6 * math.hypot(ax, ay) * math.hypot(bx, by)

    lower, upper = [], []
    for i in order:
        while len(lower) >= 2 and turn(lower[-2], lower[-1], i) <= 0:
            lower.pop()
        lower.append(i)
    for i in reversed(order):
        while len(upper) >= 2 and turn(upper[-2], upper[-1], i) <= 0:
            upper.pop()
        upper.append(i)
    hull = lower[:-1] + upper[:-1]
    return orient([tuple(points[i]) for i in hull])


def enclosing_circle(polygon) -> tuple[float, float, float]:
    """(ra, dec, radius): the polygon's vertex centre and the distance to its farthest vertex."""
    ra, dec = _radec(_centre(polygon))
    pts = np.asarray(polygon, float)
    return ra, dec, float(np.max(angular_distance(ra, dec, pts[:, 0], pts[:, 1])))


def polygon_contains(polygon, ra, dec) -> np.ndarray:
    """Which of the points lie inside the polygon (convex or not, smaller than a hemisphere)."""
    centre = _centre(polygon)
    ring = _gnomonic(unit(*np.asarray(polygon, float).T), centre)
    if ring is None:
        raise FootprintError("a polygon must lie within 90 degrees of its centre")
    pts = unit(ra, dec).reshape(-1, 3)
    inside = np.zeros(len(pts), bool)
    front = pts @ centre > 1e-9
    if front.any():
        xy = _gnomonic(pts[front], centre)
        inside[front] = _inside_planar(ring, xy)
    return inside.reshape(np.shape(ra))


def _inside_planar(ring, xy) -> np.ndarray:
    x, y = xy[:, 0], xy[:, 1]
    inside = np.zeros(len(xy), bool)
    for (x1, y1), (x2, y2) in zip(ring, np.roll(ring, -1, axis=0)):
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < at)
    return inside


def _arc_distances(p, a, b) -> np.ndarray:
    """Angular distances (deg) from unit vector p to the great-circle arcs a[i]-b[i] ((k, 3) each)."""
    n = np.cross(a, b)
    norm = np.linalg.norm(n, axis=-1)
    degenerate = norm < 1e-15
    n = n / np.where(degenerate, 1.0, norm)[:, None]
    along = n @ p
    q = p - along[:, None] * n
    # the foot of the perpendicular lies on the arc, not on the rest of its great circle
    on_arc = ((np.linalg.norm(q, axis=-1) > 1e-15) & (np.einsum("kc,kc->k", np.cross(a, q), n) >= 0)
              & (np.einsum("kc,kc->k", np.cross(q, b), n) >= 0) & ~degenerate)
    to_arc = np.degrees(np.abs(np.arcsin(np.clip(along, -1.0, 1.0))))
    to_ends = np.degrees(np.minimum(np.arccos(np.clip(a @ p, -1.0, 1.0)), np.arccos(np.clip(b @ p, -1.0, 1.0))))
    return np.where(on_arc, to_arc, to_ends)


def polygon_intersects_circle(polygon, ra, dec, radius) -> bool:
    """Does the polygon meet the circle (centre ra, dec; radius in degrees)?

    Shortcuts settle most footprints a cone query meets before the full test: a vertex inside
    the circle (it meets it), and a circle beyond the cap about the vertices' centre that holds
    every vertex (it cannot: a polygon smaller than a hemisphere lies in that cap)."""
    return bool(polygons_intersect_circle(np.asarray(polygon, float)[None], ra, dec, radius)[0])


def polygons_intersect_circle(vertices, ra, dec, radius) -> np.ndarray:
    """polygon_intersects_circle for m polygons of n vertices each (`vertices` of shape (m, n, 2),
    degrees) at once, in array operations: a cone query's candidates cost ~100 us each one by
    one. The full test (`_polygon_meets_circle`) only where the circle's centre may lie inside."""
    pts = np.asarray(vertices, float)
    if pts.ndim != 3 or pts.shape[2] != 2:
        raise FootprintError(f"polygons must come as an (m, n, 2) array of (ra, dec), not {pts.shape}")
    m, n = pts.shape[:2]
    p = unit(ra, dec)
    v = unit(pts[..., 0], pts[..., 1])
    to_vertices = np.degrees(np.arccos(np.clip(v @ p, -1.0, 1.0)))
    meets = to_vertices.min(axis=1, initial=np.inf) <= radius
    centre = v.sum(axis=1)
    norm = np.linalg.norm(centre, axis=1)
    centred = norm > 1e-12
    centre[centred] /= norm[centred, None]
    reach = np.degrees(np.arccos(np.clip(np.einsum("mnk,mk->mn", v, centre), -1.0, 1.0))).max(axis=1, initial=0.0)
    away = np.degrees(np.arccos(np.clip(centre @ p, -1.0, 1.0)))
    capped = centred & (reach < 90.0)
    misses = capped & (away > radius + reach + 1e-9)
    left = np.flatnonzero(~meets & ~misses)
    if len(left) and n:
        # an edge within the radius (the full test's second half, for all of them at once)
        edges = _arc_distances(p, v[left].reshape(-1, 3), np.roll(v[left], -1, axis=1).reshape(-1, 3))
        meets[left] = edges.reshape(len(left), n).min(axis=1) <= radius
        # else the circle's centre inside the polygon, only possible within the vertices' cap
        for i in left[~meets[left] & ~(capped[left] & (away[left] > reach[left] + 1e-9))]:
            meets[i] = _polygon_meets_circle(pts[i], ra, dec, radius)
    return meets


def _polygon_meets_circle(polygon, ra, dec, radius) -> bool:
    """The full test: the circle's centre inside the polygon, or an edge within the radius."""
    if polygon_contains(polygon, np.array([ra]), np.array([dec]))[0]:
        return True
    p = unit(ra, dec)
    v = unit(*np.asarray(polygon, float).T)
    return bool(_arc_distances(p, v, np.roll(v, -1, axis=0)).min() <= radius)


def _segments_cross(a1, a2, b1, b2) -> bool:
    def turn(o, p, q):
        return (p[0] - o[0]) * (q[1] - o[1]) - (p[1] - o[1]) * (q[0] - o[0])

    d1, d2 = turn(b1, b2, a1), turn(b1, b2, a2)
    d3, d4 = turn(a1, a2, b1), turn(a1, a2, b2)
    return (d1 * d2 <= 0) and (d3 * d4 <= 0)


def polygon_intersects_polygon(first, second) -> bool:
    """Do two polygons (each within 90 degrees of its centre) overlap or touch?"""
    centre = _centre(list(first) + list(second))
    a = _gnomonic(unit(*np.asarray(first, float).T), centre)
    b = _gnomonic(unit(*np.asarray(second, float).T), centre)
    if a is None or b is None:
        # Not on one hemisphere: they can only meet if one holds a vertex of the other.
        return bool(polygon_contains(first, *np.asarray(second, float).T).any()
                    or polygon_contains(second, *np.asarray(first, float).T).any())
    if _inside_planar(a, b).any() or _inside_planar(b, a).any():
        return True
    for i in range(len(a)):
        for j in range(len(b)):
            if _segments_cross(a[i], a[(i + 1) % len(a)], b[j], b[(j + 1) % len(b)]):
                return True
    return False


def polygon_intersects_box(polygon, ra1, ra2, dec1, dec2) -> bool:
    """Does the polygon's RA/Dec bounding box meet the box [ra1, ra2] x [dec1, dec2] (DALI
    RANGE; RA may wrap, ra2 - ra1 >= 360 means every RA)?"""
    pts = np.asarray(polygon, float)
    if pts[:, 1].max() < dec1 or pts[:, 1].min() > dec2:
        return False
    if ra2 - ra1 >= 360:
        return True
    lo, width = _ra_extent(pts[:, 0])
    box_lo, box_width = ra1 % 360.0, ra2 - ra1
    # Two arcs on the circle of RA meet when either's start lies within the other.
    return ((lo - box_lo) % 360.0 <= box_width) or ((box_lo - lo) % 360.0 <= width)


def _ra_extent(ras) -> tuple[float, float]:
    """(start, width) of the shortest RA arc holding every value."""
    ras = np.sort(np.asarray(ras, float) % 360.0)
    gaps = np.diff(np.concatenate([ras, [ras[0] + 360.0]]))
    widest = int(np.argmax(gaps))
    start = ras[(widest + 1) % len(ras)]
    return float(start), float(360.0 - gaps[widest])


# --- DALI serialisation -----------------------------------------------------------------------------

def to_dali(polygon) -> str:
    return " ".join(f"{ra:.7f} {dec:.7f}" for ra, dec in polygon)


def from_dali(text: str | None) -> list | None:
    if not text:
        return None
    values = [float(v) for v in text.split()]
    return list(zip(values[0::2], values[1::2]))


# --- footprints from headers ------------------------------------------------------------------------

def _celestial_wcs(header):
    from astropy.wcs import FITSFixedWarning, WCS

    if not str(header.get("CTYPE1", "")).upper().startswith("RA"):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=2, relax=True)
        except Exception:
            return None
    if not wcs.has_celestial:
        return None
    return wcs.celestial


def ccd_footprint(header, shape, position: int = 0, hdu_index: int = 0, extname: str = "") -> CCDFootprint | None:
    """The sky quadrilateral of one CCD's science area, or None when the header has no usable
    celestial WCS. `shape` is the stored array's (ny, nx)."""
    from .fits_io import parse_section

    wcs = _celestial_wcs(header)
    if wcs is None:
        return None
    datasec = parse_section(header.get("DATASEC"), shape) or (slice(0, shape[0]), slice(0, shape[1]))
    rows, cols = datasec
    # Outer pixel edges of the science area (0-based pixel centres, so edges at -0.5).
    x = np.array([cols.start - 0.5, cols.stop - 0.5, cols.stop - 0.5, cols.start - 0.5])
    y = np.array([rows.start - 0.5, rows.start - 0.5, rows.stop - 0.5, rows.stop - 0.5])
    try:
        ra, dec = wcs.all_pix2world(x, y, 0)
    except Exception:
        return None
    if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
        return None
    try:
        polygon = orient(list(zip(ra, dec)))
    except FootprintError:
        return None
    from astropy.wcs.utils import proj_plane_pixel_scales

    scale = float(np.mean(proj_plane_pixel_scales(wcs))) * 3600.0
    return CCDFootprint(position=position, hdu_index=hdu_index, extname=extname, polygon=polygon,
                        nx=cols.stop - cols.start, ny=rows.stop - rows.start, pixel_scale_arcsec=scale)


def exposure_footprint(ccds: list[CCDFootprint]) -> ExposureFootprint | None:
    """The exposure's outline (convex hull of the CCDs), field size, pixel scale and extent."""
    if not ccds:
        return None
    corners = [p for ccd in ccds for p in ccd.polygon]
    hull = convex_hull(corners)
    ra, dec, reach = enclosing_circle(hull)
    scale = float(np.median([c.pixel_scale_arcsec for c in ccds]))
    xy = _gnomonic(unit(*np.asarray(corners).T), unit(ra, dec))
    span = np.degrees(np.arctan(xy.max(axis=0) - xy.min(axis=0) if xy is not None else np.zeros(2)))
    xel1, xel2 = (int(round(s * 3600.0 / scale)) for s in span)
    return ExposureFootprint(polygon=hull, ccds=list(ccds), fov_deg=2 * reach, pixel_scale_arcsec=scale,
                             xel1=xel1, xel2=xel2, kind="wcs")


def nominal_footprint(ra: float, dec: float, width_deg: float = 0.96, height_deg: float = 0.94) -> ExposureFootprint:
    """A stand-in for files without a WCS: MegaCam's field, north up, around the pointing."""
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = [0.0, 0.0]
    wcs.wcs.cdelt = [-1.0, 1.0]
    hw, hh = width_deg / 2, height_deg / 2
    r, d = wcs.wcs_pix2world(np.array([-hw, hw, hw, -hw]), np.array([-hh, -hh, hh, hh]), 1)  # CRPIX 0: offsets
    polygon = orient(list(zip(r, d)))
    return ExposureFootprint(polygon=polygon, fov_deg=2 * enclosing_circle(polygon)[2], kind="nominal")


def read_footprint(reader) -> ExposureFootprint | None:
    """Footprint of an open `desom.fits_io.ExposureReader` from its CCD headers (no pixel read);
    None when no CCD carries a celestial WCS."""
    ccds = []
    for position, info in enumerate(reader.ccds):
        found = ccd_footprint(reader.header(info), info.shape, position, info.index, info.extname)
        if found is not None:
            ccds.append(found)
    try:
        return exposure_footprint(ccds)
    except FootprintError:
        return None
