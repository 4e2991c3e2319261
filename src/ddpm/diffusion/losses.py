"""The training objectives, per sample: L_simple (Ho et al. 2020, eq. 14) and the variational
bound terms of Nichol & Dhariwal 2021 (§3.1): L_vlb and L_hybrid = L_simple + λ L_vlb.

Shapes: x_0, eps (B, C, H, W) in [-1, 1]; t int64 (B,); every loss is float32 (B,), to be
averaged (with the timestep sampler's importance weights, if any) by the caller. Units follow
improved-diffusion: L_simple is a mean over pixels, an L_t is in bits per dimension, and
L_vlb = T · L_t is the single-sample estimate of Σ_t L_t under uniform t, so that
λ L_vlb = (λ T) L_t (with λ = 0.001 and T = 1000 the two terms have equal footing).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

from ddpm.diffusion.likelihood import vb_term
from ddpm.diffusion.process import (
    SIMPLE_LOSSES,
    Prediction,
    p_log_variance,
    q_sample,
    simple_loss,
    split_output,
    to_x0,
)
from ddpm.diffusion.schedule import NoiseSchedule

VLB_LOSSES: tuple[str, ...] = ("hybrid", "vlb")
LOSSES: tuple[str, ...] = SIMPLE_LOSSES + VLB_LOSSES
HYBRID_LAMBDA = 0.001  # λ of L_hybrid (Nichol & Dhariwal §3.1)


def vlb_loss(
    schedule: NoiseSchedule,
    x_0: Tensor,
    x_t: Tensor,
    t: Tensor,
    pred: Tensor,
    var_values: Tensor | None,
    prediction: Prediction,
) -> Tensor:
    """L_vlb per sample (B,), bits/dim: T · L_t with p_θ's mean from the prediction (C channels,
    no clipping, as in training) and its variance Σ_θ from `var_values` (eq. 15), or β̃_t
    without them.

    Detach `pred` before the call for the hybrid loss's stop-gradient on the mean.
    """
    x0_pred = to_x0(schedule, prediction, x_t, t, pred)
    variance = "small" if var_values is None else "learned"
    logvar = p_log_variance(schedule, t, x_t, variance, var_values)
    nats = vb_term(schedule, x_0, x_t, t, x0_pred, logvar)
    D = x_0[0].numel()
    return (schedule.T * nats / (D * math.log(2.0))).float()


def training_losses(
    model: Callable[[Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    x_0: Tensor,
    t: Tensor,
    eps: Tensor,
    prediction: Prediction = "eps",
    loss: str = "l2",
    min_snr_gamma: float | None = None,
    weighting: str | None = None,
    sigma_data: float = 0.5,
    vlb_weight: float = HYBRID_LAMBDA,
) -> Tensor:
    """The per-sample loss (B,) of one training step on x_t = q_sample(x_0, t, eps):

    - "l2" / "l1": L_simple, the regression of the target (eps, x_0 or v) on the first C
      channels (Ho et al. Alg. 1), reweighted over t by `weighting` (`loss_weights`);
    - "hybrid": L_simple + λ L_vlb, where L_vlb sees the mean through a stop-gradient, so that
      it trains only Σ_θ and L_simple stays the mean's only signal (Nichol & Dhariwal §3.1);
    - "vlb": L_vlb alone, training mean and variance (to pair with importance-sampled t, §3.3).

    With a network of C output channels "vlb" uses the fixed variance β̃_t (Ho et al.'s "L,
    fixed isotropic Σ" ablation); "hybrid" needs the learned one (checked by TrainConfig).
    """
    x_t = q_sample(schedule, x_0, t, eps)
    pred, var_values = split_output(model(x_t, t), x_0.shape[1])
    weights = (min_snr_gamma, weighting, sigma_data)
    if loss in SIMPLE_LOSSES:
        return simple_loss(schedule, x_0, t, eps, pred, prediction, loss, *weights)
    if loss == "hybrid":
        simple = simple_loss(schedule, x_0, t, eps, pred, prediction, "l2", *weights)
        pred_f = pred.detach().float()
        var_f = None if var_values is None else var_values.float()
        vlb = vlb_loss(schedule, x_0.float(), x_t.float(), t, pred_f, var_f, prediction)
        return simple + vlb_weight * vlb
    if loss == "vlb":
        var_f = None if var_values is None else var_values.float()
        return vlb_loss(schedule, x_0.float(), x_t.float(), t, pred.float(), var_f, prediction)
    raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")
