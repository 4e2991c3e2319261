"""Time grids: the decreasing timesteps in [0, T) at which a few-step sampler calls the network.

A grid is built once from the schedule and the sampler only consumes it (as k-diffusion builds
its σ schedules apart from its samplers). `leading` and `trailing` are fractions of T;
`edm` and `logsnr` are evenly spaced in a function of the noise level σ_t (`NoiseSchedule`),
between the schedule's ends, each point then mapped to the timestep whose ln σ_t is nearest.
`tuned` names a grid chosen for one model (`ddpm.sampling.tuning`), which the sampler is then
given as the timesteps themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ddpm.diffusion.schedule import NoiseSchedule

# `karras` is the name this grid had before `edm`; both give the same timesteps.
GRIDS = ("leading", "trailing", "edm", "logsnr", "karras")  # made from the schedule alone
SPACINGS = (*GRIDS, "tuned")
Spacing = str | Sequence[int]  # a grid's name, or the timesteps themselves
EDM_RHO = 7.0  # Karras et al. 2022, eq. 5 and Table 1: ρ = 7


def check_steps(steps: int, T: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an integer in [1, {T}], got {steps!r}")


def ddim_timesteps(T: int, steps: int, spacing: str = "leading") -> list[int]:
    """`steps` decreasing timesteps in [0, T), the grids that need only T.

    - leading: DDIM's t_i = i * (T // steps), i = steps-1 .. 0 (Song et al. 2021, §C.2); the
      first step starts below T-1 (at 980 of 1000 for 50 steps).
    - trailing: t_i = round(T - i T/steps) - 1, which starts at T-1, where x_T was drawn (Lin et
      al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Table 2).
    """
    check_steps(steps, T)
    if spacing == "leading":
        stride = T // steps
        return [i * stride for i in range(steps - 1, -1, -1)]
    if spacing == "trailing":
        return [round(T - i * T / steps) - 1 for i in range(steps)]
    raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")


def timesteps_for(schedule: NoiseSchedule, steps: int, spacing: Spacing = "leading") -> list[int]:
    """`steps` strictly decreasing timesteps in [0, T), from T-1 (edm, logsnr, trailing) down.

    - leading, trailing: `ddim_timesteps`.
    - edm (alias karras): σ_i = (σ_max^(1/ρ) + i/(steps-1) (σ_min^(1/ρ) - σ_max^(1/ρ)))^ρ with
      ρ = 7 (Karras et al. 2022, eq. 5), σ_max and σ_min the schedule's last and first σ_t:
      denser near the data.
    - logsnr: log-SNR λ = -2 ln σ evenly spaced between the schedule's ends (DPM-Solver's
      "logSNR" time steps, Lu et al. 2022, §3.3): even steps h in the λ the exponential
      integrators (dpm-solver, unipc) step in.
    The σ_i are mapped to timesteps by `nearest_timesteps`. A sequence of timesteps (a tuned
    grid) is checked and returned as it is.
    """
    if not isinstance(spacing, str):
        return check_grid(spacing, steps, schedule.T)
    if spacing == "tuned":
        raise ValueError("a tuned grid is the model's own: pass its timesteps (Loaded.tuned)")
    if spacing in ("leading", "trailing"):
        return ddim_timesteps(schedule.T, steps, spacing)
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    check_steps(steps, schedule.T)
    log_sigma = schedule.log_sigmas.cpu()  # increasing in t
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    hi, lo = float(log_sigma[-1]), float(log_sigma[0])
    if spacing == "logsnr":
        target = hi + ramp * (lo - hi)
    else:  # edm, karras
        top, bottom = math.exp(hi / EDM_RHO), math.exp(lo / EDM_RHO)  # σ_max^(1/ρ), σ_min^(1/ρ)
        target = EDM_RHO * torch.log(top + ramp * (bottom - top))  # ln of eq. 5's σ_i
    return nearest_timesteps(log_sigma, target)


def nearest_timesteps(log_sigma: Tensor, target: Tensor) -> list[int]:
    """The timesteps whose ln σ_t (`log_sigma`, (T,) increasing) are nearest to `target`
    ((steps,) decreasing), made strictly decreasing: where targets fall nearest to one
    timestep, the upper moves up to the next free timestep (and below T - 1 by as many), so
    the grid keeps its length and its network calls. That happens where one timestep spans a
    wide range of ln σ: near t = 0 with many steps, and at the top of the cosine schedule,
    whose last β is clipped at 0.999 (σ_max ≈ 2e4), where EDM's first points become
    999, 998, ... ."""
    T = log_sigma.shape[0]
    nearest = (log_sigma[None, :] - target[:, None]).abs().argmin(1).tolist()
    for i in range(len(nearest) - 2, -1, -1):  # from the data end up
        nearest[i] = max(nearest[i], nearest[i + 1] + 1)
    for i, t in enumerate(nearest):  # and below T so that `steps` <= T always fit
        nearest[i] = min(t, T - 1 - i)
    return nearest


def check_grid(grid: Sequence[int], steps: int, T: int) -> list[int]:
    """`grid` as a list, if it is `steps` strictly decreasing timesteps in [0, T)."""
    ts = [int(t) for t in grid]
    if len(ts) != steps or any(a <= b for a, b in zip(ts, ts[1:])) or not 0 <= ts[-1] <= ts[0] < T:
        raise ValueError(f"a grid of {steps} steps must be strictly decreasing in [0, {T}): {ts}")
    return ts
