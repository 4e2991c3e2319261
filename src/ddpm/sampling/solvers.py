"""The update rules of the multistep ODE samplers: pure tensor arithmetic on the history of the
model's predictions, with no model call. The samplers in `samplers.py` run the loops.

In λ = log(α/σ) (α = √ᾱ, σ = √(1-ᾱ); λ_t = -`NoiseSchedule.log_sigmas`), the probability-flow
ODE in the data-prediction form has the exact solution (Lu et al. 2022b, eq. 9)
    x_t = (σ_t/σ_s) x_s + σ_t ∫_{λ_s}^{λ_t} e^λ x̂_0(x_λ, λ) dλ,
and the exponential integrators (DPM-Solver++, UniPC) differ in how they approximate x̂_0 on
the step from the earlier x̂_0s. iPNDM integrates the same ODE in the variance-exploding view
x̃ = x/α, σ̃ = σ/α, where it reads dx̃/dσ̃ = eps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from numpy.polynomial import polynomial as P
from torch import Tensor


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def _first_order(x: Tensor, x_0: Tensor, lam: float, lam_next: float) -> Tensor:
    """x at λ_next from x at λ with x̂_0 held constant on the step: DDIM (eta 0), or
    DPM-Solver++(1): (σ_next/σ) x - α_next (e^{-h} - 1) x̂_0."""
    alpha_next = math.sqrt(_sigmoid(2 * lam_next))  # ᾱ = sigmoid(2λ)
    sigma_ratio = math.sqrt(_sigmoid(-2 * lam_next) / _sigmoid(-2 * lam))
    return sigma_ratio * x - alpha_next * math.expm1(-(lam_next - lam)) * x_0


def dpm_solver_update(x: Tensor, x0s: Sequence[Tensor], lams: Sequence[float], lam_next: float):
    """One DPM-Solver++ multistep update of x from λ = lams[-1] to `lam_next`, of the order
    len(x0s) (1 to 3): `x0s` are the data predictions at `lams`, oldest first (the formulas in
    `dpm_solver_sample`'s docstring; Lu et al.'s reference code writes them the same way)."""
    alpha_next = math.sqrt(_sigmoid(2 * lam_next))
    h = lam_next - lams[-1]
    phi_1 = math.expm1(-h)
    x = _first_order(x, x0s[-1], lams[-1], lam_next)
    if len(x0s) == 1:
        return x
    r0 = (lams[-1] - lams[-2]) / h
    d1_0 = (x0s[-1] - x0s[-2]) / r0
    if len(x0s) == 2:
        return x - (alpha_next * phi_1 / 2) * d1_0
    r1 = (lams[-2] - lams[-3]) / h
    d1_1 = (x0s[-2] - x0s[-3]) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi_2 = phi_1 / h + 1
    phi_3 = phi_2 / h - 0.5
    return x + alpha_next * (phi_2 * d1 - phi_3 * d2)


def unipc_coefficients(rks: Sequence[float], h: float) -> list[float]:
    """UniPC's weights a_k of the divided differences D_k = (x̂_0(λ_k) - x̂_0(λ_s)) / r_k,
    r_k = (λ_k - λ_s)/h, over a step h from λ_s (Zhao et al. 2023, §3.1-3.2).

    They solve R a = g/B, R_{ik} = r_k^(i-1), g_i = i! z φ_{i+1}(z) at z = -h (the data
    prediction steps in -λ), φ_1(z) = (e^z - 1)/z, φ_{k+1}(z) = (φ_k(z) - 1/k!)/z, and
    B = e^z - 1: the "bh2" variant (the paper's B_2(h); diffusers' solver_type="bh2"). With
    one unknown the paper's code and diffusers take a = 1/2, the h -> 0 limit of g_1/B:
    UniP-2 is then DPM-Solver++(2M), and UniC-1 the trapezoidal rule in x̂_0.
    """
    n = len(rks)
    if n == 1:
        return [0.5]
    z = -h
    b = math.expm1(z)
    z_phi = math.expm1(z) / z - 1  # z φ_2(z) = φ_1(z) - 1; then z φ_{i+1}(z) = z φ_i(z)/z - 1/i!
    g, factorial = [], 1
    for i in range(1, n + 1):
        g.append(z_phi * factorial / b)
        factorial *= i + 1
        z_phi = z_phi / z - 1 / factorial
    R = torch.tensor([[r ** (i - 1) for r in rks] for i in range(1, n + 1)], dtype=torch.float64)
    return torch.linalg.solve(R, torch.tensor(g, dtype=torch.float64)).tolist()


def unipc_update(
    x: Tensor,
    x0s: Sequence[Tensor],
    lams: Sequence[float],
    lam_next: float,
    x0_next: Tensor | None = None,
) -> Tensor:
    """One UniPC step from x at λ = lams[-1] to `lam_next`: data prediction, B(h) = e^{-h} - 1.

    UniP-p (`x0_next` None): the predictor of order p = len(x0s), from the data predictions
    `x0s` at `lams` (oldest first): p - 1 differences. UniC-p (`x0_next` given: the model's
    x̂_0 at the predicted point, the evaluation the next step needs anyway, so it costs no
    network call): the corrector of the same step, of order p + 1, with the difference to the
    new point as its p-th (r = 1). Both are (Zhao et al. 2023, UniP-p and UniC-p)
        x_next = (σ_next/σ) x - α_next (e^{-h} - 1) x̂_0 - α_next B(h) Σ_k a_k D_k,
    checked against diffusers' `multistep_uni_p_bh_update` / `multistep_uni_c_bh_update`
    (predict_x0=True, solver_type="bh2").
    """
    h = lam_next - lams[-1]
    x_next = _first_order(x, x0s[-1], lams[-1], lam_next)
    rks = [(lams[-1 - k] - lams[-1]) / h for k in range(1, len(x0s))]  # negative: the past
    diffs = [(x0s[-1 - k] - x0s[-1]) / r for k, r in enumerate(rks, start=1)]
    if x0_next is not None:
        rks.append(1.0)
        diffs.append(x0_next - x0s[-1])
    if not diffs:
        return x_next  # UniP-1 is DPM-Solver++(1), DDIM
    a = unipc_coefficients(rks, h)
    alpha_next = math.sqrt(_sigmoid(2 * lam_next))
    return x_next - alpha_next * math.expm1(-h) * sum(ak * d for ak, d in zip(a, diffs))


def ipndm_update(x: Tensor, eps: Sequence[Tensor], sigmas: Sequence[float], sigma_next: float):
    """One iPNDM step of dx̃/dσ = eps from σ = sigmas[-1] to `sigma_next` (Zhang & Chen 2023,
    DEIS, App. "iPNDM"): the Adams-Bashforth rule of order len(eps) (1 to 4), `eps` the slopes
    at `sigmas`, oldest first, the newest at x. The weights integrate the polynomial through
    the slopes over the step (`adams_bashforth_weights`): on nodes as far apart as the step
    the textbook ones, (55, -59, 37, -9)/24 at order 4, which `ipndm_sample` takes on any grid;
    on the grid's real nodes the variable-step ones."""
    weights = adams_bashforth_weights(sigmas, sigma_next)
    return x + (sigma_next - sigmas[-1]) * sum(w * e for w, e in zip(weights, eps))


def adams_bashforth_weights(nodes: Sequence[float], end: float) -> list[float]:
    """w_j with ∫ p = (end - nodes[-1]) Σ_j w_j p(nodes[j]) over [nodes[-1], end] for every
    polynomial p of degree below len(nodes): the variable-step Adams-Bashforth weights
    (Hairer, Nørsett & Wanner, §III.5), each the mean of a Lagrange basis polynomial over the
    step. Computed in u = (s - nodes[-1]) / (end - nodes[-1]), where the step is [0, 1], so
    a grid and its rescalings give the same weights."""
    h = end - nodes[-1]
    us = [(n - nodes[-1]) / h for n in nodes]
    weights = []
    for j, uj in enumerate(us):
        coef = np.ones(1)  # the basis polynomial ℓ_j(u), lowest power first
        for m, um in enumerate(us):
            if m != j:
                coef = P.polymul(coef, np.array([-um, 1.0]) / (uj - um))
        weights.append(float(P.polyval(1.0, P.polyint(coef))))  # ∫_0^1 ℓ_j(u) du
    return weights
