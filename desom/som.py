"""The self-organizing map layer of a DESOM (paper sections 3.1, 3.3, 3.4).

K prototype vectors live on a rectangular grid of ``rows x cols`` units; unit ``k`` sits at row
``k // cols`` and column ``k % cols`` (row-major, so ``k = row * cols + col``). The SOM loss of a
batch weights the squared latent distance to every prototype by a Gaussian kernel of the grid
(Manhattan) distance between that prototype's unit and the sample's best-matching unit.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

SCHEDULES = ("exponential", "linear", "constant")


def grid_coordinates(rows: int, cols: int) -> np.ndarray:
    """(K, 2) int64 array of (row, col) for every unit, in node-index order."""
    if rows < 1 or cols < 1:
        raise ValueError(f"map shape must be positive, got {rows}x{cols}")
    k = np.arange(rows * cols)
    return np.stack([k // cols, k % cols], axis=1).astype(np.int64)


def grid_distances(rows: int, cols: int) -> np.ndarray:
    """(K, K) Manhattan distances between units on the map, |row_a-row_b| + |col_a-col_b|.

    Rows and columns are both derived with the column count (``divmod(k, cols)``); deriving one
    of them with the row count is a known bug that only shows on non-square maps.
    """
    coords = grid_coordinates(rows, cols)
    return np.abs(coords[:, None, :] - coords[None, :, :]).sum(axis=2)


def gaussian_kernel(distance, temperature: float):
    """Neighbourhood weight exp(-d^2 / T^2) (paper equation 4); works on numpy or torch."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if isinstance(distance, torch.Tensor):
        return torch.exp(-(distance.to(torch.float32) ** 2) / (temperature ** 2))
    return np.exp(-(np.asarray(distance, dtype=np.float64) ** 2) / (temperature ** 2))


def temperature(iteration: int, iterations: int, t_max: float, t_min: float,
                schedule: str = "exponential") -> float:
    """Temperature at ``iteration`` (0-based) of ``iterations``.

    exponential: T = Tmax * (Tmin/Tmax) ** (i / (iterations - 1)) (the paper's schedule);
    linear: straight line from Tmax to Tmin; constant: Tmax throughout. The last iteration
    reaches Tmin exactly; iterations past the end stay at Tmin.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown temperature schedule {schedule!r}; expected one of {SCHEDULES}")
    if t_max <= 0 or t_min <= 0:
        raise ValueError(f"temperatures must be positive, got t_max={t_max}, t_min={t_min}")
    if schedule == "constant":
        return float(t_max)
    if iterations <= 1:
        return float(t_min)
    frac = min(max(iteration, 0) / (iterations - 1), 1.0)
    if schedule == "exponential":
        return float(t_max * (t_min / t_max) ** frac)
    return float(t_max + (t_min - t_max) * frac)


class SOMLayer(nn.Module):
    """K trainable prototypes on a rows x cols grid, with the grid distances kept as a buffer."""

    def __init__(self, rows: int, cols: int, latent_dim: int):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        self.rows, self.cols, self.latent_dim = int(rows), int(cols), int(latent_dim)
        k = self.rows * self.cols
        # Glorot-like small random start; real runs overwrite it with encoded samples.
        bound = math.sqrt(6.0 / (k + latent_dim))
        self.prototypes = nn.Parameter(torch.empty(k, latent_dim).uniform_(-bound, bound))
        self.register_buffer(
            "grid_dist", torch.from_numpy(grid_distances(self.rows, self.cols)).to(torch.float32),
            persistent=False)

    @property
    def n_nodes(self) -> int:
        return self.rows * self.cols

    @property
    def map_shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, K) squared Euclidean distances from latent vectors to every prototype."""
        return squared_distances(z, self.prototypes)

    @torch.no_grad()
    def init_prototypes(self, encodings: torch.Tensor) -> None:
        """Set the prototypes to K encoded samples (the caller draws them without replacement)."""
        if encodings.shape != self.prototypes.shape:
            raise ValueError(f"need {tuple(self.prototypes.shape)} encodings to initialise the "
                             f"prototypes, got {tuple(encodings.shape)}")
        self.prototypes.copy_(encodings.to(self.prototypes))

    def neighbourhood(self, bmu: torch.Tensor, temp: float) -> torch.Tensor:
        """(N, K) kernel weights w[i, k] = exp(-d(bmu_i, k)^2 / T^2), without gradient."""
        return gaussian_kernel(self.grid_dist[bmu], temp).detach()

    def som_loss(self, sq_dist: torch.Tensor, temp: float, normalise: bool = False) -> torch.Tensor:
        """Mean over the batch of sum_k w[i,k] * ||z_i - m_k||^2, BMUs taken from sq_dist;
        normalise: divided by sum_k w[i,k], a weighted mean distance instead of a sum."""
        bmu = sq_dist.detach().argmin(dim=1)
        weights = self.neighbourhood(bmu, temp)
        per_sample = (weights * sq_dist).sum(dim=1)
        if normalise:
            per_sample = per_sample / weights.sum(dim=1)
        return per_sample.mean()


def squared_distances(z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """(N, K) ||z_i - m_k||^2, expanded form clamped at zero against round-off."""
    z = z.to(prototypes.dtype)
    zz = (z * z).sum(dim=1, keepdim=True)
    mm = (prototypes * prototypes).sum(dim=1)
    return (zz + mm[None, :] - 2.0 * z @ prototypes.T).clamp_min(0.0)
