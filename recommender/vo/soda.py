"""SODA sync cutouts: one exposure (ID), an optional region (CIRCLE, POLYGON or POS) and an
optional choice of CCDs (CCD); the answer is a FITS file with one image per CCD the region
meets, overscan trimmed, each with its WCS. The exposure must be visible to the caller (the
archive's one access rule); the CCDs come from the stored footprints (`archive.geometry`); the
pixel count is bounded from the headers before any pixel is read."""
from __future__ import annotations

import io
from dataclasses import dataclass

from django.conf import settings

from desom.errors import UserError

from archive import geometry, selectors
from archive.models import Exposure
from desom import subimage
from desom.fits_io import ExposureReadError, open_exposure
from desom.footprint import from_dali

from . import obscore

DEFAULT_MAX_PIXELS = 20_000_000   # about two full MegaCam CCDs


class SodaError(UserError):
    """A cutout request the service cannot answer; `code` is the DALI fault."""

    def __init__(self, message: str, code: str = "UsageFault", status: int = 400):
        super().__init__(message)
        self.code, self.status = code, status


@dataclass
class Cutout:
    content: bytes
    filename: str
    n_pixels: int


def max_pixels() -> int:
    return int(getattr(settings, "SODA_MAX_PIXELS", DEFAULT_MAX_PIXELS))


def _one(params, name):
    values = [v for v in params.get(name, []) if v.strip()]
    if len(values) > 1:
        raise SodaError(f"{name}: give one value, not {len(values)}")
    return values[0] if values else None


def parse_region(params):
    """(geometry shape, pixel-bounding points) of the one region asked for, or (None, None)."""
    given = [(name, _one(params, name)) for name in ("CIRCLE", "POLYGON", "POS")]
    given = [(name, value) for name, value in given if value is not None]
    if len(given) > 1:
        raise SodaError("give one region: CIRCLE, POLYGON or POS, not several")
    if not given:
        return None, None
    name, value = given[0]
    try:
        if name == "CIRCLE":
            shape = geometry.circle(value.split(), "CIRCLE")
        elif name == "POLYGON":
            shape = geometry.polygon(value.split(), "POLYGON")
        else:
            shape = geometry.parse_pos(value, "POS")
    except geometry.GeometryError as exc:
        raise SodaError(str(exc)) from None
    if isinstance(shape, geometry.Circle):
        return shape, subimage.region_points("circle", (shape.ra, shape.dec, shape.radius))
    if isinstance(shape, geometry.Polygon):
        return shape, subimage.region_points("polygon", shape.vertices)
    # RANGE: its corners, with the edges followed in RA/Dec.
    if shape.ra2 - shape.ra1 >= 360:
        raise SodaError("POS RANGE: a cutout needs a bounded RA range")
    corners = [(shape.ra1, shape.dec1), (shape.ra2, shape.dec1), (shape.ra2, shape.dec2), (shape.ra1, shape.dec2)]
    return shape, subimage.region_points("polygon", corners)


def find_exposure(params, user) -> Exposure:
    ids = [v.strip() for v in params.get("ID", []) if v.strip()]
    if len(ids) != 1:
        raise SodaError("ID: give exactly one exposure (its obs_publisher_did)")
    expnum = obscore.expnum_from_id(ids[0])
    visible = selectors.visible_science_exposures(user)
    found = None if expnum is None else visible.filter(expnum=expnum).first()
    if found is None:
        # A proprietary exposure gets the answer of an absent one.
        raise SodaError(f"no exposure {ids[0]!r} in this archive", "NotFoundFault", 404)
    return found


def choose_ccds(exposure: Exposure, shape, wanted: list[str]):
    ccds = list(exposure.ccd_footprints.all())
    if not ccds:
        raise SodaError(f"exposure {exposure.expnum} has no WCS: cutouts need one")
    if wanted:
        names = {c.extname.lower(): c for c in ccds}
        chosen = []
        for value in wanted:
            key = value.strip().lower()
            ccd = names.get(key) or (ccds[int(key)] if key.isdigit() and int(key) < len(ccds) else None)
            if ccd is None:
                raise SodaError(f"CCD: exposure {exposure.expnum} has no CCD {value!r} "
                                f"(it has {', '.join(c.extname for c in ccds[:40])})")
            if ccd not in chosen:
                chosen.append(ccd)
        ccds = chosen
    if shape is not None:
        ccds = [c for c in ccds if geometry.intersects(from_dali(c.s_region), shape)]
        if not ccds:
            raise SodaError("NoOverlap: the region meets none of the chosen CCDs of the exposure")
    return ccds


def cutout(params: dict[str, list[str]], user) -> Cutout:
    shape, points = parse_region(params)
    if shape is None and not params.get("CCD"):
        raise SodaError("give a region (CIRCLE, POLYGON or POS) or the CCDs wanted (CCD)")
    exposure = find_exposure(params, user)
    ccds = choose_ccds(exposure, shape, params.get("CCD", []))
    try:
        with open_exposure(exposure.file_path) as reader:
            infos = {info.index: info for info in reader.ccds}
            selections = []
            for ccd in ccds:
                info = infos.get(ccd.hdu_index)
                if info is None:
                    raise SodaError(f"the file no longer has CCD {ccd.extname}", "FatalFault", 500)
                box = subimage.pixel_box(reader.header(info), info.shape, points)
                if box is not None:
                    selections.append((info, box))
            if not selections:
                raise SodaError("NoOverlap: the region covers no pixel of the exposure")
            total = sum(box.n_pixels for _, box in selections)
            if total > max_pixels():
                raise SodaError(f"the cutout would hold {total} pixels; at most {max_pixels()} per request: "
                                "ask for a smaller region or fewer CCDs", status=413)
            note = f"SODA cutout of exposure {exposure.expnum}"
            hdul = subimage.cutout_hdul(reader, selections, note)
            out = io.BytesIO()
            hdul.writeto(out, output_verify="silentfix")
    except ExposureReadError as exc:
        raise SodaError(f"the exposure's file cannot be read ({exc.problem})", "FatalFault", 500) from None
    except FileNotFoundError:
        raise SodaError("the exposure's file is not available on this server", "FatalFault", 500) from None
    return Cutout(out.getvalue(), f"{exposure.expnum}_cutout.fits", total)
