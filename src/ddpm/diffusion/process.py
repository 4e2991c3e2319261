"""The forward process, its posterior, the three parameterisations, the reverse variance and
the training loss.

Shapes: images x_0, x_t, eps are (B, C, H, W); timesteps t are int64 (B,) in [0, T).
Schedule terms are gathered in float64 and cast to the images' dtype (`extract`).

A network with learned variances (Nichol & Dhariwal 2021, §3.1) returns (B, 2C, H, W): its
prediction in the first C channels and `var_values` in the last C (`split_output`), from which
eq. 15's interpolation weight between log β_t and log β̃_t is taken (the paper calls that weight
v; here it is ν, `nu`, since v is the velocity target of Salimans & Ho). Every conversion here
acts on the first C channels and passes the last C through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from ddpm.diffusion.schedule import NoiseSchedule, respaced_timesteps

Prediction = Literal["eps", "x0", "v"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v")
SIMPLE_LOSSES: tuple[str, ...] = ("l2", "l1")
EpsModel = Callable[[Tensor, Tensor], Tensor]  # model(x_t, t) -> eps (B, C or 2C, H, W)


def extract(coef: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """coef[t] reshaped to (B, 1, 1, 1) so it broadcasts against x, in x's dtype and device."""
    out = coef.to(t.device)[t].to(x.dtype)
    return out.view(-1, *([1] * (x.ndim - 1)))


def q_sample(schedule: NoiseSchedule, x_0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_t ~ q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I), reparameterised (Ho et al. eq. 4)."""
    abar = extract(schedule.alphas_cumprod, t, x_0)
    return abar.sqrt() * x_0 + (1 - abar).sqrt() * eps


def q_posterior(
    schedule: NoiseSchedule, x_0: Tensor, x_t: Tensor, t: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 6-7)."""
    mean = (
        extract(schedule.posterior_mean_coef1, t, x_t) * x_0
        + extract(schedule.posterior_mean_coef2, t, x_t) * x_t
    )
    var = extract(schedule.posterior_variance, t, x_t)
    log_var = extract(schedule.posterior_log_variance_clipped, t, x_t)
    return mean, var, log_var


# --- parameterisations: x_t = √ᾱ x_0 + √(1-ᾱ) eps and v = √ᾱ eps - √(1-ᾱ) x_0 (Salimans & Ho
# 2022, §4). Each pair below inverts the other for the same (x_t, t).


def predict_x0_from_eps(schedule: NoiseSchedule, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    abar = extract(schedule.alphas_cumprod, t, x_t)
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


def predict_eps_from_x0(schedule: NoiseSchedule, x_t: Tensor, t: Tensor, x_0: Tensor) -> Tensor:
    abar = extract(schedule.alphas_cumprod, t, x_t)
    return (x_t - abar.sqrt() * x_0) / (1 - abar).sqrt()


def v_target(schedule: NoiseSchedule, x_0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    abar = extract(schedule.alphas_cumprod, t, x_0)
    return abar.sqrt() * eps - (1 - abar).sqrt() * x_0


def predict_x0_from_v(schedule: NoiseSchedule, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
    abar = extract(schedule.alphas_cumprod, t, x_t)
    return abar.sqrt() * x_t - (1 - abar).sqrt() * v


def predict_eps_from_v(schedule: NoiseSchedule, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
    abar = extract(schedule.alphas_cumprod, t, x_t)
    return (1 - abar).sqrt() * x_t + abar.sqrt() * v


def split_output(out: Tensor, channels: int) -> tuple[Tensor, Tensor | None]:
    """(prediction, var_values): a network output of `channels` channels has no variance
    output (None); one of 2 * `channels` carries `var_values` in its last half."""
    if out.shape[1] == channels:
        return out, None
    if out.shape[1] == 2 * channels:
        return out[:, :channels], out[:, channels:]
    raise ValueError(
        f"the network returned {out.shape[1]} channels for {channels}-channel images "
        f"(expected {channels}, or {2 * channels} with learned variances)"
    )


def join_output(pred: Tensor, var_values: Tensor | None) -> Tensor:
    """The inverse of `split_output`: the prediction with `var_values` (if any) appended."""
    return pred if var_values is None else torch.cat([pred, var_values.to(pred.dtype)], dim=1)


def to_eps(
    schedule: NoiseSchedule, prediction: Prediction, x_t: Tensor, t: Tensor, out: Tensor
) -> Tensor:
    """Turn a network output in the given parameterisation into a noise prediction (the
    variance output, when the output has 2C channels, is passed through unchanged)."""
    if prediction == "eps":
        return out
    out, var_values = split_output(out, x_t.shape[1])
    if prediction == "x0":
        return join_output(predict_eps_from_x0(schedule, x_t, t, out), var_values)
    if prediction == "v":
        return join_output(predict_eps_from_v(schedule, x_t, t, out), var_values)
    raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")


def to_x0(
    schedule: NoiseSchedule, prediction: Prediction, x_t: Tensor, t: Tensor, pred: Tensor
) -> Tensor:
    """x̂_0 from a prediction (C channels) in the given parameterisation."""
    if prediction == "eps":
        return predict_x0_from_eps(schedule, x_t, t, pred)
    if prediction == "x0":
        return pred
    if prediction == "v":
        return predict_x0_from_v(schedule, x_t, t, pred)
    raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")


def eps_model(
    model: Callable[..., Tensor], schedule: NoiseSchedule, prediction: Prediction
) -> EpsModel:
    """Wrap a network trained for `prediction` so that it returns eps, as the samplers expect."""
    if prediction == "eps":
        return model

    def wrapped(x_t: Tensor, t: Tensor) -> Tensor:
        return to_eps(schedule, prediction, x_t, t, model(x_t, t))

    return wrapped


def respace_model(
    model: Callable[[Tensor, Tensor], Tensor], schedule: NoiseSchedule, steps: int
) -> tuple[Callable[[Tensor, Tensor], Tensor], NoiseSchedule]:
    """The K-step process of Nichol & Dhariwal 2021, §4: the schedule restricted to K evenly
    spaced timesteps (`respaced_timesteps`; its betas rebuilt from the kept ᾱ) and the model
    called at the original timestep of each respaced index i.

    Any sampler or bound run on the pair runs the respaced chain; a learned variance then
    interpolates between the respaced β_i and β̃_i, as the paper's respaced sampling does.
    """
    kept = respaced_timesteps(schedule.T, steps)
    return respace_model_at(model, schedule, kept)


def respace_model_at(
    model: Callable[[Tensor, Tensor], Tensor], schedule: NoiseSchedule, kept: Sequence[int]
) -> tuple[Callable[[Tensor, Tensor], Tensor], NoiseSchedule]:
    """`respace_model` with the kept timesteps given (strictly increasing indices of [0, T))."""
    respaced = schedule.respace(kept)
    if respaced.T == schedule.T:
        return model, schedule
    # on the schedule's device once: a copy per call would synchronise with the GPU every step
    table = torch.as_tensor(list(kept), dtype=torch.long, device=schedule.betas.device)

    def wrapped(x_t: Tensor, i: Tensor) -> Tensor:
        return model(x_t, table.to(i.device)[i])

    return wrapped, respaced.to(schedule.betas.device)


# --- the reverse process's variance (Ho et al. §3.2; Nichol & Dhariwal 2021 §3.1) -----------

VARIANCES: tuple[str, ...] = ("small", "large", "learned")
FIXED_VARIANCES: tuple[str, ...] = ("small", "large")


def nu_from_output(var_values: Tensor) -> Tensor:
    """Eq. 15's interpolation weight ν (the paper's v) from the network's variance output:
    ν = (var_values + 1) / 2.

    improved-diffusion maps the raw output this way ("learned range"), so that a network whose
    last layer starts at zero starts halfway between the bounds in log space; this affine map
    is the whole difference from the paper, which has the network output ν itself.
    """
    return (var_values + 1) / 2


def learned_log_variance(schedule: NoiseSchedule, t: Tensor, nu: Tensor) -> Tensor:
    """log Σ_θ = ν · log β_t + (1 - ν) · log β̃_t (Nichol & Dhariwal 2021, eq. 15).

    ν = 1 gives β_t, ν = 0 gives β̃_t (clipped to β̃_1 at t = 0, where β̃_0 = 0).
    `nu` is (B, C, H, W) (from `nu_from_output`), t int64 (B,); the result is nu's shape.
    """
    max_log = extract(schedule.betas.log(), t, nu)
    min_log = extract(schedule.posterior_log_variance_clipped, t, nu)
    return nu * max_log + (1 - nu) * min_log


def reverse_log_variance(schedule: NoiseSchedule, variance: str) -> Tensor:
    """log σ_t² (T,), float64, of p_θ's fixed variance: β̃_t ("small", the posterior variance,
    the lower bound) or β_t ("large", the upper bound; Ho et al. §3.2), both with β̃_1 at t = 0,
    where β̃_0 = 0, as Ho et al.'s and improved-diffusion's code do."""
    if variance == "small":
        return schedule.posterior_log_variance_clipped
    if variance == "large":
        return torch.cat([schedule.posterior_log_variance_clipped[:1], schedule.betas[1:].log()])
    raise ValueError(f"variance must be one of {', '.join(FIXED_VARIANCES)}, got {variance!r}")


def p_log_variance(
    schedule: NoiseSchedule,
    t: Tensor,
    x_t: Tensor,
    variance: str,
    var_values: Tensor | None = None,
) -> Tensor:
    """log σ_t² of p_θ(x_{t-1} | x_t), broadcastable to x_t: the fixed β̃_t ("small") or β_t
    ("large") of `reverse_log_variance`, or Σ_θ ("learned", eq. 15, from the network's
    `var_values`)."""
    if variance in FIXED_VARIANCES:
        return extract(reverse_log_variance(schedule, variance), t, x_t)
    if variance == "learned":
        if var_values is None:
            raise ValueError(
                "variance 'learned' needs a network with learned variances (2C output channels)"
            )
        return learned_log_variance(schedule, t, nu_from_output(var_values.to(x_t.dtype)))
    raise ValueError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")


def snr(schedule: NoiseSchedule, t: Tensor) -> Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t), float64, shape (B,)."""
    abar = schedule.alphas_cumprod.to(t.device)[t]
    return abar / (1 - abar)


LOSS_WEIGHTS: tuple[str, ...] = ("none", "min-snr", "edm")


def loss_weights(
    schedule: NoiseSchedule,
    t: Tensor,
    prediction: Prediction,
    min_snr_gamma: float | None = None,
    weighting: str | None = None,
    sigma_data: float = 0.5,
) -> Tensor | None:
    """Per-sample weights (B,) of the regressed target's loss, or None for weights of one.

    Every loss on eps, x_0 or v is a weighted loss on x_0: |x̂_0 - x_0|² = c² |target error|²
    with c² = 1/SNR for eps, 1/(SNR + 1) for v and 1 for x_0 (SNR = ᾱ/(1-ᾱ) = 1/σ²). A
    weighting w(t) of the x_0 error is therefore w(t) c² on the target:
      - "min-snr": w = min(SNR, γ) (Hang et al. 2023, eq. 12): min(SNR, γ)/SNR for eps;
      - "edm": w = λ(σ) = (σ² + σ_d²)/(σ σ_d)² (Karras et al. 2022, Table 1), i.e.
        1 + σ²/σ_d² for eps: the same optimum as EDM's preconditioned loss.
    `min_snr_gamma` alone, without `weighting`, means "min-snr".
    """
    if weighting is None or weighting == "none":
        if min_snr_gamma is None:
            return None
        weighting = "min-snr"
    s = snr(schedule, t)
    if weighting == "min-snr":
        if min_snr_gamma is None:
            raise ValueError("min-snr weighting needs min_snr_gamma")
        w_x0 = s.clamp(max=min_snr_gamma)
    elif weighting == "edm":
        sigma2 = 1 / s
        w_x0 = (sigma2 + sigma_data**2) / (sigma2 * sigma_data**2)
    else:
        raise ValueError(f"unknown loss weighting {weighting!r}; expected one of {LOSS_WEIGHTS}")
    if prediction == "eps":
        return w_x0 / s
    if prediction == "v":
        return w_x0 / (s + 1)
    return w_x0


def diffusion_loss(
    model: Callable[[Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    x_0: Tensor,
    t: Tensor,
    eps: Tensor,
    prediction: Prediction = "eps",
    loss_type: str = "l2",
    min_snr_gamma: float | None = None,
    weighting: str | None = None,
    sigma_data: float = 0.5,
) -> Tensor:
    """The simple loss of Ho et al. (Alg. 1, eq. 14): E ||target - model(x_t, t)||², a scalar.

    `prediction` picks the regression target (eps, x_0 or v), `loss_type` L2 or L1 (the
    reference tutorial used L1), `weighting` (with `min_snr_gamma`, `sigma_data`) reweights the
    timesteps (`loss_weights`).
    """
    x_t = q_sample(schedule, x_0, t, eps)
    out = model(x_t, t)
    per_sample = simple_loss(
        schedule, x_0, t, eps, out, prediction, loss_type, min_snr_gamma, weighting, sigma_data
    )
    return per_sample.mean()


def simple_loss(
    schedule: NoiseSchedule,
    x_0: Tensor,
    t: Tensor,
    eps: Tensor,
    out: Tensor,
    prediction: Prediction = "eps",
    loss_type: str = "l2",
    min_snr_gamma: float | None = None,
    weighting: str | None = None,
    sigma_data: float = 0.5,
) -> Tensor:
    """L_simple per sample (B,), float32: mean over pixels of |target - out|² (or |.|), times
    the timestep weight of `loss_weights`. `out` is the network's prediction (C channels)."""
    if prediction == "eps":
        target = eps
    elif prediction == "x0":
        target = x_0
    elif prediction == "v":
        target = v_target(schedule, x_0, t, eps)
    else:
        raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")
    diff = out.float() - target.float()
    if loss_type == "l2":
        per_sample = diff.square().flatten(1).mean(1)
    elif loss_type == "l1":
        per_sample = diff.abs().flatten(1).mean(1)
    else:
        raise ValueError(f"unknown loss type {loss_type!r}; expected one of {SIMPLE_LOSSES}")
    w = loss_weights(schedule, t, prediction, min_snr_gamma, weighting, sigma_data)
    if w is not None:
        per_sample = per_sample * w.to(per_sample.dtype)
    return per_sample
