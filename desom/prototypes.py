"""Shape statistics of a decoded DESOM-1 prototype image: how elongated its source is (trailed
or wind-shaken stars, the paper's RBT nodes) and how much its centre is hollow (the donuts of
bad focus). Pure numpy, so they can be tested on drawn images."""
from __future__ import annotations

import numpy as np

BORDER = 3


def _source_weights(image) -> np.ndarray:
    """Pixel weights of the source: the image above its border level (the cutout's sky)."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 2 * BORDER + 2:
        raise ValueError(f"a prototype image must be 2-D and at least {2 * BORDER + 2} pixels a side, "
                         f"not {img.shape}")
    if not np.isfinite(img).all():
        raise ValueError("a prototype image must hold finite values only")
    border = np.concatenate([img[:BORDER].ravel(), img[-BORDER:].ravel(),
                             img[BORDER:-BORDER, :BORDER].ravel(), img[BORDER:-BORDER, -BORDER:].ravel()])
    return np.clip(img - np.median(border), 0.0, None)


def _centroid(weights: np.ndarray) -> tuple[float, float] | None:
    total = weights.sum()
    if total <= 0:
        return None
    y, x = np.indices(weights.shape)
    return float((weights * y).sum() / total), float((weights * x).sum() / total)


def elongation(image) -> float:
    """1 - b/a from the flux-weighted second moments: 0 for a round source, towards 1 for a
    streak. A blank image gives 0."""
    weights = _source_weights(image)
    centre = _centroid(weights)
    if centre is None:
        return 0.0
    y, x = np.indices(weights.shape)
    dy, dx = y - centre[0], x - centre[1]
    total = weights.sum()
    moments = np.array([[(weights * dy * dy).sum(), (weights * dy * dx).sum()],
                        [(weights * dy * dx).sum(), (weights * dx * dx).sum()]]) / total
    small, large = np.linalg.eigvalsh(moments)
    if large <= 0:
        return 0.0
    return float(np.clip(1.0 - np.sqrt(max(small, 0.0) / large), 0.0, 1.0))


def central_hole(image, centre_radius: float = 1.5) -> float:
    """How hollow the source is: 1 - (mean level within `centre_radius` px of the centroid) /
    (peak of the azimuthally averaged profile). 0 when the centre is the brightest ring (a star),
    near 1 for a donut with a dark centre. A blank image gives 0."""
    weights = _source_weights(image)
    centre = _centroid(weights)
    if centre is None:
        return 0.0
    y, x = np.indices(weights.shape)
    radius = np.hypot(y - centre[0], x - centre[1])
    inner = weights[radius <= centre_radius]
    core = float(inner.mean()) if inner.size else 0.0
    rings = np.floor(radius).astype(int)
    counts = np.bincount(rings.ravel())
    sums = np.bincount(rings.ravel(), weights=weights.ravel())
    profile = sums[counts > 0] / counts[counts > 0]
    peak = max(float(profile.max()), core)
    if peak <= 0:
        return 0.0
    return float(np.clip(1.0 - core / peak, 0.0, 1.0))


def shape_statistics(images) -> dict[str, np.ndarray]:
    """Elongation and central-hole score of every prototype image, (K, H, W) or (K, 1, H, W)."""
    imgs = np.asarray(images, dtype=np.float64)
    if imgs.ndim == 4 and imgs.shape[1] == 1:
        imgs = imgs[:, 0]
    if imgs.ndim != 3:
        raise ValueError(f"prototype images must be (K, H, W) or (K, 1, H, W), not {imgs.shape}")
    return {"elongation": np.array([elongation(i) for i in imgs]),
            "central_hole": np.array([central_hole(i) for i in imgs])}
