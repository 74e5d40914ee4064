"""The spatial index (HEALPix cells) against a brute-force pass over every footprint, on a sky
with fields across RA 0, near the poles and scattered at random; and the rows written for an
exposure with and without a WCS."""
import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from archive import geometry
from archive.models import Exposure, SkyCell
from desom import footprint as fp


def _exposure(expnum, ra, dec):
    exposure = Exposure.objects.create(expnum=expnum, file_path=f"/nowhere/{expnum}.fits", checksum=str(expnum),
                                       ra_deg=ra, dec_deg=dec)
    geometry.store_footprint(exposure, None)  # no file: MegaCam's nominal field about the pointing
    return exposure


@pytest.fixture
def sky(db):
    rng = np.random.default_rng(7)
    places = [(0.1, 0.0), (359.9, 0.3), (180.0, 89.7), (10.0, -89.6), (45.0, 30.0), (45.5, 30.2), (46.2, 29.9)]
    places += [(float(rng.uniform(0, 360)), float(np.degrees(np.arcsin(rng.uniform(-1, 1))))) for _ in range(60)]
    places += [(float(40 + rng.normal(0, 2)), float(20 + rng.normal(0, 2))) for _ in range(60)]
    return [_exposure(1_000_000 + i, ra, dec) for i, (ra, dec) in enumerate(places)]


def _brute(exposures, shape):
    return sorted(e.expnum for e in exposures if geometry.intersects(fp.from_dali(e.s_region), shape))


def _indexed(shape):
    return sorted(geometry.filter_region(Exposure.objects.all(), [shape]).values_list("expnum", flat=True))


def test_index_agrees_with_a_scan(sky):
    rng = np.random.default_rng(11)
    shapes = [geometry.Circle(0.0, 0.1, 0.6), geometry.Circle(0.0, 90.0, 1.0), geometry.Circle(45.2, 30.1, 0.3),
              geometry.Circle(40.0, 20.0, 5.0), geometry.Circle(200.0, -30.0, 30.0),
              geometry.Range(359.0, 361.0, -1.0, 1.0), geometry.Range(30.0, 50.0, 15.0, 25.0),
              geometry.Range(-np.inf, np.inf, 85.0, 90.0),
              geometry.polygon("44.8 29.8 45.3 29.8 45.3 30.3".split()),
              geometry.polygon("359.5 -0.5 0.5 -0.5 0.5 0.5 359.5 0.5".split())]
    for _ in range(25):
        ra, dec = float(rng.uniform(0, 360)), float(np.degrees(np.arcsin(rng.uniform(-1, 1))))
        shapes.append(geometry.Circle(ra, dec, float(rng.uniform(0.05, 20))))
    for shape in shapes:
        assert _indexed(shape) == _brute(sky, shape), shape
    # Not vacuous: the shapes find something, and not everything.
    found = [len(_indexed(s)) for s in shapes[:10]]
    assert all(n > 0 for n in found[:9]) and max(found) < len(sky)


def test_a_query_reads_candidates_not_the_archive(sky):
    """A small cone tests only the exposures of its few cells, whatever the archive's size."""
    shape = geometry.Circle(45.2, 30.1, 0.3)
    ranges = geometry.cell_ranges(shape)
    assert 0 < len(ranges) <= geometry.MAX_RANGES
    candidates = set(geometry.candidates(shape).values_list("exposure_id", flat=True))
    assert 0 < len(candidates) < 10 < len(sky)
    with CaptureQueriesContext(connection) as captured:
        _indexed(shape)
    assert len(captured) <= 3


def test_huge_regions_stay_within_the_range_budget(db):
    for shape in (geometry.Circle(10, 10, 170), geometry.Range(0, 180, -60, 60),
                  geometry.polygon("0 -70 80 -70 80 70 0 70".split())):
        assert 0 < len(geometry.cell_ranges(shape)) <= geometry.MAX_RANGES


def test_stored_rows_follow_the_footprint(db):
    exposure = _exposure(42, 10.0, 20.0)
    assert exposure.footprint_kind == "nominal" and exposure.s_region
    cells = set(SkyCell.objects.filter(exposure=exposure).values_list("cell", flat=True))
    assert cells == set(geometry.cells_of(fp.from_dali(exposure.s_region))) and len(cells) >= 4
    moved = fp.nominal_footprint(200.0, -45.0)
    moved.kind = "wcs"
    geometry.store_footprint(exposure, moved)
    exposure.refresh_from_db()
    assert exposure.footprint_kind == "wcs"
    assert set(SkyCell.objects.filter(exposure=exposure).values_list("cell", flat=True)).isdisjoint(cells)
    nowhere = Exposure.objects.create(expnum=43, file_path="/nowhere/43.fits", checksum="43")
    geometry.store_footprint(nowhere, None)
    assert nowhere.s_region == "" and not SkyCell.objects.filter(exposure=nowhere).exists()
    assert 43 not in _indexed(geometry.Circle(0, 0, 180))


@pytest.mark.parametrize("text, needle", [
    ("CIRCLE 10 20", "ra dec radius"), ("CIRCLE 10 95 1", "declination"), ("BOX 1 2 3 4", "unknown shape"),
    ("POLYGON 1 2 3 4", "at least three"), ("POLYGON 0 0 120 0 240 10", "within 80"),
    ("RANGE 5 4 0 1", "empty"), ("CIRCLE 1 2 nan", "not a finite number"), ("", "empty value"),
])
def test_bad_regions_are_clear_errors(text, needle):
    with pytest.raises(geometry.GeometryError, match=needle):
        geometry.parse_pos(text)


def test_footprints_are_tested_as_arrays_with_the_full_tests_answer():
    """`meeting` tests many footprints of different vertex counts against a circle at once; each
    answer is the full test's (no shortcuts) for that footprint, in the rows' order."""
    rng = np.random.default_rng(3)
    polygons = []
    for _ in range(150):
        ra, dec = rng.uniform(38, 42), rng.uniform(18, 22)
        if rng.random() < 0.5:
            polygons.append(fp.nominal_footprint(ra, dec).polygon)
        else:
            polygons.append(fp.convex_hull([(ra + rng.normal(0, 0.5), dec + rng.normal(0, 0.5))
                                            for _ in range(int(rng.integers(3, 9)))]))
    regions = [fp.to_dali(p) for p in polygons]
    assert len({len(p) for p in polygons}) >= 3
    for circle in (geometry.Circle(40.0, 20.0, 1.0), geometry.Circle(41.5, 18.5, 0.2), geometry.Circle(40.0, 20.0, 0.01)):
        parsed = [fp.from_dali(r) for r in regions]
        expected = [fp._polygon_meets_circle(p, circle.ra, circle.dec, circle.radius) for p in parsed]
        assert geometry.meeting(regions, circle).tolist() == expected
        assert 0 < sum(expected) < len(expected)
    assert geometry.meeting([], geometry.Circle(0, 0, 1)).tolist() == []


def test_many_candidates_are_read_through_a_subquery_with_the_same_answer(sky, monkeypatch):
    shapes = [geometry.Circle(40.0, 20.0, 5.0), geometry.Circle(200.0, -30.0, 30.0), geometry.Range(30.0, 50.0, 15.0, 25.0)]
    listed = [_indexed(s) for s in shapes]
    assert all(len(found) > 2 for found in listed)
    monkeypatch.setattr(geometry, "MAX_LISTED_CANDIDATES", 2)
    assert [_indexed(s) for s in shapes] == listed == [_brute(sky, s) for s in shapes]
