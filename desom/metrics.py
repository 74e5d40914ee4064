"""Quality measures of a (deep) SOM: quantization error, topographic error, purity and NMI.

All take plain arrays so they score any map the same way (our DESOM, our SOM, MiniSom): the
vectors (inputs or latent codes) and the prototypes in the same space, and the map shape with
units in row-major order (k = row * cols + col).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from desom.som import grid_coordinates


def _as2d(a, name: str) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        a = a.reshape(a.shape[0], -1) if a.ndim > 2 else a
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def nearest_units(vectors, prototypes, k: int = 2, chunk: int = 8192):
    """Indices (n, k) of the k closest prototypes and their squared distances (n, k)."""
    x, p = _as2d(vectors, "vectors"), _as2d(prototypes, "prototypes")
    if x.shape[1] != p.shape[1]:
        raise ValueError(f"vectors have dimension {x.shape[1]}, prototypes {p.shape[1]}")
    k = min(k, p.shape[0])
    pp = (p * p).sum(axis=1)
    idx_out, d_out = [], []
    for s in range(0, x.shape[0], chunk):
        xb = x[s:s + chunk]
        d2 = np.maximum((xb * xb).sum(axis=1)[:, None] + pp[None, :] - 2.0 * xb @ p.T, 0.0)
        idx = np.argsort(d2, axis=1, kind="stable")[:, :k]
        idx_out.append(idx)
        d_out.append(np.take_along_axis(d2, idx, axis=1))
    if not idx_out:
        return np.zeros((0, k), np.int64), np.zeros((0, k))
    return np.concatenate(idx_out), np.concatenate(d_out)


def quantization_error(vectors, prototypes) -> float:
    """Mean Euclidean distance from each vector to its best-matching prototype."""
    _, d2 = nearest_units(vectors, prototypes, k=1)
    return float(np.sqrt(d2[:, 0]).mean()) if len(d2) else float("nan")


def topographic_error_from_units(first, second, map_shape, neighbourhood: int = 4) -> float:
    """Fraction of samples whose best and second-best units are not neighbours on the grid.

    neighbourhood=4: neighbours share an edge (Manhattan distance 1, the strict convention);
    neighbourhood=8: diagonal units count too (MiniSom's convention).
    """
    if neighbourhood not in (4, 8):
        raise ValueError(f"neighbourhood must be 4 or 8, got {neighbourhood}")
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    if first.shape != second.shape or first.ndim != 1:
        raise ValueError(f"first/second units must be 1-D of equal length, got {first.shape}, {second.shape}")
    rows, cols = map_shape
    k = rows * cols
    if len(first) and (min(first.min(), second.min()) < 0 or max(first.max(), second.max()) >= k):
        raise ValueError(f"unit indices must lie in [0, {k}) for a {rows}x{cols} map")
    if len(first) == 0:
        return float("nan")
    coords = grid_coordinates(rows, cols)
    diff = np.abs(coords[first] - coords[second])
    near = diff.sum(axis=1) == 1 if neighbourhood == 4 else diff.max(axis=1) == 1
    return float(1.0 - near.mean())


def topographic_error(vectors, prototypes, map_shape, neighbourhood: int = 4) -> float:
    rows, cols = map_shape
    p = _as2d(prototypes, "prototypes")
    if p.shape[0] != rows * cols:
        raise ValueError(f"{p.shape[0]} prototypes do not fill a {rows}x{cols} map")
    idx, _ = nearest_units(vectors, p, k=2)
    return topographic_error_from_units(idx[:, 0], idx[:, 1], map_shape, neighbourhood)


def _labels(labels_true, clusters):
    y, c = np.asarray(labels_true), np.asarray(clusters)
    if y.ndim != 1 or c.ndim != 1 or y.shape != c.shape:
        raise ValueError(f"labels and clusters must be 1-D of equal length, got {y.shape}, {c.shape}")
    if len(y) == 0:
        raise ValueError("labels and clusters are empty")
    return y, c


def purity(labels_true, clusters) -> float:
    """Fraction of samples that carry the majority label of their cluster (map unit)."""
    y, c = _labels(labels_true, clusters)
    _, yi = np.unique(y, return_inverse=True)
    _, ci = np.unique(c, return_inverse=True)
    table = np.zeros((ci.max() + 1, yi.max() + 1), np.int64)
    np.add.at(table, (ci, yi), 1)
    return float(table.max(axis=1).sum() / len(y))


def nmi(labels_true, clusters) -> float:
    """Normalized mutual information between labels and clusters (arithmetic mean norm)."""
    y, c = _labels(labels_true, clusters)
    return float(normalized_mutual_info_score(y, c))


def som_scores(vectors, prototypes, map_shape, labels=None) -> dict:
    """QE, topographic error (4- and 8-neighbourhood) and, with labels, purity and NMI."""
    idx, d2 = nearest_units(vectors, prototypes, k=2)
    out = {"quantization_error": float(np.sqrt(d2[:, 0]).mean()),
           "topographic_error": topographic_error_from_units(idx[:, 0], idx[:, 1], map_shape, 4),
           "topographic_error_8": topographic_error_from_units(idx[:, 0], idx[:, 1], map_shape, 8)}
    if labels is not None:
        out["purity"] = purity(labels, idx[:, 0])
        out["nmi"] = nmi(labels, idx[:, 0])
    return out


# The map-order gate (benchmarks/bench_science.py): a DESOM-1 whose map is not ordered gives
# histo-vectors in which neighbouring bins mean nothing alike, and a BMU that still moves at the
# end of training gives an exposure another histo-vector from one run to the next.
MAX_TOPOGRAPHIC_ERROR = 0.35
MAX_BMU_CHURN = 0.25


class MapOrderError(ValueError):
    """A map refused by the order gate: too high a topographic error or BMU churn."""


def bmu_churn(before, after) -> float:
    """Share of probe samples whose best-matching unit differs between two snapshots."""
    a, b = np.asarray(before, np.int64), np.asarray(after, np.int64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"BMU snapshots must be 1-D of equal length, got {a.shape} and {b.shape}")
    return float(np.mean(a != b)) if a.size else float("nan")


def map_order(first, second, map_shape, previous=None) -> dict:
    """Order of a map on a fixed probe set: topographic error (4-neighbour) from the probe's
    first and second BMUs, and, given the BMUs of an earlier snapshot, the churn since then."""
    out = {"topographic_error": topographic_error_from_units(first, second, map_shape, 4),
           "n_probe": int(np.asarray(first).size), "bmu_churn": None}
    if previous is not None:
        out["bmu_churn"] = bmu_churn(previous, first)
    return out


def check_map_order(order: dict, max_topographic_error: float = MAX_TOPOGRAPHIC_ERROR,
                    max_churn: float = MAX_BMU_CHURN) -> dict:
    """Raise MapOrderError when a map_order record is above either threshold; return it."""
    te, churn = order.get("topographic_error"), order.get("bmu_churn")
    problems = []
    if te is None or not np.isfinite(te):
        problems.append("no topographic error was measured")
    elif te > max_topographic_error:
        problems.append(f"topographic error {te:.3f} > {max_topographic_error:g} (the map is not ordered)")
    if churn is not None and np.isfinite(churn) and churn > max_churn:
        problems.append(f"BMU churn {churn:.3f} > {max_churn:g} over the last probe interval "
                        "(the map is still moving)")
    if problems:
        raise MapOrderError("map refused by the order gate: " + "; ".join(problems)
                            + ". Train longer, or with a wider final neighbourhood (t_min).")
    return order


# The reconstruction gate: a DESOM-2 autoencoder sometimes collapses to the mean input (its
# decoder ignores the code, the latent codes shrink to a point, and the map's cells then cut
# noise). The study met it at one DESOM-2 seed in three (explained variance -0.001 against 0.94
# for the others; cells at chance). Noisy inputs lower the share without any collapse (0.39-0.41
# for histo-vectors from a tenth of each exposure's cutouts), so the bar sits near zero.
# Label-free, so training may check it and restart.
MIN_EXPLAINED_VARIANCE = 0.1
# Runs shorter than this are smoke runs (tests, a first look): measured and recorded, not judged.
GATE_MIN_ITERATIONS = 1000


class CollapsedModelError(ValueError):
    """An autoencoder refused by the reconstruction gate: it does not reconstruct its inputs."""


def explained_variance(inputs, reconstructions) -> float:
    """1 - mean squared reconstruction error / total variance of the inputs (1: perfect, 0: no
    better than predicting the mean input for every row)."""
    x = np.asarray(inputs, np.float64).reshape(len(inputs), -1)
    r = np.asarray(reconstructions, np.float64).reshape(len(reconstructions), -1)
    if x.shape != r.shape or x.shape[0] < 2:
        raise ValueError(f"need two or more inputs and reconstructions of one shape, got {x.shape} and {r.shape}")
    total = float(((x - x.mean(axis=0)) ** 2).mean())
    if total <= 0:
        raise ValueError("the inputs do not vary: explained variance is undefined")
    return 1.0 - float(((x - r) ** 2).mean()) / total


def check_reconstruction(share: float, minimum: float = MIN_EXPLAINED_VARIANCE) -> float:
    """Raise CollapsedModelError when an explained-variance share is below minimum; return it."""
    if not np.isfinite(share) or share < minimum:
        raise CollapsedModelError(f"the autoencoder explains {share:.3f} of its inputs' variance "
                                  f"(< {minimum:g}): it collapsed to the mean input")
    return share


def histo_reliability(bmu, owner, weights=None, n_nodes: int = 625, kernel=None, seed: int = 0) -> dict:
    """How much of a histo-vector is the exposure and how much is shot noise.

    Each exposure's cutouts (bmu: their best-matching units; owner: their exposure) are split at
    random into two halves, each half made a histogram (optionally soft-assigned: @ kernel) and
    turned into square-rooted shares. ``within`` is the mean Hellinger distance between the two
    halves of one exposure, ``between`` the mean distance between halves of different exposures
    (each first half against the next exposure's second half); ``ratio`` = within / between is
    near 1 when a histo-vector is mostly noise (two draws from one exposure differ as much as two
    exposures do) and near 0 when it is reproducible. Exposures with fewer than 2 cutouts are
    left out."""
    bmu = np.asarray(bmu, np.int64)
    owner = np.asarray(owner, np.int64)
    if bmu.shape != owner.shape or bmu.ndim != 1:
        raise ValueError(f"bmu and owner must be 1-D of equal length, got {bmu.shape} and {owner.shape}")
    w = np.ones(bmu.size) if weights is None else np.asarray(weights, np.float64)
    rng = np.random.default_rng(seed)
    half = rng.uniform(size=bmu.size) < 0.5
    ids, inverse = np.unique(owner, return_inverse=True)
    n = ids.size
    h = np.zeros((2, n, n_nodes))
    np.add.at(h, (half.astype(np.int64), inverse, bmu), w)
    if kernel is not None:
        h = h @ np.asarray(kernel)
    totals = h.sum(axis=2)
    ok = (totals > 0).all(axis=0)
    if ok.sum() < 2:
        raise ValueError("need at least two exposures with cutouts in both halves")
    r = np.sqrt(h[:, ok] / totals[:, ok, None])
    within = np.linalg.norm(r[0] - r[1], axis=1)
    between = np.linalg.norm(r[0] - np.roll(r[1], 1, axis=0), axis=1)
    return {"within": float(within.mean()), "between": float(between.mean()),
            "ratio": float(within.mean() / between.mean()), "n_exposures": int(ok.sum())}
