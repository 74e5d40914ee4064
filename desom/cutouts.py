"""32x32 cutouts around detected sources, and the stretches that map them to [0, 1].

Two stretches (``STRETCHES``):

- ``clip``, the authors' (paper 3.5): each stamp is clipped to its own 1st-95th percentile range
  and scaled to [0, 1]. Every source becomes a flat-topped blob: its brightness, and the shape
  of its bright core (a short trail, a donut's hole), are cut off at the 95th percentile.
- ``asinh``: x = (pixel - sky) / noise, in units of the CCD's sky noise, then
  (asinh(x / a) - asinh(lo / a)) / (asinh(hi / a) - asinh(lo / a)) clipped to [0, 1]. One scale
  for every stamp of every exposure, so a stamp keeps how bright its source is, the shape of its
  core, and how far its sky sits from the CCD's typical sky (gradients, fringes, scattered light);
  the arcsinh is linear within a few sigma and logarithmic above, so a saturated star and a
  3-sigma galaxy both fit.

With the sky kept (``sky="kept"``, as the authors cut their stamps) the stamp is cut from the
image before background subtraction; ``sky="subtracted"`` cuts it from the background-subtracted
image. NaN pixels (and pixels beyond the CCD edge) take the CCD's median first. Everything is
vectorised over sources: one fancy-indexing gather, one batched percentile.

A recipe may also turn each stretched stamp about its centre so that its source's major axis lies
along x (``align_major_axis``): a trail, whatever its direction on the sky, then falls in the same
DESOM-1 nodes, so trailed exposures share bins instead of spreading over angles.
"""
from __future__ import annotations

import numpy as np

__all__ = ["extract_stamps", "normalise_stamps", "asinh_stamps", "make_cutouts", "sample_indices",
           "ccd_median", "stretch_stamps", "lone_stamp_input", "align_major_axis", "STRETCHES", "STAMP_SKY", "ASINH_SOFTENING", "ASINH_RANGE"]

STRETCHES = ("clip", "asinh")
STAMP_SKY = ("subtracted", "kept")
ASINH_SOFTENING = 1.0          # a, in sky-noise units: linear below about a, logarithmic above
ASINH_RANGE = (-10.0, 1.0e4)   # lo, hi in sky-noise units: a deep sky hole .. a saturated star
ALIGN_RADIUS = 8.0             # px around the stamp centre whose light sets the major axis


def ccd_median(image: np.ndarray) -> float:
    """Median of the finite pixels (on a 1/16 sample: plenty for a fill value)."""
    sample = image[::4, ::4]
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        finite = image[np.isfinite(image)]
    return float(np.median(finite)) if finite.size else 0.0


def extract_stamps(image: np.ndarray, x, y, size: int = 32, fill: float | None = None) -> np.ndarray:
    """(N, size, size) float32 stamps whose centre pixel (size//2, size//2) is the pixel holding
    each centroid (x column, y row; 0-based). Pixels outside the image or NaN take ``fill``
    (default: the CCD median)."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"extract_stamps needs a 2-D image, got shape {image.shape}")
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length ({x.size} vs {y.size})")
    if x.size == 0:
        return np.zeros((0, size, size), np.float32)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("centroids contain NaN or infinite values")
    ny, nx = image.shape
    half = size // 2
    offsets = np.arange(size)
    rows = (np.floor(y + 0.5).astype(np.int64) - half)[:, None] + offsets[None, :]   # (N, size)
    cols = (np.floor(x + 0.5).astype(np.int64) - half)[:, None] + offsets[None, :]
    row_ok = (rows >= 0) & (rows < ny)
    col_ok = (cols >= 0) & (cols < nx)
    stamps = image[np.clip(rows, 0, ny - 1)[:, :, None],
                   np.clip(cols, 0, nx - 1)[:, None, :]].astype(np.float32, copy=False)
    outside = ~(row_ok[:, :, None] & col_ok[:, None, :])
    invalid = outside | ~np.isfinite(stamps)
    if invalid.any():
        value = ccd_median(image) if fill is None else float(fill)
        stamps[invalid] = np.float32(value)
    return stamps


def normalise_stamps(stamps: np.ndarray, low: float = 1.0, high: float = 95.0) -> np.ndarray:
    """Clip each stamp to its own [low, high] percentiles and scale to [0, 1]. A flat stamp
    (no range) becomes all zeros rather than NaN."""
    stamps = np.asarray(stamps, dtype=np.float32)
    if stamps.ndim != 3:
        raise ValueError(f"stamps must be (N, H, W), got shape {stamps.shape}")
    n = stamps.shape[0]
    if n == 0:
        return stamps.copy()
    flat = stamps.reshape(n, -1)
    lo, hi = np.percentile(flat, [low, high], axis=1)
    lo = lo.astype(np.float32)[:, None]
    hi = hi.astype(np.float32)[:, None]
    span = hi - lo
    scale = np.max(np.abs(np.concatenate([lo, hi], axis=1)), axis=1, keepdims=True)
    ok = span > np.float32(1e-6) * np.maximum(scale, 1.0)
    out = (np.clip(flat, lo, hi) - lo) / np.where(ok, span, np.float32(1.0))
    out = np.where(ok, out, np.float32(0.0))
    return np.clip(out, 0.0, 1.0).astype(np.float32).reshape(stamps.shape)


def asinh_stamps(stamps: np.ndarray, sky=0.0, noise=1.0, softening: float = ASINH_SOFTENING,
                 value_range=ASINH_RANGE) -> np.ndarray:
    """The asinh stretch of stamps in image units: x = (stamps - sky) / noise (sky and noise a
    scalar or one value per stamp), mapped to [0, 1] as the module docstring says."""
    stamps = np.asarray(stamps, dtype=np.float32)
    if stamps.ndim != 3:
        raise ValueError(f"stamps must be (N, H, W), got shape {stamps.shape}")
    lo, hi = (float(v) for v in value_range)
    if not (softening > 0 and lo < hi):
        raise ValueError(f"need softening > 0 and low < high, got {softening} and {value_range}")
    n = stamps.shape[0]
    sky = np.broadcast_to(np.asarray(sky, np.float32).reshape(-1), (n,)) if n else np.zeros(0, np.float32)
    noise = np.broadcast_to(np.asarray(noise, np.float32).reshape(-1), (n,)) if n else np.zeros(0, np.float32)
    if n and not (np.all(np.isfinite(noise)) and np.all(noise > 0)):
        raise ValueError("the noise of every stamp must be a positive finite number")
    x = (stamps - sky[:, None, None]) / (noise[:, None, None] * np.float32(softening))
    a_lo, a_hi = np.arcsinh(lo / softening), np.arcsinh(hi / softening)
    out = (np.arcsinh(x) - np.float32(a_lo)) / np.float32(a_hi - a_lo)
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0).astype(np.float32, copy=False)


def stretch_stamps(stamps: np.ndarray, stretch: str = "clip", *, percentiles=(1.0, 95.0), sky=0.0,
                   noise=1.0, softening: float = ASINH_SOFTENING, value_range=ASINH_RANGE) -> np.ndarray:
    """Stamps in image units -> [0, 1] with the named stretch (``STRETCHES``). ``clip`` ignores
    sky and noise (a per-stamp percentile clip does not see an offset); ``asinh`` uses them."""
    if stretch == "clip":
        return normalise_stamps(stamps, *percentiles)
    if stretch == "asinh":
        return asinh_stamps(stamps, sky, noise, softening, value_range)
    raise ValueError(f"unknown stretch {stretch!r}; expected one of {STRETCHES}")


def align_major_axis(stamps: np.ndarray) -> np.ndarray:
    """(N, H, W) stretched stamps turned about their centres so that the second moments of the
    light above each stamp's median, within ALIGN_RADIUS of the centre, put the major axis along
    x (bilinear resampling, the border extended). A round source keeps an arbitrary angle."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(stamps, np.float32))
    if x.ndim != 3:
        raise ValueError(f"stamps must be (N, H, W), got shape {tuple(x.shape)}")
    n, h, w = x.shape
    if n == 0:
        return x.numpy().copy()
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32) - (h - 1) / 2,
                            torch.arange(w, dtype=torch.float32) - (w - 1) / 2, indexing="ij")
    window = ((xx ** 2 + yy ** 2) <= ALIGN_RADIUS ** 2).float()
    light = (x - x.flatten(1).median(dim=1).values[:, None, None]).clamp(min=0) * window
    total = light.sum(dim=(1, 2)).clamp(min=1e-12)
    mx, my = (light * xx).sum(dim=(1, 2)) / total, (light * yy).sum(dim=(1, 2)) / total
    dx, dy = xx - mx[:, None, None], yy - my[:, None, None]
    mxx, myy, mxy = ((light * d).sum(dim=(1, 2)) / total for d in (dx * dx, dy * dy, dx * dy))
    theta = 0.5 * torch.atan2(2 * mxy, mxx - myy)          # major axis angle, image x towards y
    cos, sin = torch.cos(theta), torch.sin(theta)
    # output pixel (u, v) samples the input at R(theta) (u, v): the major axis comes to lie on u
    affine = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                          torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1)
    grid = F.affine_grid(affine, (n, 1, h, w), align_corners=False)
    return F.grid_sample(x[:, None], grid, mode="bilinear", padding_mode="border",
                         align_corners=False)[:, 0].numpy()


def lone_stamp_input(stamp: np.ndarray, recipe: dict | None = None) -> np.ndarray:
    """One stamp given on its own (an uploaded example source) as a (1, S, S) DESOM-1 input under
    a stamp recipe (desom.pipeline.STAMP_FIELDS; None: per-stamp clip). Without its CCD, the
    sky and its noise come from the stamp's outer ring: median and 1.4826 x MAD."""
    stamp = np.asarray(stamp, np.float32)
    if stamp.ndim != 2:
        raise ValueError(f"a stamp must be 2-D, got shape {stamp.shape}")
    recipe = recipe or {}
    stamp = np.nan_to_num(stamp, nan=float(np.nanmedian(stamp)))
    ring = np.concatenate([stamp[:3].ravel(), stamp[-3:].ravel(), stamp[3:-3, :3].ravel(), stamp[3:-3, -3:].ravel()])
    sky = float(np.median(ring))
    noise = 1.4826 * float(np.median(np.abs(ring - sky)))
    if not noise > 0:
        noise = float(np.std(stamp)) or 1.0
    out = stretch_stamps(stamp[None], recipe.get("stretch", "clip"),
                         percentiles=tuple(recipe.get("clip_percentiles", (1.0, 95.0))), sky=sky, noise=noise,
                         softening=float(recipe.get("asinh_softening", ASINH_SOFTENING)),
                         value_range=tuple(recipe.get("asinh_range", ASINH_RANGE)))
    return align_major_axis(out) if recipe.get("align", False) else out


def make_cutouts(image: np.ndarray, x, y, size: int = 32, percentiles=(1.0, 95.0),
                 fill: float | None = None, stretch: str = "clip", sky=0.0, noise=1.0,
                 softening: float = ASINH_SOFTENING, value_range=ASINH_RANGE, align: bool = False) -> np.ndarray:
    """Stretched (N, size, size) float32 cutouts in [0, 1] around (x, y), each turned to its
    source's major axis when ``align``."""
    out = stretch_stamps(extract_stamps(image, x, y, size, fill), stretch, percentiles=percentiles,
                         sky=sky, noise=noise, softening=softening, value_range=value_range)
    return align_major_axis(out) if align else out


def sample_indices(n: int, max_n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``max_n`` of ``n`` items, drawn without replacement."""
    if max_n is None or n <= max_n:
        return np.arange(n)
    if max_n <= 0:
        return np.zeros(0, np.int64)
    return np.sort(rng.choice(n, size=int(max_n), replace=False))
