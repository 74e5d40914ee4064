"""Figures: PNG bytes and files with the expected layout."""
import io

import numpy as np
import pytest
from PIL import Image

from desom.model import DESOMConfig, build_desom
from desom.plots import density_map, histo_vector_plot, label_map, prototype_map

PNG = b"\x89PNG\r\n\x1a\n"


def _img(png):
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_prototype_map_from_model_and_array(tmp_path):
    model = build_desom(DESOMConfig.desom1(map_rows=3, map_cols=5))
    out = tmp_path / "protos.png"
    png = prototype_map(model, path=out)
    assert png.startswith(PNG) and out.read_bytes() == png
    wide = _img(png)
    tall = _img(prototype_map(np.random.default_rng(0).random((15, 32, 32)), map_shape=(5, 3)))
    assert wide.shape[1] > wide.shape[0] and tall.shape[0] > tall.shape[1]
    with pytest.raises(ValueError, match="square"):
        prototype_map(np.zeros((15, 32, 32)))
    with pytest.raises(ValueError, match="fill a 4x4"):
        prototype_map(np.zeros((15, 32, 32)), map_shape=(4, 4))


def test_density_map_and_histo_vector(tmp_path):
    h = np.zeros(625)
    h[[3, 40, 41]] = [100, 10, 1]
    png = density_map(h, path=tmp_path / "d.png", log=True)
    assert png.startswith(PNG) and (tmp_path / "d.png").exists()
    assert histo_vector_plot(h, path=tmp_path / "h.png").startswith(PNG)
    with pytest.raises(ValueError, match="fill a 25x25"):
        density_map(np.zeros(600))
    with pytest.raises(ValueError, match="NaN"):
        density_map(np.full(625, np.nan))


def test_label_map_colours_labelled_cells_and_leaves_others_white():
    empty = _img(label_map({}, counts=None, map_shape=(4, 4)))
    labelled = _img(label_map({0: "Good", (1, 2): "RBT", 5: "Good"}, counts={0: 12, 6: 3},
                              map_shape=(4, 4), colours={"Good": "#00ff00", "RBT": "#ff0000"}))
    green = (labelled[..., 1] > 200) & (labelled[..., 0] < 60) & (labelled[..., 2] < 60)
    red = (labelled[..., 0] > 200) & (labelled[..., 1] < 60) & (labelled[..., 2] < 60)
    assert green.sum() > 100 and red.sum() > 50
    assert not ((empty[..., 1] > 200) & (empty[..., 0] < 60)).any()
    with pytest.raises(ValueError, match="outside the 4x4"):
        label_map({(4, 0): "Good"}, map_shape=(4, 4))
    with pytest.raises(ValueError, match="counts has 10"):
        label_map({}, counts=np.ones(10), map_shape=(4, 4))
