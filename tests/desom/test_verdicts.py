"""The verdict rules that spread a few labelled exposures' votes over the map: the map kernel,
the latent nearest neighbours, and the leave-one-out choice of their one setting."""
import numpy as np
import pytest

from desom.evaluation import cell_predictions
from desom.verdicts import (balanced_accuracy, cell_kernel, choose_by_leave_one_out, latent_knn_probability,
                            map_kernel_probability, said_good)


def _two_halves(rows=6, cols=6, per_cell=5, seed=0):
    """A map whose left half holds Good exposures and right half Bad ones."""
    rng = np.random.default_rng(seed)
    cells = np.repeat(np.arange(rows * cols), per_cell)
    good = (cells % cols) < cols // 2
    return cells, good, rng


def test_zero_temperature_is_the_cell_majority():
    cells, good, rng = _two_halves()
    labelled = rng.uniform(size=cells.size) < 0.3
    noisy = good ^ (rng.uniform(size=cells.size) < 0.2)
    p = map_kernel_probability(cells, (6, 6), noisy, labelled, 0.0)
    known, majority = cell_predictions(cells, np.where(noisy, "Good", "Bad"), labelled)
    np.testing.assert_array_equal(said_good(p)[known], majority[known])
    # an unlabelled cell gets no vote: exactly 0.5, which is Bad
    assert np.all(p[~known] == 0.5) and not said_good(p[~known]).any()


def test_the_kernel_names_unlabelled_cells_from_their_neighbours():
    cells, good, rng = _two_halves()
    row, col = divmod(cells, 6)
    labelled = np.zeros(cells.size, bool)
    labelled[::5] = ((row + col) % 2 == 0)[::5]     # one labelled exposure in every other cell
    majority = said_good(map_kernel_probability(cells, (6, 6), good, labelled, 0.0))
    spread = said_good(map_kernel_probability(cells, (6, 6), good, labelled, 1.0))
    held = ~labelled
    assert balanced_accuracy(good[held], spread[held]) > balanced_accuracy(good[held], majority[held]) + 0.2
    assert balanced_accuracy(good[held], spread[held]) > 0.9


def test_leave_one_out_leaves_the_own_vote_out():
    cells = np.array([0, 0, 1])
    good = np.array([True, False, True])
    labelled = np.array([True, True, True])
    p = map_kernel_probability(cells, (1, 2), good, labelled, 0.0, exclude_self=True)
    # each of cell 0's members is named by the other one alone; cell 1's member by nobody
    assert p[0] == pytest.approx(0.0, abs=1e-3) and p[1] == pytest.approx(1.0, abs=1e-3) and p[2] == 0.5
    np.testing.assert_allclose(cell_kernel((1, 2), 0.0), np.eye(2))


def test_latent_neighbours_follow_the_latent_space():
    rng = np.random.default_rng(3)
    good = rng.uniform(size=400) < 0.5
    latent = rng.normal(size=(400, 4)) + np.where(good, 2.0, -2.0)[:, None]
    labelled = rng.uniform(size=400) < 0.1
    p = latent_knn_probability(latent, good, labelled, k=5)
    assert balanced_accuracy(good[~labelled], said_good(p[~labelled])) > 0.95
    # k = 1: with its own vote a labelled exposure names itself; left out, its neighbour names it
    pts = np.array([[0.0], [1.0], [5.0]])
    own = latent_knn_probability(pts, [True, False, False], [True, True, True], k=1)
    loo = latent_knn_probability(pts, [True, False, False], [True, True, True], k=1, exclude_self=True)
    np.testing.assert_allclose(own, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(loo, [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="k must lie"):
        latent_knn_probability(latent, good, labelled, k=labelled.sum() + 1)


def test_the_setting_is_chosen_on_labelled_exposures_only():
    cells, good, rng = _two_halves()
    labelled = np.zeros(cells.size, bool)
    labelled[::15] = True

    def rule(t):
        return map_kernel_probability(cells, (6, 6), good, labelled, t, exclude_self=True)

    best, scores = choose_by_leave_one_out(rule, good, labelled, (0.0, 1.0, 3.0))
    assert best == 1.0 and scores[1.0] > scores[0.0]
    # the scored exposures' labels are never read: flipping every unlabelled label changes nothing
    flipped = np.where(labelled, good, ~good)

    def rule_flipped(t):
        return map_kernel_probability(cells, (6, 6), flipped, labelled, t, exclude_self=True)

    assert choose_by_leave_one_out(rule_flipped, flipped, labelled, (0.0, 1.0, 3.0)) == (best, scores)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="no labelled"):
        map_kernel_probability([0, 1], (1, 2), [True, False], [False, False], 1.0)
    with pytest.raises(ValueError, match="cells must lie"):
        map_kernel_probability([0, 5], (1, 2), [True, False], [True, True], 1.0)
    with pytest.raises(ValueError, match="temperature"):
        cell_kernel((2, 2), -1.0)


def test_the_linear_probe_reads_a_linear_signal_from_few_labels():
    from desom.verdicts import linear_probe_probability

    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 30))
    good = x[:, 0] + 0.5 * x[:, 1] > 0
    labelled = rng.uniform(size=600) < 0.15
    p = linear_probe_probability(x, good, labelled)
    assert balanced_accuracy(good[~labelled], said_good(p[~labelled])) > 0.8
    # a descriptor that holds nothing gives chance
    noise = rng.normal(size=(600, 30))
    p0 = linear_probe_probability(noise, good, labelled)
    assert balanced_accuracy(good[~labelled], said_good(p0[~labelled])) < 0.65
    with pytest.raises(ValueError, match="two labelled"):
        linear_probe_probability(x, good, np.flatnonzero(good)[:5])


def test_calibration_from_leave_one_out_brings_probabilities_to_frequencies():
    from desom.evaluation import expected_calibration_error
    from desom.verdicts import calibrator_from_leave_one_out

    rng = np.random.default_rng(8)
    n = 4000
    true_p = rng.uniform(size=n)
    good = rng.uniform(size=n) < true_p
    overconfident = np.clip(0.5 + 2.0 * (true_p - 0.5), 0, 1)    # says 0 or 1 far too often
    labelled = rng.uniform(size=n) < 0.3
    calibrate = calibrator_from_leave_one_out(overconfident, good, labelled)
    held = ~labelled
    before = expected_calibration_error(overconfident[held], good[held])["ece"]
    after = expected_calibration_error(calibrate(overconfident[held]), good[held])["ece"]
    assert before > 0.1 and after < 0.04
    with pytest.raises(ValueError, match="both classes"):
        calibrator_from_leave_one_out(overconfident, good, np.flatnonzero(good)[:10])


def test_expected_calibration_error_of_a_perfect_and_a_wrong_verdict():
    from desom.evaluation import expected_calibration_error

    truth = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    assert expected_calibration_error(truth.astype(float), truth)["ece"] == 0.0
    assert expected_calibration_error(1.0 - truth, truth)["ece"] == pytest.approx(1.0)
    diagram = expected_calibration_error(np.full(100, 0.55), truth)["reliability"]
    assert diagram == [{"bin": [0.5, 0.6], "n": 100, "mean_probability": 0.55, "share_good": 0.5}]
