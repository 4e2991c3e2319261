"""Negative log-likelihood in bits/dim: the variational bound of Ho et al. 2020, §3.3.

    L = L_T + Σ_{t>1} L_{t-1} + L_0                                           (Ho et al. eq. 5)
    L_T     = KL(q(x_T | x_0) || N(0, I))                                     the prior term
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_θ(x_{t-1} | x_t))                 Gaussian KLs
    L_0     = -log p_θ(x_0 | x_1), a Gaussian discretised to 256 bins        (Ho et al. eq. 13)

The reverse process p_θ(x_{t-1} | x_t) = N(μ̃(x_t, x̂_0), σ_t² I) has a fixed variance,
σ_t² = β̃_t ("small", the posterior variance) or β_t ("large"), at the decoder both β̃_1 as
Ho et al.'s and improved-diffusion's code do; or the learned Σ_θ of Nichol & Dhariwal 2021
(eq. 15, "learned"). All terms are computed in float64 and in nats per image; bits/dim
divides by D ln 2 with D = C·H·W. Code index t runs over [0, T): t = 0 is the decoder L_0 and
t = T-1 the last KL term before the prior.

Two cheaper evaluations: the bound of a respaced K-step model
(`ddpm.diffusion.process.respace_model` gives the pair to pass in; a true bound on the likelihood of
the model that K-step DDPM sampling draws from, not of the T-step one), and `stratified_bound_nats`,
an unbiased estimate of the full T-step bound from a few timesteps per image.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ddpm.diffusion.process import (
    VARIANCES,
    EpsModel,
    p_log_variance,
    predict_x0_from_eps,
    q_posterior,
    q_sample,
    split_output,
)
from ddpm.diffusion.schedule import NoiseSchedule


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


def prior_nats(schedule: NoiseSchedule, x_0: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) per image (B,), nats; x_0 float (B, C, H, W)."""
    x_0 = x_0.to(torch.float64)
    abar_T = schedule.alphas_cumprod[-1].to(x_0.device, torch.float64)
    mean = abar_T.sqrt() * x_0
    logvar = torch.log1p(-abar_T).expand_as(x_0)
    return normal_kl(mean, logvar, torch.zeros_like(x_0), torch.zeros_like(x_0)).flatten(1).sum(1)


def vb_term(
    schedule: NoiseSchedule,
    x_0: Tensor,
    x_t: Tensor,
    t: Tensor,
    x0_pred: Tensor,
    model_logvar: Tensor,
) -> Tensor:
    """One bound term per image (B,), nats, for p_θ(x_{t-1} | x_t) = N(μ̃(x_t, x̂_0), e^logvar):
    the decoder's -log p_θ(x_0 | x_1) where t = 0 (Ho et al. eq. 13), else the Gaussian
    KL(q(x_{t-1} | x_t, x_0) || p_θ(x_{t-1} | x_t)) (Ho et al. eq. 5; Nichol & Dhariwal eq. 4-6).

    x_0, x_t, x0_pred: (B, C, H, W); model_logvar broadcasts to them; t: int64 (B,). Works in
    the inputs' dtype (the decoder in float64) and is differentiable (for L_vlb in training).
    """
    true_mean, _, true_logvar = q_posterior(schedule, x_0, x_t, t)
    model_mean, _, _ = q_posterior(schedule, x0_pred, x_t, t)
    kl = normal_kl(true_mean, true_logvar, model_mean, model_logvar).flatten(1).sum(1)
    decoder_nll = -discretized_gaussian_log_likelihood(
        x_0, model_mean, (0.5 * model_logvar).expand_as(x_0)
    )
    return torch.where(t == 0, decoder_nll.flatten(1).sum(1), kl.to(torch.float64))


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
    With variance "learned" the model returns eps and its variance output (2C channels) and
    Σ_θ is eq. 15's.
    """
    x_0, eps = x_0.to(torch.float64), eps.to(torch.float64)
    x_t = q_sample(schedule, x_0, t, eps)
    out = model(x_t.float(), t).to(torch.float64)
    model_eps, var_values = split_output(out, x_0.shape[1])
    x0_pred = predict_x0_from_eps(schedule, x_t, t, model_eps)
    if clip:
        x0_pred = x0_pred.clamp(-1, 1)
    model_logvar = p_log_variance(schedule, t, x_t, variance, var_values)
    return vb_term(schedule, x_0, x_t, t, x0_pred, model_logvar)


@torch.no_grad()
def terms_at(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_0: Tensor,
    timesteps: Tensor,
    variance: str = "small",
    clip: bool = True,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Bound terms (B, K) nats: column j holds image i's term at timesteps[j, i] (int64 (K, B)).

    Columns are batched: with B images and a model batch of `batch_size`, k = batch_size // B
    columns go through the model together. The noise of (image i, column j) is drawn from
    `generator` in column order, so the result does not depend on `batch_size`.
    """
    B = x_0.shape[0]
    K = timesteps.shape[0]
    k = max(1, (batch_size or B) // B)
    out = torch.empty(B, K, dtype=torch.float64, device=x_0.device)
    x_rep = x_0.repeat(k, *([1] * (x_0.ndim - 1)))
    timesteps = timesteps.to(x_0.device)
    for start in range(0, K, k):
        n = min(k, K - start)
        eps = torch.stack(
            [
                torch.randn(x_0.shape, generator=generator, device=x_0.device, dtype=x_0.dtype)
                for _ in range(n)
            ]
        ).flatten(0, 1)
        t = timesteps[start : start + n].flatten()
        terms = vb_terms_nats(model, schedule, x_rep[: n * B], t, eps, variance, clip)
        out[:, start : start + n] = terms.view(n, B).T
    return out


def bound_terms_nats(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_0: Tensor,
    variance: str = "small",
    clip: bool = True,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """All T terms of the bound for each image: (B, T) nats, column t as in `vb_terms_nats`
    (batched and seeded as `terms_at`)."""
    B, T = x_0.shape[0], schedule.T
    timesteps = torch.arange(T, device=x_0.device)[:, None].expand(T, B)
    return terms_at(model, schedule, x_0, timesteps, variance, clip, generator, batch_size)


def strata(T: int, samples: int) -> list[tuple[int, int]]:
    """(start, size) of the strata of [0, T) for `stratified_bound_nats`: {0} on its own (the
    decoder, a large term) and [1, T) cut into samples - 1 contiguous near-equal parts."""
    if isinstance(samples, bool) or not isinstance(samples, int) or not 2 <= samples <= T:
        raise ValueError(f"timestep samples must be an integer in [2, {T}], got {samples!r}")
    edges = [1 + j * (T - 1) // (samples - 1) for j in range(samples)]
    return [(0, 1)] + [(a, b - a) for a, b in zip(edges[:-1], edges[1:])]


def stratified_bound_nats(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_0: Tensor,
    samples: int,
    variance: str = "small",
    clip: bool = True,
    generator: torch.Generator | None = None,
    t_generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """An unbiased estimate of Σ_{t=0}^{T-1} L_t (every term but the prior) per image: (B,) nats.

    Stratified Monte Carlo over t: one timestep drawn uniformly in each stratum (`strata`),
    independently per image (from `t_generator`, on the CPU), its term weighted by the
    stratum's size. E[estimate] is the full sum; `samples` = T gives it exactly, and `generator`
    draws the noise as `bound_terms_nats` does, so that case matches it term for term. As the
    images' estimates are independent, their spread includes the t-sampling noise, and a
    standard error over images is an honest error bar for the full T-step bound.
    """
    parts = strata(schedule.T, samples)
    B = x_0.shape[0]
    u = torch.rand(samples, B, generator=t_generator, dtype=torch.float64)
    start = torch.tensor([a for a, _ in parts], dtype=torch.float64)[:, None]
    size = torch.tensor([n for _, n in parts], dtype=torch.float64)[:, None]
    timesteps = (start + (u * size).floor()).long().clamp(max=schedule.T - 1)
    terms = terms_at(model, schedule, x_0, timesteps, variance, clip, generator, batch_size)
    return (terms * size.T.to(terms.device)).sum(1)


def bits_per_dim(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_0: Tensor,
    variance: str = "small",
    clip: bool = True,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    t_samples: int | None = None,
    t_generator: torch.Generator | None = None,
) -> Tensor:
    """The bound L = L_T + Σ L_{t-1} + L_0 in bits/dim for each image: float64 (B,).

    x_0: uint8 (B, C, H, W) images (the data the model was trained on, at its size). The
    model predicts eps, model(x_t: float (N, C, H, W), t: int64 (N,)) -> (N, C, H, W), or
    (N, 2C, H, W) with the variance output for variance "learned". With `t_samples` = K the
    sum over the T terms is the unbiased stratified estimate of `stratified_bound_nats` (K
    model calls per image instead of T).
    """
    if x_0.dtype != torch.uint8:
        raise ValueError(f"bits_per_dim expects uint8 images, got {x_0.dtype}")
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
    x = x_0.to(torch.float64) / 127.5 - 1.0  # the training range, on the exact grid
    if t_samples is None:
        terms = bound_terms_nats(model, schedule, x, variance, clip, generator, batch_size)
        total = terms.sum(1)
    else:
        total = stratified_bound_nats(
            model, schedule, x, t_samples, variance, clip, generator, t_generator, batch_size
        )
    total = total + prior_nats(schedule, x)
    D = x[0].numel()
    return total / (D * math.log(2.0))
