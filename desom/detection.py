"""Source detection on one CCD, set up like the authors' Source Extractor run (paper 3.5, 5.2).

Both backends do the same steps with the same settings:

1. 2-D background and RMS maps: 64x64 px boxes, 3x3 box median filter (SE BACK_SIZE 64,
   BACK_FILTERSIZE 3), sigma-clipped; NaN and saturated pixels excluded from the estimate.
2. The background-subtracted image is smoothed with a 7x7 Gaussian of FWHM 3 px (SE's
   gauss_3.0_7x7 filter), plain convolution.
3. Pixels of the smoothed image above ``threshold_sigma`` x the background RMS, at least
   ``min_pixels`` 8-connected pixels, make a source (optionally deblended).
4. Centroid: barycentre of the (unsmoothed, background-subtracted, clipped at 0) pixel values
   over the source's footprint, as SE's X_IMAGE/Y_IMAGE.

Detectors, by name, in ``DETECTORS`` (the one registry: ImagingConfig, the ingest command's
``--detector`` choices and ARCHIVE_DETECTOR all read it): "photutils" (photutils.background +
photutils.segmentation; the library's default) and "sep" (the Source Extractor library; faster,
the archive's default). A new one is a function decorated with ``@register_detector("name")``
(docs/ARCHITECTURE.md, "Adding a detector"). Saturated pixels are masked for the background but not
for detection: a saturated star is still a source and should be found once, not as a ring.
NaN pixels are masked for both.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from desom.errors import UserError

__all__ = ["DetectionResult", "detect_sources", "smoothing_kernel", "DETECTORS", "register_detector",
           "detector_names", "get_detector", "UnknownDetector"]

# name -> detector(data, bad, bkg_mask, settings, keep_subtracted) -> DetectionResult, where
# data is the native float32 CCD, bad its NaN mask (or None), bkg_mask the pixels the background
# must ignore (NaN and saturated, or None), settings the dict detect_sources builds from the
# ImagingConfig. Filled below by @register_detector, in the order the names are offered.
DETECTORS: dict[str, Callable[..., DetectionResult]] = {}


class UnknownDetector(UserError):
    """A detector name that is not in the registry."""


def register_detector(name: str):
    """Decorator: add a detector function to ``DETECTORS`` under ``name``."""
    def add(function):
        if name in DETECTORS:
            raise ValueError(f"a detector named {name!r} is already registered")
        DETECTORS[name] = function
        return function
    return add


def detector_names() -> tuple[str, ...]:
    """The registered detectors' names, in registration order."""
    return tuple(DETECTORS)


def get_detector(name: str):
    """The detector registered as ``name``; UnknownDetector (a UserError) names the choices."""
    try:
        return DETECTORS[name]
    except (KeyError, TypeError):
        raise UnknownDetector(f"unknown detector {name!r}; choose one of: {', '.join(DETECTORS)}") from None


@dataclass
class DetectionResult:
    """Every source found on one CCD (before any edge cut). Coordinates are 0-based pixels of
    the array given (column x, row y)."""
    x: np.ndarray
    y: np.ndarray
    n_pixels: np.ndarray
    flux: np.ndarray
    background: float               # median of the background map
    background_rms: float           # median of the RMS map
    subtracted: np.ndarray | None   # background-subtracted float32 image (NaN kept)
    backend: str
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def __len__(self):
        return int(self.x.size)

    def inside(self, shape, margin: float) -> np.ndarray:
        """Boolean mask of the sources at least ``margin`` px from every edge of ``shape``."""
        ny, nx = shape
        return ((self.x >= margin) & (self.x <= nx - 1 - margin) &
                (self.y >= margin) & (self.y <= ny - 1 - margin))


def smoothing_kernel(fwhm: float = 3.0, size: int = 7) -> np.ndarray:
    """Normalised size x size Gaussian (integrated over pixels), as SE's gauss_3.0_7x7."""
    k1 = _kernel_1d(fwhm, size)
    return np.outer(k1, k1).astype(np.float32)


def _kernel_1d(fwhm, size):
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    edges = np.arange(size + 1) - size / 2.0
    cdf = np.array([0.5 * (1.0 + math.erf(e / (sigma * math.sqrt(2.0)))) for e in edges])
    k = np.diff(cdf)
    return (k / k.sum()).astype(np.float32)


def _smooth(image, fwhm, size):
    # The pixel-integrated Gaussian is separable: two 1-D passes cost 2*7 instead of 49 taps.
    from scipy.ndimage import correlate1d

    k1 = _kernel_1d(fwhm, size)
    out = correlate1d(image, k1, axis=0, mode="constant", cval=0.0)
    return correlate1d(out, k1, axis=1, mode="constant", cval=0.0, output=out)


def _setting(config, name, default):
    return getattr(config, name, default) if config is not None else default


def detect_sources(data: np.ndarray, config=None, *, saturated: np.ndarray | None = None,
                   backend: str | None = None, keep_subtracted: bool = True) -> DetectionResult:
    """Detect sources on one CCD (float array, NaN allowed). ``config`` is an ImagingConfig
    (or anything with its attribute names); ``backend`` overrides ``config.detector``."""
    backend = backend or _setting(config, "detector", "photutils")
    detector = get_detector(backend)
    data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"detect_sources needs a 2-D image, got shape {data.shape}")
    settings = detector_settings(config)
    data = np.ascontiguousarray(data, dtype=np.float32)   # native endian, as sep needs
    bad = ~np.isfinite(data)
    if not bad.any():
        bad = None
    bkg_mask = bad if saturated is None else (saturated if bad is None else bad | saturated)
    return detector(data, bad, bkg_mask, settings, keep_subtracted)


def detector_settings(config=None) -> dict:
    """The settings every detector reads, from an ImagingConfig (or anything with its
    attribute names; None gives the defaults)."""
    return dict(
        box=int(_setting(config, "background_box", 64)),
        filter_size=int(_setting(config, "background_filter", 3)),
        fwhm=float(_setting(config, "smoothing_fwhm", 3.0)),
        ksize=int(_setting(config, "kernel_size", 7)),
        thresh=float(_setting(config, "threshold_sigma", 2.0)),
        min_pixels=int(_setting(config, "min_pixels", 5)),
        deblend=bool(_setting(config, "deblend", False)),
        contrast=float(_setting(config, "deblend_contrast", 0.005)),
        levels=int(_setting(config, "deblend_levels", 32)),
        clean=bool(_setting(config, "clean", True)),
    )


def _centroids(sub, labels, n_labels):
    """Barycentres over each label's footprint, vectorised (no loop over sources)."""
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    w = sub[ys, xs].astype(np.float64)
    flux = np.bincount(lab, weights=np.nan_to_num(w), minlength=n_labels + 1)[1:]
    npix = np.bincount(lab, minlength=n_labels + 1)[1:]
    wp = np.clip(np.nan_to_num(w), 0.0, None)
    sw = np.bincount(lab, weights=wp, minlength=n_labels + 1)[1:]
    sx = np.bincount(lab, weights=wp * xs, minlength=n_labels + 1)[1:]
    sy = np.bincount(lab, weights=wp * ys, minlength=n_labels + 1)[1:]
    # A footprint with no positive pixel (rare, only on the smoothed image above threshold):
    # fall back to its geometric centre.
    gx = np.bincount(lab, weights=xs.astype(float), minlength=n_labels + 1)[1:]
    gy = np.bincount(lab, weights=ys.astype(float), minlength=n_labels + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(sw > 0, sx / sw, gx / np.maximum(npix, 1))
        y = np.where(sw > 0, sy / sw, gy / np.maximum(npix, 1))
    keep = npix > 0      # relabelled segmentations have no gaps, but be safe
    return x[keep], y[keep], npix[keep], flux[keep]


def _photutils_background(data, mask, s, notes):
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, SExtractorBackground, StdBackgroundRMS

    box = min(s["box"], *data.shape)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bkg = Background2D(data, box, mask=mask, filter_size=s["filter_size"],
                               sigma_clip=SigmaClip(sigma=3.0, maxiters=10),
                               bkg_estimator=SExtractorBackground(),
                               bkg_rms_estimator=StdBackgroundRMS())
            return (_upsample_mesh(bkg.background_mesh, box, data.shape),
                    _upsample_mesh(bkg.background_rms_mesh, box, data.shape))
    except ValueError as exc:
        # Too few unmasked pixels for a map: one global sigma-clipped level instead.
        notes.append(f"background map failed ({exc}); used a global level")
        return _global_background(data, mask)


def _upsample_mesh(mesh, box, shape):
    """The full-size map photutils would make from a mesh (bicubic spline zoom, grid mode,
    mirrored edges, cropped, clipped to the mesh's range), computed as two small matrix
    products: the zoom is a linear, separable operator, so zooming an identity matrix gives its
    1-D factors. Identical to Background2D.background to float rounding, ~6x faster, which
    matters because the 2-D spline evaluation was over half of photutils' time per CCD."""
    from scipy.ndimage import zoom

    mesh = np.asarray(mesh, dtype=np.float64)
    lo, hi = float(mesh.min()), float(mesh.max())
    if hi == lo:
        return np.full(shape, lo, np.float32)
    rows = zoom(np.eye(mesh.shape[0]), (box, 1), order=3, mode="reflect", grid_mode=True)
    cols = zoom(np.eye(mesh.shape[1]), (box, 1), order=3, mode="reflect", grid_mode=True)
    out = (rows[:shape[0]] @ mesh @ cols[:shape[1]].T).astype(np.float32)
    return np.clip(out, np.float32(lo), np.float32(hi), out=out)


def _global_background(data, mask):
    from astropy.stats import sigma_clipped_stats

    good = data[np.isfinite(data) & (True if mask is None else ~mask)]
    if good.size == 0:
        good = np.zeros(1, np.float32)
    _, med, std = sigma_clipped_stats(good, sigma=3.0, maxiters=10)
    shape = data.shape
    return (np.full(shape, med, np.float32), np.full(shape, max(std, 1e-12), np.float32))


@register_detector("photutils")
def _detect_photutils(data, bad, bkg_mask, s, keep_subtracted):
    from photutils.segmentation import deblend_sources
    from photutils.segmentation import detect_sources as _photutils_detect

    notes, timings = [], {}
    t0 = time.perf_counter()
    bkg, rms = _photutils_background(data, bkg_mask, s, notes)
    sub = data - bkg
    del bkg
    filled = sub if bad is None else np.where(bad, np.float32(0), sub)
    timings["background"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    smoothed = _smooth(filled, s["fwhm"], s["ksize"])
    del filled
    bkg_median, rms_median = _medians(data, sub, rms)
    threshold = rms
    threshold *= np.float32(s["thresh"])     # in place: one full-size map fewer
    del rms
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segm = _photutils_detect(smoothed, threshold, n_pixels=s["min_pixels"], mask=bad)
        if segm is not None and s["deblend"] and segm.n_labels:
            if _has_skimage():
                segm = deblend_sources(smoothed, segm, n_pixels=s["min_pixels"],
                                       n_levels=s["levels"], contrast=s["contrast"],
                                       progress_bar=False)
            else:
                notes.append("deblending skipped: photutils needs scikit-image for it "
                             "(not installed); use detector='sep' to deblend")
    del threshold, smoothed
    if segm is None or segm.n_labels == 0:
        x = y = flux = np.zeros(0)
        npix = np.zeros(0, np.int64)
    else:
        x, y, npix, flux = _centroids(sub, segm.data, int(segm.max_label))
    timings["detection"] = time.perf_counter() - t0
    return DetectionResult(x=x, y=y, n_pixels=npix, flux=flux, background=bkg_median,
                           background_rms=rms_median,
                           subtracted=sub if keep_subtracted else None,
                           backend="photutils", timings=timings, warnings=notes)


def _has_skimage() -> bool:
    import importlib.util

    return importlib.util.find_spec("skimage") is not None


def _medians(data, sub, rms):
    sample = np.s_[::4, ::4]   # a 1/16 sample is plenty for a summary number
    diff = data[sample] - sub[sample]
    diff = diff[np.isfinite(diff)]
    bkg_median = float(np.median(diff)) if diff.size else float("nan")
    return bkg_median, float(np.median(rms[sample]))


_SEP_PIXSTACK = [0]          # the value sep holds now
_SEP_PIXSTACK_CAP = [1_000_000]   # most pixels to ask for; grows when a crowded CCD overflows
_SEP_SUBOBJ = [0]


def _sep_limits(n_pixels):
    import sep

    # Crowded fields overflow sep's defaults (300000 pixels, 1024 sub-objects). The stack is
    # allocated whole at every extract call (tens of bytes a pixel), so it is sized to the
    # image: an image cannot need more pixels than it has, and a 1M stack on a 512x512 CCD made
    # extraction 4x slower than the detection itself. Overflows raise the cap (x4) and retry.
    want = int(max(min(int(n_pixels), _SEP_PIXSTACK_CAP[0]), 10_000))
    if want != _SEP_PIXSTACK[0]:
        sep.set_extract_pixstack(want)
        _SEP_PIXSTACK[0] = want
    if _SEP_SUBOBJ[0] < 8192:
        sep.set_sub_object_limit(8192)
        _SEP_SUBOBJ[0] = 8192


@register_detector("sep")
def _detect_sep(data, bad, bkg_mask, s, keep_subtracted):
    import sep

    notes, timings = [], {}
    _sep_limits(data.size)
    t0 = time.perf_counter()
    work = data if bad is None else np.where(bad, np.float32(0), data)
    try:
        bkg = sep.Background(work, mask=bkg_mask, bw=s["box"], bh=s["box"],
                             fw=s["filter_size"], fh=s["filter_size"])
        back = bkg.back().astype(np.float32, copy=False)
        rms = bkg.rms().astype(np.float32, copy=False)
        del bkg
    except Exception as exc:
        notes.append(f"background map failed ({exc}); used a global level")
        back, rms = _global_background(data, bkg_mask)
    del work
    sub = data - back
    del back
    filled = sub if bad is None else np.where(bad, np.float32(0), sub)
    timings["background"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # A zero RMS (flat patch) would make the threshold zero: floor it, in place.
    np.maximum(rms, np.float32(np.finfo(np.float32).tiny), out=rms)
    kernel = smoothing_kernel(s["fwhm"], s["ksize"])
    kwargs = dict(thresh=s["thresh"], err=rms, mask=bad, minarea=s["min_pixels"],
                  filter_kernel=kernel, filter_type="conv", deblend_nthresh=s["levels"],
                  deblend_cont=s["contrast"] if s["deblend"] else 1.0, clean=s["clean"])
    objects = None
    for attempt in range(3):
        try:
            objects = sep.extract(filled, **kwargs)
            break
        except Exception as exc:   # pixel stack / sub-object overflow on very crowded CCDs
            message = str(exc)
            if attempt == 2 or not ("pixel buffer" in message or "deblend" in message
                                    or "overflow" in message or "limit" in message):
                notes.append(f"sep extraction failed: {message}")
                break
            _SEP_PIXSTACK_CAP[0] = max(_SEP_PIXSTACK_CAP[0], _SEP_PIXSTACK[0]) * 4
            _SEP_PIXSTACK[0] = _SEP_PIXSTACK_CAP[0]
            sep.set_extract_pixstack(int(_SEP_PIXSTACK[0]))
            _SEP_SUBOBJ[0] *= 4
            sep.set_sub_object_limit(int(_SEP_SUBOBJ[0]))
    bkg_median, rms_median = _medians(data, sub, rms)
    del rms, filled
    if objects is None or len(objects) == 0:
        x = y = flux = np.zeros(0)
        npix = np.zeros(0, np.int64)
    else:
        x = np.asarray(objects["x"], float)
        y = np.asarray(objects["y"], float)
        npix = np.asarray(objects["npix"], np.int64)
        flux = np.asarray(objects["flux"], float)
    timings["detection"] = time.perf_counter() - t0
    return DetectionResult(x=x, y=y, n_pixels=npix, flux=flux, background=bkg_median,
                           background_rms=rms_median,
                           subtracted=sub if keep_subtracted else None,
                           backend="sep", timings=timings, warnings=notes)
