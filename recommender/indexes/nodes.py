"""Queries over the DESOM-1 map for an "activation" index: a weight per node, optionally spread to
the node's grid neighbours with the SOM's Gaussian kernel."""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np


def map_distances(map_shape: tuple[int, int], topology: str = "manhattan") -> np.ndarray:
    """(K, K) distances between nodes of a rows x cols map, node = row * cols + col."""
    rows, cols = _check_map_shape(map_shape)
    r, c = np.divmod(np.arange(rows * cols), cols)
    dr = np.abs(r[:, None] - r[None, :]).astype(np.float64)
    dc = np.abs(c[:, None] - c[None, :]).astype(np.float64)
    if topology == "manhattan":
        return dr + dc
    if topology == "euclidean":
        return np.sqrt(dr ** 2 + dc ** 2)
    raise ValueError(f"topology must be 'manhattan' or 'euclidean', got {topology!r}")


def _check_map_shape(map_shape) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in map_shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"map_shape must be (rows, cols), got {map_shape!r}") from exc
    if rows < 1 or cols < 1:
        raise ValueError(f"map_shape must be positive, got {map_shape!r}")
    return rows, cols


def node_query_vector(nodes_with_weights, n_nodes: int, *, map_shape=None, spread: float = 0.0,
                      topology: str = "manhattan") -> np.ndarray:
    """A weighted query over DESOM-1 nodes for an "activation" index, float32 (n_nodes,).

    ``nodes_with_weights``: a dict node -> weight, a sequence of (node, weight) pairs, a sequence
    of nodes (weight 1 each) or a dense vector of n_nodes weights. Negative weights mean "few
    sources there". With ``spread`` > 0 (needs ``map_shape``) each weight is spread to the
    node's grid neighbours with the SOM's Gaussian kernel exp(-d^2 / spread^2). The result is
    scaled so its absolute values sum to 1: a score is then the weighted mean share.
    """
    n_nodes = int(n_nodes)
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be positive, got {n_nodes}")
    weights = np.zeros(n_nodes, dtype=np.float64)
    if isinstance(nodes_with_weights, Mapping):
        items = list(nodes_with_weights.items())
    else:
        arr = np.asarray(nodes_with_weights)
        if arr.ndim == 1 and arr.size == n_nodes and np.issubdtype(arr.dtype, np.floating):
            items = list(enumerate(arr.astype(np.float64)))     # dense weights
        elif arr.ndim == 2 and arr.shape[1] == 2:
            items = [(node, w) for node, w in arr]               # (node, weight) pairs
        elif arr.ndim == 1 and (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
            items = [(node, 1.0) for node in arr]                # plain nodes
        else:
            raise ValueError("nodes_with_weights must be a dict node->weight, (node, weight) pairs, "
                             f"integer nodes or {n_nodes} float weights; got shape {arr.shape}, dtype {arr.dtype}")
    for node, w in items:
        try:
            node_i = int(node)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"node {node!r} is not an integer node index") from exc
        if node_i != node or not 0 <= node_i < n_nodes:
            raise ValueError(f"node {node!r} outside the map's {n_nodes} nodes")
        w = float(w)
        if not math.isfinite(w):
            raise ValueError(f"weight of node {node_i} is not finite ({w})")
        weights[node_i] += w
    if spread and spread > 0:
        if map_shape is None:
            raise ValueError("spread needs map_shape (rows, cols)")
        rows, cols = _check_map_shape(map_shape)
        if rows * cols != n_nodes:
            raise ValueError(f"map_shape {map_shape} has {rows * cols} nodes, n_nodes is {n_nodes}")
        kernel = np.exp(-(map_distances((rows, cols), topology) ** 2) / float(spread) ** 2)
        weights = kernel @ weights
    elif spread < 0:
        raise ValueError(f"spread must be >= 0, got {spread}")
    total = np.abs(weights).sum()
    if total == 0:
        raise ValueError("node query has no nonzero weight")
    return (weights / total).astype(np.float32)


def neighbourhood_query(bmu: int, map_shape, radius: float, *, topology: str = "manhattan") -> np.ndarray:
    """Query around one BMU (e.g. of an uploaded cutout): weight exp(-d^2 / radius^2) on every
    node at grid distance d, normalised to sum 1; radius 0 puts all the weight on the BMU."""
    rows, cols = _check_map_shape(map_shape)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    return node_query_vector({int(bmu): 1.0}, rows * cols, map_shape=(rows, cols), spread=float(radius),
                             topology=topology)
