"""The variational bound: the decoder's 256 bins, the Gaussian KLs, and the whole bound for an
optimal model of a Gaussian dataset and for an oracle that knows x_0, against closed forms."""

import math

import pytest
import torch

from ddpm.diffusion.likelihood import (
    bits_per_dim,
    bound_terms_nats,
    discretized_gaussian_log_likelihood,
    normal_kl,
    prior_nats,
    strata,
)
from ddpm.diffusion.process import predict_eps_from_x0, reverse_log_variance
from ddpm.diffusion.schedule import make_schedule

GRID = torch.arange(256, dtype=torch.float64) / 127.5 - 1


@pytest.mark.parametrize("mean", [-1.3, -1.0, -0.31, 0.0, 0.5, 0.999, 1.7])
@pytest.mark.parametrize("scale", [1e-4, 3e-3, 0.05, 1.0, 30.0])
def test_the_256_bins_sum_to_one(mean, scale):
    logp = discretized_gaussian_log_likelihood(
        GRID, torch.full_like(GRID, mean), torch.full_like(GRID, math.log(scale))
    )
    assert torch.isfinite(logp).all()
    assert float(logp.exp().sum()) == pytest.approx(1.0, abs=1e-9)


def test_a_wide_gaussian_gives_density_times_bin_width():
    mean, scale = 0.1, 0.3
    logp = discretized_gaussian_log_likelihood(
        GRID[1:-1], torch.full((254,), mean), torch.full((254,), math.log(scale))
    )
    density = torch.distributions.Normal(mean, scale).log_prob(GRID[1:-1]).exp()
    torch.testing.assert_close(logp.exp(), density * 2 / 255, rtol=1e-3, atol=0)


def test_a_narrow_gaussian_puts_everything_in_its_bin():
    logp = discretized_gaussian_log_likelihood(
        GRID, torch.full_like(GRID, float(GRID[77])), torch.full_like(GRID, math.log(1e-4))
    )
    assert float(logp[77]) == pytest.approx(0.0, abs=1e-12)
    assert -800 < float(logp[78]) < -600  # far tails are clamped at 1e-300: no log(0)


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2, lv1, lv2 = torch.randn(4, 50, generator=g, dtype=torch.float64)
    ours = normal_kl(m1, lv1, m2, lv2)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (0.5 * lv1).exp()),
        torch.distributions.Normal(m2, (0.5 * lv2).exp()),
    )
    torch.testing.assert_close(ours, ref)


# --- the bound for a Gaussian dataset and its optimal denoiser ---------------------------------


def optimal_eps(schedule, s):
    """For x_0 ~ N(0, s² I): E[eps | x_t] = √(1-ᾱ) x_t / (ᾱ s² + 1 - ᾱ), the best eps model."""
    abar = schedule.alphas_cumprod

    def model(x_t, t):
        a = abar[t].view(-1, 1, 1, 1)
        return ((1 - a).sqrt() * x_t.double() / (a * s**2 + 1 - a)).float()

    return model


def analytic_terms(schedule, s, variance=None, sigma2=None):
    """E_q[L_{t-1}] per dimension for t >= 1 (code index), and E_q[L_T], in nats.

    With x̂_0 = E[x_0 | x_t], E(x_0 - x̂_0)² = V_t = s²(1-ᾱ)/(ᾱ s² + 1 - ᾱ), so
    E KL = ½[log(σ²/β̃) + β̃/σ² - 1 + c₁² V_t / σ²] with c₁ the posterior coefficient of x_0.
    σ² is the fixed `variance`'s, or any `sigma2` (T,).
    """
    abar, beta_tilde = schedule.alphas_cumprod, schedule.posterior_variance
    if sigma2 is None:
        sigma2 = reverse_log_variance(schedule, variance).exp()
    V = s**2 * (1 - abar) / (abar * s**2 + 1 - abar)
    c1 = schedule.posterior_mean_coef1
    kl = 0.5 * ((sigma2 / beta_tilde).log() + beta_tilde / sigma2 - 1 + c1**2 * V / sigma2)
    a_T = abar[-1]
    prior = 0.5 * (-torch.log1p(-a_T) + (1 - a_T) + a_T * s**2 - 1)
    return kl[1:], prior


@pytest.mark.parametrize("variance", ["small", "large"])
def test_the_bound_of_the_optimal_model_of_gaussian_data_matches_the_closed_form(variance):
    s, T = 0.5, 100
    schedule = make_schedule("linear", T)
    g = torch.Generator().manual_seed(0)
    x_0 = s * torch.randn(4, 1, 64, 64, generator=g, dtype=torch.float64)  # 16,384 dims
    terms = bound_terms_nats(
        optimal_eps(schedule, s), schedule, x_0, variance, clip=False, generator=g, batch_size=32
    )
    D = x_0[0].numel()
    per_dim = terms[:, 1:].mean(0) / D  # Monte Carlo over 16k dims of each KL term
    expected_kl, expected_prior = analytic_terms(schedule, s, variance)
    torch.testing.assert_close(per_dim, expected_kl, rtol=0.08, atol=1e-7)
    total = per_dim.sum() + prior_nats(schedule, x_0).mean() / D
    assert float(total) == pytest.approx(float(expected_kl.sum() + expected_prior), rel=0.01)


def test_a_worse_model_gives_a_larger_bound():
    s, T = 0.5, 50
    schedule = make_schedule("linear", T)
    x_0 = s * torch.randn(2, 1, 32, 32, dtype=torch.float64, generator=torch.Generator())
    best = optimal_eps(schedule, s)

    def off(x_t, t):
        return 0.9 * best(x_t, t)

    kls = [
        bound_terms_nats(m, schedule, x_0, clip=False, generator=torch.Generator().manual_seed(1))[
            :, 1:
        ].sum()
        for m in (best, off)
    ]
    assert kls[0] < kls[1]


# --- bits/dim on 8-bit images -------------------------------------------------------------------


def oracle(schedule, x_0_uint8, k_max):
    """A model that knows the clean images: eps = (x_t - √ᾱ x_0)/√(1-ᾱ) for each row, where
    row j*B + i of the model batch holds image i (the timestep batching's layout)."""
    x_0 = x_0_uint8.double() / 127.5 - 1

    def model(x_t, t):
        reps = x_t.shape[0] // x_0.shape[0]
        return predict_eps_from_x0(schedule, x_t.double(), t, x_0.repeat(reps, 1, 1, 1)).float()

    return model


def test_an_oracle_pays_only_the_prior_and_the_decoder():
    # All KL terms are (nearly) zero, and the decoder is N(x_0, β̃_1) on 8-bit bins:
    # -log P(bin) = -log(2Φ(h/σ) - 1) inside, -log Φ(h/σ) at 0 and 255, h = 1/255.
    T = 20
    schedule = make_schedule("linear", T)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 3, 4, 4), generator=g, dtype=torch.uint8)
    x[0, 0, 0, 0], x[1, 2, 3, 3] = 0, 255
    bpd = bits_per_dim(oracle(schedule, x, T), schedule, x, clip=False, generator=g, batch_size=6)
    sigma = float(schedule.posterior_log_variance_clipped[0].exp().sqrt())
    z = torch.tensor((1 / 255) / sigma, dtype=torch.float64)
    Phi = torch.special.ndtr(z)
    edge = (x == 0) | (x == 255)
    decoder = torch.where(edge, -Phi.log(), -(2 * Phi - 1).log()).flatten(1).sum(1)
    x_m = x.double() / 127.5 - 1
    expected = (decoder + prior_nats(schedule, x_m)) / (x[0].numel() * math.log(2))
    torch.testing.assert_close(bpd, expected, rtol=1e-6, atol=0)


def test_timestep_batching_does_not_change_the_result():
    schedule = make_schedule("linear", 30)
    x = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator())
    model = optimal_eps(schedule, 0.5)
    runs = [
        bits_per_dim(model, schedule, x, generator=torch.Generator().manual_seed(3), batch_size=b)
        for b in (2, 8, 60)
    ]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-6, atol=0)
    torch.testing.assert_close(runs[0], runs[2], rtol=1e-6, atol=0)
    assert runs[0].shape == (2,) and runs[0].dtype == torch.float64


def test_bits_per_dim_refuses_float_images():
    schedule = make_schedule("linear", 10)
    with pytest.raises(ValueError, match="uint8"):
        bits_per_dim(optimal_eps(schedule, 1.0), schedule, torch.zeros(1, 1, 2, 2))


# --- closed forms of the two kinds of term, element by element ----------------------------------


def test_normal_kl_against_its_closed_form():
    # KL(N(m1, s1²) || N(m2, s2²)) = log(s2/s1) + (s1² + (m1 - m2)²)/(2 s2²) - 1/2
    for m1, s1, m2, s2 in [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -0.2, 2.0), (1.0, 3.0, 0.0, 0.1)]:
        expected = math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
        kl = normal_kl(
            *(
                torch.tensor(v, dtype=torch.float64)
                for v in (m1, 2 * math.log(s1), m2, 2 * math.log(s2))
            )
        )
        assert float(kl) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_discretized_log_likelihood_against_erf():
    """log P(bin) = log(Φ((x + 1/255 - μ)/σ) - Φ((x - 1/255 - μ)/σ)), Φ from math.erf; the edge
    bins take the whole tail."""
    Phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    for k, mean, scale in [(0, -0.9, 0.2), (17, -0.8, 0.05), (128, 0.0, 0.01), (255, 0.95, 0.3)]:
        x = k / 127.5 - 1
        up, lo = (x + 1 / 255 - mean) / scale, (x - 1 / 255 - mean) / scale
        p = Phi(up) if k == 0 else (1 - Phi(lo) if k == 255 else Phi(up) - Phi(lo))
        x_, m_, ls_ = (torch.tensor([v], dtype=torch.float64) for v in (x, mean, math.log(scale)))
        ours = discretized_gaussian_log_likelihood(x_, m_, ls_)
        assert float(ours) == pytest.approx(math.log(p), rel=1e-9)


# --- learned variances in the bound (Nichol & Dhariwal 2021 §3.1) -------------------------------


def with_var_values(model, raw):
    """The optimal eps model with a constant variance output `raw` appended (2C channels)."""
    return lambda x, t: torch.cat([model(x, t), torch.full_like(x, raw).float()], 1)


def test_learned_variance_at_its_ends_is_the_fixed_bound():
    """var_values 1 (ν = 1) is β_t (the KL terms of "large"), var_values -1 (ν = 0) is β̃_t
    ("small"), term for term."""
    s, T = 0.5, 30
    schedule = make_schedule("linear", T)
    x_0 = s * torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator())
    best = optimal_eps(schedule, s)

    def terms(model, variance):
        g = torch.Generator().manual_seed(5)
        return bound_terms_nats(model, schedule, x_0, variance, clip=False, generator=g)

    torch.testing.assert_close(terms(with_var_values(best, -1.0), "learned"), terms(best, "small"))
    torch.testing.assert_close(
        terms(with_var_values(best, 1.0), "learned")[:, 1:], terms(best, "large")[:, 1:]
    )


def test_a_learned_variance_bound_matches_the_closed_form():
    """A model with weight 1/2 between the bounds: σ_t² = √(β_t β̃_t), in the same closed form."""
    s, T = 0.5, 60
    schedule = make_schedule("linear", T)
    x_0 = s * torch.randn(
        4, 1, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    g = torch.Generator().manual_seed(0)
    terms = bound_terms_nats(
        with_var_values(optimal_eps(schedule, s), 0.0), schedule, x_0, "learned", clip=False,
        generator=g, batch_size=64,
    )  # fmt: skip
    sigma2 = (schedule.betas * schedule.posterior_log_variance_clipped.exp()).sqrt()
    expected_kl, _ = analytic_terms(schedule, s, sigma2=sigma2)
    torch.testing.assert_close(
        terms[:, 1:].mean(0) / x_0[0].numel(), expected_kl, rtol=0.08, atol=1e-7
    )


# --- cheaper bounds: the stratified estimate ----------------------------------------------------


def test_strata_partition_the_timesteps_with_the_decoder_alone():
    for T, K in [(1000, 50), (10, 10), (7, 2), (100, 37)]:
        parts = strata(T, K)
        assert len(parts) == K and parts[0] == (0, 1)
        covered = [t for a, n in parts for t in range(a, a + n)]
        assert covered == list(range(T))
    with pytest.raises(ValueError, match="timestep samples"):
        strata(10, 1)


def test_stratified_estimate_with_every_timestep_is_the_full_bound():
    schedule = make_schedule("linear", 25)
    x = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator())
    model = optimal_eps(schedule, 0.5)
    full = bits_per_dim(
        model, schedule, x, generator=torch.Generator().manual_seed(2), batch_size=7
    )
    est = bits_per_dim(
        model, schedule, x, generator=torch.Generator().manual_seed(2), batch_size=7, t_samples=25,
        t_generator=torch.Generator().manual_seed(9),
    )  # fmt: skip
    torch.testing.assert_close(est, full, rtol=1e-12, atol=0)


def test_stratified_estimate_is_unbiased():
    """Mean over images of the K-sample estimate against the full bound of the same images
    (independent noise): the difference is within 4 standard errors, and the error bar is
    wider than the full bound's (it carries the t sampling)."""
    s, T = 0.5, 50
    schedule = make_schedule("linear", T)
    g = torch.Generator().manual_seed(0)
    x = ((s * torch.randn(96, 1, 6, 6, generator=g)).clamp(-1, 1) * 127.5 + 127.5).round()
    x = x.to(torch.uint8)
    model = optimal_eps(schedule, s)
    full = bits_per_dim(
        model, schedule, x, generator=torch.Generator().manual_seed(1), batch_size=960
    )
    est = bits_per_dim(
        model, schedule, x, generator=torch.Generator().manual_seed(2), batch_size=960, t_samples=6,
        t_generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    diff = est - full
    stderr = float(diff.std() / math.sqrt(len(diff)))
    assert abs(float(diff.mean())) < 4 * stderr
    assert float(est.std()) > float(full.std())
