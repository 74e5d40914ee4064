"""The science study's own rules that decide what it compares (benchmarks/science_models.py)."""
import pytest

from benchmarks.science_models import RECIPES, desom1_settings, desom1_variant


def test_a_variant_without_a_length_trains_at_the_study_default():
    assert desom1_variant("asinh", 3000) == ("asinh", 3000)


def test_a_variant_names_its_own_training_length():
    recipe, iterations = desom1_variant("asinh@9000", 3000)
    assert (recipe, iterations) == ("asinh", 9000)
    settings = desom1_settings(iterations, precision="float32")
    # the learning rate still settles over the last third of the longer run
    assert settings["iterations"] == 9000 and settings["lr_decay_iterations"] == 3000


@pytest.mark.parametrize("name", ["asinh@0", "asinh@-5", "asinh@9k", "asinh@", "nosuch", "nosuch@3000"])
def test_a_malformed_variant_is_refused_with_its_name(name):
    with pytest.raises(ValueError, match="asinh|nosuch"):
        desom1_variant(name, 3000)


def test_every_recipe_is_a_variant():
    assert {desom1_variant(r, 10)[0] for r in RECIPES} == set(RECIPES)


def _ellipse(angle_deg, a=5.0, b=1.5, n=32):
    import math

    import numpy as np
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2
    t = math.radians(angle_deg)
    u, v = xx * math.cos(t) + yy * math.sin(t), -xx * math.sin(t) + yy * math.cos(t)
    return np.exp(-0.5 * ((u / a) ** 2 + (v / b) ** 2)).astype(np.float32)


def test_aligned_stamps_put_every_sources_major_axis_along_x():
    import numpy as np

    from benchmarks.science_models import align_major_axis

    angles = (0, 30, 45, 90, 135, 170)
    stamps = np.stack([_ellipse(a) for a in angles]) + 0.1   # a flat sky under the source
    aligned = align_major_axis(stamps)
    horizontal = _ellipse(0) + 0.1
    # before: only the one at 0 degrees matches; after: all of them, to the resampling error
    assert [float(np.abs(s - horizontal).max()) > 0.15 for s in stamps] == [a != 0 for a in angles]
    assert np.abs(aligned - horizontal).max() < 0.06
    assert aligned.shape == stamps.shape and aligned.dtype == np.float32
