"""Images of the pages, each rendered once and kept under ARCHIVE_DATA_DIR/figures, keyed by
what it shows (exposure checksum, model version), so a new model draws new images."""
from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np

from archive.services import versions
from archive.services.figures import cache_dir, cached_png

from desom.prototypes import shape_statistics

# Pixels per prototype tile in the mosaic sprite (32x32 prototypes drawn at twice their size).
TILE = 64
NODE_IMAGE = 256

_lock = threading.Lock()
_prototypes: dict[str, np.ndarray] = {}
_shapes: dict[str, dict] = {}


def decoded_prototypes(desom1) -> np.ndarray:
    """(K, H, W) decoded prototype images of a DESOM-1 version, computed once per process."""
    with _lock:
        cached = _prototypes.get(desom1.version_id)
    if cached is None:
        model = versions.load_checkpoint_for(desom1).model
        images = model.decoded_prototypes().cpu().numpy().astype(np.float32)
        cached = images[:, 0] if images.ndim == 4 else images
        with _lock:
            _prototypes[desom1.version_id] = cached
    return cached


def prototype_shapes(desom1) -> dict[str, np.ndarray]:
    with _lock:
        cached = _shapes.get(desom1.version_id)
    if cached is None:
        cached = shape_statistics(decoded_prototypes(desom1))
        with _lock:
            _shapes[desom1.version_id] = cached
    return cached


def _grey(image: np.ndarray) -> np.ndarray:
    """Min-max scaled 8-bit tile (each prototype keeps its own scale, as in the paper's map)."""
    lo, hi = float(image.min()), float(image.max())
    scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return np.rint(scaled * 255).astype(np.uint8)


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _upscale(tile: np.ndarray, size: int) -> np.ndarray:
    factor = max(1, size // tile.shape[0])
    return np.kron(tile, np.ones((factor, factor), dtype=tile.dtype))


def prototype_mosaic(desom1) -> Path:
    """All decoded prototypes as one sprite image: tile (r, c) at (r*TILE, c*TILE), no gaps, so
    the page can show each node as a clickable cell with a background offset."""
    rows, cols = desom1.map_shape

    def render() -> bytes:
        images = decoded_prototypes(desom1)
        mosaic = np.zeros((rows * TILE, cols * TILE), np.uint8)
        for node in range(rows * cols):
            r, c = divmod(node, cols)
            tile = _upscale(_grey(images[node]), TILE)[:TILE, :TILE]
            mosaic[r * TILE:r * TILE + tile.shape[0], c * TILE:c * TILE + tile.shape[1]] = tile
        return _png(mosaic)

    return cached_png(cache_dir("desom1", desom1.version_id) / f"mosaic-{TILE}.png", render)


def prototype_image(desom1, node: int) -> Path:
    """One node's decoded prototype, enlarged."""
    return cached_png(cache_dir("desom1", desom1.version_id) / f"node-{node}-{NODE_IMAGE}.png",
                      lambda: _png(_upscale(_grey(decoded_prototypes(desom1)[node]), NODE_IMAGE)))


def _exposure_key(exposure, desom1) -> str:
    return f"{exposure.expnum}-{exposure.checksum[:12]}-{desom1.version_id}"


def density_map(exposure, desom1, histo) -> Path:
    from desom import plots

    return cached_png(cache_dir("density") / f"{_exposure_key(exposure, desom1)}.png",
                      lambda: plots.density_map(histo, map_shape=desom1.map_shape,
                                                title=f"density map of {exposure.expnum}"))


def histo_plot(exposure, desom1, histo) -> Path:
    from desom import plots

    return cached_png(cache_dir("histo") / f"{_exposure_key(exposure, desom1)}.png",
                      lambda: plots.histo_vector_plot(histo, title=f"histo-vector of {exposure.expnum} "
                                                                   f"({histo.sum():.0f} sources)"))


def clear_cache() -> None:
    with _lock:
        _prototypes.clear()
        _shapes.clear()
