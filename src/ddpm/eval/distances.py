"""Two-sample distances between sets of points or sequences, and the references that give
them meaning. Pure math on tensors (n, ...) that are flattened to vectors (n, D).

- `mmd2`: the squared maximum mean discrepancy with a Gaussian (RBF) kernel
  k(x, y) = exp(-|x - y|² / (2 h²)) (Gretton et al. 2012), the biased V-statistic (their
  eq. 5), with the bandwidth h from the median heuristic (`median_bandwidth`, their §8).
- `energy_distance`: 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Székely & Rizzo 2013, eq. 2.1),
  the V-statistic, in the units of the data.
Both V-statistics are exactly 0 for identical sets, and for two independent samples of one
distribution (sizes n and m) their expectation is about (1/n + 1/m) times a constant, which is
why every comparison is printed beside the same statistic for held-out vs training data of
the same sizes (the floor) and for a Gaussian fitted to the training data (a weak baseline).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).double()


def pairwise_distances(x: Tensor, y: Tensor) -> Tensor:
    """Euclidean distances (n, m) between the rows of x (n, ...) and y (m, ...), float64."""
    x, y = _flat(x), _flat(y)
    d2 = x.square().sum(1)[:, None] + y.square().sum(1)[None, :] - 2 * x @ y.T
    return d2.clamp(min=0).sqrt()


def median_bandwidth(x: Tensor) -> float:
    """The median heuristic: the median distance between distinct rows of x (n, ...)."""
    if x.shape[0] < 2:
        raise ValueError("the median heuristic needs at least 2 rows")
    d = pairwise_distances(x, x)
    i, j = torch.triu_indices(len(d), len(d), offset=1)
    h = float(torch.quantile(d[i, j], 0.5))  # the middle two averaged, as numpy's median
    return h if h > 0 else 1.0


def mmd2(x: Tensor, y: Tensor, bandwidth: float) -> float:
    """Biased MMD² between x (n, ...) and y (m, ...) with the RBF kernel of width `bandwidth`:
    mean k(x, x') + mean k(y, y') - 2 mean k(x, y), all pairs (diagonals included)."""

    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-pairwise_distances(a, b).square() / (2 * bandwidth**2))

    return float(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())


def energy_distance(x: Tensor, y: Tensor) -> float:
    """2 mean |x - y| - mean |x - x'| - mean |y - y'| over all pairs (the V-statistic)."""
    xy = pairwise_distances(x, y).mean()
    xx = pairwise_distances(x, x).mean()
    yy = pairwise_distances(y, y).mean()
    return float(2 * xy - xx - yy)


def gaussian_fit_sample(train: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """n draws (n, ...) from the Gaussian with the mean and covariance of `train` (N, ...):
    x = μ + Aᵀ z with A = (X - μ) / √(N - 1) and z ~ N(0, I_N), whose covariance is exactly
    the sample covariance (no factorisation, and fine when D > N, as for sequences)."""
    X = _flat(train)
    mu = X.mean(0)
    A = (X - mu) / math.sqrt(max(X.shape[0] - 1, 1))
    z = torch.randn(n, X.shape[0], generator=generator, dtype=torch.float64)
    return (mu + z @ A).float().view(n, *train.shape[1:])


def mode_shares(modes: Tensor, num_modes: int) -> list[float]:
    """The share of points in each mode 0..num_modes-1 from mode indices (n,) (-1: none)."""
    counts = torch.bincount(modes[modes >= 0], minlength=num_modes)[:num_modes]
    return (counts.double() / max(len(modes), 1)).tolist()
