import pytest
import torch

from ddpm.diffusion import process as D
from ddpm.diffusion.schedule import make_schedule


@pytest.fixture
def schedule():
    return make_schedule("linear", 1000)


def test_q_sample_moments(schedule):
    """x_t given x_0 has mean sqrt(abar) x_0 and variance 1 - abar (Ho et al. eq. 4)."""
    t_val = 300
    n = 200_000
    x_0 = torch.full((n, 1, 1, 1), 0.7)
    t = torch.full((n,), t_val)
    x_t = D.q_sample(schedule, x_0, t, torch.randn_like(x_0))
    abar = float(schedule.alphas_cumprod[t_val])
    assert float(x_t.mean()) == pytest.approx(abar**0.5 * 0.7, abs=0.01)
    assert float(x_t.var()) == pytest.approx(1 - abar, rel=0.02)


def test_posterior_against_bayes_rule_closed_form(schedule):
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): a product of Gaussians in x_{t-1}."""
    torch.manual_seed(1)
    x_0, x_t = torch.randn(5, 2, 3, 3).double(), torch.randn(5, 2, 3, 3).double()
    t = torch.tensor([1, 10, 100, 500, 999])
    mean, var, _ = D.q_posterior(schedule, x_0, x_t, t)
    for i, ti in enumerate(t.tolist()):
        a, b = schedule.alphas[ti], schedule.betas[ti]
        abar_prev = schedule.alphas_cumprod_prev[ti]
        # likelihood in x_{t-1}: N(x_t; sqrt(a) x_{t-1}, b) -> precision a/b, "mean" x_t/sqrt(a)
        prec = a / b + 1 / (1 - abar_prev)
        m = (a.sqrt() / b * x_t[i] + abar_prev.sqrt() / (1 - abar_prev) * x_0[i]) / prec
        torch.testing.assert_close(mean[i], m)
        torch.testing.assert_close(var[i].flatten()[0], 1 / prec)


def test_parameterisations_round_trip(schedule):
    torch.manual_seed(2)
    x_0, eps = torch.randn(8, 3, 4, 4).double(), torch.randn(8, 3, 4, 4).double()
    t = torch.randint(0, 1000, (8,))
    x_t = D.q_sample(schedule, x_0, t, eps)
    torch.testing.assert_close(D.predict_x0_from_eps(schedule, x_t, t, eps), x_0)
    torch.testing.assert_close(D.predict_eps_from_x0(schedule, x_t, t, x_0), eps)
    v = D.v_target(schedule, x_0, t, eps)
    torch.testing.assert_close(D.predict_x0_from_v(schedule, x_t, t, v), x_0)
    torch.testing.assert_close(D.predict_eps_from_v(schedule, x_t, t, v), eps)
    for pred, out in (("eps", eps), ("x0", x_0), ("v", v)):
        torch.testing.assert_close(D.to_eps(schedule, pred, x_t, t, out), eps)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("loss_type", ["l2", "l1"])
def test_loss_is_zero_for_an_oracle_and_positive_otherwise(schedule, prediction, loss_type):
    x_0, eps = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    t = torch.tensor([0, 10, 500, 999])
    target = {"eps": eps, "x0": x_0, "v": D.v_target(schedule, x_0, t, eps)}[prediction]
    oracle = lambda x_t, tt: target  # noqa: E731
    assert float(D.diffusion_loss(oracle, schedule, x_0, t, eps, prediction, loss_type)) < 1e-10
    zero = lambda x_t, tt: torch.zeros_like(x_t)  # noqa: E731
    loss = D.diffusion_loss(zero, schedule, x_0, t, eps, prediction, loss_type)
    expected = target.abs().mean() if loss_type == "l1" else target.square().mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_min_snr_weights_cap_the_x0_weight_at_gamma(schedule):
    t = torch.tensor([0, 100, 500, 999])
    snr = D.snr(schedule, t)
    w_eps = D.loss_weights(schedule, t, "eps", 5.0)
    # weighting the eps loss by w is weighting the x0 loss by w * snr = min(snr, 5)
    torch.testing.assert_close(w_eps * snr, snr.clamp(max=5.0))
    assert D.loss_weights(schedule, t, "eps", None) is None


# --- learned variances (Nichol & Dhariwal 2021 §3.1) -------------------------------------------


def test_learned_variance_interpolates_between_beta_tilde_and_beta(schedule):
    """Eq. 15: weight ν = 1 gives β_t, ν = 0 gives β̃_t, and between them the geometric mean."""
    t = torch.tensor([0, 1, 10, 500, 999])
    x = torch.zeros(5, 2, 3, 3, dtype=torch.float64)
    beta = schedule.betas[t].view(-1, 1, 1, 1).expand_as(x)
    beta_tilde = schedule.posterior_log_variance_clipped[t].exp().view(-1, 1, 1, 1).expand_as(x)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    torch.testing.assert_close(D.learned_log_variance(schedule, t, one).exp(), beta)
    torch.testing.assert_close(D.learned_log_variance(schedule, t, zero).exp(), beta_tilde)
    # the network's raw output var_values maps to ν = (var_values + 1)/2: 1, -1, 0
    torch.testing.assert_close(D.nu_from_output(-one), zero)
    torch.testing.assert_close(D.p_log_variance(schedule, t, x, "learned", one).exp(), beta)
    torch.testing.assert_close(D.p_log_variance(schedule, t, x, "learned", -one).exp(), beta_tilde)
    mid = D.p_log_variance(schedule, t, x, "learned", zero).exp()
    torch.testing.assert_close(mid, (beta * beta_tilde).sqrt())
    # the fixed variances, as Ho et al.'s code: large is β_t except β̃_1 at t = 0
    small = D.p_log_variance(schedule, t, x, "small").exp().expand_as(x)
    torch.testing.assert_close(small, beta_tilde)
    large = D.p_log_variance(schedule, t, x, "large").exp().expand_as(x)
    torch.testing.assert_close(large[1:], beta[1:])
    torch.testing.assert_close(large[0], beta_tilde[0])
    with pytest.raises(ValueError, match="learned variances"):
        D.p_log_variance(schedule, t, x, "learned")


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_conversions_pass_the_variance_output_through(schedule, prediction):
    """A 2C-channel output converts its first C channels and keeps the last C unchanged."""
    x_t, t = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.tensor([5, 300, 900])
    pred, var_values = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4)
    net = lambda x, tt: torch.cat([pred, var_values.double()], 1)  # noqa: E731
    out = D.eps_model(net, schedule, prediction)(x_t, t)
    assert out.shape == (3, 4, 4, 4)
    torch.testing.assert_close(out[:, :2], D.to_eps(schedule, prediction, x_t, t, pred))
    assert torch.equal(out[:, 2:], var_values.double())
    with pytest.raises(ValueError, match="3 channels for 2-channel"):
        D.split_output(torch.zeros(1, 3, 4, 4), 2)


def test_respaced_model_sees_the_original_timesteps(schedule):
    seen = []
    model, respaced = D.respace_model(lambda x, t: seen.append(t) or x, schedule, 10)
    assert respaced.T == 10
    model(torch.zeros(2, 1, 2, 2), torch.tensor([0, 9]))
    assert seen[0].tolist() == [0, 999]
    same_model, same = D.respace_model(model, schedule, 1000)
    assert same_model is model and same is schedule
