"""The sample metrics against closed forms: identical sets give 0, shifted Gaussians give the
known MMD² and energy distance, the median heuristic is the median distance."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist
from scipy.special import gamma, hyp1f1
from scipy.stats import norm

from ddpm.eval import distances as metrics


def gaussian_grid(d: int, k: int) -> torch.Tensor:
    """A deterministic stand-in for N(0, I_d): the product grid of the k quantiles
    Φ⁻¹((i + ½)/k) per axis (k^d points). Its V-statistics approach the population values
    with a small deterministic error, where random draws would add sampling noise."""
    q = torch.tensor(norm.ppf((np.arange(k) + 0.5) / k), dtype=torch.float64)
    return torch.cartesian_prod(*[q] * d).reshape(-1, d) if d > 1 else q[:, None]


def mean_norm(mean_norm2: float, s: float, d: int) -> float:
    """E|Z| for Z ~ N(μ, s² I_d), |μ|² = mean_norm2 (the mean of a noncentral chi):
    s √2 Γ((d+1)/2) / Γ(d/2) · 1F1(-1/2; d/2; -|μ|²/(2 s²))."""
    ratio = gamma((d + 1) / 2) / gamma(d / 2)
    return s * math.sqrt(2) * ratio * hyp1f1(-0.5, d / 2, -mean_norm2 / (2 * s * s))


def test_identical_sets_give_zero():
    x = torch.randn(300, 3, generator=torch.Generator().manual_seed(0))
    assert metrics.mmd2(x, x, 1.3) == pytest.approx(0, abs=1e-12)
    assert metrics.energy_distance(x, x) == pytest.approx(0, abs=1e-9)
    seq = torch.randn(40, 2, 17)  # sequences are flattened
    assert metrics.energy_distance(seq, seq.clone()) == pytest.approx(0, abs=1e-9)


# (d, points per axis, relative tolerance): the grid's error grows with d at fixed size
GRIDS = [(1, 1000, 3e-4), (2, 32, 0.02)]


@pytest.mark.parametrize("d, k, rel", GRIDS)
@pytest.mark.parametrize("shift", [0.5, 2.0])
def test_energy_distance_of_shifted_gaussians(d, k, rel, shift):
    x = gaussian_grid(d, k)
    y = x + torch.tensor([shift / math.sqrt(d)] * d, dtype=torch.float64)  # |μ| = shift
    # X - Y ~ N(-μ, 2I), X - X' ~ N(0, 2I): D² = 2 E|X - Y| - 2 E|X - X'|
    expected = 2 * mean_norm(shift**2, math.sqrt(2), d) - 2 * mean_norm(0.0, math.sqrt(2), d)
    assert metrics.energy_distance(x, y) == pytest.approx(expected, rel=rel)


@pytest.mark.parametrize("d, k, rel", GRIDS)
@pytest.mark.parametrize("shift, h", [(0.5, 1.0), (2.0, 0.7)])
def test_mmd2_of_shifted_gaussians(d, k, rel, shift, h):
    x = gaussian_grid(d, k)
    y = x + torch.tensor([shift / math.sqrt(d)] * d, dtype=torch.float64)
    # E exp(-|Z|²/(2h²)) for Z ~ N(m, s² I_d) = (h²/(h²+s²))^{d/2} exp(-|m|²/(2(h²+s²))), s² = 2
    c0 = (h * h / (h * h + 2)) ** (d / 2)
    expected = 2 * c0 * (1 - math.exp(-(shift**2) / (2 * (h * h + 2))))
    assert metrics.mmd2(x, y, h) == pytest.approx(expected, rel=rel)


def test_two_samples_of_one_distribution_give_the_small_floor():
    """Independent draws: the V-statistics are positive but small, about (1/n + 1/m) E|X - X'|
    for the energy distance: what the floor row of `ddpm eval` measures."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g)
    floor = metrics.energy_distance(x, y)
    expected = (2 / 500) * mean_norm(0.0, math.sqrt(2), 2)
    assert 0 < floor < 3 * expected
    assert metrics.energy_distance(x, y + 1) > 30 * floor


def test_median_bandwidth_is_the_median_pairwise_distance():
    x = torch.randn(101, 4, generator=torch.Generator().manual_seed(3))
    assert metrics.median_bandwidth(x) == pytest.approx(
        float(np.median(pdist(x.numpy()))), rel=1e-6
    )


def test_gaussian_fit_matches_the_training_moments():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(50, 3, generator=g) @ torch.tensor([[2.0, 0, 0], [1, 1, 0], [0, 0, 0.5]])
    draws = metrics.gaussian_fit_sample(train, 40000, g).double()
    assert torch.allclose(draws.mean(0), train.double().mean(0), atol=0.05)
    assert torch.allclose(torch.cov(draws.T), torch.cov(train.double().T), atol=0.08)
    # sequences (D > N): the draws stay in the span of the data, shaped like it
    seqs = torch.randn(10, 2, 30, generator=g)
    assert metrics.gaussian_fit_sample(seqs, 7, g).shape == (7, 2, 30)


def test_mode_shares():
    shares = metrics.mode_shares(torch.tensor([0, 0, 1, -1, 2, 2, 2, 1]), 4)
    assert shares == [0.25, 0.25, 0.375, 0.0]
