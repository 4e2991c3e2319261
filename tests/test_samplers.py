import pytest
import torch

from ddpm import samplers as S
from ddpm.diffusion import predict_eps_from_x0
from ddpm.schedule import make_schedule


@pytest.fixture
def schedule():
    return make_schedule("linear", 1000)


def oracle_for(schedule, x_0):
    """The exact noise predictor for a data distribution that is a point mass at x_0."""
    return lambda x_t, t: predict_eps_from_x0(schedule, x_t, t, x_0.expand_as(x_t))


@pytest.mark.parametrize("steps", [1, 7, 50, 1000])
def test_ddim_eta0_recovers_x0_from_an_oracle(schedule, steps):
    x_0 = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 2 - 1
    x_T = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    out = S.ddim_sample(oracle_for(schedule, x_0), schedule, x_T, steps, eta=0.0)
    torch.testing.assert_close(out, x_0.expand_as(out), atol=1e-9, rtol=0)


@pytest.mark.parametrize("steps", [2, 10, 25])
def test_dpm_solver_recovers_x0_from_an_oracle(schedule, steps):
    x_0 = torch.rand(1, 1, 4, 4, dtype=torch.float64) * 2 - 1
    out = S.dpm_solver_sample(
        oracle_for(schedule, x_0), schedule, torch.randn(3, 1, 4, 4, dtype=torch.float64), steps
    )
    torch.testing.assert_close(out, x_0.expand_as(out), atol=1e-9, rtol=0)


@pytest.mark.parametrize("variance", ["small", "large"])
def test_ddpm_with_oracle_ends_at_x0(variance):
    schedule = make_schedule("linear", 100)
    x_0 = torch.rand(1, 1, 4, 4, dtype=torch.float64) * 2 - 1
    g = torch.Generator().manual_seed(0)
    out = S.ddpm_sample(
        oracle_for(schedule, x_0),
        schedule,
        torch.randn(2, 1, 4, 4, dtype=torch.float64),
        variance,
        generator=g,
    )
    # the last step adds no noise and its mean is exactly x_0 when x_0 is known
    torch.testing.assert_close(out, x_0.expand_as(out), atol=1e-9, rtol=0)


def test_ddim_timesteps_are_the_papers_uniform_grid():
    assert S.ddim_timesteps(1000, 50)[:3] == [980, 960, 940]
    assert S.ddim_timesteps(1000, 50)[-1] == 0
    assert S.ddim_timesteps(10, 10) == list(range(9, -1, -1))
    for bad in (0, -1, 1001):
        with pytest.raises(ValueError, match="steps"):
            S.ddim_timesteps(1000, bad)


def test_ddpm_is_reproducible_with_a_generator_and_varies_without():
    schedule = make_schedule("linear", 50)
    model = lambda x, t: 0.1 * x  # noqa: E731
    x_T = torch.randn(2, 1, 4, 4)
    a = S.ddpm_sample(model, schedule, x_T, generator=torch.Generator().manual_seed(3))
    b = S.ddpm_sample(model, schedule, x_T, generator=torch.Generator().manual_seed(3))
    c = S.ddpm_sample(model, schedule, x_T, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_per_sample_generators_make_images_independent_of_the_batch():
    schedule = make_schedule("linear", 30)
    model = lambda x, t: 0.05 * x  # noqa: E731
    gens = lambda idx: S.sample_generators(7, idx)  # noqa: E731
    x_T = lambda idx: torch.stack([torch.randn(1, 4, 4, generator=g) for g in gens(idx)])  # noqa: E731
    full = S.ddpm_sample(model, schedule, x_T(range(6)), generator=gens(range(6)))
    part = S.ddpm_sample(model, schedule, x_T(range(3, 5)), generator=gens(range(3, 5)))
    assert torch.equal(full[3:5], part)
    ddim = S.ddim_sample(model, schedule, x_T(range(6)), 10, eta=1.0, generator=gens(range(6)))
    ddim_part = S.ddim_sample(
        model, schedule, x_T(range(3, 5)), 10, eta=1.0, generator=gens(range(3, 5))
    )
    assert torch.equal(ddim[3:5], ddim_part)


def test_ddim_eta1_all_steps_matches_ddpm_small_variance():
    """With eta = 1 and every timestep, DDIM's sigma is the posterior std (Song et al. §4.1)."""
    schedule = make_schedule("linear", 40)
    model = lambda x, t: 0.3 * x + 0.01 * t.view(-1, 1, 1, 1)  # noqa: E731
    x_T = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    a = S.ddpm_sample(model, schedule, x_T, "small", generator=torch.Generator().manual_seed(0))
    b = S.ddim_sample(model, schedule, x_T, 40, eta=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)


def test_clip_keeps_x0_predictions_in_range(schedule):
    seen = []
    model = lambda x, t: -5 * torch.ones_like(x)  # noqa: E731  (pushes x0 far out of range)
    S.ddim_sample(
        model,
        schedule,
        torch.randn(2, 1, 4, 4),
        5,
        clip=True,
        callback=lambda i, t, x, x0: seen.append(x0),
    )
    assert all(float(x0.abs().max()) <= 1.0 for x0 in seen) and len(seen) == 5


def test_dispatch_rejects_unknown_sampler(schedule):
    with pytest.raises(ValueError, match="unknown sampler"):
        S.sample("euler", lambda x, t: x, schedule, torch.zeros(1, 1, 2, 2), 5)
