"""The training objectives: L_simple, L_vlb and L_hybrid (Nichol & Dhariwal 2021 §3.1)."""

import math

import pytest
import torch

from ddpm.diffusion.likelihood import vb_terms_nats
from ddpm.diffusion.losses import HYBRID_LAMBDA, training_losses
from ddpm.diffusion.process import eps_model, q_sample
from ddpm.diffusion.schedule import make_schedule


@pytest.fixture
def schedule():
    return make_schedule("cosine", 100)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x_0 = (torch.randint(0, 256, (6, 2, 4, 4), generator=g) / 127.5 - 1).float()
    t = torch.tensor([0, 1, 5, 40, 77, 99])
    return x_0, t, torch.randn(x_0.shape, generator=g)


class Toy(torch.nn.Module):
    """out = (a · x_t, b): a drives only the prediction (the mean), b only the variance output."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.4))
        self.b = torch.nn.Parameter(torch.tensor(0.2))

    def forward(self, x, t):
        return torch.cat([self.a * x, self.b * torch.ones_like(x)], 1)


def grads(loss_fn, model):
    model.zero_grad()
    loss_fn().sum().backward()
    return model.a.grad.clone(), model.b.grad.clone()


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_the_hybrid_loss_sends_no_vlb_gradient_to_the_mean(schedule, batch, prediction):
    x_0, t, eps = batch
    model = Toy()
    args = (model, schedule, x_0, t, eps, prediction)
    ga_hybrid, gb_hybrid = grads(lambda: training_losses(*args, "hybrid"), model)
    ga_simple, gb_simple = grads(lambda: training_losses(*args, "l2"), model)
    ga_vlb, gb_vlb = grads(lambda: training_losses(*args, "vlb"), model)
    assert torch.equal(ga_hybrid, ga_simple)  # the mean learns from L_simple alone
    assert float(gb_simple) == 0 and float(gb_hybrid) != 0  # the variance from λ L_vlb
    torch.testing.assert_close(gb_hybrid, HYBRID_LAMBDA * gb_vlb)
    assert float(ga_vlb) != 0  # without the stop-gradient, L_vlb trains the mean too


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_vlb_is_T_times_the_bound_term_in_bits_per_dim(schedule, batch, prediction):
    """L_vlb = T · L_t / (D ln 2) with the evaluation code's L_t (float64, no clipping)."""
    x_0, t, eps = batch
    model = Toy()
    with torch.no_grad():
        loss = training_losses(model, schedule, x_0, t, eps, prediction, "vlb")
        simple = training_losses(model, schedule, x_0, t, eps, prediction, "l2")
        hybrid = training_losses(model, schedule, x_0, t, eps, prediction, "hybrid")
        net = eps_model(model, schedule, prediction)
        nats = vb_terms_nats(net, schedule, x_0, t, eps, "learned", clip=False)
    D = x_0[0].numel()
    torch.testing.assert_close(
        loss.double(), schedule.T * nats / (D * math.log(2)), rtol=1e-3, atol=1e-6
    )
    torch.testing.assert_close(hybrid, simple + HYBRID_LAMBDA * loss)
    assert loss.shape == (6,) and loss.dtype == torch.float32


def test_vlb_with_fixed_variances_uses_beta_tilde(schedule, batch):
    x_0, t, eps = batch
    model = lambda x, tt: 0.3 * x  # noqa: E731  (C channels: no variance output)
    loss = training_losses(model, schedule, x_0, t, eps, "eps", "vlb")
    nats = vb_terms_nats(model, schedule, x_0, t, eps, "small", clip=False)
    D = x_0[0].numel()
    torch.testing.assert_close(
        loss.double(), schedule.T * nats / (D * math.log(2)), rtol=1e-3, atol=1e-6
    )


def test_l2_loss_ignores_the_variance_output_and_matches_the_simple_loss(schedule, batch):
    x_0, t, eps = batch
    model = Toy()
    with torch.no_grad():
        ours = training_losses(model, schedule, x_0, t, eps, "eps", "l2")
        x_t = q_sample(schedule, x_0, t, eps)
    torch.testing.assert_close(ours, (0.4 * x_t - eps).square().flatten(1).mean(1))
