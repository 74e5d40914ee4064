"""Small PNG previews: the CCD mosaic of an exposure, or a region of one CCD.

CCDs are read one at a time (trimmed and bias-subtracted like the pipeline), block-averaged
down, levelled to their own median (so amplifier/CCD offsets do not dominate) and placed on a
grid: 4 x 9 for 36 CCDs, 4 x 10 for 40, a near-square grid of tall CCDs otherwise; the first CCD
is at the top left, row by row. One zscale stretch (astropy ZScaleInterval) over the whole
mosaic; north-up display convention (FITS row 0 at the bottom of each tile).
"""
from __future__ import annotations

import io
import math
import os

import numpy as np

from desom.fits_io import ExposureReadError, open_exposure

__all__ = ["grid_shape", "exposure_preview", "ccd_preview", "to_png"]

_GAP = 2


def grid_shape(n_ccds: int) -> tuple[int, int]:
    """(rows, cols) of the preview grid."""
    if n_ccds < 1:
        raise ValueError(f"need at least one CCD, got {n_ccds}")
    if n_ccds == 36:
        return 4, 9
    if n_ccds == 40:
        return 4, 10
    # CCDs are ~2.25 times taller than wide: this gives 4x9 for 36 and 4x10 for 40 as well.
    cols = max(1, math.ceil(math.sqrt(n_ccds * 2.25)))
    cols = min(cols, n_ccds)
    return math.ceil(n_ccds / cols), cols


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return image.astype(np.float32, copy=True)
    ny, nx = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    if ny == 0 or nx == 0:
        return np.full((max(1, image.shape[0] // factor), max(1, image.shape[1] // factor)),
                       np.nan, np.float32)
    blocks = image[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor)
    with np.errstate(invalid="ignore"), _quiet():
        return np.nanmean(blocks, axis=(1, 3)).astype(np.float32)


class _quiet:
    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN blocks stay NaN

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def to_png(image: np.ndarray, contrast: float = 0.25) -> bytes:
    """zscale-stretched 8-bit greyscale PNG of a 2-D array (NaN shown black)."""
    from astropy.visualization import ZScaleInterval
    from PIL import Image

    image = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(image)
    out = np.zeros(image.shape, np.uint8)
    if finite.any():
        values = image[finite]
        try:
            lo, hi = ZScaleInterval(contrast=contrast).get_limits(values)
        except Exception:
            lo, hi = float(values.min()), float(values.max())
        if not hi > lo:
            lo, hi = float(values.min()), float(values.max())
        if hi > lo:
            scaled = np.clip((image - lo) / (hi - lo), 0.0, 1.0)
            out[finite] = np.rint(scaled[finite] * 254 + 1).astype(np.uint8)
        else:
            out[finite] = 128
    buffer = io.BytesIO()
    Image.fromarray(out, mode="L").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _emit(png: bytes, out):
    if out is not None:
        tmp = f"{os.fspath(out)}.tmp{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(png)
        os.replace(tmp, out)
    return png


def exposure_preview(path, out=None, max_width: int = 1200, contrast: float = 0.25) -> bytes:
    """PNG of the whole CCD mosaic, at most ``max_width`` px wide. Returns the PNG bytes and,
    if ``out`` is a path, writes them there too."""
    if max_width < 16:
        raise ValueError(f"max_width must be at least 16, got {max_width}")
    with open_exposure(path) as reader:
        n = len(reader)
        rows, cols = grid_shape(n)
        tiles = []
        tile_shape = None
        factor = None
        for info in reader.ccds:
            ccd = reader.read_ccd(info)
            if factor is None:
                width = cols * ccd.data.shape[1] + (cols - 1) * _GAP
                factor = max(1, math.ceil(width / max_width))
            tile = _block_mean(ccd.data, factor)
            del ccd
            finite = np.isfinite(tile)
            if finite.any():
                tile -= np.float32(np.median(tile[finite]))
            if tile_shape is None:
                tile_shape = tile.shape
            tiles.append(tile[::-1])   # row 0 at the bottom of the tile
    th, tw = tile_shape
    mosaic = np.full((rows * th + (rows - 1) * _GAP, cols * tw + (cols - 1) * _GAP), np.nan,
                     np.float32)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        y0, x0 = r * (th + _GAP), c * (tw + _GAP)
        h, w = min(th, tile.shape[0]), min(tw, tile.shape[1])
        mosaic[y0:y0 + h, x0:x0 + w] = tile[:h, :w]
    return _emit(to_png(mosaic, contrast), out)


def ccd_preview(path, ccd=0, region=None, out=None, max_size: int = 512,
                contrast: float = 0.25) -> bytes:
    """PNG of one CCD (by position in the file, 0-based, or EXTNAME), optionally of a region
    (x0, x1, y0, y1): 0-based, end-exclusive, in trimmed science-area pixels."""
    with open_exposure(path) as reader:
        if isinstance(ccd, str):
            matches = [i for i, info in enumerate(reader.ccds) if info.extname == ccd]
            if not matches:
                raise ExposureReadError(path, f"no CCD with EXTNAME {ccd!r}")
            position = matches[0]
        else:
            position = int(ccd)
            if not 0 <= position < len(reader):
                raise ValueError(f"CCD position {position} out of range: {path} has "
                                 f"{len(reader)} CCDs")
        data = reader.read_ccd(position).data
    if region is not None:
        x0, x1, y0, y1 = (int(v) for v in region)
        ny, nx = data.shape
        x0, x1 = max(0, x0), min(nx, x1)
        y0, y1 = max(0, y0), min(ny, y1)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"region {tuple(region)} is empty within the CCD ({nx}x{ny})")
        data = data[y0:y1, x0:x1]
    factor = max(1, math.ceil(max(data.shape) / max_size))
    image = _block_mean(data, factor)[::-1]
    return _emit(to_png(image, contrast), out)
