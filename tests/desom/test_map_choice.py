"""Choosing one DESOM-2 among seeds with the labelled exposures alone: leave-one-out naming of
each labelled exposure by its cellmates (desom.evaluation.leave_one_out_accuracy)."""
import numpy as np
import pytest

from desom.evaluation import choose_map_by_labels, leave_one_out_accuracy


def test_each_labelled_exposure_is_named_by_the_others_in_its_cell():
    # Cell 0 holds Good, Good, Bad: each Good is named by one Good and one Bad, a tie, so Bad;
    # the Bad one is named by two Good, so Good. Cell 1: two Bad, each named Bad by the other.
    cells = [0, 0, 0, 1, 1]
    labels = ["Good", "Good", "BT", "BGP", "BGP"]
    s = leave_one_out_accuracy(cells, labels, labelled=np.ones(5, bool))
    assert s["recall_good"] == 0.0        # both ties went to Bad, the study's and archive's rule
    assert s["recall_bad"] == pytest.approx(2 / 3)
    assert s["balanced_accuracy"] == pytest.approx(1 / 3)
    assert s["coverage"] == 1.0


def test_unlabelled_exposures_neither_vote_nor_count_and_lonely_ones_abstain():
    cells = [0, 0, 0, 1, 2]
    labels = ["Good", "Good", "Bad", "Bad", "Good"]
    # exposure 2 (Bad) is unlabelled: cell 0's two Good name each other Good;
    # exposures 3 and 4 are alone among the labelled in their cells.
    s = leave_one_out_accuracy(cells, labels, labelled=[0, 1, 3, 4])
    assert s["recall_good"] == 1.0
    assert np.isnan(s["recall_bad"])
    assert s["coverage"] == pytest.approx(0.5)
    assert s["n_labelled"] == 4


def test_the_map_whose_cells_separate_the_labels_is_chosen():
    rng = np.random.default_rng(0)
    good = rng.uniform(size=200) < 0.5
    labels = np.where(good, "Good", "Bad")
    pure = np.where(good, rng.integers(0, 10, 200), rng.integers(10, 20, 200))
    mixed = rng.integers(0, 20, 200)
    labelled = rng.uniform(size=200) < 0.5
    pick, scores = choose_map_by_labels([mixed, pure, mixed], labels, labelled)
    assert pick == 1
    assert scores[1]["balanced_accuracy"] == 1.0
    assert scores[0]["balanced_accuracy"] < 0.7
    # equal scores: the earlier candidate
    assert choose_map_by_labels([pure, pure], labels, labelled)[0] == 0


def test_labels_that_cannot_choose_are_refused():
    with pytest.raises(ValueError, match="no candidate"):
        choose_map_by_labels([], ["Good"], [0])
    # every labelled exposure alone in its cell: nothing names anything
    with pytest.raises(ValueError, match="cannot choose"):
        choose_map_by_labels([[0, 1, 2]], ["Good", "Bad", "Good"], [0, 1, 2])
