"""What the science study changed in the library: stamps that keep the sky and the shape, soft
assignment that keeps the number of sources, a count-keeping normaliser, the map-order gate and
a predictor that runs the encoder as it was trained."""
import numpy as np
import pytest
import torch

from desom.cutouts import (align_major_axis, asinh_stamps, lone_stamp_input, make_cutouts, normalise_stamps,
                           stretch_stamps)
from desom.metrics import MapOrderError, bmu_churn, check_map_order, map_order
from desom.model import DESOMConfig, build_desom
from desom.normalise import HistoNormaliser, map_smoothing_kernel
from desom.pipeline import ImagingConfig, ccd_stamps
from desom.training import probe_units, train_desom

pytestmark = pytest.mark.usefixtures("one_torch_thread")

YY, XX = np.mgrid[:32, :32] - 15.5


def _star(flux=2000.0, sigma=1.5, elong=1.0, sky=1000.0, slope=0.0, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    img = flux * np.exp(-(XX ** 2 / (elong * sigma) ** 2 + YY ** 2 / sigma ** 2) / 2) / (2 * np.pi * sigma ** 2 * elong)
    img = img + sky + slope * XX + rng.normal(0, noise, (32, 32)) if noise else img + sky + slope * XX
    return img.astype(np.float32)[None]


def test_a_gradient_sky_differs_from_a_flat_one_after_the_asinh_stretch_not_after_the_clip():
    flat, gradient = _star(slope=0.0), _star(slope=6.0)        # +-93 ADU across the stamp
    sigma = 30.0                                                # the CCD's sky noise
    a_flat, a_grad = asinh_stamps(flat, 1000.0, sigma), asinh_stamps(gradient, 1000.0, sigma)
    # The sky's left and right edges differ by about 6 sigma in the asinh stamp...
    assert a_grad[0, :, -4:].mean() - a_grad[0, :, :4].mean() > 0.1
    assert abs(a_flat[0, :, -4:].mean() - a_flat[0, :, :4].mean()) < 1e-3
    # ...while the per-stamp clip keeps the source's flat top and hides most of the tilt.
    c_flat = normalise_stamps(flat)
    assert np.abs(a_grad - a_flat).mean() > 0.02
    # A sky brighter than the CCD's (scattered light) moves the whole asinh stamp, not the clip.
    bright = _star(sky=1300.0)
    assert asinh_stamps(bright, 1000.0, sigma).mean() > a_flat.mean() + 0.1
    np.testing.assert_allclose(normalise_stamps(bright), c_flat, atol=1e-4)   # float rounding


def test_asinh_keeps_brightness_and_core_shape_that_the_clip_flattens():
    faint, bright = _star(flux=500.0), _star(flux=50000.0)
    round_, trailed = _star(flux=50000.0), _star(flux=50000.0, elong=1.6)
    a = lambda s: asinh_stamps(s, 1000.0, 30.0)  # noqa: E731
    assert a(bright).max() > a(faint).max() + 0.1                 # brightness survives
    # The clip saturates both cores at 1 over the same number of pixels; asinh does not.
    c_round, c_trail = normalise_stamps(round_)[0], normalise_stamps(trailed)[0]
    assert (c_round == 1).sum() > 40 and abs(int((c_round == 1).sum()) - int((c_trail == 1).sum())) < 20
    core = lambda s: s[0][12:20, 12:20]  # noqa: E731
    row_profile = lambda s: core(s).mean(axis=0)  # noqa: E731
    assert np.ptp(row_profile(a(round_))) > np.ptp(row_profile(a(trailed))) + 0.01   # the trail is wider
    assert np.all((a(bright) >= 0) & (a(bright) <= 1))


def test_stretch_names_and_bad_noise_are_refused():
    with pytest.raises(ValueError, match="unknown stretch"):
        stretch_stamps(_star(), "log")
    with pytest.raises(ValueError, match="noise"):
        asinh_stamps(_star(), 0.0, 0.0)
    with pytest.raises(ValueError, match="stretch"):
        ImagingConfig(stretch="sqrt")
    with pytest.raises(ValueError, match="stamp_sky"):
        ImagingConfig(stamp_sky="half")
    assert ImagingConfig.from_dict(ImagingConfig(stretch="asinh", stamp_sky="kept").to_dict()).stretch == "asinh"


def test_ccd_stamps_cut_from_the_image_with_or_without_its_sky():
    from desom.detection import detect_sources
    from desom.fits_io import CCDImage

    rng = np.random.default_rng(1)
    image = rng.normal(500.0, 10.0, (200, 200)).astype(np.float32)
    image += np.linspace(0, 100, 200, dtype=np.float32)[None, :]       # a sky gradient
    image[100:103, 100:103] += 3000.0
    result = detect_sources(image, ImagingConfig(detector="sep"))
    from astropy.io import fits
    ccd = CCDImage(index=0, extname="ccd00", data=image, saturated=None, header=fits.Header(),
                   layout="processed", raw_shape=image.shape)
    x, y = np.array([101.0]), np.array([101.0])
    kept = ccd_stamps(ccd, result, x, y, ImagingConfig(stamp_sky="kept", stretch="asinh"))
    sub = ccd_stamps(ccd, result, x, y, ImagingConfig(stamp_sky="subtracted", stretch="asinh"))
    slope = lambda s: s[0, :, -6:].mean() - s[0, :, :6].mean()  # noqa: E731
    assert slope(kept) > slope(sub) + 0.01
    today = ccd_stamps(ccd, result, x, y, ImagingConfig())
    np.testing.assert_array_equal(today, make_cutouts(result.subtracted, x, y))


def _ellipse(angle_deg, a=5.0, b=1.5, n=32):
    t = np.radians(angle_deg)
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    u, v = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
    return np.exp(-0.5 * ((u / a) ** 2 + (v / b) ** 2)).astype(np.float32)


def test_aligned_stamps_put_every_sources_major_axis_along_x():
    angles = (0, 30, 45, 90, 135, 170)
    stamps = np.stack([_ellipse(a) for a in angles]) + 0.1   # a flat sky under the source
    aligned = align_major_axis(stamps)
    horizontal = _ellipse(0) + 0.1
    # before: only the one at 0 degrees matches; after: all of them, to the resampling error
    assert [float(np.abs(s - horizontal).max()) > 0.15 for s in stamps] == [a != 0 for a in angles]
    assert np.abs(aligned - horizontal).max() < 0.06
    assert aligned.shape == stamps.shape and aligned.dtype == np.float32
    assert align_major_axis(np.zeros((0, 32, 32), np.float32)).shape == (0, 32, 32)
    with pytest.raises(ValueError, match="N, H, W"):
        align_major_axis(np.zeros((32, 32), np.float32))


def test_the_archive_cuts_aligned_stamps_when_its_recipe_says_so():
    image = np.full((96, 96), 100.0, np.float32)
    image[16:80, 16:80] += 2000.0 * _ellipse(60, n=64)      # a trail at 60 degrees
    x, y = np.array([47.5]), np.array([47.5])
    plain = make_cutouts(image, x, y, stretch="asinh", sky=100.0, noise=5.0)
    turned = make_cutouts(image, x, y, stretch="asinh", sky=100.0, noise=5.0, align=True)
    np.testing.assert_array_equal(turned, align_major_axis(plain))
    # after turning, the light spreads along rows (x), not along the 60-degree diagonal
    core = turned[0] - np.median(turned[0])
    assert core[15:17, :].sum() > 2 * core[:, 15:17].sum()
    # the same trail given on its own (an uploaded example) is turned the same way
    lone = lone_stamp_input(image[32:64, 32:64], {"stretch": "asinh", "align": True})
    assert np.abs(lone - align_major_axis(lone_stamp_input(image[32:64, 32:64], {"stretch": "asinh"}))).max() < 1e-6


def test_a_recipe_recorded_before_stamps_could_be_turned_is_read_as_unturned():
    turning = ImagingConfig(stretch="asinh", stamp_sky="kept", align=True)
    assert turning.stamp_recipe()["align"] is True
    older = {"cutout_size": 32, "clip_percentiles": [1.0, 95.0], "stamp_sky": "kept", "stretch": "asinh",
             "asinh_softening": 1.0, "asinh_range": [-10.0, 1.0e4]}
    assert turning.with_stamps(older).align is False
    assert ImagingConfig.from_dict(turning.to_dict()).align is True
    with pytest.raises(ValueError, match="align"):
        ImagingConfig(align="yes")


def test_soft_assignment_keeps_the_number_of_sources_and_spreads_to_neighbours():
    rng = np.random.default_rng(2)
    bmu = rng.integers(0, 625, 3000)
    weights = rng.uniform(1.0, 3.0, bmu.size)
    hard = np.bincount(bmu, weights=weights, minlength=625)
    soft = hard @ map_smoothing_kernel((25, 25), 1.0)
    assert soft.sum() == pytest.approx(weights.sum())
    one = np.zeros(625)
    one[12 * 25 + 12] = 1.0
    s = one @ map_smoothing_kernel((25, 25), 1.0)
    # The map's own kernel: a node one step away gets exp(-1/2) of the BMU's share.
    assert s[12 * 25 + 13] / s[12 * 25 + 12] == pytest.approx(np.exp(-0.5), rel=1e-6)


def test_sqrt_counts_keeps_the_number_of_sources_that_hellinger_drops():
    rng = np.random.default_rng(3)
    shape = rng.dirichlet(np.ones(625))
    few, many = rng.multinomial(500, shape), rng.multinomial(5000, shape)
    X = np.vstack([few, many]).astype(np.float64)
    h = HistoNormaliser("hellinger").fit(X).transform(X)
    c = HistoNormaliser("sqrt_counts").fit(X).transform(X)
    assert abs(np.linalg.norm(h[0]) - np.linalg.norm(h[1])) < 1e-6        # both unit vectors
    assert np.linalg.norm(c[1]) ** 2 == pytest.approx(10 * np.linalg.norm(c[0]) ** 2, rel=1e-6)
    again = HistoNormaliser.from_dict(HistoNormaliser("sqrt_counts").fit(X).to_dict())
    np.testing.assert_allclose(again.transform(X), c, rtol=1e-6)


def _blobs(n=100, seed=0):
    """Round sources of smoothly running width, as DESOM-1 cutouts."""
    rng = np.random.default_rng(seed)
    sig = rng.uniform(1.0, 6.0, n)[:, None, None]
    img = np.exp(-(XX ** 2 + YY ** 2) / (2 * sig ** 2)) + rng.normal(0, 0.01, (n, 32, 32))
    return np.clip(img, 0, 1).astype(np.float32)[:, None]


def _plane(n, seed):
    """Points of a 2-D square embedded in 40 dimensions: a manifold a 4x4 map can order."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(42).normal(0, 1, (2, 40))
    return (rng.uniform(0, 1, (n, 2)) @ basis + rng.normal(0, 0.02, (n, 40))).astype(np.float32)


def test_the_order_gate_passes_a_trained_map_and_refuses_a_shuffled_one():
    cfg = DESOMConfig.desom2(input_shape=(40,), hidden_dims=(32, 16), latent_dim=4, map_rows=4, map_cols=4,
                             batch_size=32, iterations=400, t_max=2.0, t_min=1.0, gamma=0.1, log_every=50,
                             seed=1)
    model = build_desom(cfg)
    probe = _plane(300, seed=9)
    history = train_desom(model, _plane(800, seed=0), cfg, progress=False, probe=probe, probe_every=100)
    order = model.map_order
    assert order["iteration"] == 400 and order["n_probe"] == 300
    assert [r["iteration"] for r in history if "probe_te" in r] == [100, 200, 300, 400]
    check_map_order(order)                                    # an ordered map passes
    with torch.no_grad():                                     # the same prototypes, shuffled
        perm = torch.from_numpy(np.random.default_rng(0).permutation(16))
        model.som.prototypes.copy_(model.som.prototypes[perm])
    first, second = probe_units(model, probe, torch.device("cpu"))
    shuffled = map_order(first, second, model.map_shape)
    assert shuffled["topographic_error"] > order["topographic_error"] + 0.3
    with pytest.raises(MapOrderError, match="not ordered"):
        check_map_order(shuffled)
    with pytest.raises(MapOrderError, match="still moving"):
        check_map_order({"topographic_error": 0.1, "bmu_churn": 0.6})
    assert bmu_churn([1, 2, 3, 4], [1, 2, 0, 0]) == 0.5


def test_the_predictor_runs_the_encoder_in_the_precision_it_was_trained_in():
    from desom.inference import DesomPredictor

    cfg = DESOMConfig.desom1(conv_filters=(4, 8, 8), dense_units=32, latent_dim=4, map_rows=3, map_cols=3,
                             batch_size=32, iterations=20, seed=2)
    for precision, expected in (("bf16", "bf16-autocast"), ("float32", "float32")):
        model = build_desom(cfg)
        train_desom(model, _blobs(100), cfg, progress=False, precision=precision)
        assert model.config.extra["train_precision"] == precision
        assert DesomPredictor(model).precision == expected


def test_histo_reliability_tells_shot_noise_from_signal_and_soft_assignment_helps():
    """The lr-decay 'collapse' of the first study: a map that spreads ~200 sources evenly over 625
    nodes makes histo-vectors whose two random halves differ as much as two exposures do. The
    reliability ratio says so, more sources or soft assignment on an ordered map lower it."""
    from desom.metrics import histo_reliability

    rng = np.random.default_rng(4)
    r, c = np.divmod(np.arange(625), 25)

    def exposures(n_exp, n_src, spread):
        bmu, owner = [], []
        for e in range(n_exp):
            # Each exposure's sources: a smooth bump on the map, centred where its kind puts it.
            r0, c0 = rng.uniform(5, 20, 2)
            p = np.exp(-((r - r0) ** 2 + (c - c0) ** 2) / (2 * spread ** 2))
            bmu.append(rng.choice(625, n_src, p=p / p.sum()))
            owner.append(np.full(n_src, e))
        return np.concatenate(bmu), np.concatenate(owner)

    few = histo_reliability(*exposures(40, 200, 8.0))
    many = histo_reliability(*exposures(40, 2000, 8.0))
    assert few["ratio"] > 0.8                     # mostly noise
    assert many["ratio"] < few["ratio"] - 0.1     # ten times the sources
    soft = histo_reliability(*exposures(40, 200, 8.0), kernel=map_smoothing_kernel((25, 25), 1.5))
    assert soft["ratio"] < few["ratio"] - 0.15    # neighbours on an ordered map share counts
    with pytest.raises(ValueError, match="two exposures"):
        histo_reliability([1, 2], [0, 0])
