"""The rates a run's config implies at each step: the learning rate (linear warm-up, then
constant or cosine decay) and the EMA decay (diffusers' warm-up, or EDM2's power function)."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

from ddpm.train.settings import MAX_SIGMA_REL

if TYPE_CHECKING:
    from ddpm.train.config import TrainConfig


def lr_at(cfg: TrainConfig, step: int, time_fraction: float = 0.0) -> float:
    """Linear warm-up to cfg.lr, then constant or cosine decay to zero at the end of the run:
    at cfg.steps, or at cfg.max_minutes when `time_fraction` (the share spent of the time that
    the budget had left when the warm-up ended) gets there first."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_decay == "cosine":
        progress = max((step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1), time_fraction)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr


def ema_decay_at(cfg: TrainConfig, step: int) -> float:
    """The decay of the run's EMA at 0-based `step`: EDM2's power function when
    cfg.ema_sigma_rel is set, else min(decay, 1 - (1 + step)^-power) (diffusers' EMAModel)."""
    if cfg.ema_sigma_rel is not None:
        return power_ema_beta(cfg.ema_sigma_rel, step + 1)
    return min(cfg.ema_decay, 1 - (1 + step) ** -cfg.ema_power)


@functools.lru_cache(maxsize=64)
def power_ema_exponent(sigma_rel: float) -> float:
    """γ of the power-function EMA with relative standard deviation σ_rel (Karras et al. 2024,
    EDM2, eq. 3): σ_rel² = (γ + 1) / ((γ + 2)² (γ + 3)), solved for γ > 0 by bisection (the
    right side falls monotonically from 1/12 at γ = 0)."""
    if not 0 < sigma_rel < MAX_SIGMA_REL:
        raise ValueError(f"sigma_rel must lie in (0, {MAX_SIGMA_REL:.4f}), got {sigma_rel}")

    def var(g: float) -> float:
        return (g + 1) / ((g + 2) ** 2 * (g + 3))

    lo, hi = 0.0, 1.0
    while var(hi) > sigma_rel**2:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if var(mid) > sigma_rel**2 else (lo, mid)
    return (lo + hi) / 2


def power_ema_beta(sigma_rel: float, t: int) -> float:
    """EDM2's decay after update t = 1, 2, ...: β_t = (1 - 1/t)^(γ + 1). The average weights
    step s by ∝ s^γ at any t, so its length stays a fixed share σ_rel of the run so far."""
    return (1 - 1 / t) ** (power_ema_exponent(sigma_rel) + 1)
