"""The paper's evaluation protocols on made-up DESOM-2 cells whose answer we know."""
import math

import numpy as np
import pytest

from desom.evaluation import (binary_scores, cell_majority_scores, five_class_purity,
                              heldout_scores, labelling_effort)


def _labels(n_good, n_bad):
    return np.array(["Good"] * n_good + ["BGP"] * n_bad)


def test_binary_scores_follow_paper_equation_5():
    # Good is positive: 3 TP, 1 FN, 2 FP, 4 TN.
    t = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    p = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    s = binary_scores(np.array(t, bool), np.array(p, bool))
    assert (s["tp"], s["fn"], s["fp"], s["tn"]) == (3, 1, 2, 4)
    assert s["accuracy"] == pytest.approx(0.7)
    assert s["precision"] == pytest.approx(3 / 5)
    assert s["recall"] == pytest.approx(3 / 4)


def test_cell_majority_scores_with_a_mixed_cell():
    # Cell 0: 3 Good + 1 Bad -> Good (1 FP). Cell 1: 1 Good + 3 Bad -> Bad (1 FN).
    # Cell 2: 1 Good + 1 Bad -> tie goes to Bad (1 FN).
    cells = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    labels = ["Good", "Good", "Good", "RBT", "Good", "BT", "BT", "BGP", "Good", "B-Seeing"]
    s = cell_majority_scores(cells, labels)
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (3, 1, 2, 4)
    assert s["n_cells"] == 3
    assert s["optimistic"] is True  # 3.3 members per cell
    assert s["class_purity"]["Good"] == pytest.approx(3 / 4)


def test_kinds_count_as_good_case_insensitively():
    s = cell_majority_scores([0, 0, 1, 1], ["good", "good", "rbt", "bad_focus"])
    assert s["accuracy"] == 1.0 and s["tp"] == 2 and s["tn"] == 2


def test_five_class_purity_per_class():
    cells = [0, 0, 0, 1, 1, 2]
    labels = ["Good", "Good", "BT", "RBT", "RBT", "BT"]
    p = five_class_purity(cells, labels)
    assert p["purity"] == pytest.approx(5 / 6)
    assert p["per_class"]["Good"]["purity"] == pytest.approx(2 / 3)
    assert p["per_class"]["BT"]["completeness"] == pytest.approx(1 / 2)
    assert p["per_class"]["RBT"]["purity"] == 1.0


def test_labelling_effort_on_known_sizes():
    cells = np.repeat([7, 3, 9, 1, 2], [50, 30, 10, 5, 5])  # 100 exposures
    e = labelling_effort(cells, shares=(0.5, 0.9, 0.99, 1.0))
    assert e["cells_needed"] == {0.5: 1, 0.9: 3, 0.99: 5, 1.0: 5}
    assert e["sizes"] == [50, 30, 10, 5, 5]
    assert e["cell_fraction"][0.9] == pytest.approx(3 / 5)


def test_one_exposure_per_cell_cannot_beat_chance():
    rng = np.random.default_rng(1)
    labels = rng.choice(["Good", "BGP"], 400)
    cells = np.arange(400)  # every exposure alone in its cell
    h = heldout_scores(cells, labels, labelled_fraction=0.3, n_boot=50)
    assert h["coverage"] == 0.0
    assert h["n_abstained"] == h["n_evaluated"] > 0
    assert math.isnan(h["accuracy"])
    assert h["accuracy_effective"] == pytest.approx(0.5)
    # The all-members protocol on the same cells looks perfect, and is flagged as optimistic.
    assert h["all_members"]["accuracy"] == 1.0
    assert h["all_members"]["optimistic"] is True and "optimistic" in h["all_members"]["note"]


def test_random_cells_score_near_chance():
    rng = np.random.default_rng(2)
    labels = rng.choice(["Good", "RBT"], 4000)
    cells = rng.integers(0, 100, 4000)  # cells unrelated to quality
    h = heldout_scores(cells, labels, labelled_fraction=0.3, n_boot=300, seed=3)
    assert h["coverage"] == 1.0
    assert 0.4 < h["accuracy"] < 0.6
    lo, hi = h["ci95"]["accuracy"]
    assert lo < 0.5 + 0.05 and hi > 0.5 - 0.05


def test_perfect_grouping_scores_one():
    rng = np.random.default_rng(4)
    kinds = rng.choice(["good", "bt", "rbt", "bad_seeing", "bgp_crowded"], 2000)
    labels = np.where(kinds == "good", "Good", "Bad")
    cell_of_kind = {"good": 5, "bt": 11, "rbt": 12, "bad_seeing": 40, "bgp_crowded": 399}
    cells = np.array([cell_of_kind[k] for k in kinds])
    h = heldout_scores(cells, labels, labelled_fraction=0.2, n_boot=100, kinds=kinds)
    assert h["accuracy"] == 1.0 and h["precision"] == 1.0 and h["recall"] == 1.0
    assert h["coverage"] == 1.0
    assert h["ci95"]["accuracy"] == [1.0, 1.0]
    assert h["all_members"]["optimistic"] is False
    assert all(v["share_in_good_cells"] == 0.0 for k, v in h["confusion_by_kind"].items() if k != "good")


def test_balanced_sample_is_balanced():
    labels = _labels(900, 100)
    cells = np.r_[np.zeros(900, int), np.ones(100, int)]
    h = heldout_scores(cells, labels, labelled_fraction=0.3, seed=5, n_boot=10)
    assert h["n_evaluated_good"] == h["n_evaluated_bad"] > 0
    assert h["n_evaluated"] == 2 * h["n_evaluated_bad"]
    assert h["n_labelled"] + h["n_heldout"] == 1000
    unbalanced = heldout_scores(cells, labels, labelled_fraction=0.3, seed=5, balanced=False, n_boot=10)
    assert unbalanced["n_evaluated_good"] > 5 * unbalanced["n_evaluated_bad"]


def test_bad_kind_in_good_cells_shows_in_confusion_by_kind():
    # Bad-pattern exposures hide in the Good cell (the paper's false positives).
    kinds = np.array(["good"] * 300 + ["bgp_pattern"] * 30 + ["rbt"] * 200)
    cells = np.array([0] * 330 + [1] * 200)
    labels = np.where(kinds == "good", "Good", "Bad")
    h = heldout_scores(cells, labels, labelled_fraction=0.3, kinds=kinds, n_boot=50)
    assert h["confusion_by_kind"]["bgp_pattern"]["share_in_good_cells"] == 1.0
    assert h["confusion_by_kind"]["rbt"]["share_in_good_cells"] == 0.0
    assert h["fp"] > 0 and h["precision"] < 1.0 and h["recall"] == 1.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="differ in length"):
        cell_majority_scores([0, 1], ["Good"])
    with pytest.raises(ValueError, match="labelled_fraction"):
        heldout_scores([0, 1], ["Good", "Bad"], labelled_fraction=1.0)
    with pytest.raises(ValueError, match="empty"):
        cell_majority_scores([], [])


def test_evaluate_cells_joins_truth_rows_and_skips_calibration():
    from desom.evaluation import evaluate_cells
    rows = []
    for i in range(60):
        kind = ["good", "rbt", "bad_focus"][i % 3]
        label = {"good": "Good", "rbt": "RBT", "bad_focus": "B-Seeing"}[kind]
        rows.append({"expnum": 1000 + i, "kind": kind, "label": label,
                     "good_bad": "Good" if kind == "good" else "Bad"})
    rows.append({"expnum": 5000, "kind": "bias", "label": "Calibration", "good_bad": ""})
    cell_of = {r["expnum"]: {"good": 3, "rbt": 7, "bad_focus": 7}[r["kind"]] for r in rows[:-2]}
    out = evaluate_cells(cell_of, rows, n_boot=20)
    assert out["n_exposures"] == 59 and out["n_without_cell"] == 1
    assert out["all_members"]["accuracy"] == 1.0
    # RBT and bad focus share a cell: Good/Bad is perfect, the kinds are not.
    assert out["kinds"]["purity"] < 1.0 and out["five_class"]["per_class"]["Good"]["purity"] == 1.0
    assert out["labelling_effort"]["n_cells"] == 2
    with pytest.raises(ValueError, match="no science exposure"):
        evaluate_cells({}, rows)


def test_evaluate_cells_names_the_cells_with_a_given_sample_and_never_scores_it():
    from desom.evaluation import evaluate_cells
    rows = [{"expnum": 100 + i, "kind": "good" if i % 2 else "rbt", "label": "x",
             "good_bad": "Good" if i % 2 else "Bad"} for i in range(40)]
    # Cell 0 holds every Good and the first four Bad, cell 1 the other Bad.
    cell_of = {r["expnum"]: 0 if r["good_bad"] == "Good" or r["expnum"] < 108 else 1 for r in rows}
    sample = {100, 101, 103, 105, 110, 112}         # names cell 0 Good (3 to 1) and cell 1 Bad
    out = evaluate_cells(cell_of, rows, n_boot=20, labelled_keys=sample)["heldout"]
    assert out["n_labelled"] == len(sample) and out["n_heldout"] == 40 - len(sample)
    # scored (17 Good and 17 Bad, all held out): every Good right; of the Bad, the three
    # unlabelled ones in cell 0 (102, 104, 106) called Good, the 14 in cell 1 right
    assert (out["tp"], out["fn"], out["fp"], out["tn"]) == (17, 0, 3, 14)
    assert out["coverage"] == 1.0
    with pytest.raises(ValueError, match="none is left to score"):
        evaluate_cells(cell_of, rows, labelled_keys={r["expnum"] for r in rows})
    with pytest.raises(ValueError, match="no exposure is labelled"):
        evaluate_cells(cell_of, rows, labelled_keys={1})


def test_expert_sample_takes_a_few_members_of_every_cell():
    from desom.evaluation import expert_sample
    cells = np.repeat([4, 9, 2, 7], [10, 1, 5, 30])
    mask = expert_sample(cells, per_cell=3, seed=0)
    per_cell = {c: int(mask[cells == c].sum()) for c in np.unique(cells)}
    assert per_cell == {2: 3, 4: 3, 7: 3, 9: 1}
    # Only candidates are drawn; another seed draws other members.
    candidates = np.arange(cells.size) % 2 == 0
    picked = expert_sample(cells, per_cell=3, seed=0, candidates=candidates)
    assert not picked[~candidates].any()
    assert not np.array_equal(expert_sample(cells, 3, seed=1), mask)
    with pytest.raises(ValueError, match="per_cell"):
        expert_sample(cells, per_cell=0)


def test_heldout_with_given_labelled_and_scored_splits():
    # Cells 0 and 1 are pure; the models' test split (scored) never holds a labelled exposure.
    labels = np.array(["Good"] * 50 + ["Bad"] * 50)
    cells = np.r_[np.zeros(50, int), np.ones(50, int)]
    test = np.arange(100) % 3 == 0
    labelled = np.flatnonzero(~test)[:20]
    labelled = np.r_[labelled, np.flatnonzero(~test)[-20:]]
    h = heldout_scores(cells, labels, labelled=labelled, scored=test, n_boot=20)
    assert h["n_labelled"] == 40 and h["labelled_fraction"] == pytest.approx(0.4)
    assert h["n_heldout"] == int(test.sum())
    assert h["accuracy"] == 1.0 and h["coverage"] == 1.0
    # Labelled exposures are never scored, even if the scored mask names them.
    everyone = heldout_scores(cells, labels, labelled=labelled, scored=np.ones(100, bool), n_boot=10)
    assert everyone["n_heldout"] == 60
    with pytest.raises(ValueError, match="no exposure is labelled"):
        heldout_scores(cells, labels, labelled=np.zeros(100, bool))
    with pytest.raises(ValueError, match="shape"):
        heldout_scores(cells, labels, labelled=np.ones(7, bool))


def test_labelling_a_cell_by_its_labelled_members_only():
    # Cell 0 is mostly Bad, but its only labelled members are Good: the held-out Bad members
    # must then be scored as false positives, not named by their own labels.
    labels = np.array(["Good"] * 3 + ["Bad"] * 17)
    cells = np.zeros(20, int)
    h = heldout_scores(cells, labels, labelled=[0, 1, 2], balanced=False, n_boot=10)
    assert h["fp"] == 17 and h["tn"] == 0 and h["accuracy"] == 0.0


def test_same_kind_precision_at_k():
    from desom.evaluation import same_kind_precision_at_k
    rng = np.random.default_rng(0)
    kinds = np.repeat(["good", "rbt", "bad_focus"], 40)
    centres = {"good": 0.0, "rbt": 5.0, "bad_focus": 10.0}
    separated = np.array([[centres[k]] for k in kinds]) + rng.normal(0, 0.1, (120, 1))
    perfect = same_kind_precision_at_k(separated, kinds, np.arange(0, 120, 2), k=10)
    assert perfect["precision"] == 1.0
    assert perfect["chance"] == pytest.approx(39 / 119)
    noise = same_kind_precision_at_k(rng.normal(size=(120, 4)), kinds, np.arange(120), k=10)
    assert abs(noise["precision"] - noise["chance"]) < 0.1
    # The query is never its own neighbour: two exposures of a kind, far from the rest.
    pair = same_kind_precision_at_k(np.array([[0.0], [0.1], [9.0], [9.2]]), ["a", "a", "b", "b"], [0], k=1)
    assert pair["precision"] == 1.0
    with pytest.raises(ValueError, match="k must"):
        same_kind_precision_at_k(separated, kinds, [0], k=120)


def test_scores_over_runs_pair_methods_and_widen_with_the_runs_spread():
    from desom.evaluation import scores_over_runs

    rng = np.random.default_rng(0)
    truth = np.r_[np.ones(150, bool), np.zeros(150, bool)]
    steady = np.array([truth ^ (rng.uniform(size=300) < 0.1) for _ in range(4)])
    # the same mean error, but one run in two is much worse: its interval must be wider
    shaky = np.array([truth ^ (rng.uniform(size=300) < (0.02 if r % 2 else 0.18)) for r in range(4)])
    s = scores_over_runs(truth, {"steady": steady, "shaky": shaky}, n_boot=400, seed=1)
    for name in ("steady", "shaky"):
        lo, hi = s[name]["ci95"]["balanced_accuracy"]
        assert lo < s[name]["balanced_accuracy"] < hi
        assert len(s[name]["per_run"]["balanced_accuracy"]) == 4
    width = {n: np.diff(s[n]["ci95"]["balanced_accuracy"])[0] for n in ("steady", "shaky")}
    assert width["shaky"] > 1.3 * width["steady"]
    d = s["differences"]["steady - shaky"]
    assert d["balanced_accuracy"] == pytest.approx(s["steady"]["balanced_accuracy"] - s["shaky"]["balanced_accuracy"])
    with pytest.raises(ValueError, match="same"):
        scores_over_runs(truth, {"a": steady, "b": steady[:2]})
