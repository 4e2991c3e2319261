"""Variance (beta) schedules and the quantities derived from them.

A schedule is data: the betas β_1..β_T and everything the forward process, the posterior
and the samplers need, computed once in float64 (Ho et al. 2020, §2 and eq. 4, 6-7).
Index t in code runs over [0, T): code index t is the paper's step t+1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ddpm.errors import ScheduleError

SCHEDULES = ("linear", "cosine", "quadratic", "sigmoid")


@dataclass(frozen=True)
class NoiseSchedule:
    """The betas and their derived terms, float64 tensors of shape (T,).

    alphas_cumprod is ᾱ_t = ∏_{s<=t} (1 - β_s); alphas_cumprod_prev is ᾱ_{t-1} with ᾱ_{-1} = 1.
    The posterior q(x_{t-1} | x_t, x_0) = N(coef1 · x_0 + coef2 · x_t, β̃_t) (Ho et al. eq. 6-7).

    sigmas is the noise level σ_t = √((1 - ᾱ_t)/ᾱ_t) of x_t/√ᾱ_t, the variance-exploding view
    of the same process (Karras et al. 2022, §2); it increases with t. log_sigmas is ln σ_t,
    written with log1p to keep its precision where ᾱ_t is near 1. The log-SNR is
    log(ᾱ_t/(1 - ᾱ_t)) = -2 ln σ_t, and DPM-Solver's λ_t = log(α_t/σ_t) = -ln σ_t (Lu et al.
    2022, with α_t = √ᾱ_t and σ_t there = √(1 - ᾱ_t)).
    """

    betas: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    posterior_variance: Tensor  # β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)
    posterior_log_variance_clipped: Tensor  # log β̃_t with β̃_0 replaced by β̃_1 (β̃_0 = 0)
    posterior_mean_coef1: Tensor  # multiplies x_0
    posterior_mean_coef2: Tensor  # multiplies x_t
    sigmas: Tensor  # σ_t = √((1 - ᾱ_t)/ᾱ_t)
    log_sigmas: Tensor  # ln σ_t = (ln(1 - ᾱ_t) - ln ᾱ_t)/2

    @property
    def T(self) -> int:
        return self.betas.shape[0]

    @classmethod
    def from_betas(cls, betas: Tensor | Sequence[float]) -> NoiseSchedule:
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() == 0:
            raise ScheduleError("a schedule needs at least one step")
        if not bool(((betas > 0) & (betas <= 1)).all()):
            raise ScheduleError("betas must lie in (0, 1]")
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        # β̃_0 is 0; the log is clipped to β̃_1 as in Nichol & Dhariwal's code. With T = 1 there
        # is no β̃_1 and the posterior is a point mass at x_0: use β_0 to keep the log finite.
        first = posterior_variance[1:2] if betas.numel() > 1 else betas[:1]
        posterior_log_variance_clipped = torch.log(torch.cat([first, posterior_variance[1:]]))
        return cls(
            betas=betas,
            alphas=alphas,
            alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=alphas_cumprod_prev,
            posterior_variance=posterior_variance,
            posterior_log_variance_clipped=posterior_log_variance_clipped,
            posterior_mean_coef1=betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod),
            posterior_mean_coef2=(1.0 - alphas_cumprod_prev)
            * alphas.sqrt()
            / (1.0 - alphas_cumprod),
            sigmas=noise_levels(alphas_cumprod),
            log_sigmas=0.5 * (torch.log1p(-alphas_cumprod) - torch.log(alphas_cumprod)),
        )

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """The same schedule with every tensor on `device` (still float64 where supported)."""
        return NoiseSchedule(**{k: v.to(device) for k, v in self.__dict__.items()})

    def respace(self, timesteps: Sequence[int]) -> NoiseSchedule:
        """A shorter schedule that keeps only `timesteps` (increasing indices into [0, T)).

        The kept ᾱ values are unchanged and the betas are rebuilt from them,
        β_i = 1 - ᾱ_{t_i} / ᾱ_{t_{i-1}} (Nichol & Dhariwal 2021, §4; improved-diffusion respace.py).
        """
        kept = torch.as_tensor(list(timesteps), dtype=torch.long)
        if kept.numel() == 0 or bool((kept[1:] <= kept[:-1]).any()):
            raise ScheduleError("respace needs strictly increasing timesteps")
        if int(kept[0]) < 0 or int(kept[-1]) >= self.T:
            raise ScheduleError(f"respace timesteps must lie in [0, {self.T})")
        abar = self.alphas_cumprod.cpu()[kept]
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        return NoiseSchedule.from_betas(1.0 - abar / abar_prev)


def noise_levels(alphas_cumprod: Tensor) -> Tensor:
    """σ = √((1 - ᾱ)/ᾱ) elementwise: the noise level of x_t/√ᾱ_t (Karras et al. 2022, §2), as
    `NoiseSchedule.sigmas` holds it; for callers that hold only the ᾱ."""
    return ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt()


def respaced_timesteps(T: int, steps: int) -> list[int]:
    """`steps` timesteps of [0, T), evenly spaced and always keeping 0 and T-1, increasing:
    t_i = round(i (T-1)/(steps-1)) (improved-diffusion's `space_timesteps` with one section).

    Keeping t = T-1 starts the respaced chain from the same x_T, and t = 0 ends it with the
    decoder step; one step keeps only T-1.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ScheduleError(f"steps must be an integer in [1, {T}], got {steps!r}")
    if steps == 1:
        return [T - 1]
    stride = (T - 1) / (steps - 1)
    return [round(i * stride) for i in range(steps)]


def _cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal 2021 eq. 17: ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T + s)/(1 + s)) π/2)."""

    def f(t: Tensor) -> Tensor:
        return torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    t = torch.arange(T + 1, dtype=torch.float64)
    abar = f(t) / f(torch.zeros((), dtype=torch.float64))
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def beta_range(
    T: int, beta_start: float | None = None, beta_end: float | None = None
) -> tuple[float, float]:
    """(β_start, β_end) of a linear/quadratic/sigmoid schedule: the given values, or Ho et al.'s
    1e-4 .. 0.02 scaled by 1000/T (capped at 0.999, as the cosine betas, for very short chains)."""
    scale = 1000.0 / T
    start = min(1e-4 * scale, 0.999) if beta_start is None else beta_start
    end = min(0.02 * scale, 0.999) if beta_end is None else beta_end
    return start, end


def make_schedule(
    name: str,
    T: int,
    beta_start: float | None = None,
    beta_end: float | None = None,
) -> NoiseSchedule:
    """Build a named schedule of T steps.

    `linear`, `quadratic` and `sigmoid` run from beta_start to beta_end. Without explicit
    values they use Ho et al.'s 1e-4 .. 0.02 for T = 1000, scaled by 1000/T for other T so
    that ᾱ_T stays near zero (as improved-diffusion does). Explicit values are used as given:
    `make_schedule("linear", 300, 1e-4, 0.02)` is the reference tutorial's schedule.
    `cosine` is Nichol & Dhariwal's (s = 0.008, betas clipped at 0.999) and takes no range.
    """
    if name not in SCHEDULES:
        raise ScheduleError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ScheduleError(
            f"the number of diffusion steps T must be a positive integer, got {T!r}"
        )
    if name == "cosine":
        if beta_start is not None or beta_end is not None:
            raise ScheduleError("the cosine schedule takes no beta_start/beta_end")
        betas = _cosine_betas(T)
    else:
        start, end = beta_range(T, beta_start, beta_end)
        if not 0 < start <= end <= 1:
            raise ScheduleError(f"need 0 < beta_start <= beta_end <= 1, got {start} and {end}")
        if name == "linear":
            betas = torch.linspace(start, end, T, dtype=torch.float64)
        elif name == "quadratic":
            betas = torch.linspace(start**0.5, end**0.5, T, dtype=torch.float64) ** 2
        else:  # sigmoid, as in the GeoDiff / lucidrains "sigmoid_beta_schedule" of betas
            ramp = torch.sigmoid(torch.linspace(-6, 6, T, dtype=torch.float64))
            betas = ramp * (end - start) + start
    schedule = NoiseSchedule.from_betas(betas)
    abar_T = float(schedule.alphas_cumprod[-1])
    if abar_T > 1e-2:
        warnings.warn(
            f"{name} schedule with T={T} ends at alpha_bar_T = {abar_T:.3g}: x_T keeps "
            f"{abar_T**0.5:.0%} of the image's amplitude, so sampling from pure noise starts off "
            "the training distribution. Use more steps or a larger beta_end.",
            stacklevel=2,
        )
    return schedule
