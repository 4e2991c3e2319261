"""Samplers: pure functions of (model, schedule, x_T, *, steps, ...) that return x_0.

Every sampler shares one signature, as k-diffusion's do: the model, the schedule and x_T
positionally, everything else by keyword (`steps`, `clip`, `generator`, `callback`, then the
sampler's own: `eta` and `spacing` for DDIM, `spacing` and `order` for DPM-Solver++, UniPC and
iPNDM, `spacing` for Heun, `variance` for DDPM, whose `steps` may be None for all T). The time
grids (`spacing`) are `grids.py`'s; the multistep updates, `solvers.py`'s.

`model(x_t, t)` predicts the noise eps; x_T and the result are (B, C, H, W); t is int64 (B,).
A model with learned variances returns (B, 2C, H, W): eps, then its variance output (`var_values`,
Nichol & Dhariwal 2021, §3.1), which DDPM uses with variance="learned" and the ODE samplers drop.
`generator` is one torch.Generator for the whole batch, or a list with one per sample so
that image i depends only on its own generator (and not on the batch it was drawn in).
`callback(i, t, x_t, x0_pred)`, if given, sees every step (for pictures of the chain).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from ddpm.diffusion.process import (
    VARIANCES,
    EpsModel,
    extract,
    p_log_variance,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior,
    respace_model,
    reverse_log_variance,
    split_output,
)
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.sampling.grids import SPACINGS as SPACINGS  # re-exported: the CLI's choices
from ddpm.sampling.grids import Spacing, check_steps, timesteps_for
from ddpm.sampling.grids import ddim_timesteps as ddim_timesteps
from ddpm.sampling.noise import Generators, randn_like
from ddpm.sampling.solvers import dpm_solver_update, ipndm_update, unipc_update

Callback = Callable[[int, int, Tensor, Tensor], None]
SAMPLERS = ("ddpm", "ddim", "dpm-solver", "dpm-solver-3m", "heun", "unipc", "ipndm")
DEFAULT_STEPS = 50  # the steps of every sampler but DDPM when none are given


def default_steps(sampler: str, steps: int | None, T: int) -> int | None:
    """The steps a sampler takes when `steps` is None: ancestral DDPM all T (None), the others
    DEFAULT_STEPS, or T where the model has fewer timesteps than that."""
    if steps is not None or sampler == "ddpm":
        return steps
    return min(DEFAULT_STEPS, T)


def predict_x0(
    model: EpsModel, schedule: NoiseSchedule, x_t: Tensor, t: Tensor, clip: bool
) -> tuple[Tensor, Tensor]:
    """Run the model once; return (eps, x0_pred), x0 clipped to [-1, 1] and eps made consistent.

    eps has x_t's C channels: a learned-variance model's variance output is dropped (see
    `predict_x0_and_var`).
    """
    eps, x_0, _ = predict_x0_and_var(model, schedule, x_t, t, clip)
    return eps, x_0


def predict_x0_and_var(
    model: EpsModel, schedule: NoiseSchedule, x_t: Tensor, t: Tensor, clip: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """`predict_x0`, also returning the model's variance output `var_values` (None without)."""
    eps, var_values = split_output(model(x_t, t).to(x_t.dtype), x_t.shape[1])
    x_0 = predict_x0_from_eps(schedule, x_t, t, eps)
    if clip:
        x_0 = x_0.clamp(-1, 1)
        eps = predict_eps_from_x0(schedule, x_t, t, x_0)
    return eps, x_0, var_values


# Each sampler's timesteps when none are asked for (the sampler's docstring says why)
DEFAULT_SPACING = {
    "ddim": "leading",
    "dpm-solver": "trailing",
    "dpm-solver-3m": "trailing",
    "heun": "edm",
    "unipc": "logsnr",
    "ipndm": "trailing",
}


@torch.no_grad()
def ddpm_sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    steps: int | None = None,
    variance: Literal["small", "large", "learned"] = "small",
    clip: bool = False,
    generator: Generators = None,
    callback: Callback | None = None,
) -> Tensor:
    """Ancestral sampling, Ho et al. 2020 Algorithm 2:
    x_{t-1} = μ̃(x_t, x̂_0) + σ_t z, with σ_t² = β̃_t ("small", the posterior variance, the
    lower bound on the reverse variance), β_t ("large", the upper bound) or the model's Σ_θ
    ("learned", Nichol & Dhariwal 2021 eq. 15), and no noise at the last step. μ̃ from the
    posterior equals (x_t - β_t/√(1-ᾱ_t) eps)/√α_t when not clipped.

    All T steps when `steps` is None; else the K-step chain of Nichol & Dhariwal §4, on the
    schedule respaced to `steps` timesteps (`respace_model`).
    """
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    if steps is not None:
        check_steps(steps, schedule.T)
        model, schedule = respace_model(model, schedule, steps)
    x = x_T
    for t in range(schedule.T - 1, -1, -1):
        x_prev, x_0 = ddpm_step(model, schedule, x, t, variance, clip, generator)
        if callback is not None:
            callback(schedule.T - 1 - t, t, x, x_0)
        x = x_prev
    return x


def ddpm_step(
    model: EpsModel,
    schedule: NoiseSchedule,
    x: Tensor,
    t: int,
    variance: str,
    clip: bool,
    generator: Generators,
) -> tuple[Tensor, Tensor]:
    """One step of Algorithm 2 from timestep t: (x_{t-1}, x̂_0). x_{t-1} = μ̃(x_t, x̂_0) + σ_t z,
    without noise at t = 0 (σ_t as `reverse_std`)."""
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    _, x_0, var_values = predict_x0_and_var(model, schedule, x, tt, clip)
    mean, _, _ = q_posterior(schedule, x_0, x, tt)
    if t == 0:
        return mean, x_0
    std = reverse_std(schedule, tt, x, variance, var_values)
    return mean + std * randn_like(x, generator), x_0


def reverse_std(
    schedule: NoiseSchedule,
    t: Tensor,
    x_t: Tensor,
    variance: str,
    var_values: Tensor | None = None,
) -> Tensor:
    """σ_t of p_θ(x_{t-1} | x_t), broadcastable to x_t (t int64 (B,)): √β̃_t, √β_t
    (`reverse_log_variance`) or the learned Σ_θ^½ of eq. 15 from the model's `var_values`."""
    if variance == "learned":
        return torch.exp(0.5 * p_log_variance(schedule, t, x_t, variance, var_values))
    return extract(reverse_log_variance(schedule, variance).exp(), t, x_t).sqrt()


def ddim_step(
    x_0: Tensor, eps: Tensor, a_t: float, a_prev: float, eta: float, generator: Generators
) -> Tensor:
    """DDIM's update (Song et al. 2021, eq. 12) from ᾱ_t = a_t to ᾱ_{t'} = a_prev (host floats)
    given the model's x̂_0 and eps at x_t:
    x_{t'} = √ᾱ_{t'} x̂_0 + √(1 - ᾱ_{t'} - σ²) eps + σ z, with
    σ = eta · √((1 - ᾱ_{t'})/(1 - ᾱ_t)) · √(1 - ᾱ_t/ᾱ_{t'}) (eq. 16)."""
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    x = math.sqrt(a_prev) * x_0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
    if sigma > 0:
        x = x + sigma * randn_like(x, generator)
    return x


@torch.no_grad()
def ddim_sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    steps: int,
    eta: float = 0.0,
    clip: bool = False,
    generator: Generators = None,
    callback: Callback | None = None,
    spacing: Spacing = DEFAULT_SPACING["ddim"],
) -> Tensor:
    """DDIM, Song et al. 2021 eq. 12 (`ddim_step`), on the timesteps of `timesteps_for`
    (`spacing`), with ᾱ = 1 after the last step.

    eta = 0 is deterministic; eta = 1 with all T steps is DDPM with the "small" variance.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    ts = timesteps_for(schedule, steps, spacing)
    abar = schedule.alphas_cumprod.tolist()  # host floats: one read, no sync per step
    x = x_T
    B = x.shape[0]
    for i, t in enumerate(ts):
        tt = torch.full((B,), t, device=x.device, dtype=torch.long)
        eps, x_0 = predict_x0(model, schedule, x, tt, clip)
        if callback is not None:
            callback(i, t, x, x_0)
        a_prev = float(abar[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        x = ddim_step(x_0, eps, float(abar[t]), a_prev, eta, generator)
    return x


@torch.no_grad()
def dpm_solver_sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    steps: int,
    clip: bool = False,
    generator: Generators = None,
    callback: Callback | None = None,
    spacing: Spacing = DEFAULT_SPACING["dpm-solver"],
    order: int = 2,
) -> Tensor:
    """DPM-Solver++(2M), Lu et al. 2022 Algorithm 2: a deterministic second-order multistep
    solver of the diffusion ODE in the data-prediction form, on `timesteps_for`'s timesteps;
    with `order=3`, DPM-Solver++(3M) as Lu et al.'s code, diffusers and k-diffusion write it.

    Trailing by default: on DDIM's leading timesteps the last update jumps from t = T/steps to
    t = 0, four times the previous step in log-SNR (r = 1/4), and the extrapolation
    3 x̂_0 - 2 x̂_0_prev that it then takes makes the solver less accurate than DDIM at 10 and
    20 steps (tests/test_solvers.py measures both on an ODE with a known solution).

    With α = √ᾱ, σ = √(1-ᾱ), λ = log(α/σ) (-`NoiseSchedule.log_sigmas`), h = λ_i - λ_{i-1}
    and φ_1 = e^{-h} - 1, each update is x_i = (σ_i/σ_{i-1}) x_{i-1} - α_i φ_1 x̂_0 plus a
    correction from the earlier x̂_0s.
    2M, from the divided difference D1_0 = (x̂_0 - x̂_0_prev) / r0 with r0 = h_prev / h:
    - α_i φ_1 D1_0 / 2. 3M, with the difference before it too (D1_1, r1),
    D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1)/(r0 + r1), φ_2 = φ_1/h + 1 and
    φ_3 = φ_2/h - 1/2: + α_i (φ_2 D1 - φ_3 D2). D2 is h² x̂_0''/2, half the Taylor term's
    h² x̂_0'' (Lu et al.'s single-step third-order solver has the 2), so one 3M update's
    error still falls as h³, as 2M's does, but is 9-18x smaller on the test ODE; with the
    full term it falls as h⁴, yet the whole chain was less accurate from the large first steps
    (tests/test_solvers.py). Each update uses the order its history allows (first, then
    second, then `order`); below 15 steps the last update of 3M is second order, as diffusers'
    `lower_order_final`. The last network call goes to ᾱ = 1, where the update reduces to x̂_0.
    """
    del generator  # deterministic: the argument exists so every sampler shares a signature
    if order not in (2, 3):
        raise ValueError(f"DPM-Solver++ order must be 2 or 3, got {order}")
    ts = timesteps_for(schedule, steps, spacing)
    log_sigmas = schedule.log_sigmas.tolist()  # host floats: one read, no sync per step
    lam = [-log_sigmas[t] for t in ts]
    x = x_T
    B = x.shape[0]
    x0s: list[Tensor] = []  # the data predictions so far, oldest first (the last `order`)
    for i, t in enumerate(ts):
        tt = torch.full((B,), t, device=x.device, dtype=torch.long)
        _, x_0 = predict_x0(model, schedule, x, tt, clip)
        if callback is not None:
            callback(i, t, x, x_0)
        if i + 1 == len(ts):
            return x_0  # α = 1, σ = 0: the ODE's end point is the data prediction itself
        x0s = [*x0s[1 - order :], x_0]
        # the order this update takes: what the history allows, and 2 at most in the last
        # one of a short chain
        n = min(len(x0s), 2 if steps < 15 and i + 2 == len(ts) else order)
        x = dpm_solver_update(x, x0s[-n:], lam[i + 1 - n : i + 1], lam[i + 1])
    raise AssertionError("unreachable")


@torch.no_grad()
def heun_sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    steps: int,
    clip: bool = False,
    generator: Generators = None,
    callback: Callback | None = None,
    spacing: Spacing = DEFAULT_SPACING["heun"],
) -> Tensor:
    """Heun's second-order method on the probability-flow ODE, Karras et al. 2022 Algorithm 1,
    on `timesteps_for`'s timesteps (Karras spacing by default): 2 * steps - 1 network calls.

    In the variance-exploding view x̃ = x_t/√ᾱ_t with noise level σ = √((1-ᾱ)/ᾱ), the ODE is
    dx̃/dσ = eps(x_t, t): an Euler step is exactly DDIM (eta 0); Heun averages the slope at both
    ends. The last step goes to σ = 0 and is an Euler step (it lands on x̂_0).
    """
    del generator  # deterministic
    ts = timesteps_for(schedule, steps, spacing)
    abar = schedule.alphas_cumprod.tolist()  # host floats: one read, no sync per step
    sigma = schedule.sigmas.tolist()
    B = x_T.shape[0]

    def slope(x_tilde: Tensor, t: int) -> tuple[Tensor, Tensor]:
        tt = torch.full((B,), t, device=x_T.device, dtype=torch.long)
        a = abar[t]
        return predict_x0(model, schedule, math.sqrt(a) * x_tilde, tt, clip)

    x = x_T / math.sqrt(abar[ts[0]])
    for i, t in enumerate(ts):
        d, x_0 = slope(x, t)
        if callback is not None:
            callback(i, t, math.sqrt(abar[t]) * x, x_0)
        if i + 1 == len(ts):
            return x_0  # σ -> 0: the Euler step from σ_t lands on x̂_0
        t_next = ts[i + 1]
        h = sigma[t_next] - sigma[t]
        x_euler = x + h * d
        d_next, _ = slope(x_euler, t_next)
        x = x + h * (d + d_next) / 2
    raise AssertionError("unreachable")


@torch.no_grad()
def unipc_sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    steps: int,
    clip: bool = False,
    generator: Generators = None,
    callback: Callback | None = None,
    spacing: Spacing = DEFAULT_SPACING["unipc"],
    order: int | None = None,
) -> Tensor:
    """UniPC, Zhao et al. 2023: the multistep predictor UniP-p and, after every step but the
    last, the corrector UniC-p, which reuses the network call at the predicted point (so still
    one call a step) and raises the step's order by one; data prediction, B(h) = e^{-h} - 1
    ("bh2"). The updates are `solvers.unipc_update`.

    `order` None: 2 below 20 steps, 3 from 20 (diffusers defaults to 2 and recommends 3 for
    unconditional models): with 5-8 steps on log-SNR and EDM grids, order 3 was 1.3-3.1x
    further from the ODE's solution (docs/benchmarks.md, "Few-step sampling"). Each step takes
    the order its history allows (1, 2, then `order`) and at most the number of steps left, as
    diffusers' `lower_order_final` does: the last update is second order. The last network
    call returns its x̂_0 (ᾱ = 1), so no corrector follows it, as in the paper's Algorithm.
    Log-SNR timesteps by default (even h in λ; DPM-Solver's and UniPC's choice for pixel-space
    models).
    """
    del generator  # deterministic
    order = (2 if steps < 20 else 3) if order is None else order
    if order not in (1, 2, 3):
        raise ValueError(f"UniPC order must be 1, 2 or 3, got {order}")
    ts = timesteps_for(schedule, steps, spacing)
    log_sigmas = schedule.log_sigmas.tolist()  # host floats: one read, no sync per step
    lam = [-log_sigmas[t] for t in ts]
    N, B = len(ts), x_T.shape[0]
    x, x_start = x_T, x_T  # x_start: where the last predictor started (the corrector needs it)
    x0s: list[Tensor] = []  # the data predictions at the last steps, oldest first
    p = 0  # the order of the last predictor
    for i, t in enumerate(ts):
        tt = torch.full((B,), t, device=x.device, dtype=torch.long)
        _, x_0 = predict_x0(model, schedule, x, tt, clip)
        if i > 0 and i + 1 < N:  # UniC on the step just taken, with x̂_0 at its end
            x = unipc_update(x_start, x0s[-p:], lam[i - p : i], lam[i], x0_next=x_0)
        if callback is not None:
            callback(i, t, x, x_0)
        if i + 1 == N:
            return x_0  # α = 1, σ = 0: the ODE's end point is the data prediction itself
        x0s = [*x0s[1 - order :], x_0] if order > 1 else [x_0]
        p = min(len(x0s), N - i)  # lower_order_final: N - i is 2 before the last call
        x_start = x
        x = unipc_update(x, x0s[-p:], lam[i + 1 - p : i + 1], lam[i + 1])
    raise AssertionError("unreachable")


@torch.no_grad()
def ipndm_sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    steps: int,
    clip: bool = False,
    generator: Generators = None,
    callback: Callback | None = None,
    spacing: Spacing = DEFAULT_SPACING["ipndm"],
    order: int = 3,
) -> Tensor:
    """iPNDM, Zhang & Chen 2023 (DEIS, App. "iPNDM"): Adams-Bashforth on dx̃/dσ = eps (x̃ =
    x_t/√ᾱ_t, σ = `NoiseSchedule.sigmas`), one network call a step, of order 1, 2, then `order`
    as eps's history fills (`solvers.ipndm_update`), with equal-step weights on any grid (as
    diff-sampler): 1.7-4.2x nearer the ODE's solution than the grid's own weights at 10-20 steps;
    order 3 is robust to bf16 where 4 is not (docs/benchmarks.md). Ends x̃ - σ eps at the last
    timestep, by default of the trailing grid: EDM's and log-SNR's end at t = 0, where the last
    step left visible noise (the 8-minute CIFAR-10 model, 5 steps: FID-500 221 on EDM's, 83)."""
    del generator  # deterministic
    if order not in (1, 2, 3, 4):
        raise ValueError(f"iPNDM order must be 1 to 4, got {order}")
    ts = timesteps_for(schedule, steps, spacing)
    abar = schedule.alphas_cumprod.tolist()  # host floats: one read, no sync per step
    sigma = schedule.sigmas.tolist()
    B = x_T.shape[0]
    x = x_T / math.sqrt(abar[ts[0]])
    eps_hist: list[Tensor] = []  # the last `order` slopes, oldest first
    for i, t in enumerate(ts):
        tt = torch.full((B,), t, device=x.device, dtype=torch.long)
        eps, x_0 = predict_x0(model, schedule, math.sqrt(abar[t]) * x, tt, clip)
        if callback is not None:
            callback(i, t, math.sqrt(abar[t]) * x, x_0)
        if i + 1 == len(ts):
            return x_0
        eps_hist = [*eps_hist[1 - order :], eps] if order > 1 else [eps]
        h = sigma[ts[i + 1]] - sigma[t]  # the slopes taken as h apart, h the step's own
        at = [sigma[t] - h * (len(eps_hist) - 1 - j) for j in range(len(eps_hist))]
        x = ipndm_update(x, eps_hist, at, sigma[ts[i + 1]])
    raise AssertionError("unreachable")


def network_evaluations(sampler: str, steps: int | None, T: int) -> int:
    """How many times a sampler calls the network: its cost (NFE)."""
    if sampler == "ddpm":
        return T if steps is None else steps
    assert steps is not None
    return 2 * steps - 1 if sampler == "heun" else steps


def sample(
    sampler: str,
    model: EpsModel,
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    steps: int | None = None,
    eta: float = 0.0,
    variance: Literal["small", "large", "learned"] = "small",
    clip: bool = False,
    generator: Generators = None,
    callback: Callback | None = None,
    spacing: Spacing | None = None,
) -> Tensor:
    """Dispatch by name: "ddpm" (all T steps when `steps` is None, else the respaced K-step
    chain of Nichol & Dhariwal §4), "ddim", "dpm-solver" (2M), "dpm-solver-3m", "heun",
    "unipc" (order 2, from 20 steps 3) or "ipndm" (order 3) (`steps` steps on `spacing`'s
    timesteps; None: `DEFAULT_SPACING`'s). `eta` is DDIM's alone and `variance` DDPM's alone;
    the other samplers ignore them."""
    if sampler == "ddpm":
        return ddpm_sample(
            model,
            schedule,
            x_T,
            steps=steps,
            variance=variance,
            clip=clip,
            generator=generator,
            callback=callback,
        )
    if steps is None:
        raise ValueError(f"the {sampler} sampler needs a number of steps")
    if sampler not in DEFAULT_SPACING:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    shared = {"clip": clip, "generator": generator, "callback": callback}
    sp = spacing or DEFAULT_SPACING[sampler]
    if sampler == "ddim":
        return ddim_sample(model, schedule, x_T, steps=steps, eta=eta, spacing=sp, **shared)
    if sampler in ("dpm-solver", "dpm-solver-3m"):
        order = 3 if sampler == "dpm-solver-3m" else 2
        return dpm_solver_sample(
            model, schedule, x_T, steps=steps, spacing=sp, order=order, **shared
        )
    if sampler == "unipc":
        return unipc_sample(model, schedule, x_T, steps=steps, spacing=sp, **shared)
    if sampler == "ipndm":
        return ipndm_sample(model, schedule, x_T, steps=steps, spacing=sp, **shared)
    return heun_sample(model, schedule, x_T, steps=steps, spacing=sp, **shared)
