"""Evaluation protocols for DESOM-2 cells against known labels (paper section 5.1). Pure numpy.

Good is the positive class (paper Eq. 5): TP = a Good exposure predicted Good, FP = a Bad
exposure predicted Good, FN = a Good exposure predicted Bad.

A cell's label is the majority of its (labelled) members. Ties go to Bad: passing a doubtful
cell as Good would let bad exposures through, the costlier mistake for an archive. Multi-class
ties go to the label that sorts first.

Two protocols:
- all-members (`cell_majority_scores`): every member names its cell and is scored against the
  name it helped choose. This is the paper's protocol; with few members per cell it is
  optimistic (a singleton cell always "agrees" with its member).
- held-out (`heldout_scores`): a labelled share of the exposures names the cells; the other
  exposures are scored. A cell with no labelled member predicts nothing (an abstention), and
  the coverage is reported beside the scores.
"""
from __future__ import annotations

import warnings

import numpy as np

OPTIMISTIC_MEMBERS = 5.0  # mean members per cell under which all-members scores are optimistic


def _as_arrays(cells, labels):
    cells = np.asarray(cells)
    labels = np.asarray(labels)
    if cells.ndim != 1 or labels.ndim != 1:
        raise ValueError(f"cells and labels must be 1-D, got shapes {cells.shape} and {labels.shape}")
    if cells.shape[0] != labels.shape[0]:
        raise ValueError(f"cells ({cells.shape[0]}) and labels ({labels.shape[0]}) differ in length")
    if cells.shape[0] == 0:
        raise ValueError("no exposures to evaluate (empty cells/labels)")
    return cells, labels


def is_good(labels, positive: str = "Good") -> np.ndarray:
    """Boolean array: label equals the positive class (case-insensitive, so kinds such as
    'good' and five-class labels such as 'Good' both work)."""
    labels = np.asarray(labels).astype(str)
    return np.char.lower(labels) == positive.lower()


def binary_scores(true_good, pred_good) -> dict:
    """Accuracy, precision and recall of Good against Bad, with the confusion counts."""
    t = np.asarray(true_good, bool)
    p = np.asarray(pred_good, bool)
    tp = int(np.sum(t & p))
    fp = int(np.sum(~t & p))
    fn = int(np.sum(t & ~p))
    tn = int(np.sum(~t & ~p))
    n = tp + fp + fn + tn
    nan = float("nan")
    return {
        "n": n, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "accuracy": (tp + tn) / n if n else nan,
        "precision": tp / (tp + fp) if tp + fp else nan,
        "recall": tp / (tp + fn) if tp + fn else nan,
    }


def _cell_codes(cells):
    uniq, inverse = np.unique(cells, return_inverse=True)
    return uniq, inverse.reshape(-1)


def _majority_good(inverse, good, n_cells, mask=None):
    """Per cell: (has_votes, majority_is_good) from the members selected by mask."""
    sel = np.ones(inverse.shape[0], bool) if mask is None else mask
    g = np.bincount(inverse[sel], weights=good[sel].astype(float), minlength=n_cells)
    b = np.bincount(inverse[sel], weights=(~good[sel]).astype(float), minlength=n_cells)
    return (g + b) > 0, g > b


def cell_predictions(cells, labels, labelled, positive: str = "Good") -> tuple[np.ndarray, np.ndarray]:
    """What the cells say of every exposure when only `labelled` ones (a mask or indices) name
    them: (known, predicted_good), known False where the exposure's cell has no labelled member.
    The one rule for naming cells: majority of the labelled members, ties to Bad."""
    cells, labels = _as_arrays(cells, labels)
    good = is_good(labels, positive)
    uniq, inverse = _cell_codes(cells)
    has_votes, cell_good = _majority_good(inverse, good, uniq.size, mask=_as_mask(labelled, cells.size, "labelled"))
    return has_votes[inverse], cell_good[inverse]


def leave_one_out_accuracy(cells, labels, labelled, positive: str = "Good") -> dict:
    """How well a map's cells name the labelled exposures it already has: each labelled exposure
    is named by the other labelled members of its cell (the rule of cell_predictions, ties to
    Bad) and scored against its own label. Needs no exposure outside the labelled ones, so it can
    choose between maps trained on the same exposures (choose_map_by_labels).

    Returns balanced_accuracy (the mean of the Good and the Bad recall, so a map is not
    rewarded for naming every cell after the commoner label), recall_good, recall_bad and
    coverage (the share of labelled exposures whose cell holds another labelled member)."""
    cells, labels = _as_arrays(cells, labels)
    sel = np.flatnonzero(_as_mask(labelled, cells.size, "labelled"))
    good = is_good(labels[sel], positive)
    _, inverse = _cell_codes(cells[sel])
    others_good = np.bincount(inverse, weights=good.astype(float))[inverse] - good
    others_bad = np.bincount(inverse, weights=(~good).astype(float))[inverse] - ~good
    known = (others_good + others_bad) > 0
    named_good = others_good > others_bad
    nan = float("nan")
    recall_good = float(np.mean(named_good[known & good])) if np.any(known & good) else nan
    recall_bad = float(np.mean(~named_good[known & ~good])) if np.any(known & ~good) else nan
    return {"balanced_accuracy": (recall_good + recall_bad) / 2, "recall_good": recall_good,
            "recall_bad": recall_bad, "coverage": float(known.mean()) if sel.size else nan,
            "n_labelled": int(sel.size)}


def choose_map_by_labels(candidate_cells, labels, labelled, positive: str = "Good") -> tuple[int, list[dict]]:
    """Among maps trained on the same exposures (candidate_cells: one cell array per map), the
    one whose cells best name the labelled exposures (leave_one_out_accuracy); a tie goes to the
    earlier candidate. Returns (index, every candidate's scores). DESOM-2's seed moves its
    accuracy by several points (benchmarks/bench_desom2_seed_choice.py); this picks among seeds
    with labels the archive already holds, never with the exposures being scored."""
    scores = [leave_one_out_accuracy(c, labels, labelled, positive) for c in candidate_cells]
    if not scores:
        raise ValueError("no candidate maps to choose from")
    values = [s["balanced_accuracy"] for s in scores]
    if all(np.isnan(v) for v in values):
        raise ValueError("no labelled exposure shares a cell with another: the labels cannot choose a map")
    return int(np.nanargmax(values)), scores


def _members_stats(inverse, n_cells) -> dict:
    counts = np.bincount(inverse, minlength=n_cells)
    return {"n_cells": int(n_cells), "mean": float(counts.mean()), "median": float(np.median(counts)),
            "min": int(counts.min()), "max": int(counts.max())}


def five_class_purity(cells, labels) -> dict:
    """Purity of the cells under any labelling (five-class labels, kinds...).

    purity: share of exposures that carry their cell's majority label.
    per_class[label]: purity (share of the members of cells whose majority is `label` that
    carry it), completeness (share of `label` exposures that sit in such cells), n (exposures
    with that label) and n_cells (cells whose majority it is).
    """
    cells, labels = _as_arrays(cells, labels)
    labels = labels.astype(str)
    uniq_cells, inverse = _cell_codes(cells)
    classes, lab = np.unique(labels, return_inverse=True)
    counts = np.zeros((uniq_cells.size, classes.size), np.int64)
    np.add.at(counts, (inverse, lab), 1)
    majority = counts.argmax(axis=1)  # ties: first label in sorted order
    member_majority = majority[inverse]
    agree = member_majority == lab
    per_class = {}
    for ci, name in enumerate(classes):
        in_cells = member_majority == ci
        has = lab == ci
        per_class[str(name)] = {
            "purity": float(agree[in_cells].mean()) if in_cells.any() else float("nan"),
            "completeness": float(agree[has].mean()) if has.any() else float("nan"),
            "n": int(has.sum()),
            "n_cells": int(np.sum(majority == ci)),
        }
    return {"purity": float(agree.mean()), "n": int(labels.size), "n_cells": int(uniq_cells.size),
            "per_class": per_class}


def cell_majority_scores(cells, labels, positive: str = "Good") -> dict:
    """All-members protocol: each cell takes its members' majority Good/Bad label and every
    member is scored against it. Also the multi-class purity of the cells under `labels`."""
    cells, labels = _as_arrays(cells, labels)
    good = is_good(labels, positive)
    uniq, inverse = _cell_codes(cells)
    _, cell_good = _majority_good(inverse, good, uniq.size)
    out = binary_scores(good, cell_good[inverse])
    purity = five_class_purity(cells, labels)
    members = _members_stats(inverse, uniq.size)
    out.update({
        "protocol": "all-members",
        "n_cells": int(uniq.size),
        "members_per_cell": members,
        "optimistic": bool(members["mean"] < OPTIMISTIC_MEMBERS),
        "purity": purity["purity"],
        "class_purity": {k: v["purity"] for k, v in purity["per_class"].items()},
        "class_completeness": {k: v["completeness"] for k, v in purity["per_class"].items()},
    })
    return out


def labelling_effort(cells, shares=(0.9, 0.99)) -> dict:
    """How many cells, largest first, an expert must look at to label a share of the exposures.

    Returns n_exposures, n_cells, cells_needed {share: k}, cell_fraction {share: k / n_cells}
    and the cell sizes in decreasing order.
    """
    cells = np.asarray(cells)
    if cells.ndim != 1 or cells.size == 0:
        raise ValueError(f"cells must be a non-empty 1-D array, got shape {cells.shape}")
    _, counts = np.unique(cells, return_counts=True)
    sizes = np.sort(counts)[::-1]
    cum = np.cumsum(sizes)
    n = int(cells.size)
    needed, fraction = {}, {}
    for s in shares:
        if not 0.0 < s <= 1.0:
            raise ValueError(f"shares must lie in (0, 1], got {s}")
        # First k whose cumulated size reaches the share (tiny slack for float round-off).
        k = int(np.searchsorted(cum, s * n - 1e-9) + 1)
        needed[float(s)] = k
        fraction[float(s)] = k / sizes.size
    return {"n_exposures": n, "n_cells": int(sizes.size), "cells_needed": needed,
            "cell_fraction": fraction, "sizes": sizes.tolist()}


def _boot_scores(rng, true_good, pred_good, known, n_boot):
    """Percentile 95% intervals of accuracy, precision, recall (on covered exposures) and
    coverage, resampling the evaluated exposures with replacement."""
    n = true_good.size
    if n == 0 or n_boot <= 0:
        return {}
    idx = rng.integers(0, n, size=(n_boot, n))
    t, p, k = true_good[idx], pred_good[idx], known[idx]
    tp = np.sum(k & t & p, axis=1)
    fp = np.sum(k & ~t & p, axis=1)
    fn = np.sum(k & t & ~p, axis=1)
    tn = np.sum(k & ~t & ~p, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = {
            "accuracy": (tp + tn) / (tp + fp + fn + tn),
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "coverage": k.mean(axis=1),
        }
    out = {}
    for name, v in stats.items():
        v = v[np.isfinite(v)]
        out[name] = [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v.size else [float("nan")] * 2
    return out


def expert_sample(cells, per_cell: int = 3, seed: int = 0, candidates=None) -> np.ndarray:
    """Boolean mask of an expert's sample: up to `per_cell` random members of every cell,
    drawn among `candidates` (a boolean mask or indices; default every exposure). This is how
    the paper's expert named cells: by looking at a few members of each."""
    cells = np.asarray(cells)
    if cells.ndim != 1 or cells.size == 0:
        raise ValueError(f"cells must be a non-empty 1-D array, got shape {cells.shape}")
    if per_cell < 1:
        raise ValueError(f"per_cell must be >= 1, got {per_cell}")
    pool = _as_mask(candidates, cells.size, "candidates")
    rng = np.random.default_rng(seed)
    order = rng.permutation(np.flatnonzero(pool))
    # Stable sort by cell keeps the random order inside each cell; take the first per_cell.
    order = order[np.argsort(cells[order], kind="stable")]
    cell_sorted = cells[order]
    first = np.r_[0, np.flatnonzero(cell_sorted[1:] != cell_sorted[:-1]) + 1]
    rank = np.arange(order.size) - np.repeat(first, np.diff(np.r_[first, order.size]))
    mask = np.zeros(cells.size, bool)
    mask[order[rank < per_cell]] = True
    return mask


def _as_mask(selection, n: int, name: str) -> np.ndarray:
    """A boolean mask of length n from None (all), a boolean mask or integer indices."""
    if selection is None:
        return np.ones(n, bool)
    sel = np.asarray(selection)
    if sel.dtype == bool:
        if sel.shape != (n,):
            raise ValueError(f"{name} mask has shape {sel.shape}, expected ({n},)")
        return sel.copy()
    if sel.size and not np.issubdtype(sel.dtype, np.integer):
        raise ValueError(f"{name} must be a boolean mask or integer indices, got dtype {sel.dtype}")
    if sel.size and (sel.min() < 0 or sel.max() >= n):
        raise ValueError(f"{name} indices must lie in [0, {n})")
    mask = np.zeros(n, bool)
    mask[sel.astype(np.int64)] = True
    return mask


def heldout_scores(cells, labels, labelled_fraction: float = 0.3, seed: int = 0,
                   balanced: bool = True, n_boot: int = 1000, kinds=None,
                   positive: str = "Good", labelled=None, scored=None) -> dict:
    """Held-out protocol: a random labelled share names each cell by its labelled members'
    majority; the remaining exposures are predicted by their cell's name and scored.

    balanced: score on a sample with as many Good as Bad held-out exposures (as the paper's
    expert sample was), drawn without replacement. Cells without a labelled member abstain;
    `coverage` is the predicted share of the scored sample, `accuracy_effective` counts each
    abstention as a coin flip (0.5), so it is the accuracy of a system that must answer.
    kinds (optional, per exposure): held-out counts per kind predicted Good / Bad / abstained,
    to see which bad kinds end in Good cells. The all-members protocol is reported beside,
    marked optimistic when cells hold fewer than 5 members on average.
    labelled: the labelled exposures given explicitly (a mask or indices, e.g. an
    `expert_sample` or a share of the models' training split); labelled_fraction is then ignored.
    scored: the exposures that may be scored (default: every unlabelled one), e.g. exposures
    that neither DESOM saw in training. Labelled exposures are never scored.
    """
    cells, labels = _as_arrays(cells, labels)
    if labelled is None and not 0.0 < labelled_fraction < 1.0:
        raise ValueError(f"labelled_fraction must lie strictly between 0 and 1, got {labelled_fraction}")
    if kinds is not None:
        kinds = np.asarray(kinds).astype(str)
        if kinds.shape != labels.shape:
            raise ValueError(f"kinds ({kinds.shape[0]}) and labels ({labels.shape[0]}) differ in length")
    rng = np.random.default_rng(seed)
    n = cells.size
    good = is_good(labels, positive)
    uniq, inverse = _cell_codes(cells)
    if labelled is None:
        n_lab = int(round(labelled_fraction * n))
        n_lab = min(max(n_lab, 1), n - 1) if n > 1 else 0
        perm = rng.permutation(n)
        labelled = np.zeros(n, bool)
        labelled[perm[:n_lab]] = True
    else:
        labelled = _as_mask(labelled, n, "labelled")
        n_lab = int(labelled.sum())
        if n_lab == 0:
            raise ValueError("no exposure is labelled: nothing can name the cells")
        labelled_fraction = n_lab / n
    held = np.flatnonzero(~labelled & _as_mask(scored, n, "scored"))

    has_votes = np.bincount(inverse[labelled], minlength=uniq.size) > 0
    known, pred = cell_predictions(cells, labels, labelled, positive)

    if balanced:
        hg, hb = held[good[held]], held[~good[held]]
        m = min(hg.size, hb.size)
        evaluated = np.sort(np.concatenate([rng.choice(hg, m, replace=False),
                                            rng.choice(hb, m, replace=False)])) if m else held[:0]
    else:
        evaluated = held
    k_e = known[evaluated]
    scored = evaluated[k_e]
    out = binary_scores(good[scored], pred[scored])
    n_eval = int(evaluated.size)
    correct = out["tp"] + out["tn"]
    out.update({
        "protocol": "held-out",
        "labelled_fraction": float(labelled_fraction),
        "balanced": bool(balanced),
        "seed": int(seed),
        "n_labelled": int(n_lab),
        "n_heldout": int(held.size),
        "n_evaluated": n_eval,
        "n_evaluated_good": int(good[evaluated].sum()),
        "n_evaluated_bad": int((~good[evaluated]).sum()),
        "n_abstained": int(n_eval - scored.size),
        "coverage": float(k_e.mean()) if n_eval else float("nan"),
        "accuracy_effective": (correct + 0.5 * (n_eval - scored.size)) / n_eval if n_eval else float("nan"),
        "n_cells": int(uniq.size),
        "n_cells_labelled": int(has_votes.sum()),
        "members_per_cell": _members_stats(inverse, uniq.size),
        "labelled_members_per_cell": float(n_lab / max(int(has_votes.sum()), 1)),
        "ci95": _boot_scores(rng, good[evaluated], pred[evaluated], k_e, int(n_boot)),
    })
    if kinds is not None:
        by_kind = {}
        for kind in np.unique(kinds[held]):
            sel = held[kinds[held] == kind]
            ks = known[sel]
            by_kind[str(kind)] = {
                "n": int(sel.size),
                "predicted_good": int(np.sum(ks & pred[sel])),
                "predicted_bad": int(np.sum(ks & ~pred[sel])),
                "abstained": int(np.sum(~ks)),
                "share_in_good_cells": float(np.mean(pred[sel][ks])) if ks.any() else float("nan"),
            }
        out["confusion_by_kind"] = by_kind
    all_members = cell_majority_scores(cells, labels, positive)
    if all_members["optimistic"]:
        all_members["note"] = (f"optimistic: cells hold {all_members['members_per_cell']['mean']:.1f} "
                               f"members on average (< {OPTIMISTIC_MEMBERS:g}); each member votes "
                               "for the label it is scored against")
    out["all_members"] = all_members
    return out


def evaluate_cells(cell_of: dict, truth_rows, key: str = "expnum", labelled_fraction: float = 0.3,
                   seed: int = 0, n_boot: int = 1000, shares=(0.9, 0.99), labelled_keys=None) -> dict:
    """Every protocol at once for a simulated survey.

    cell_of: {exposure key -> DESOM-2 cell}; truth_rows: rows of truth.csv (dicts with at least
    key, kind, label, good_bad), e.g. from desom.simulate.read_truth_csv. Calibration rows and
    exposures without a cell are left out (their number is reported as n_without_cell).
    labelled_keys: the exposures that name the cells in the held-out protocol (instead of a random
    labelled_fraction), e.g. the sample that chose the map among seeds: the scored exposures are
    then exactly those whose labels neither training nor naming read.
    """
    rows = [r for r in truth_rows if r.get("good_bad") in ("Good", "Bad")]
    missing = [r[key] for r in rows if r[key] not in cell_of]
    rows = [r for r in rows if r[key] in cell_of]
    if not rows:
        raise ValueError(f"no science exposure of the truth has a cell (matched on {key!r})")
    cells = np.array([cell_of[r[key]] for r in rows])
    good_bad = np.array([r["good_bad"] for r in rows])
    five = np.array([r["label"] for r in rows])
    kinds = np.array([r["kind"] for r in rows])
    labelled = None if labelled_keys is None else np.array([r[key] in labelled_keys for r in rows])
    if labelled is not None and labelled.all():
        raise ValueError(f"all {len(rows)} exposures with truth and a cell are labelled: none is left to score")
    return {
        "n_exposures": len(rows),
        "n_without_cell": len(missing),
        "all_members": cell_majority_scores(cells, good_bad),
        "heldout": heldout_scores(cells, good_bad, labelled_fraction=labelled_fraction, seed=seed,
                                  n_boot=n_boot, kinds=kinds, labelled=labelled),
        "five_class": five_class_purity(cells, five),
        "kinds": five_class_purity(cells, kinds),
        "labelling_effort": labelling_effort(cells, shares),
    }


def same_kind_precision_at_k(vectors, kinds, queries, k: int = 10, chunk: int = 512,
                             return_hits: bool = False) -> dict:
    """Find-similar quality: for each query exposure, the share of its k nearest others
    (Euclidean in `vectors`; pass square-rooted shares for Hellinger) that are of its kind.

    queries: a mask or indices of the query exposures (e.g. held-out ones); the neighbours are
    searched among every other exposure. Returns the mean, its per-kind means and the chance
    level (the mean share of the query's kind among the others); with return_hits, the
    per-query shares too ("hits", for ``paired_difference``).
    """
    x = np.asarray(vectors, np.float64)
    kinds = np.asarray(kinds).astype(str)
    if x.ndim != 2 or x.shape[0] != kinds.shape[0]:
        raise ValueError(f"vectors {x.shape} and kinds {kinds.shape} do not match")
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must lie in [1, {n - 1}], got {k}")
    q = np.flatnonzero(_as_mask(queries, n, "queries"))
    if q.size == 0:
        raise ValueError("no query exposures")
    sq = (x * x).sum(axis=1)
    hits = np.empty(q.size)
    for start in range(0, q.size, chunk):
        qi = q[start:start + chunk]
        d = sq[qi, None] - 2.0 * x[qi] @ x.T + sq[None, :]
        d[np.arange(qi.size), qi] = np.inf            # never the query itself
        nearest = np.argpartition(d, k, axis=1)[:, :k]
        hits[start:start + chunk] = (kinds[nearest] == kinds[qi, None]).mean(axis=1)
    names, counts = np.unique(kinds, return_counts=True)
    share = dict(zip(names, counts))
    chance = np.array([(share[kinds[i]] - 1) / (n - 1) for i in q])
    per_kind = {str(kd): float(hits[kinds[q] == kd].mean()) for kd in np.unique(kinds[q])}
    out = {"k": int(k), "n_queries": int(q.size), "precision": float(hits.mean()),
           "chance": float(chance.mean()), "per_kind": per_kind}
    if return_hits:
        out["hits"] = hits       # per query, in the order of np.flatnonzero(queries)
    return out


def paired_difference(a, b, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of a - b over paired per-query scores (e.g. the "hits" of two find-similar
    searches over the same queries) with a percentile 95% bootstrap interval, resampling the
    queries: the two methods are compared on the same draws, so their shared noise cancels."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired scores must be two equal non-empty 1-D arrays, got {a.shape} and {b.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    d = a - b
    boot = d[np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    return {"difference": float(d.mean()), "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
            "n": int(d.size), "n_boot": int(n_boot)}


def _run_rates(truth, pred):
    """accuracy, precision, recall of Good over the last axis; leading axes broadcast."""
    tp = np.sum(truth & pred, axis=-1)
    fp = np.sum(~truth & pred, axis=-1)
    fn = np.sum(truth & ~pred, axis=-1)
    tn = np.sum(~truth & ~pred, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        good_recall = tp / (tp + fn)
        bad_recall = tn / (tn + fp)
        return {"balanced_accuracy": (good_recall + bad_recall) / 2, "accuracy": (tp + tn) / (tp + fp + fn + tn),
                "precision": tp / (tp + fp), "recall": good_recall}


def scores_over_runs(truth_good, predictions: dict, n_boot: int = 1000, seed: int = 0) -> dict:
    """Held-out scores of several methods, each run several times (map seeds, labelled draws),
    with 95% intervals that include the spread between runs as well as the scored exposures.

    truth_good: (m,) the scored exposures' truth; predictions: method -> (runs, m) booleans,
    every method over the same runs in the same order (a method that does not depend on a run's
    part repeats its row), so differences are paired. Each bootstrap replicate resamples the
    runs and the exposures together (a two-level bootstrap): an interval holds what a new map
    seed and a new labelled draw would move, not only which exposures were scored.
    Returns per method the mean over runs of balanced accuracy, accuracy, precision and recall,
    the per-run values and the intervals, and "differences": a - b of balanced accuracy for every
    pair, with its paired interval."""
    truth = np.asarray(truth_good, bool)
    if truth.ndim != 1 or truth.size == 0:
        raise ValueError("truth_good must be a non-empty 1-D array")
    if not predictions:
        raise ValueError("no predictions to score")
    preds = {name: np.atleast_2d(np.asarray(p, bool)) for name, p in predictions.items()}
    runs = {p.shape[0] for p in preds.values()}
    if len(runs) != 1 or any(p.shape[1] != truth.size for p in preds.values()):
        raise ValueError(f"every method needs the same (runs, {truth.size}) predictions, got "
                         + ", ".join(f"{k} {v.shape}" for k, v in preds.items()))
    n_runs = runs.pop()
    rng = np.random.default_rng(seed)
    run_draw = rng.integers(0, n_runs, size=(n_boot, n_runs))
    exp_draw = rng.integers(0, truth.size, size=(n_boot, truth.size))
    out, boot_bacc = {}, {}
    for name, p in preds.items():
        per_run = _run_rates(truth[None], p)
        point = {k: float(np.nanmean(v)) for k, v in per_run.items()}
        point["per_run"] = {k: [round(float(x), 4) for x in v] for k, v in per_run.items()}
        # replicate b: runs run_draw[b], exposures exp_draw[b]
        t = truth[exp_draw]                                            # (B, m)
        sampled = p[run_draw[:, :, None], exp_draw[:, None, :]]     # (B, R, m)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # a replicate with no Good (tiny samples)
            b = {k: np.nanmean(v, axis=1) for k, v in _run_rates(t[:, None, :], sampled).items()}
        point["ci95"] = {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in b.items()}
        boot_bacc[name] = b["balanced_accuracy"]
        out[name] = point
    names = list(preds)
    out["differences"] = {}
    for i, a in enumerate(names):
        for b_ in names[i + 1:]:
            d = boot_bacc[a] - boot_bacc[b_]
            out["differences"][f"{a} - {b_}"] = {
                "balanced_accuracy": out[a]["balanced_accuracy"] - out[b_]["balanced_accuracy"],
                "ci95": [float(np.nanpercentile(d, 2.5)), float(np.nanpercentile(d, 97.5))]}
    out["n_runs"], out["n_scored"] = int(n_runs), int(truth.size)
    return out


def expected_calibration_error(probability, truth_good, bins: int = 10) -> dict:
    """How far a verdict's P(Good) is from how often such exposures are Good: the exposures are
    put in `bins` equal-width bins of probability; ECE is the share-weighted mean of
    |mean probability - share Good| over the bins. Returns ece and the reliability diagram
    (per bin: n, mean probability, share Good)."""
    p = np.asarray(probability, np.float64).ravel()
    t = np.asarray(truth_good, bool).ravel()
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"probability and truth must be non-empty and of one length, got {p.shape} and {t.shape}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    which = np.minimum((p * bins).astype(int), bins - 1)
    diagram, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        mean_p, share = float(p[sel].mean()), float(t[sel].mean())
        ece += sel.mean() * abs(mean_p - share)
        diagram.append({"bin": [b / bins, (b + 1) / bins], "n": int(sel.sum()), "mean_probability": round(mean_p, 4),
                        "share_good": round(share, 4)})
    return {"ece": float(ece), "bins": bins, "reliability": diagram}
