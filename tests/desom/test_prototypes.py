"""Prototype shape statistics on drawn images: a round star, a streak, a donut."""
import numpy as np
import pytest

from desom.prototypes import central_hole, elongation, shape_statistics

Y, X = np.indices((32, 32)) - 15.5


def gaussian(sigma_x, sigma_y=None, angle=0.0):
    sigma_y = sigma_x if sigma_y is None else sigma_y
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * X + s * Y, -s * X + c * Y
    return 0.1 + np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))


def donut(radius=6.0, width=1.5):
    return 0.1 + np.exp(-0.5 * ((np.hypot(X, Y) - radius) / width) ** 2)


def test_a_round_star_is_neither_elongated_nor_hollow():
    star = gaussian(2.5)
    assert elongation(star) < 0.05
    assert central_hole(star) < 0.05


@pytest.mark.parametrize("angle", [0.0, 0.7, np.pi / 2])
def test_a_streak_is_elongated_whatever_its_orientation(angle):
    streak = gaussian(6.0, 1.5, angle)
    # b/a = 1.5/6 = 0.25, so 1 - b/a is near 0.75 (the border level trims a little).
    assert 0.6 < elongation(streak) < 0.9
    assert central_hole(streak) < 0.1


def test_a_donut_is_hollow_and_round():
    ring = donut()
    assert central_hole(ring) > 0.8
    assert elongation(ring) < 0.1
    # A partly filled donut scores between a star and an empty donut.
    half = donut() + 0.5 * np.exp(-0.5 * (np.hypot(X, Y) / 1.5) ** 2)
    assert 0.1 < central_hole(half) < central_hole(ring)


def test_blank_and_bad_images():
    assert elongation(np.zeros((32, 32))) == 0.0 and central_hole(np.ones((32, 32))) == 0.0
    with pytest.raises(ValueError, match="2-D"):
        elongation(np.zeros(32))
    with pytest.raises(ValueError, match="finite"):
        central_hole(np.full((32, 32), np.nan))


def test_shape_statistics_over_a_stack():
    stack = np.stack([gaussian(2.5), gaussian(6.0, 1.5), donut()])[:, None]
    stats = shape_statistics(stack)
    assert np.argmax(stats["elongation"]) == 1 and np.argmax(stats["central_hole"]) == 2
    with pytest.raises(ValueError, match="prototype images"):
        shape_statistics(np.zeros((2, 2, 32, 32)))
