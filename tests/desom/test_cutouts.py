"""Cutouts: centring, normalisation to [0, 1], NaN and edges, sampling."""
import numpy as np
import pytest

from desom.cutouts import (ccd_median, extract_stamps, make_cutouts, normalise_stamps,
                           sample_indices)


def reference_stamp(image, x, y, size, fill):
    """Slow per-source reference: pad, slice, replace NaN."""
    half = size // 2
    padded = np.pad(image.astype(np.float32), size, constant_values=np.nan)
    r0 = int(np.floor(y + 0.5)) - half + size
    c0 = int(np.floor(x + 0.5)) - half + size
    stamp = padded[r0:r0 + size, c0:c0 + size].copy()
    stamp[~np.isfinite(stamp)] = fill
    return stamp


def test_vectorised_stamps_match_a_per_source_reference():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, (200, 150)).astype(np.float32)
    image[50:60, 40:45] = np.nan
    x = rng.uniform(-5, 155, 60)        # some beyond the edges on purpose
    y = rng.uniform(-5, 205, 60)
    fill = ccd_median(image)
    stamps = extract_stamps(image, x, y, 32)
    assert stamps.shape == (60, 32, 32) and stamps.dtype == np.float32
    for k in range(60):
        np.testing.assert_array_equal(stamps[k], reference_stamp(image, x[k], y[k], 32, fill))


def test_stamp_is_centred_on_the_source():
    image = np.zeros((128, 128), np.float32)
    image[70, 40] = 10.0
    stamps = extract_stamps(image, [40.2], [69.7])
    assert np.unravel_index(np.argmax(stamps[0]), (32, 32)) == (16, 16)


def test_normalisation_range_and_percentile_clip():
    rng = np.random.default_rng(1)
    stamps = rng.normal(0, 1, (50, 32, 32)).astype(np.float32)
    stamps[:, 16, 16] = 1000.0        # a bright peak is clipped at the 95th percentile
    out = normalise_stamps(stamps)
    assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
    assert np.allclose(out.reshape(50, -1).min(axis=1), 0.0)
    assert np.allclose(out.reshape(50, -1).max(axis=1), 1.0)
    # about 5% of the pixels sit at the top after clipping
    top = (out == 1.0).reshape(50, -1).mean(axis=1)
    assert np.all((top > 0.03) & (top < 0.08))
    # per stamp, not global: scaling one stamp does not change another
    stamps2 = stamps.copy()
    stamps2[0] *= 50
    out2 = normalise_stamps(stamps2)
    np.testing.assert_allclose(out2[1:], out[1:])
    np.testing.assert_allclose(out2[0], out[0], atol=1e-5)


def test_flat_and_nan_stamps_give_no_nan():
    stamps = np.zeros((3, 32, 32), np.float32)
    stamps[1] = 7.5
    stamps[2] = 1e6
    stamps[2, :5] = 1e6 + 0.001          # below float32 resolution at this level: flat
    out = normalise_stamps(stamps)
    assert np.isfinite(out).all() and np.all(out == 0.0)
    image = np.full((64, 64), np.nan, np.float32)
    image[:, :32] = 3.0
    cut = make_cutouts(image, [40.0], [30.0])
    assert np.isfinite(cut).all()


def test_nan_pixels_take_the_ccd_median():
    rng = np.random.default_rng(2)
    image = rng.normal(50, 5, (100, 100)).astype(np.float32)
    image[40:45, 40:45] = np.nan
    stamps = extract_stamps(image, [42.0], [42.0])
    assert np.isfinite(stamps).all()
    assert np.all(stamps[0][14:19, 14:19] == np.float32(ccd_median(image)))
    stamps = extract_stamps(image, [42.0], [42.0], fill=-1.0)
    assert np.all(stamps[0][14:19, 14:19] == -1.0)


def test_empty_and_bad_input():
    assert make_cutouts(np.zeros((64, 64)), [], []).shape == (0, 32, 32)
    with pytest.raises(ValueError, match="differ"):
        extract_stamps(np.zeros((64, 64)), [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        extract_stamps(np.zeros((64, 64)), [np.nan], [1.0])
    with pytest.raises(ValueError, match="2-D"):
        extract_stamps(np.zeros(64), [1.0], [1.0])


def test_sampling_is_bounded_seeded_and_unique():
    idx = sample_indices(1000, 100, np.random.default_rng(3))
    assert idx.size == 100 and np.unique(idx).size == 100 and np.all(np.diff(idx) > 0)
    again = sample_indices(1000, 100, np.random.default_rng(3))
    np.testing.assert_array_equal(idx, again)
    other = sample_indices(1000, 100, np.random.default_rng(4))
    assert not np.array_equal(idx, other)
    np.testing.assert_array_equal(sample_indices(40, 100, np.random.default_rng(0)), np.arange(40))
    np.testing.assert_array_equal(sample_indices(40, None, np.random.default_rng(0)), np.arange(40))
