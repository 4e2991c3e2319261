"""The few-step solvers against a diffusion ODE whose solution is known in closed form.

For data x_0 ~ N(0, c² I), the exact noise predictor is linear, eps(x_t) = s x_t / (α² c² + s²)
(α = √ᾱ_t, s = √(1-ᾱ_t)), and the probability-flow ODE in x̃ = x_t/α with σ = s/α has the
solution x̃(σ) ∝ √(c² + σ²): from x_T the ODE lands on x_0 = x̃_T c / √(c² + σ_T²).
"""

import math

import pytest
import torch

from ddpm import samplers as S
from ddpm.schedule import make_schedule

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
    out = S.sample(sampler, gaussian_eps(schedule), schedule, x_T, steps, spacing=spacing)
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
