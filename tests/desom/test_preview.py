"""PNG previews of an exposure mosaic and of a CCD region."""
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from desom.fits_io import ExposureReadError
from desom.preview import ccd_preview, exposure_preview, grid_shape, to_png

_spec = importlib.util.spec_from_file_location("fitsfactory", Path(__file__).with_name("fitsfactory.py"))
ff = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ff)


def _image(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)))


def test_grid_shapes():
    assert grid_shape(36) == (4, 9)
    assert grid_shape(40) == (4, 10)
    for n in (1, 2, 5, 13, 37, 64):
        rows, cols = grid_shape(n)
        assert rows * cols >= n and (rows - 1) * cols < n
    with pytest.raises(ValueError):
        grid_shape(0)


@pytest.mark.parametrize("n_ccds,layout", [(36, "raw"), (40, "processed")])
def test_exposure_mosaic(tmp_path, n_ccds, layout):
    p = tmp_path / f"m{n_ccds}.fits"
    ff.write_exposure(p, n_ccds=n_ccds, shape=(256, 128), layout=layout,
                      sky_kw=dict(n_sources=10), dead_ccds=[0])
    out = tmp_path / "preview.png"
    png = exposure_preview(p, out=out, max_width=600)
    assert out.read_bytes() == png
    img = _image(png)
    rows, cols = grid_shape(n_ccds)
    factor = int(np.ceil((cols * 128 + (cols - 1) * 2) / 600))
    th, tw = 256 // factor, 128 // factor
    assert img.shape == (rows * th + (rows - 1) * 2, cols * tw + (cols - 1) * 2)
    assert img.shape[1] <= 600
    # gaps between tiles are black, tiles are not; the dead CCD (top left) is uniform
    assert np.all(img[:, tw:tw + 2] == 0)
    second = img[:th, tw + 2:2 * tw + 2]
    assert second.min() > 0 and second.std() > 5
    dead = img[:th, :tw]
    assert dead.std() == 0


def test_ccd_region_preview(tmp_path):
    p = tmp_path / "one.fits.fz"
    x, y = np.array([60.0]), np.array([200.0])
    ff.write_exposure(p, n_ccds=2, shape=(512, 256), layout="raw", compression="fz",
                      sky_kw=dict(positions=(x, y), fluxes=np.array([1e5])))
    whole = _image(ccd_preview(p, ccd="ccd00", max_size=128))
    assert whole.shape == (128, 64)
    region = _image(ccd_preview(p, ccd=0, region=(40, 80, 180, 220)))
    assert region.shape == (40, 40)
    # the star is at the centre of the region, and row 0 of the data is at the bottom
    rows, cols = np.nonzero(region == region.max())   # zscale saturates the star's core
    assert abs(cols.mean() - 20) <= 1 and abs((39 - rows.mean()) - 20) <= 1
    with pytest.raises(ExposureReadError, match="ccd99"):
        ccd_preview(p, ccd="ccd99")
    with pytest.raises(ValueError, match="out of range"):
        ccd_preview(p, ccd=5)
    with pytest.raises(ValueError, match="empty"):
        ccd_preview(p, ccd=0, region=(300, 400, 0, 10))


def test_to_png_handles_nan_and_flat():
    img = _image(to_png(np.full((10, 12), np.nan)))
    assert img.shape == (10, 12) and np.all(img == 0)
    flat = _image(to_png(np.full((10, 12), 3.0)))
    assert np.all(flat == 128)
