"""The plain baseline's source statistics on drawn sources whose shape we know, and its
k-means clusterer."""
import numpy as np
import pytest

from desom.baseline import (FEATURE_NAMES, BaselineClusterer, SourceStatistics, coherent_ellipticity, coherent_sky_slope,
                            background_structure, stamp_shapes)

SIZE = 32


def _grid():
    yy, xx = np.indices((SIZE, SIZE)).astype(float)
    return yy - SIZE // 2, xx - SIZE // 2


def gaussian(fwhm, elongation=1.0, angle_deg=0.0, amplitude=1000.0):
    y, x = _grid()
    sigma = fwhm / 2.3548
    a = np.deg2rad(angle_deg)
    u = x * np.cos(a) + y * np.sin(a)
    v = -x * np.sin(a) + y * np.cos(a)
    return amplitude * np.exp(-(u ** 2) / (2 * (sigma * elongation) ** 2) - v ** 2 / (2 * sigma ** 2))


def donut(outer_radius=7.0, hole=0.45, amplitude=400.0):
    y, x = _grid()
    r = np.hypot(y, x)
    ring = ((r <= outer_radius) & (r >= hole * outer_radius)).astype(float)
    from scipy.ndimage import gaussian_filter
    return amplitude * gaussian_filter(ring, 1.0)


def test_fwhm_grows_with_the_seeing_and_round_stars_are_round():
    stamps = np.stack([gaussian(3.0), gaussian(6.0), gaussian(9.0)])
    shapes = stamp_shapes(stamps, noise=1.0)
    fwhm = shapes["fwhm_px"]
    assert fwhm[0] < fwhm[1] < fwhm[2]
    # Thresholding at 2 sigma trims the wings a little, never inflates them.
    assert fwhm[1] == pytest.approx(6.0, rel=0.25)
    assert np.all(shapes["elongation"] < 1.1)
    # The core (1.5 px) of a compact star is dimmer than its centre pixel; still far from a donut.
    assert np.all(shapes["donut"] < 0.35) and shapes["donut"][2] < shapes["donut"][0]


def test_trails_are_elongated_at_any_angle():
    stamps = np.stack([gaussian(3.0, elongation=3.0, angle_deg=a) for a in (0, 37, 90, 145)])
    shapes = stamp_shapes(stamps, noise=1.0)
    assert np.all(shapes["elongation"] > 2.0)
    assert np.ptp(shapes["elongation"]) < 0.5


def test_a_donut_has_a_hollow_centre():
    shapes = stamp_shapes(np.stack([donut(), gaussian(4.0)]), noise=1.0)
    assert shapes["donut"][0] > 0.6 > 0.35 > shapes["donut"][1]


def test_saturated_stars_are_left_out_of_the_shapes():
    # Two round stars, one saturated (flat top, flagged in the CCD's mask) and one trailed:
    # the saturated one must not enter the medians.
    image = np.zeros((300, 300), np.float32)
    image[84:116, 84:116] += np.minimum(gaussian(4.0, amplitude=5000.0), 1500.0).astype(np.float32)
    image[184:216, 184:216] += gaussian(4.0, elongation=3.0).astype(np.float32)
    saturated = image >= 1500.0
    stats = SourceStatistics(edge_margin=37)
    stats.on_detection(_CCD(image, saturated), _Detections([100, 200], [100, 200], [9e4, 3e3], image, 1.0),
                       np.array([True, True]))
    assert dict(zip(FEATURE_NAMES, stats.features()))["elongation"] > 2.0


def test_cosmic_ray_hits_are_not_measured_as_sources():
    hit = np.zeros((SIZE, SIZE))
    hit[16, 16], hit[15, 16] = 5000.0, 3000.0      # two pixels, no wings
    shapes = stamp_shapes(np.stack([hit, gaussian(2.6)]), noise=1.0)
    assert np.isnan(shapes["donut"][0]) and np.isnan(shapes["fwhm_px"][0])
    assert np.isfinite(shapes["donut"][1])         # the sharpest seeing still counts as a star


def test_faint_or_empty_stamps_are_unmeasurable_not_zero():
    shapes = stamp_shapes(np.zeros((2, SIZE, SIZE)), noise=1.0)
    assert np.isnan(shapes["fwhm_px"]).all()
    empty = stamp_shapes(np.zeros((0, SIZE, SIZE)), noise=1.0)
    assert empty["fwhm_px"].shape == (0,)


def test_background_structure_sees_a_gradient_not_stars():
    rng = np.random.default_rng(0)
    flat = 1000.0 + rng.normal(0, 10, (512, 512)).astype(np.float32)
    stars = flat.copy()
    for y, x in rng.integers(20, 490, (60, 2)):
        stars[y - 2:y + 3, x - 2:x + 3] += 3000.0
    ramp = flat * np.linspace(0.85, 1.15, 512, dtype=np.float32)[None, :]
    assert background_structure(flat) < 0.01
    assert background_structure(stars) < 0.02
    assert background_structure(ramp) > 0.15
    assert np.isnan(background_structure(np.zeros((16, 16), np.float32)))


class _CCD:
    def __init__(self, data, saturated=None):
        self.data, self.saturated = data, saturated


class _Detections:
    def __init__(self, x, y, flux, subtracted, rms):
        self.x, self.y, self.flux = np.asarray(x, float), np.asarray(y, float), np.asarray(flux, float)
        self.subtracted, self.background_rms = subtracted, rms


def test_source_statistics_collects_density_and_shapes_across_ccds():
    stats = SourceStatistics(edge_margin=37)
    image = np.zeros((300, 300), np.float32)
    xs, ys = [80, 150, 220, 150], [80, 150, 220, 80]
    for x, y in zip(xs, ys):
        image[y - 16:y + 16, x - 16:x + 16] += gaussian(5.0, elongation=2.0).astype(np.float32)
    det = _Detections(xs + [5], ys + [5], [1000] * 4 + [10], image, 1.0)   # the last one is at the edge
    inside = np.array([True] * 4 + [False])
    stats.on_detection(_CCD(image + 500.0), det, inside)
    stats.on_detection(_CCD(image + 500.0), det, inside)
    f = dict(zip(FEATURE_NAMES, stats.features()))
    area = 2 * (300 - 74) ** 2 / 1e6
    assert f["log_density"] == pytest.approx(np.log10(1 + 8 / area))
    assert f["elongation"] > 1.7
    assert f["donut"] < 0.3


def test_an_exposure_without_sources_gives_nan_shapes():
    stats = SourceStatistics()
    image = np.full((200, 200), 100.0, np.float32)
    stats.on_detection(_CCD(image), _Detections([], [], [], image - 100.0, 1.0), np.zeros(0, bool))
    f = dict(zip(FEATURE_NAMES, stats.features()))
    assert f["log_density"] == 0.0
    assert np.isnan(f["fwhm_px"]) and np.isnan(f["donut"])


def test_clusterer_separates_groups_and_fills_missing_values():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 0.1, (50, 5))
    b = rng.normal(3, 0.1, (50, 5))
    x = np.vstack([a, b])
    x[3, 1] = np.nan                              # one unmeasurable statistic
    model = BaselineClusterer(2, seed=0).fit(x)
    labels = model.predict(x)
    assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1 and labels[0] != labels[-1]
    assert np.isfinite(model.transform(x)).all()
    with pytest.raises(ValueError, match="fewer than"):
        BaselineClusterer(200).fit(x)
    with pytest.raises(ValueError, match=r"\(n, 5\)"):
        model.predict(x[:, :3])


def _noisy(stamps, seed):
    return stamps + np.random.default_rng(seed).normal(0.0, 1.0, stamps.shape)


def test_a_shared_trail_is_coherent_where_randomly_oriented_shapes_are_not():
    rng = np.random.default_rng(3)
    # Galaxies: strongly elongated, every which way; stars trailed by a fraction of the seeing,
    # all along 30 degrees; round stars. Their median elongations overlap, their shared
    # ellipticity does not.
    galaxies = np.stack([gaussian(3.5, elongation=1.6, angle_deg=a, amplitude=300.0) for a in rng.uniform(0, 180, 600)])
    trailed = np.stack([gaussian(3.5, elongation=1.15, angle_deg=30.0, amplitude=300.0) for _ in range(60)])
    round_ = np.stack([gaussian(3.5, amplitude=300.0) for _ in range(60)])
    shape = {name: stamp_shapes(_noisy(s, i), noise=1.0) for i, (name, s) in
             enumerate([("galaxies", galaxies), ("trailed", trailed), ("round", round_)])}
    coherence = {name: coherent_ellipticity(s["e1"], s["e2"]) for name, s in shape.items()}
    assert np.nanmedian(shape["galaxies"]["elongation"]) > np.nanmedian(shape["trailed"]["elongation"])
    assert coherence["trailed"] > 0.05 > 0.03 > max(coherence["galaxies"], coherence["round"])
    # the direction: a 30-degree trail has e2 / e1 = tan(60 degrees)
    assert np.nanmedian(shape["trailed"]["e2"]) / np.nanmedian(shape["trailed"]["e1"]) == pytest.approx(np.sqrt(3), rel=0.2)
    assert np.isnan(coherent_ellipticity(shape["trailed"]["e1"][:5], shape["trailed"]["e2"][:5]))


def test_a_gradient_tilts_the_sky_the_same_way_under_every_source():
    rng = np.random.default_rng(5)
    n, noise = 500, np.full(500, 10.0)
    # each source's fitted local slope: noise of 0.002 sky-sigma per pixel in any direction
    flat_x, flat_y = rng.normal(0, 0.02, n), rng.normal(0, 0.02, n)
    tilt = 0.02                                  # ADU per pixel, along x: 0.064 sigma across a stamp
    flat = coherent_sky_slope(flat_x, flat_y, noise)
    tilted = coherent_sky_slope(flat_x + tilt, flat_y, noise)
    assert flat < 0.01 < 0.04 < tilted
    assert tilted == pytest.approx(tilt / 10.0 * SIZE, rel=0.3)
    assert np.isnan(coherent_sky_slope(flat_x[:5], flat_y[:5], noise[:5]))


def _sampled(stars, sky_tilt_x=0.0, sky=300.0, seed=0):
    """What sampled_stamps gives for star stamps on a sky of level `sky` tilted along x: the
    stamps with the CCD's level removed (the tilt kept), the sky planes under them, the noise."""
    x = np.indices((SIZE, SIZE))[1] - (SIZE - 1) / 2.0
    tilt = sky_tilt_x * x
    stamps = _noisy(stars, seed) + tilt[None]
    planes = np.tile(np.array([0.0, sky_tilt_x, 0.0], np.float32), (len(stars), 1))
    return stamps, planes, np.ones(len(stars), np.float32)


def test_coherent_statistics_see_a_shared_trail_and_a_tilted_sky_and_ignore_the_faint_half():
    from desom.baseline import COHERENT_FLOORS, COHERENT_NAMES, coherent_statistics

    rng = np.random.default_rng(7)
    faint_galaxies = [gaussian(3.5, elongation=1.6, angle_deg=a, amplitude=40.0) for a in rng.uniform(0, 180, 300)]
    round_stars = np.stack([gaussian(3.5, amplitude=600.0) for _ in range(100)] + faint_galaxies)
    trailed_stars = np.stack([gaussian(3.5, elongation=1.2, angle_deg=60.0, amplitude=600.0) for _ in range(100)]
                             + faint_galaxies)
    good = dict(zip(COHERENT_NAMES, coherent_statistics(*_sampled(round_stars))))
    trailed = dict(zip(COHERENT_NAMES, coherent_statistics(*_sampled(trailed_stars))))
    tilted = dict(zip(COHERENT_NAMES, coherent_statistics(*_sampled(round_stars, sky_tilt_x=0.05))))
    # logs of the shared ellipticity and slope: the trail and the gradient stand out by a decade
    assert trailed["log_coherent_ellipticity"] > good["log_coherent_ellipticity"] + 1.0
    assert tilted["log_coherent_sky_slope"] == pytest.approx(np.log10(0.05 * SIZE + COHERENT_FLOORS[1]), abs=0.01)
    assert good["log_coherent_sky_slope"] == pytest.approx(np.log10(COHERENT_FLOORS[1]))
    # the tilt is removed before the shapes are measured: it does not fake a trail
    assert tilted["log_coherent_ellipticity"] == pytest.approx(good["log_coherent_ellipticity"], abs=0.3)
    # a stamp on masked (NaN) pixels is left out, not allowed to blank the exposure
    stamps, planes, noise = _sampled(trailed_stars)
    stamps[3, 15:18, 15:18] = np.nan
    assert coherent_statistics(stamps, planes, noise)[0] == pytest.approx(trailed["log_coherent_ellipticity"], abs=0.05)
    # too few sources: unmeasurable, not zero
    assert np.isnan(coherent_statistics(*_sampled(round_stars[:8]))).all()
    assert np.isnan(coherent_statistics(np.zeros((0, SIZE, SIZE)), np.zeros((0, 3)), np.zeros(0))).all()


def test_source_statistics_measures_the_coherent_pair_from_the_sampled_stamps():
    from desom.baseline import STATISTIC_NAMES

    class Result(_Detections):
        background = 500.0

    image = np.zeros((400, 400), np.float32)
    xs, ys = np.meshgrid(np.arange(40, 361, 40), np.arange(40, 361, 40))
    xs, ys = xs.ravel(), ys.ravel()
    for x, y in zip(xs, ys):
        image[y - 16:y + 16, x - 16:x + 16] += gaussian(4.0, elongation=1.5, angle_deg=20.0).astype(np.float32)
    det = Result(xs, ys, np.full(len(xs), 1000.0), image, 1.0)
    stats = SourceStatistics(edge_margin=0)
    stats.on_detection(_CCD(image + 500.0), det, np.ones(len(xs), bool))
    assert np.isnan(stats.coherent()).all()              # nothing sampled yet
    stats.on_sample(_CCD(image + 500.0), det, xs, ys, 1.0)
    values = dict(zip(STATISTIC_NAMES, stats.statistics()))
    assert values["log_coherent_ellipticity"] > np.log10(0.1)       # every star shares the trail
    assert values["log_coherent_sky_slope"] < np.log10(0.001)       # the sky is flat
    assert stats.statistics()[:5] == pytest.approx(stats.features(), nan_ok=True)
