"""Sky coverage of a set of footprints as an IVOA MOC (Multi-Order Coverage map, mocpy), its
FITS and JSON serialisations, and a picture of it. Plain library code: the archive chooses the
footprints (archive.services.coverage)."""
from __future__ import annotations

import io
import json
from collections.abc import Iterable

# Depth 10: HEALPix cells of 3.4 arcmin, fine against a MegaCam field of about one degree.
DEFAULT_DEPTH = 10
CHUNK = 2000
ALL_SKY_ORDER = 4
# mocpy's WCS spans `fov` across the figure; the Aitoff ellipse of the whole sky fills it at about this.
AIT_FOV_DEG = 170.0


def footprints_moc(polygons: Iterable[list[tuple[float, float]]], max_depth: int = DEFAULT_DEPTH):
    """The union of the polygons' coverage ((ra, dec) vertices in degrees, ICRS), built a chunk
    at a time so that memory stays bounded by the chunk, not the archive."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from mocpy import MOC

    total = MOC.new_empty(max_depth)
    chunk: list = []

    def flush(total):
        if not chunk:
            return total
        mocs = MOC.from_polygons([SkyCoord([v[0] for v in p], [v[1] for v in p], unit=u.deg) for p in chunk],
                                 max_depth=max_depth, n_threads=1)
        chunk.clear()
        return total.union(*mocs) if mocs else total

    for polygon in polygons:
        if polygon and len(polygon) >= 3:
            chunk.append(polygon)
        if len(chunk) >= CHUNK:
            total = flush(total)
    return flush(total)


def moc_fits(moc) -> bytes:
    out = io.BytesIO()
    moc.serialize(format="fits").writeto(out)
    return out.getvalue()


def moc_json(moc) -> bytes:
    return json.dumps(moc.serialize(format="json")).encode()


def coverage_png(moc, title: str, width_px: int = 800) -> bytes:
    """The coverage drawn on the sky (Aitoff for a wide MOC, a gnomonic view about it otherwise)."""
    import astropy.units as u
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.coordinates import Angle, SkyCoord
    from mocpy import WCS

    fig = plt.figure(figsize=(width_px / 100, width_px / 200), dpi=100)
    if moc.empty():
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no public coverage yet", ha="center", va="center")
        ax.set_axis_off()
    else:
        lon, lat = moc.barycenter().ra, moc.barycenter().dec
        centre = SkyCoord(lon, lat, frame="icrs")
        reach = float(moc.largest_distance_from_coo_to_vertices(centre).to_value(u.deg))
        fov = min(360.0, max(2.5 * reach, 1.0))
        projection = "AIT" if fov > 120 else "TAN"
        shown = moc
        if projection == "AIT":
            centre = SkyCoord(0 * u.deg, 0 * u.deg, frame="icrs")
            fov = AIT_FOV_DEG
            # On the whole sky a one-degree field is a pixel: draw the order-4 cells (3.7 deg) it meets.
            shown = moc.degrade_to_order(min(moc.max_order, ALL_SKY_ORDER))
        with WCS(fig, fov=fov * u.deg, center=centre, coordsys="icrs", rotation=Angle(0, u.deg),
                 projection=projection) as wcs:
            ax = fig.add_subplot(1, 1, 1, projection=wcs)
            shown.fill(ax=ax, wcs=wcs, alpha=0.6, fill=True, color="#2a7ab0", linewidth=0)
            shown.border(ax=ax, wcs=wcs, alpha=0.9, color="#123c58")
            if shown is not moc:
                ax.text(0.01, 0.01, "cells enlarged to 3.7 deg", transform=ax.transAxes, fontsize=7, color="0.4")
            ax.set_xlabel("RA")
            ax.set_ylabel("Dec")
            ax.coords.grid(color="0.7", linestyle=":")
    ax.set_title(f"{title}: {100 * moc.sky_fraction:.4f}% of the sky" if not moc.empty() else title, fontsize=10)
    out = io.BytesIO()
    fig.savefig(out, format="png", bbox_inches="tight")
    plt.close(fig)
    return out.getvalue()
