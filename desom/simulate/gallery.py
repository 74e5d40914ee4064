"""A gallery PNG with one example per kind: a zoomed region of one CCD, asinh-stretched."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .exposure import OVERSCAN_COLS
from .params import CALIBRATION_KINDS, FIVE_CLASS, KINDS


def science_area(path, ext: int = 1) -> np.ndarray:
    """Bias-subtracted science area (float32) of one CCD of a simulated raw or processed file."""
    from astropy.io import fits
    with fits.open(path) as hdul:
        h, data = hdul[ext].header, hdul[ext].data.astype(np.float32)
    if "BSECA" not in h:
        return data
    ny = data.shape[0] - 32
    nx = data.shape[1] - 2 * OVERSCAN_COLS
    sci = data[:ny, OVERSCAN_COLS:OVERSCAN_COLS + nx].copy()
    sci[:, : nx // 2] -= np.median(data[:, :OVERSCAN_COLS])
    sci[:, nx // 2:] -= np.median(data[:, OVERSCAN_COLS + nx:])
    return sci


def _window(img: np.ndarray, zoom: int) -> tuple[int, int]:
    """Corner of a zoom x zoom window centred on the brightest unsaturated source, so every
    panel shows at least one source in detail (the centre of the CCD otherwise)."""
    from scipy.ndimage import uniform_filter
    ny, nx = img.shape
    smooth = uniform_filter(img, 9)  # wide enough to dilute cosmic rays, not donuts or trails
    near_saturated = uniform_filter((img > 40000).astype(np.float32), 41) > 0
    smooth[near_saturated] = -np.inf  # skip saturated stars and their bleed trails
    smooth[:, : nx // 8] = smooth[:, -nx // 8:] = -np.inf
    smooth[: ny // 8] = smooth[-ny // 8:] = -np.inf
    cy, cx = np.unravel_index(np.argmax(smooth), img.shape)
    if not np.isfinite(smooth[cy, cx]):
        cy, cx = ny // 2, nx // 2
    y0 = int(np.clip(cy - zoom // 2, 0, ny - zoom))
    x0 = int(np.clip(cx - zoom // 2, 0, nx - zoom))
    return y0, x0


def make_gallery(out_png, severities=(0.2, 0.8), seed: int = 11, zoom: int = 256,
                 ccd_shape=(1024, 512), calibration: bool = True) -> Path:
    """Simulate each kind at each severity (same seed, so same field and conditions apart
    from kind and severity) and draw a zoom x zoom region of CCD 0 of each, titled with kind,
    severity and the parameter the severity moves."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .exposure import simulate_exposure

    panels = [(k, sev) for k in KINDS for sev in severities]
    panels += [(k, 0.0) for k in CALIBRATION_KINDS] if calibration else []
    ncols = 2 * len(severities) + (1 if len(severities) == 2 else 0)
    ncols = 6 if len(severities) == 2 else max(ncols, 4)
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.9 * ncols, 3.3 * nrows))
    with tempfile.TemporaryDirectory() as tmp:
        for ax, (kind, severity) in zip(axes.ravel(), panels):
            path = Path(tmp) / f"{kind}_{severity}.fits"
            # Fixed i band and 400 s so panels differ by kind only (low exposure sets its own).
            over = {"filter_band": "i", "sky_mag": 19.8}
            if kind not in ("bgp_low_exposure", "bias", "flat"):
                over["exptime"] = 400.0
            t = simulate_exposure(kind, seed, path, n_ccds=1, ccd_shape=ccd_shape,
                                  severity=severity,
                                  dead_ccd_prob=0.0, overrides=over)
            img = science_area(path)
            # Raw amplifiers differ in gain: even them out for the eye.
            half = img.shape[1] // 2
            if kind in KINDS or kind == "flat":
                img[:, half:] *= np.median(img[:, :half]) / max(np.median(img[:, half:]), 1e-3)
            y0, x0 = _window(img, zoom) if kind in KINDS else ((img.shape[0] - zoom) // 2,
                                                                (img.shape[1] - zoom) // 2)
            cut = img[y0:y0 + zoom, x0:x0 + zoom]
            sky = np.median(cut)
            noise = 1.4826 * np.median(np.abs(cut - sky)) + 1e-3
            stretched = np.arcsinh((cut - sky) / (3 * noise))
            ax.imshow(stretched, origin="lower", cmap="gray", vmin=-1, vmax=np.arcsinh(40))
            ax.set_xticks([])
            ax.set_yticks([])
            if kind in KINDS:
                detail = {
                    "good": f"seeing {t.seeing_arcsec:.2f}\"",
                    "bt": f"trail {t.trail_arcsec:.1f}\"", "rbt": f"trail {t.trail_arcsec:.1f}\"",
                    "bad_seeing": f"seeing {t.seeing_arcsec:.2f}\"",
                    "bad_focus": f"donut {t.defocus_arcsec:.1f}\"",
                    "bgp_crowded": f"{t.star_density:.0f} stars/arcmin2",
                    "bgp_low_exposure": f"{t.exptime:.0f} s",
                    "bgp_pattern": f"{t.pattern} {t.pattern_amplitude:.0%}",
                }[kind]
                title = f"{kind} ({FIVE_CLASS[kind]})\nseverity {t.severity:.2f}, {detail}"
            else:
                title = f"{kind.upper()} (OBSTYPE {t.obstype})"
            ax.set_title(title, fontsize=9)
        for ax in axes.ravel()[len(panels):]:
            ax.axis("off")
    fig.suptitle(f"desom.simulate: {zoom}x{zoom} px ({zoom * 0.185 / 60:.1f}') of CCD 0 around its "
                 "brightest unsaturated source, asinh stretch; i band, 400 s unless low exposure",
                 fontsize=11)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
