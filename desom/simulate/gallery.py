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


def make_gallery(out_png, severity: float = 0.75, seed: int = 11, zoom: int = 256,
                 ccd_shape=(1024, 512), calibration: bool = True) -> Path:
    """Simulate one exposure per kind (same seed, so same field and conditions apart from the
    kind) and draw a zoom x zoom region of CCD 0 of each, titled with kind and severity."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .exposure import simulate_exposure

    kinds = list(KINDS) + (list(CALIBRATION_KINDS) if calibration else [])
    ncols = 5
    nrows = int(np.ceil(len(kinds) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.8 * nrows))
    with tempfile.TemporaryDirectory() as tmp:
        for ax, kind in zip(axes.ravel(), kinds):
            path = Path(tmp) / f"{kind}.fits"
            # Fixed i band and 400 s so panels differ by kind only (low exposure sets its own).
            over = {"filter_band": "i", "sky_mag": 19.8}
            if kind not in ("bgp_low_exposure", "bias", "flat"):
                over["exptime"] = 400.0
            t = simulate_exposure(kind, seed, path, n_ccds=1, ccd_shape=ccd_shape,
                                  severity=severity if kind in KINDS else 0.0,
                                  dead_ccd_prob=0.0, overrides=over)
            img = science_area(path)
            # Raw amplifiers differ in gain: even them out for the eye.
            half = img.shape[1] // 2
            if kind in KINDS or kind == "flat":
                img[:, half:] *= np.median(img[:, :half]) / max(np.median(img[:, half:]), 1e-3)
            y0 = (img.shape[0] - zoom) // 2
            x0 = (img.shape[1] - zoom) // 2
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
        for ax in axes.ravel()[len(kinds):]:
            ax.axis("off")
    fig.suptitle(f"desom.simulate: {zoom}x{zoom} px ({zoom * 0.185 / 60:.1f}') of CCD 0, asinh stretch",
                 fontsize=11)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
