"""How training draws its timesteps t (B,): the distribution over noise levels that the loss
averages over.

Ho et al. 2020 (Alg. 1) draw t uniformly from {1..T}. With the linear schedule that spends
most of the steps where x_t is nearly pure noise (ᾱ_t < 0.03 for the last ~40%), where there
is little left to learn. Karras et al. 2022 (EDM, §5 and Table 1) draw the noise level σ from a
log-normal, ln σ ~ N(P_mean, P_std²) with P_mean = -1.2 and P_std = 1.2, which concentrates
training on the middle noise levels; "A Closer Look at Time Steps is Worthy of Triple Speed-Up
for Diffusion Model Training" (SpeeD, 2024) reports the gain of moving samples away from the
near-noise steps.

Nichol & Dhariwal 2021 (§3.3) importance-sample t for the variational bound instead, from
the history of each t's loss (`ImportanceSampler`): the weighted loss stays an unbiased
estimate of the uniform average, with less variance.

A sampler has `sample(B, generator, device) -> (t, weights)` and `update(t, losses)`. `weights`
are importance weights (B,) to multiply the per-sample losses by, or None when the
distribution *is* the intended emphasis (as here); `update` sees the whole global batch's
values (a no-op for fixed distributions). Nothing here reads back to the host. A sampler with
state also has `state_dict()` / `load_state_dict(d)`, kept in checkpoints.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ddpm.diffusion.schedule import NoiseSchedule

TIMESTEP_SAMPLERS = ("uniform", "lognormal", "importance")


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


class LogNormalTimesteps:
    """ln σ ~ N(mean, std²) (EDM's P_mean, P_std), each σ rounded to the timestep whose σ_t
    (`NoiseSchedule.sigmas`) is nearest in ln σ: t is drawn from the categorical distribution
    `probs` (T,), the normal's mass between the midpoints of neighbouring ln σ_t (the first
    and last bins take the tails).
    """

    def __init__(self, schedule: NoiseSchedule, mean: float = -1.2, std: float = 1.2):
        if not std > 0:
            raise ValueError(f"std must be positive, got {std}")
        ls = schedule.log_sigmas.cpu()
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


class ImportanceSampler:
    """p_t ∝ √E[L_t²], estimated from the last `history` losses seen at each t
    (Nichol & Dhariwal 2021, eq. 18 and §3.3; improved-diffusion's LossSecondMomentResampler).

    t is uniform until every t has `history` values; after that p_t is the normalised
    √(mean of squares), mixed with the uniform distribution with weight `uniform_prob` (0.001,
    as in the paper's code) so that no p_t is ever zero. The weights are 1 / (T p_t), which
    makes the weighted loss an unbiased estimate of the uniform mean (1/T) Σ_t L_t.

    Everything stays on the schedule's device: the history is a ring buffer (T, history);
    "every t has `history` values" is a device boolean that `torch.where` uses to pick the
    distribution; t is drawn by inverting the CDF of p with one `torch.rand` (no host sync).
    Non-finite losses (a skipped step) are not recorded.
    """

    def __init__(self, schedule: NoiseSchedule, history: int = 10, uniform_prob: float = 0.001):
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        if not 0 <= uniform_prob <= 1:
            raise ValueError(f"uniform_prob must lie in [0, 1], got {uniform_prob}")
        T, device = schedule.T, schedule.betas.device
        self.T, self.history, self.uniform_prob = T, history, uniform_prob
        # row T is a scratch row: writes that must not land (dropped duplicates, non-finite
        # losses) go there, so that every scatter has a fixed shape
        self.losses = torch.zeros(T + 1, history, dtype=torch.float64, device=device)
        self.seen = torch.zeros(T + 1, dtype=torch.long, device=device)  # values ever recorded

    def probabilities(self) -> Tensor:
        """p (T,) float64 on the device: uniform until warmed up, then eq. 18 mixed with uniform."""
        T = self.T
        uniform = torch.full((T,), 1.0 / T, dtype=torch.float64, device=self.losses.device)
        rms = self.losses[:T].square().mean(1).sqrt()
        p = rms / rms.sum().clamp(min=1e-300)
        p = p * (1 - self.uniform_prob) + self.uniform_prob / T
        warm = (self.seen[:T] >= self.history).all() & (rms.sum() > 0)
        return torch.where(warm, p, uniform)

    def sample(
        self, B: int, generator: torch.Generator | None, device: torch.device | str
    ) -> tuple[Tensor, Tensor]:
        p = self.probabilities().to(device)
        cdf = p.cumsum(0)
        u = torch.rand(B, generator=generator, device=device, dtype=torch.float64)
        t = torch.searchsorted(cdf, u * cdf[-1], right=True).clamp(max=self.T - 1)
        weights = 1.0 / (self.T * p[t])
        return t, weights.float()

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Append each (t_i, loss_i) to t_i's history, in batch order; only the last `history`
        values of each t count, as in a per-t queue."""
        T, H = self.T, self.history
        dev = self.losses.device
        losses = losses.detach().to(dev, torch.float64)
        t = t.to(dev)
        key = torch.where(torch.isfinite(losses), t, T)  # non-finite: to the scratch row
        B = key.shape[0]
        # rank of each entry among the batch's entries with the same key, in batch order
        order = torch.sort(key, stable=True).indices
        count = torch.zeros(T + 1, dtype=torch.long, device=dev).scatter_add_(
            0, key, torch.ones_like(key)
        )
        first = count.cumsum(0) - count  # where each key's group starts in sorted order
        rank = torch.empty_like(key)
        rank[order] = torch.arange(B, device=dev) - first[key[order]]
        # entries older than the group's last H would be overwritten: send them to scratch
        row = torch.where(rank >= count[key] - H, key, T)
        col = (self.seen[key] + rank) % H
        self.losses[row, col] = losses
        self.seen += count
        self.seen[T] = 0

    def state_dict(self) -> dict[str, Tensor]:
        return {"losses": self.losses.cpu(), "seen": self.seen.cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if tuple(state["losses"].shape) != tuple(self.losses.shape):
            raise ValueError(
                f"importance-sampler history of shape {tuple(state['losses'].shape)} does not "
                f"fit T = {self.T} and history = {self.history}"
            )
        self.losses.copy_(state["losses"])
        self.seen.copy_(state["seen"])


def make_timestep_sampler(
    name: str, schedule: NoiseSchedule, mean: float = -1.2, std: float = 1.2
) -> UniformTimesteps | LogNormalTimesteps | ImportanceSampler:
    if name == "uniform":
        return UniformTimesteps(schedule)
    if name == "lognormal":
        return LogNormalTimesteps(schedule, mean, std)
    if name == "importance":
        return ImportanceSampler(schedule)
    raise ValueError(f"unknown timestep sampler {name!r}; expected one of {TIMESTEP_SAMPLERS}")
