"""Negative log-likelihood in bits/dim: the variational bound of Ho et al. 2020, §3.3.

    L = L_T + Σ_{t>1} L_{t-1} + L_0                                           (Ho et al. eq. 5)
    L_T     = KL(q(x_T | x_0) || N(0, I))                                     the prior term
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_θ(x_{t-1} | x_t))                 Gaussian KLs
    L_0     = -log p_θ(x_0 | x_1), a Gaussian discretised to 256 bins        (Ho et al. eq. 13)

The reverse process p_θ(x_{t-1} | x_t) = N(μ̃(x_t, x̂_0), σ_t² I) has a fixed variance:
σ_t² = β̃_t ("small", the posterior variance) or β_t ("large"); at the decoder both use β̃_1,
as Ho et al.'s and improved-diffusion's code do. All terms are computed in float64 and in
nats per image; bits/dim divides by D ln 2 with D = C·H·W. Code index t runs over [0, T):
t = 0 is the decoder L_0 and t = T-1 the last KL term before the prior.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ddpm.diffusion import extract, predict_x0_from_eps, q_posterior, q_sample
from ddpm.schedule import NoiseSchedule

EpsModel = Callable[[Tensor, Tensor], Tensor]
VARIANCES = ("small", "large")


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (
        logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
        - 1.0
    )


def discretized_gaussian_log_likelihood(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(x) elementwise for x on the 256-level grid {k/127.5 - 1} (Ho et al. eq. 13).

    Bin k covers [x - 1/255, x + 1/255]; the first and last bins extend to -∞ and +∞, so the
    probabilities of the 256 bins sum to 1. Tail differences of the CDF are taken on the side
    where they are small (Φ(b) - Φ(a) = Φ(-a) - Φ(-b)) to keep their precision.
    """
    x, means, log_scales = (v.to(torch.float64) for v in (x, means, log_scales))
    inv_std = torch.exp(-log_scales)
    upper = inv_std * (x - means + 1.0 / 255.0)
    lower = inv_std * (x - means - 1.0 / 255.0)
    # Φ(upper) - Φ(lower), computed on the negative side of the mean where that is more exact
    flip = lower > 0
    delta = torch.where(
        flip,
        torch.special.ndtr(-lower) - torch.special.ndtr(-upper),
        torch.special.ndtr(upper) - torch.special.ndtr(lower),
    )
    tiny = 1e-300
    return torch.where(
        x < -0.999,
        torch.special.log_ndtr(upper),
        torch.where(x > 0.999, torch.special.log_ndtr(-lower), torch.log(delta.clamp(min=tiny))),
    )


def reverse_log_variance(schedule: NoiseSchedule, variance: str) -> Tensor:
    """log σ_t² (T,) for the fixed reverse variance: β̃_t ("small") or β_t ("large"),
    with β̃_1 at t = 0 in both cases (β̃_0 = 0)."""
    if variance == "small":
        return schedule.posterior_log_variance_clipped
    if variance == "large":
        return torch.cat(
            [schedule.posterior_log_variance_clipped[:1], torch.log(schedule.betas[1:])]
        )
    raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")


def prior_nats(schedule: NoiseSchedule, x_0: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) per image (B,), nats; x_0 float (B, C, H, W)."""
    x_0 = x_0.to(torch.float64)
    abar_T = schedule.alphas_cumprod[-1].to(x_0.device, torch.float64)
    mean = abar_T.sqrt() * x_0
    logvar = torch.log1p(-abar_T).expand_as(x_0)
    return normal_kl(mean, logvar, torch.zeros_like(x_0), torch.zeros_like(x_0)).flatten(1).sum(1)


def vb_terms_nats(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_0: Tensor,
    t: Tensor,
    eps: Tensor,
    variance: str = "small",
    clip: bool = True,
) -> Tensor:
    """One bound term per image (B,), nats: L_0 where t = 0, L_{t} (the KL) where t > 0.

    x_0, eps: float (B, C, H, W); t: int64 (B,). x_t = q_sample(x_0, t, eps); the model's
    x̂_0 is clipped to [-1, 1] when `clip` (still a valid bound: p_θ stays a distribution).
    """
    x_0, eps = x_0.to(torch.float64), eps.to(torch.float64)
    x_t = q_sample(schedule, x_0, t, eps)
    model_eps = model(x_t.float(), t).to(torch.float64)
    x0_pred = predict_x0_from_eps(schedule, x_t, t, model_eps)
    if clip:
        x0_pred = x0_pred.clamp(-1, 1)
    true_mean, _, true_logvar = q_posterior(schedule, x_0, x_t, t)
    model_mean, _, _ = q_posterior(schedule, x0_pred, x_t, t)
    model_logvar = extract(reverse_log_variance(schedule, variance), t, x_t)
    kl = normal_kl(true_mean, true_logvar, model_mean, model_logvar).flatten(1).sum(1)
    decoder_nll = -discretized_gaussian_log_likelihood(
        x_0, model_mean, (0.5 * model_logvar).expand_as(x_0)
    )
    return torch.where(t == 0, decoder_nll.flatten(1).sum(1), kl)


@torch.no_grad()
def bound_terms_nats(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_0: Tensor,
    variance: str = "small",
    clip: bool = True,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """All T terms of the bound for each image: (B, T) nats, column t as in `vb_terms_nats`.

    Timesteps are batched: with B images and a model batch of `batch_size`, k = batch_size // B
    timesteps go through the model together. The noise of (image i, step t) is drawn from
    `generator` in step order, so the result does not depend on `batch_size`.
    """
    B = x_0.shape[0]
    T = schedule.T
    k = max(1, (batch_size or B) // B)
    out = torch.empty(B, T, dtype=torch.float64, device=x_0.device)
    x_rep = x_0.repeat(k, *([1] * (x_0.ndim - 1)))
    for start in range(0, T, k):
        ts = torch.arange(start, min(start + k, T), device=x_0.device)
        n = len(ts)
        eps = torch.stack(
            [
                torch.randn(x_0.shape, generator=generator, device=x_0.device, dtype=x_0.dtype)
                for _ in range(n)
            ]
        ).flatten(0, 1)
        t = ts.repeat_interleave(B)
        terms = vb_terms_nats(model, schedule, x_rep[: n * B], t, eps, variance, clip)
        out[:, start : start + n] = terms.view(n, B).T
    return out


def bits_per_dim(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_0: Tensor,
    variance: str = "small",
    clip: bool = True,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """The bound L = L_T + Σ L_{t-1} + L_0 in bits/dim for each image: float64 (B,).

    x_0: uint8 (B, C, H, W) images (the data the model was trained on, at its size). The
    model predicts eps, model(x_t: float (N, C, H, W), t: int64 (N,)) -> (N, C, H, W).
    """
    if x_0.dtype != torch.uint8:
        raise ValueError(f"bits_per_dim expects uint8 images, got {x_0.dtype}")
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    x = x_0.to(torch.float64) / 127.5 - 1.0  # the training range, on the exact grid
    terms = bound_terms_nats(model, schedule, x, variance, clip, generator, batch_size)
    total = terms.sum(1) + prior_nats(schedule, x)
    D = x[0].numel()
    return total / (D * math.log(2.0))
