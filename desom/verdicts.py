"""How a few labelled exposures name the rest of the map: the verdict rules beside the cell majority.

The cell majority (``desom.evaluation.cell_predictions``) names a cell by its own labelled
members. With a small label budget most cells hold one labelled member or none, and a single
mislabelled or unlucky member decides a whole cell. The rules here spread each labelled
exposure's vote over the map instead, as the paper's expert reads a map: a cell looks like its
neighbours.

- ``map_kernel_probability``: P(Good) of every exposure from the labelled exposures' cells,
  each vote weighted by the SOM's own neighbourhood kernel over the grid distance between the
  cells (exp(-d^2 / T^2), ``desom.som.gaussian_kernel``). T -> 0 is the cell majority (with
  unlabelled cells abstaining); a larger T borrows from neighbouring cells.
- ``latent_knn_probability``: P(Good) from the k nearest labelled exposures in DESOM-2's
  latent space (the space the map was trained in), distance-weighted.

Neither rule trains anything on the labels: they are votes, and their one setting (T or k) is
chosen by leave-one-out over the labelled exposures alone (``choose_by_leave_one_out``), never
with the exposures being scored. The labels never reach the networks.

A probability of exactly 0.5 (no vote reaches the exposure, or a tie) is Bad: passing a doubtful
exposure as Good is the costlier mistake for an archive, as in the cell majority.
"""
from __future__ import annotations

import numpy as np

# the weight of the 0.5 prior, in labelled exposures: keeps a far-away single vote from
# deciding with certainty, and gives 0.5 where no vote reaches
PRIOR_WEIGHT = 1e-3
KNN_CHOICES = (3, 5, 7, 11, 15, 21)
TEMPERATURE_CHOICES = (0.0, 0.5, 0.75, 1.0, 1.5, 2.0)


def _labelled_indices(labelled, n: int) -> np.ndarray:
    sel = np.asarray(labelled)
    if sel.dtype == bool:
        if sel.shape != (n,):
            raise ValueError(f"labelled mask has shape {sel.shape}, expected ({n},)")
        return np.flatnonzero(sel)
    sel = sel.astype(np.int64)
    if sel.size and (sel.min() < 0 or sel.max() >= n):
        raise ValueError(f"labelled indices must lie in [0, {n})")
    return np.unique(sel)


def _check(good, labelled, n):
    good = np.asarray(good, bool)
    if good.shape != (n,):
        raise ValueError(f"good must be a boolean array of {n}, got shape {good.shape}")
    lab = _labelled_indices(labelled, n)
    if lab.size == 0:
        raise ValueError("no labelled exposure: nothing can name the map")
    return good, lab


def cell_kernel(map_shape, temperature: float) -> np.ndarray:
    """(K, K) weights between the cells of a rows x cols map: the SOM's neighbourhood kernel at
    `temperature`; 0 is the identity (a cell votes for itself only)."""
    from desom.som import gaussian_kernel, grid_distances

    rows, cols = (int(v) for v in map_shape)
    if rows < 1 or cols < 1:
        raise ValueError(f"map shape must be positive, got {map_shape}")
    if temperature < 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return np.eye(rows * cols)
    return gaussian_kernel(grid_distances(rows, cols), float(temperature)).astype(np.float64)


def map_kernel_probability(cells, map_shape, good, labelled, temperature: float,
                           exclude_self: bool = False) -> np.ndarray:
    """P(Good) of every exposure: the labelled exposures' votes, weighted by the kernel between
    their cell and the exposure's. exclude_self: a labelled exposure does not vote for itself
    (the leave-one-out score)."""
    cells = np.asarray(cells, np.int64)
    n = cells.size
    good, lab = _check(good, labelled, n)
    k = int(np.prod(map_shape))
    if cells.size and (cells.min() < 0 or cells.max() >= k):
        raise ValueError(f"cells must lie in [0, {k}) for a {map_shape} map")
    kernel = cell_kernel(map_shape, temperature)
    good_votes = np.bincount(cells[lab], weights=good[lab].astype(float), minlength=k)
    all_votes = np.bincount(cells[lab], minlength=k).astype(float)
    g = kernel @ good_votes
    t = kernel @ all_votes
    g, t = g[cells], t[cells]
    if exclude_self:
        own = np.zeros(n)
        own[lab] = 1.0
        self_weight = np.diag(kernel)[cells] * own
        g = g - self_weight * good
        t = t - self_weight
    return (g + 0.5 * PRIOR_WEIGHT) / (np.maximum(t, 0.0) + PRIOR_WEIGHT)


def latent_knn_probability(latent, good, labelled, k: int, exclude_self: bool = False,
                           chunk: int = 1024) -> np.ndarray:
    """P(Good) of every exposure from its k nearest labelled exposures in the latent space,
    each weighted by 1 / (distance + the median neighbour distance) so that a near twin counts
    more without deciding alone."""
    x = np.asarray(latent, np.float64)
    if x.ndim != 2:
        raise ValueError(f"latent must be (n, d), got shape {x.shape}")
    n = x.shape[0]
    good, lab = _check(good, labelled, n)
    k = int(k)
    room = lab.size - (1 if exclude_self else 0)
    if not 1 <= k <= room:
        raise ValueError(f"k must lie in [1, {room}] with {lab.size} labelled exposures, got {k}")
    xl = x[lab]
    sq_l = (xl * xl).sum(axis=1)
    out = np.empty(n)
    position = np.full(n, -1)
    position[lab] = np.arange(lab.size)
    for s in range(0, n, chunk):
        q = np.arange(s, min(s + chunk, n))
        d2 = (x[q] * x[q]).sum(axis=1)[:, None] - 2 * x[q] @ xl.T + sq_l[None, :]
        d2 = np.maximum(d2, 0.0)
        if exclude_self:
            own = position[q]
            rows = np.flatnonzero(own >= 0)
            d2[rows, own[rows]] = np.inf
        near = np.argpartition(d2, k - 1, axis=1)[:, :k]
        d = np.sqrt(np.take_along_axis(d2, near, axis=1))
        scale = np.median(d, axis=1, keepdims=True) + 1e-12
        w = 1.0 / (d + scale)
        votes = good[lab][near]
        out[q] = (w * votes).sum(axis=1) / w.sum(axis=1)
    return out


def said_good(probability) -> np.ndarray:
    """The verdict of a probability: Good above 0.5; 0.5 itself (no vote, a tie) is Bad."""
    return np.asarray(probability, np.float64) > 0.5


def balanced_accuracy(good, predicted_good) -> float:
    """The mean of the Good and the Bad recall."""
    good = np.asarray(good, bool)
    pred = np.asarray(predicted_good, bool)
    if not good.any() or good.all():
        return float("nan")
    return float((np.mean(pred[good]) + np.mean(~pred[~good])) / 2)


def choose_by_leave_one_out(rule, good, labelled, choices) -> tuple[object, dict]:
    """The setting among `choices` whose leave-one-out verdicts name the labelled exposures best
    (balanced accuracy; a tie goes to the earlier choice). rule(setting) must return every
    exposure's probability with each labelled exposure's own vote left out. Returns (setting,
    {setting: score})."""
    good = np.asarray(good, bool)
    lab = _labelled_indices(labelled, good.size)
    scores = {}
    for choice in choices:
        try:
            p = rule(choice)
        except ValueError:
            continue                 # e.g. k larger than the labelled exposures allow
        scores[choice] = balanced_accuracy(good[lab], said_good(p[lab]))
    valid = {c: s for c, s in scores.items() if np.isfinite(s)}
    if not valid:
        raise ValueError("no setting could be scored by leave-one-out: too few labelled exposures of each class")
    best = max(valid, key=lambda c: (valid[c], -list(choices).index(c)))
    return best, scores


PROBE_C = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def linear_probe_probability(x, good, labelled, cs=PROBE_C, folds: int = 5, seed: int = 0) -> np.ndarray:
    """The ceiling beside the map: P(Good) from a logistic regression on a descriptor `x`, trained
    on the labelled exposures alone (standardised columns, balanced classes, its regularisation
    chosen by stratified cross-validation inside the labelled ones). Not a verdict rule of the
    archive: it says how much of Good/Bad a linear read-out of the same descriptor and the same
    labels finds, so that what the map loses can be measured."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"the descriptor must be (n, d), got shape {x.shape}")
    good, lab = _check(good, labelled, x.shape[0])
    y = good[lab]
    n_min = int(min(y.sum(), (~y).sum()))
    if n_min < 2:
        raise ValueError("a linear probe needs at least two labelled exposures of each class")
    x = np.where(np.isfinite(x), x, np.nanmedian(x[lab], axis=0))
    cv = StratifiedKFold(n_splits=max(2, min(folds, n_min)), shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=list(cs), cv=cv, class_weight="balanced",
                                                                 max_iter=5000, scoring="balanced_accuracy",
                                                                 l1_ratios=(0.0,), use_legacy_attributes=False))
    model.fit(x[lab], y)
    return model.predict_proba(x)[:, list(model.classes_).index(True)]


def calibrator_from_leave_one_out(loo_probability, good, labelled):
    """A monotone map from a rule's P(Good) to how often exposures at that P are Good, fitted on
    the labelled exposures' leave-one-out probabilities (isotonic regression): calibrated on
    labelled exposures that did not vote for themselves, never on the ones being scored.
    Returns a function probability -> calibrated probability."""
    from sklearn.isotonic import IsotonicRegression

    good = np.asarray(good, bool)
    lab = _labelled_indices(labelled, good.size)
    if lab.size < 4 or good[lab].all() or not good[lab].any():
        raise ValueError("calibration needs labelled exposures of both classes")
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
    iso.fit(np.asarray(loo_probability, np.float64)[lab], good[lab].astype(float))
    return lambda p: iso.predict(np.asarray(p, np.float64))
