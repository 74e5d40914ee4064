"""Footprints from the CCDs' WCS (raw files count overscan in their WCS, processed ones do not)
and the spherical geometry every spatial query rests on."""
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from desom import footprint as fp
from desom.fits_io import open_exposure
from desom.simulate.exposure import simulate_exposure

SHAPE = (256, 128)  # (ny, nx) per CCD


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same simulated exposure (8 CCDs on a 4 x 2 grid) written raw and processed."""
    out = tmp_path_factory.mktemp("fp")
    paths = {}
    for layout in ("raw", "processed"):
        paths[layout] = out / f"{layout}.fits"
        simulate_exposure("good", 11, paths[layout], n_ccds=8, ccd_shape=SHAPE, layout=layout, expnum=1200001,
                          dead_ccd_prob=0.0)
    return paths


def _read(path):
    with open_exposure(path) as reader:
        return fp.read_footprint(reader)


def test_raw_and_processed_give_the_same_footprint(pair):
    raw, processed = _read(pair["raw"]), _read(pair["processed"])
    assert raw.kind == processed.kind == "wcs" and len(raw.ccds) == 8
    for a, b in zip(raw.ccds, processed.ccds):
        assert (a.nx, a.ny) == (SHAPE[1], SHAPE[0]) == (b.nx, b.ny)
        assert np.allclose(a.polygon, b.polygon, atol=1e-9)
    assert np.allclose(raw.polygon, processed.polygon, atol=1e-9)


def test_ccd_corners_are_the_outer_edges_of_the_science_pixels(pair):
    """Each CCD's polygon passes through the sky positions of its science area's outer corners,
    computed here straight from the processed file's WCS (no overscan to account for)."""
    found = _read(pair["processed"])
    with fits.open(pair["processed"]) as hdul:
        for ccd in found.ccds:
            wcs = WCS(hdul[ccd.hdu_index].header)
            ny, nx = hdul[ccd.hdu_index].data.shape
            ra, dec = wcs.all_pix2world([-0.5, nx - 0.5, nx - 0.5, -0.5], [-0.5, -0.5, ny - 0.5, ny - 0.5], 0)
            expected = {(round(r % 360, 7), round(d, 7)) for r, d in zip(ra, dec)}
            assert {(round(r, 7), round(d, 7)) for r, d in ccd.polygon} == expected
            # Every science pixel's centre lies inside.
            ys, xs = np.mgrid[0:ny:17, 0:nx:13]
            pr, pd = wcs.all_pix2world(xs.ravel(), ys.ravel(), 0)
            assert fp.polygon_contains(ccd.polygon, pr, pd).all()


def test_sizes_follow_the_mosaic(pair):
    found = _read(pair["raw"])
    assert abs(found.pixel_scale_arcsec - 0.185) < 1e-6
    # 2 columns of 128 px and 4 rows of 256 px with the simulator's 80 px gaps.
    assert (found.xel1, found.xel2) == (2 * 128 + 80, 4 * 256 + 3 * 80)
    ra, dec, reach = fp.enclosing_circle(found.polygon)
    assert fp.polygon_contains(found.polygon, ra, dec)
    diagonal = np.hypot(found.xel1, found.xel2) * 0.185 / 3600
    assert abs(found.fov_deg - diagonal) < 0.02 * diagonal
    # DALI's vertex order: right ascension increases along the southern edge.
    first, second = found.polygon[0], found.polygon[1]
    assert second[0] > first[0] and abs(second[1] - first[1]) < 1e-6


def test_a_file_without_a_wcs_has_no_footprint(tmp_path):
    from tests.desom import fitsfactory

    path = tmp_path / "nowcs.fits"
    fitsfactory.write_exposure(path, n_ccds=2, shape=(64, 32))
    assert _read(path) is None
    nominal = fp.nominal_footprint(10.0, 89.5)
    assert nominal.kind == "nominal" and fp.polygon_contains(nominal.polygon, 10.0, 89.5)
    assert abs(nominal.fov_deg - np.hypot(0.96, 0.94)) < 0.01


def _random_polygon(rng, ra, dec, size):
    """A convex quadrilateral of about `size` degrees about (ra, dec), via a small WCS."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.cdelt = [-1.0, 1.0]
    angle = rng.uniform(0, np.pi / 2)
    x = np.array([-1, 1, 1, -1]) * size / 2
    y = np.array([-1, -1, 1, 1]) * size / 2 * rng.uniform(0.5, 1.0)
    xr, yr = x * np.cos(angle) - y * np.sin(angle), x * np.sin(angle) + y * np.cos(angle)
    r, d = wcs.wcs_pix2world(xr, yr, 0)
    return fp.orient(list(zip(r, d)))


def _dense_points(polygon, n=800):
    """Points filling the polygon (on its edges and across it) for brute-force distances."""
    v = fp.unit(*np.asarray(polygon).T)
    pts = []
    for a, b in zip(v, np.roll(v, -1, axis=0)):
        for t in np.linspace(0, 1, n):
            p = (1 - t) * a + t * b
            pts.append(p / np.linalg.norm(p))
    centre = v.mean(axis=0)
    centre /= np.linalg.norm(centre)
    pts = np.array(pts)
    fill = [(1 - s) * centre + s * p for s in np.linspace(0, 1, 12) for p in pts[::40]]
    allp = np.vstack([pts, fill])
    allp /= np.linalg.norm(allp, axis=1)[:, None]
    return np.degrees(np.arctan2(allp[:, 1], allp[:, 0])) % 360, np.degrees(np.arcsin(allp[:, 2]))


@pytest.mark.parametrize("dec", [0.0, 45.0, -70.0, 89.2])
def test_circle_test_agrees_with_brute_force(dec):
    rng = np.random.default_rng(int(dec * 10) + 1000)
    for _ in range(40):
        ra = rng.choice([0.2, 359.8, rng.uniform(0, 360)])
        poly = _random_polygon(rng, ra, dec, rng.uniform(0.2, 1.5))
        cra = (ra + rng.normal(0, 1.0)) % 360
        cdec = float(np.clip(dec + rng.normal(0, 1.0), -90, 90))
        pr, pd = _dense_points(poly)
        nearest = float(np.min(fp.angular_distance(cra, cdec, pr, pd)))
        for radius in (nearest * 0.95, nearest * 1.05):
            if abs(radius - nearest) < 1e-4:
                continue
            assert fp.polygon_intersects_circle(poly, cra, cdec, radius) is (radius >= nearest) or \
                fp.polygon_contains(poly, cra, cdec)


def test_polygon_overlap_cases():
    square = fp.orient([(10, 10), (11, 10), (11, 11), (10, 11)])
    assert fp.polygon_intersects_polygon(square, [(10.5, 10.5), (10.6, 10.5), (10.55, 10.6)])   # inside
    assert fp.polygon_intersects_polygon([(10.5, 10.5), (10.6, 10.5), (10.55, 10.6)], square)
    assert fp.polygon_intersects_polygon(square, [(9, 9), (12, 9), (12, 12), (9, 12)])          # around
    assert fp.polygon_intersects_polygon(square, [(10.5, 9.5), (10.6, 9.5), (10.6, 11.5), (10.5, 11.5)])  # a bar across
    assert not fp.polygon_intersects_polygon(square, [(11.1, 10), (12, 10), (12, 11)])
    assert not fp.polygon_intersects_polygon(square, [(190, -10), (191, -10), (191, -11)])     # other side of the sky
    # Across RA 0.
    wrap = fp.orient([(359.5, 0), (0.5, 0), (0.5, 1), (359.5, 1)])
    assert fp.polygon_contains(wrap, 0.0, 0.5) and not fp.polygon_contains(wrap, 180.0, 0.5)
    assert fp.polygon_intersects_box(wrap, 0.2, 0.3, 0.4, 0.6)
    assert fp.polygon_intersects_box(wrap, 359.6, 359.7, 0.4, 0.6)
    assert not fp.polygon_intersects_box(wrap, 10, 20, -5, 5)
    assert not fp.polygon_intersects_box(wrap, 0, 1, 2, 3)


def test_bad_polygons_are_refused():
    with pytest.raises(fp.FootprintError):
        fp.orient([(10, 10), (10, 10), (11, 11)])
    with pytest.raises(fp.FootprintError):
        fp.orient([(10, 0), (11, 0), (12, 0)])  # no area: all on one great circle (the equator)


def test_circle_shortcuts_give_the_full_tests_answer():
    """polygon_intersects_circle settles most cases by a vertex inside the circle or a circle
    beyond the vertices' cap; on random footprints (nominal fields, irregular hulls, a field on
    the pole and across RA 0) and circles near, across and far from them, it answers as the full
    test does."""
    rng = np.random.default_rng(7)
    polygons = [fp.nominal_footprint(0.2, 89.7).polygon, fp.nominal_footprint(359.9, -3.0).polygon]
    for _ in range(40):
        ra, dec = rng.uniform(0, 360), np.degrees(np.arcsin(rng.uniform(-0.95, 0.95)))
        polygons.append(fp.nominal_footprint(ra, dec).polygon)
        spread = rng.uniform(0.2, 3.0)
        points = [(ra + rng.normal(0, spread) / max(np.cos(np.radians(dec)), 0.1), np.clip(dec + rng.normal(0, spread), -89, 89))
                  for _ in range(8)]
        polygons.append(fp.convex_hull(points))
    checked = 0
    for polygon in polygons:
        cra, cdec, reach = fp.enclosing_circle(polygon)
        for _ in range(25):
            offset = rng.uniform(0, 3 * reach + 2)
            angle = rng.uniform(0, 2 * np.pi)
            dec = float(np.clip(cdec + offset * np.sin(angle), -90, 90))
            ra = float((cra + offset * np.cos(angle) / max(np.cos(np.radians(cdec)), 0.05)) % 360)
            for radius in (rng.uniform(0.01, 0.5), rng.uniform(0.5, 5.0)):
                assert fp.polygon_intersects_circle(polygon, ra, dec, radius) == \
                    fp._polygon_meets_circle(polygon, ra, dec, radius), (polygon, ra, dec, radius)
                checked += 1
            # at the border: the distance to the nearest vertex, a hair in and out
            nearest = float(np.min(fp.angular_distance(ra, dec, *np.asarray(polygon).T)))
            for radius in (nearest * (1 - 1e-9), nearest * (1 + 1e-9)):
                assert fp.polygon_intersects_circle(polygon, ra, dec, radius) == \
                    fp._polygon_meets_circle(polygon, ra, dec, radius), (polygon, ra, dec, radius)
                checked += 1
    assert checked > 8000
