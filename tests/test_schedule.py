import math
import warnings

import pytest
import torch

from ddpm.diffusion.schedule import SCHEDULES, NoiseSchedule, make_schedule, respaced_timesteps
from ddpm.errors import ScheduleError


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [10, 300, 1000, 4000])
def test_alpha_bar_decreases_from_one_towards_zero(name, T):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = make_schedule(name, T)
    assert s.betas.dtype == torch.float64 and s.alphas_cumprod.shape == (T,)
    assert bool((s.betas > 0).all()) and bool((s.betas <= 0.999 + 1e-12).all())
    diffs = s.alphas_cumprod[1:] - s.alphas_cumprod[:-1]
    assert bool((diffs < 0).all())
    assert 0 < float(s.alphas_cumprod[0]) < 1
    torch.testing.assert_close(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0))


def test_linear_endpoints_and_scaling_with_T():
    s = make_schedule("linear", 1000)
    assert float(s.betas[0]) == pytest.approx(1e-4)
    assert float(s.betas[-1]) == pytest.approx(0.02)
    # other T: scaled by 1000/T so the total noise (and alpha_bar_T) stays about the same
    s250 = make_schedule("linear", 250)
    assert float(s250.betas[0]) == pytest.approx(4e-4)
    assert float(s250.betas[-1]) == pytest.approx(0.08)
    assert float(s.alphas_cumprod[-1]) < 1e-4 and float(s250.alphas_cumprod[-1]) < 1e-4


def test_tutorial_schedule_warns_that_x_T_keeps_signal():
    with pytest.warns(UserWarning, match="alpha_bar_T"):
        s = make_schedule("linear", 300, beta_start=1e-4, beta_end=0.02)
    assert float(s.alphas_cumprod[-1]) == pytest.approx(0.048, abs=0.002)
    assert float(s.betas[-1]) == pytest.approx(0.02)


def test_cosine_matches_its_formula():
    T, s_ = 1000, 0.008
    s = make_schedule("cosine", T)

    def f(t):
        return math.cos((t / T + s_) / (1 + s_) * math.pi / 2) ** 2

    for t in [0, 1, 10, 500, 900]:  # where no beta is clipped, alpha_bar_t = f(t+1)/f(0)
        assert float(s.alphas_cumprod[t]) == pytest.approx(f(t + 1) / f(0), rel=1e-10)
    assert float(s.betas.max()) == pytest.approx(0.999)


def test_posterior_terms_match_their_definitions():
    s = make_schedule("linear", 100)
    abar, abar_prev = s.alphas_cumprod, s.alphas_cumprod_prev
    assert float(abar_prev[0]) == 1.0
    torch.testing.assert_close(abar_prev[1:], abar[:-1])
    torch.testing.assert_close(s.posterior_variance, s.betas * (1 - abar_prev) / (1 - abar))
    assert float(s.posterior_variance[0]) == 0.0
    # the two bounds on the reverse variance: beta_tilde <= beta
    assert bool((s.posterior_variance <= s.betas).all())
    # coefficients of the mean sum to... mean(x_0 = x_t = 1) is coef1 + coef2
    assert bool(torch.isfinite(s.posterior_log_variance_clipped).all())


def test_respace_keeps_alpha_bars():
    s = make_schedule("cosine", 1000)
    kept = list(range(0, 1000, 40))
    r = s.respace(kept)
    assert len(kept) == r.T
    torch.testing.assert_close(r.alphas_cumprod, s.alphas_cumprod[kept])


@pytest.mark.parametrize(
    "args, match",
    [
        (("nope", 100), "unknown schedule"),
        (("linear", 0), "positive integer"),
        (("linear", -5), "positive integer"),
        (("linear", 100, 0.5, 0.1), "beta_start <= beta_end"),
        (("cosine", 100, 0.1, 0.2), "no beta_start"),
    ],
)
def test_bad_arguments_raise_clear_errors(args, match):
    with pytest.raises(ScheduleError, match=match):
        make_schedule(*args)


def test_from_betas_rejects_out_of_range():
    with pytest.raises(ScheduleError):
        NoiseSchedule.from_betas([0.1, 1.5])


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_respacing_with_all_T_steps_is_the_original_schedule(name):
    s = make_schedule(name, 200)
    r = s.respace(respaced_timesteps(200, 200))
    for field in s.__dict__:
        torch.testing.assert_close(getattr(r, field), getattr(s, field), rtol=1e-12, atol=0)


def test_respaced_betas_compose_to_the_kept_alpha_bars():
    """β'_i = 1 - ᾱ_{t_i}/ᾱ_{t_{i-1}}: the K-step chain has the original marginals q(x_{t_i}|x_0),
    and its posterior variance β̃'_i = β'_i (1 - ᾱ'_{i-1})/(1 - ᾱ'_i) follows (N&D §4)."""
    s = make_schedule("cosine", 1000)
    kept = respaced_timesteps(1000, 50)
    r = s.respace(kept)
    abar = s.alphas_cumprod[kept]
    torch.testing.assert_close(torch.cumprod(1 - r.betas, 0), abar, rtol=1e-10, atol=0)
    prev = torch.cat([abar.new_ones(1), abar[:-1]])
    torch.testing.assert_close(r.posterior_variance, r.betas * (1 - prev) / (1 - abar))
    assert float(r.betas[0]) == pytest.approx(float(s.betas[0]), rel=1e-12)  # t = 0 is kept
    assert bool((r.betas[1:] > s.betas[kept][1:]).all())  # each later step spans several


@pytest.mark.parametrize("T, K", [(1000, 50), (1000, 100), (1000, 1000), (4000, 50), (7, 3)])
def test_respaced_timesteps_are_even_and_keep_both_ends(T, K):
    ts = respaced_timesteps(T, K)
    assert len(ts) == K and ts[0] == 0 and ts[-1] == T - 1
    gaps = [b - a for a, b in zip(ts[:-1], ts[1:])]
    assert min(gaps) >= 1 and max(gaps) - min(gaps) <= 1
    assert respaced_timesteps(T, 1) == [T - 1]
    with pytest.raises(ScheduleError, match="steps"):
        respaced_timesteps(T, T + 1)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_noise_levels_are_the_variance_exploding_sigmas(name):
    """σ_t = √((1 - ᾱ_t)/ᾱ_t), ln σ_t its log, increasing in t; -2 ln σ_t is the log-SNR."""
    schedule = make_schedule(name, 200)
    abar = schedule.alphas_cumprod
    torch.testing.assert_close(schedule.sigmas, ((1 - abar) / abar).sqrt())
    torch.testing.assert_close(schedule.log_sigmas, schedule.sigmas.log())
    torch.testing.assert_close(-2 * schedule.log_sigmas, (abar / (1 - abar)).log())
    assert schedule.sigmas.dtype == schedule.log_sigmas.dtype == torch.float64
    assert bool((schedule.log_sigmas[1:] > schedule.log_sigmas[:-1]).all())
    respaced = schedule.respace([0, 50, 199])
    torch.testing.assert_close(respaced.sigmas, schedule.sigmas[[0, 50, 199]])
