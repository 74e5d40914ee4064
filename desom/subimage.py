"""Cutouts of an exposure's CCDs on the sky: the pixel box a sky region covers on a CCD, and
that box cut from the file with a WCS that still places every pixel where it lies.

A raw CCD's WCS counts its overscan columns; a cutout holds science pixels only (the overscan
trimmed away) with the WCS shifted to match, and the pixel values as stored, scaled to physical
units (raw 16-bit data stay 16-bit). Only the box is read from a plain file (memory map).
Plain numpy and astropy: no Django.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from .fits_io import _scale, parse_section
from .footprint import _celestial_wcs, unit

__all__ = ["PixelBox", "region_points", "pixel_box", "cut_ccd", "cutout_hdul"]

# Header keywords that describe the stored array, not the cutout: never copied.
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "PCOUNT", "GCOUNT", "BZERO", "BSCALE",
               "BLANK", "XTENSION", "CHECKSUM", "DATASUM", "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1", "ZNAXIS2",
               "ZTILE1", "ZTILE2", "ZCMPTYPE", "ZQUANTIZ", "ZDITHER0", "ZNAME1", "ZVAL1", "ZNAME2", "ZVAL2",
               "ZSIMPLE", "ZEXTEND", "ZPCOUNT", "ZGCOUNT", "ZTENSION", "ZBLANK", "ZHECKSUM", "ZDATASUM",
               "DATASEC", "BIASSEC", "TRIMSEC", "DETSIZE", "CCDSIZE"}
_SECTION_PREFIXES = ("BSEC", "DSEC", "TSEC", "CSEC", "ASEC")


@dataclass
class PixelBox:
    """Rows y0..y1-1 and columns x0..x1-1 of a CCD's trimmed science area."""
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def n_pixels(self) -> int:
        return max(0, self.y1 - self.y0) * max(0, self.x1 - self.x0)


def region_points(shape_kind: str, values, per_edge: int = 16) -> np.ndarray:
    """Sky points (N, 2) along a region's boundary (and its centre): enough to bound it in
    pixels. `shape_kind` is "circle" (ra, dec, radius) or "polygon" ((ra, dec) vertices)."""
    if shape_kind == "circle":
        ra, dec, radius = values
        centre = unit(ra, dec)
        z = np.array([0.0, 0.0, 1.0]) if abs(centre[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
        east = np.cross(z, centre)
        east /= np.linalg.norm(east)
        north = np.cross(centre, east)
        angles = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        r = np.radians(radius)
        pts = (np.cos(r) * centre[None, :] + np.sin(r) * (np.cos(angles)[:, None] * east + np.sin(angles)[:, None] * north))
        pts = np.vstack([pts, centre])
    else:
        vertices = unit(*np.asarray(values, float).T)
        pts = []
        for a, b in zip(vertices, np.roll(vertices, -1, axis=0)):
            for t in np.linspace(0, 1, per_edge, endpoint=False):
                p = (1 - t) * a + t * b
                pts.append(p / np.linalg.norm(p))
        pts = np.array(pts)
    ra = np.degrees(np.arctan2(pts[:, 1], pts[:, 0])) % 360.0
    dec = np.degrees(np.arcsin(np.clip(pts[:, 2], -1, 1)))
    return np.stack([ra, dec], axis=-1)


def _datasec(header, shape):
    return parse_section(header.get("DATASEC"), shape) or (slice(0, shape[0]), slice(0, shape[1]))


def pixel_box(header, shape, points: np.ndarray | None) -> PixelBox | None:
    """The box of the CCD's science area (trimmed coordinates) that holds the sky points, the
    whole area when `points` is None; None when the box is empty or the header has no WCS."""
    rows, cols = _datasec(header, shape)
    ny, nx = rows.stop - rows.start, cols.stop - cols.start
    if points is None:
        return PixelBox(0, ny, 0, nx)
    wcs = _celestial_wcs(header)
    if wcs is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = wcs.all_world2pix(points[:, 0], points[:, 1], 0)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    x, y = x[ok] - cols.start, y[ok] - rows.start
    box = PixelBox(int(np.clip(np.floor(y.min() + 0.5), 0, ny)), int(np.clip(np.floor(y.max() + 0.5) + 1, 0, ny)),
                   int(np.clip(np.floor(x.min() + 0.5), 0, nx)), int(np.clip(np.floor(x.max() + 0.5) + 1, 0, nx)))
    return box if box.n_pixels else None


def cut_ccd(reader, info, box: PixelBox) -> fits.ImageHDU:
    """The box of one CCD (an `ExposureReader` CCDInfo) as an image HDU: physical values,
    overscan trimmed, the CCD's header with its WCS moved to the box."""
    header = reader.header(info)
    rows, cols = _datasec(header, info.shape)
    raw = reader.read_raw(info)
    stored = raw[rows.start + box.y0:rows.start + box.y1, cols.start + box.x0:cols.start + box.x1]
    data = _scale(np.asarray(stored), header)
    integral = np.issubdtype(raw.dtype, np.integer)
    del raw, stored
    out = fits.Header()
    for card in header.cards:
        key = card.keyword
        if not key or key in _STRUCTURAL or key.startswith(_SECTION_PREFIXES) or key in ("COMMENT", "HISTORY", ""):
            continue
        try:
            out.append(card)
        except Exception:  # a malformed card is left behind, not copied
            pass
    wcs = _celestial_wcs(header)
    if wcs is not None:
        moved = wcs.slice((slice(rows.start + box.y0, rows.start + box.y1),
                           slice(cols.start + box.x0, cols.start + box.x1)))
        for key in ("CRPIX1", "CRPIX2"):
            out.pop(key, None)
        out.update(moved.to_header(relax=True))
    out["DATASEC"] = (f"[1:{box.x1 - box.x0},1:{box.y1 - box.y0}]", "science area (overscan trimmed)")
    out["CUTX0"] = (box.x0 + 1, "first column in the trimmed CCD")
    out["CUTY0"] = (box.y0 + 1, "first row in the trimmed CCD")
    if integral and np.all(np.isfinite(data)) and data.size and data.min() >= 0 and data.max() <= 65535 \
            and np.all(data == np.round(data)):
        return fits.ImageHDU(data=data.astype(np.uint16), header=out)  # written as int16 + BZERO 32768
    return fits.ImageHDU(data=data.astype(np.float32), header=out)


def cutout_hdul(reader, selections, note: str = "") -> fits.HDUList:
    """A FITS file of cutouts: the exposure's primary header keywords, then one image per
    (CCDInfo, PixelBox) of `selections`."""
    primary = fits.PrimaryHDU()
    for card in reader.primary_header.cards:
        if card.keyword and card.keyword not in _STRUCTURAL and card.keyword not in ("NEXTEND", "COMMENT", "HISTORY"):
            try:
                primary.header.append(card)
            except Exception:
                pass
    primary.header["NEXTEND"] = (len(selections), "cutout images that follow")
    if note:
        primary.header["HISTORY"] = note[:70]
    return fits.HDUList([primary] + [cut_ccd(reader, info, box) for info, box in selections])
