"""The forward process, its posterior, the three parameterisations and the training loss.

Shapes: images x_0, x_t, eps are (B, C, H, W); timesteps t are int64 (B,) in [0, T).
Schedule terms are gathered in float64 and cast to the images' dtype (`extract`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor

from ddpm.schedule import NoiseSchedule

Prediction = Literal["eps", "x0", "v"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v")
LOSS_TYPES: tuple[str, ...] = ("l2", "l1")


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


def to_eps(
    schedule: NoiseSchedule, prediction: Prediction, x_t: Tensor, t: Tensor, out: Tensor
) -> Tensor:
    """Turn a network output in the given parameterisation into a noise prediction."""
    if prediction == "eps":
        return out
    if prediction == "x0":
        return predict_eps_from_x0(schedule, x_t, t, out)
    if prediction == "v":
        return predict_eps_from_v(schedule, x_t, t, out)
    raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")


EpsModel = Callable[[Tensor, Tensor], Tensor]


def eps_model(
    model: Callable[..., Tensor], schedule: NoiseSchedule, prediction: Prediction
) -> EpsModel:
    """Wrap a network trained for `prediction` so that it returns eps, as the samplers expect."""
    if prediction == "eps":
        return model

    def wrapped(x_t: Tensor, t: Tensor) -> Tensor:
        return to_eps(schedule, prediction, x_t, t, model(x_t, t))

    return wrapped


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
    `min_snr_gamma` alone (the older form) means "min-snr".
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
    weights: Tensor | None = None,
) -> Tensor:
    """The simple loss of Ho et al. (Alg. 1, eq. 14): E ||target - model(x_t, t)||², a scalar.

    `prediction` picks the regression target (eps, x_0 or v), `loss_type` L2 or L1 (the
    reference tutorial used L1), `weighting` (with `min_snr_gamma`, `sigma_data`) reweights the
    timesteps (`loss_weights`), and `weights` (B,) multiplies in importance weights.
    """
    x_t = q_sample(schedule, x_0, t, eps)
    out = model(x_t, t)
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
        raise ValueError(f"unknown loss type {loss_type!r}; expected one of {LOSS_TYPES}")
    w = loss_weights(schedule, t, prediction, min_snr_gamma, weighting, sigma_data)
    for factor in (w, weights):
        if factor is not None:
            per_sample = per_sample * factor.to(per_sample.dtype)
    return per_sample.mean()
