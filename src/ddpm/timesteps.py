"""How training draws its timesteps t (B,): the distribution over noise levels that the loss
averages over.

Ho et al. 2020 (Alg. 1) draw t uniformly from {1..T}. With the linear schedule that spends
most of the steps where x_t is nearly pure noise (ᾱ_t < 0.03 for the last ~40%), where there
is little left to learn. Karras et al. 2022 (EDM, §5 and Table 1) draw the noise level σ from a
log-normal, ln σ ~ N(P_mean, P_std²) with P_mean = -1.2 and P_std = 1.2, which concentrates
training on the middle noise levels; "A Closer Look at Time Steps is Worthy of Triple Speed-Up
for Diffusion Model Training" (SpeeD, 2024) reports the gain of moving samples away from the
near-noise steps.

A sampler has `sample(B, generator, device) -> (t, weights)` and `update(t, losses)`. `weights`
are importance weights (B,) to multiply the per-sample losses by, or None when the
distribution *is* the intended emphasis (as here); `update` sees the whole global batch's
values (a no-op for fixed distributions). Nothing here reads back to the host.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ddpm.schedule import NoiseSchedule

TIMESTEP_SAMPLERS = ("uniform", "lognormal")


class UniformTimesteps:
    """t ~ U{0, ..., T-1} (Ho et al. 2020, Algorithm 1)."""

    def __init__(self, schedule: NoiseSchedule):
        self.T = schedule.T

    def sample(
        self, B: int, generator: torch.Generator | None, device: torch.device | str
    ) -> tuple[Tensor, Tensor | None]:
        return torch.randint(0, self.T, (B,), device=device, generator=generator), None

    def update(self, t: Tensor, losses: Tensor) -> None:
        pass


def log_sigmas(schedule: NoiseSchedule) -> Tensor:
    """ln σ_t (T,), float64, where σ_t = √((1 - ᾱ_t)/ᾱ_t) is the noise level of x_t/√ᾱ_t
    (the variance-exploding view of the same process, Karras et al. 2022 §2)."""
    abar = schedule.alphas_cumprod.cpu()
    return 0.5 * (torch.log1p(-abar) - torch.log(abar))


class LogNormalTimesteps:
    """ln σ ~ N(mean, std²) (EDM's P_mean, P_std), each σ rounded to the timestep whose σ_t is
    nearest in ln σ: t is drawn from the categorical distribution `probs` (T,), the normal's
    mass between the midpoints of neighbouring ln σ_t (the first and last bins take the tails).
    """

    def __init__(self, schedule: NoiseSchedule, mean: float = -1.2, std: float = 1.2):
        if not std > 0:
            raise ValueError(f"std must be positive, got {std}")
        ls = log_sigmas(schedule)
        if schedule.T > 1 and not bool((ls[1:] > ls[:-1]).all()):
            raise ValueError("the schedule's noise levels must increase with t")
        edges = (ls[1:] + ls[:-1]) / 2
        cdf = 0.5 * (1 + torch.erf((edges - mean) / (std * math.sqrt(2))))
        cdf = torch.cat([cdf.new_zeros(1), cdf, cdf.new_ones(1)])
        self.probs = (cdf[1:] - cdf[:-1]).float()  # (T,), sums to 1
        self.T = schedule.T
        self._on: dict[torch.device, Tensor] = {}

    def sample(
        self, B: int, generator: torch.Generator | None, device: torch.device | str
    ) -> tuple[Tensor, Tensor | None]:
        device = torch.device(device)
        probs = self._on.get(device)
        if probs is None:
            probs = self._on[device] = self.probs.to(device)
        return torch.multinomial(probs, B, replacement=True, generator=generator), None

    def update(self, t: Tensor, losses: Tensor) -> None:
        pass


def make_timestep_sampler(
    name: str, schedule: NoiseSchedule, mean: float = -1.2, std: float = 1.2
) -> UniformTimesteps | LogNormalTimesteps:
    if name == "uniform":
        return UniformTimesteps(schedule)
    if name == "lognormal":
        return LogNormalTimesteps(schedule, mean, std)
    raise ValueError(f"unknown timestep sampler {name!r}; expected one of {TIMESTEP_SAMPLERS}")
