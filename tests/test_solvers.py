"""The few-step solvers against a diffusion ODE whose solution is known in closed form.

For data x_0 ~ N(0, c² I), the exact noise predictor is linear, eps(x_t) = s x_t / (α² c² + s²)
(α = √ᾱ_t, s = √(1-ᾱ_t)), and the probability-flow ODE in x̃ = x_t/α with σ = s/α has the
solution x̃(σ) ∝ √(c² + σ²): from x_T the ODE lands on x_0 = x̃_T c / √(c² + σ_T²).
"""

import math

import pytest
import torch

from ddpm.diffusion.schedule import make_schedule
from ddpm.sampling import samplers as S

C = 0.5  # data standard deviation


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", 1000)


def gaussian_eps(schedule):
    abar = schedule.alphas_cumprod

    def eps(x_t, t):
        a = abar[t].view(-1, *([1] * (x_t.ndim - 1)))
        return (1 - a).sqrt() * x_t / (a * C**2 + (1 - a))

    return eps


def ode_error(sampler, schedule, steps, spacing=None):
    """Largest error against the exact ODE solution; spacing None: the sampler's default."""
    x_T = torch.randn(16, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ts = S.timesteps_for(schedule, steps, spacing or S.DEFAULT_SPACING[sampler])
    abar_first = float(schedule.alphas_cumprod[ts[0]])
    sigma_first = math.sqrt((1 - abar_first) / abar_first)
    exact = x_T / math.sqrt(abar_first) * C / math.sqrt(C**2 + sigma_first**2)
    out = S.sample(sampler, gaussian_eps(schedule), schedule, x_T, steps=steps, spacing=spacing)
    return (out - exact).abs().max().item()


@pytest.mark.parametrize("spacing", ["karras", "trailing"])
def test_heun_is_second_order_and_ddim_first_order(schedule, spacing):
    """Halving the step halves DDIM's (Euler's) error and quarters Heun's."""
    ddim = [ode_error("ddim", schedule, n, spacing) for n in (10, 20, 40)]
    heun = [ode_error("heun", schedule, n, spacing) for n in (10, 20, 40)]
    for coarse, fine in zip(ddim, ddim[1:]):
        assert 1.6 < coarse / fine < 2.6
    for coarse, fine in zip(heun[1:], heun[2:]):
        assert coarse / fine > 3.2
    assert heun[-1] < ddim[-1] / 4


def test_dpm_solver_beats_ddim_at_equal_steps(schedule):
    for n in (10, 20):
        assert ode_error("dpm-solver", schedule, n, "karras") < ode_error(
            "ddim", schedule, n, "karras"
        )


@pytest.mark.parametrize("steps, factor", [(10, 1.2), (20, 2.5), (50, 20)])
def test_dpm_solver_beats_ddim_at_each_ones_default_spacing(schedule, steps, factor):
    """What `ddpm sample --sampler dpm-solver` gives against DDIM's default. On DDIM's leading
    timesteps the solver's last update (to t = 0, with step ratio r = 1/4) made it worse than
    DDIM at 10 and 20 steps; trailing timesteps keep it ahead, more so the more steps."""
    assert ode_error("dpm-solver", schedule, steps) * factor < ode_error("ddim", schedule, steps)


def test_spacings_start_where_they_say_and_never_repeat(schedule):
    assert S.timesteps_for(schedule, 50, "trailing")[:2] == [999, 979]
    assert S.timesteps_for(schedule, 50, "trailing")[-1] == 19
    assert S.timesteps_for(schedule, 50, "leading")[0] == 980
    karras = S.timesteps_for(schedule, 25, "karras")
    assert karras[0] == 999 and karras[-1] == 0
    assert karras == sorted(set(karras), reverse=True)
    gaps = [a - b for a, b in zip(karras, karras[1:])]
    assert gaps[0] > gaps[-1]  # dense near the data, sparse near the noise
    assert S.network_evaluations("heun", 25, 1000) == 49
    assert S.network_evaluations("ddim", 50, 1000) == 50
    with pytest.raises(ValueError, match="spacing"):
        S.ddim_timesteps(1000, 10, "uniform")


def exact_path(lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t and x̂_0 at log-SNR λ on one exact ODE path of the Gaussian data above: in x̃ = x_t/α
    with σ = e^{-λ} the path is x̃ = √(c² + σ²) and x̂_0 = c² x̃ / (c² + σ²)."""
    var = C**2 + math.exp(-2 * lam)
    alpha = math.sqrt(1 / (1 + math.exp(-2 * lam)))
    return torch.tensor(alpha * math.sqrt(var), dtype=torch.float64), torch.tensor(
        C**2 / math.sqrt(var), dtype=torch.float64
    )


RATIOS = [(1.0, 1.0), (0.6, 1.5)]  # the earlier steps' lengths against the last: equal, or not


def dpm_local_error(order: int, h: float, ratios: tuple[float, float]) -> float:
    """The error of one DPM-Solver++ update of `order` over a step h in log-SNR, taken from the
    exact path with the exact data predictions of the steps before it."""
    lams = [0.0 - h * sum(ratios[: order - 1 - j]) for j in range(order)]  # oldest first
    x0s = [exact_path(lam)[1] for lam in lams]
    x = S.dpm_solver_update(exact_path(lams[-1])[0], x0s, lams, lams[-1] + h)
    return abs(x - exact_path(lams[-1] + h)[0]).item()


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("ratios", RATIOS)
def test_a_dpm_solver_update_has_its_order(order, ratios):
    """One update of order k is off by O(h^(k+1)): halving every step divides its error by
    about 2^(k+1), with equal steps or not (r0 != 1)."""
    errors = [dpm_local_error(order, h, ratios) for h in (0.2, 0.1, 0.05)]
    for coarse, fine in zip(errors, errors[1:]):
        assert coarse / fine == pytest.approx(2 ** (order + 1), rel=0.1)


@pytest.mark.parametrize("ratios", RATIOS)
def test_a_3m_update_is_far_closer_than_a_2m_one(ratios):
    """3M as everyone writes it: its error still falls as h^3 (its D2 is half the Taylor
    term; see dpm_solver_sample), but it is at least 5x smaller than 2M's at every h."""
    for h in (0.1, 0.05, 0.025):
        assert dpm_local_error(3, h, ratios) * 5 < dpm_local_error(2, h, ratios)
    fine = dpm_local_error(3, 0.025, ratios)
    assert dpm_local_error(3, 0.05, ratios) / fine == pytest.approx(8, rel=0.25)


def test_dpm_solver_3m_beats_2m_from_20_steps(schedule):
    """The chain as `ddpm sample --sampler dpm-solver-3m` runs it: ahead of 2M at 20 and 40
    steps on Karras' timesteps (the first, lower-order steps bound both at 10)."""
    for n in (20, 40):
        assert ode_error("dpm-solver-3m", schedule, n, "karras") < ode_error(
            "dpm-solver", schedule, n, "karras"
        )
