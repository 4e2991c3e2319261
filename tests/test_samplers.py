import pytest
import torch

from ddpm.diffusion.process import predict_eps_from_x0
from ddpm.diffusion.schedule import make_schedule, respaced_timesteps
from ddpm.sampling import noise as N
from ddpm.sampling import samplers as S


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
    out = S.ddim_sample(oracle_for(schedule, x_0), schedule, x_T, steps=steps, eta=0.0)
    torch.testing.assert_close(out, x_0.expand_as(out), atol=1e-9, rtol=0)


@pytest.mark.parametrize("steps", [2, 10, 25])
@pytest.mark.parametrize("order", [2, 3])
def test_dpm_solver_recovers_x0_from_an_oracle(schedule, steps, order):
    x_0 = torch.rand(1, 1, 4, 4, dtype=torch.float64) * 2 - 1
    x_T = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    out = S.dpm_solver_sample(oracle_for(schedule, x_0), schedule, x_T, steps=steps, order=order)
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
        variance=variance,
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
    gens = lambda idx: N.sample_generators(7, idx)  # noqa: E731
    x_T = lambda idx: torch.stack([torch.randn(1, 4, 4, generator=g) for g in gens(idx)])  # noqa: E731
    full = S.ddpm_sample(model, schedule, x_T(range(6)), generator=gens(range(6)))
    part = S.ddpm_sample(model, schedule, x_T(range(3, 5)), generator=gens(range(3, 5)))
    assert torch.equal(full[3:5], part)
    ddim = S.ddim_sample(
        model, schedule, x_T(range(6)), steps=10, eta=1.0, generator=gens(range(6))
    )
    ddim_part = S.ddim_sample(
        model, schedule, x_T(range(3, 5)), steps=10, eta=1.0, generator=gens(range(3, 5))
    )
    assert torch.equal(ddim[3:5], ddim_part)


@pytest.mark.parametrize("shape, dtype", [((3, 8, 8), torch.float32), ((2,), torch.float64)])
def test_noise_rows_draw_what_each_generator_draws_alone(shape, dtype):
    """On the CPU the rows keep the values of successive torch.randn calls on each generator
    alone, so seeds draw the same images and points as before draws were taken in blocks."""
    rows = N.sample_generators(5, range(4))
    draws = torch.stack([N.per_sample_noise(shape, rows, dtype=dtype) for _ in range(40)], 1)
    alone = [
        torch.stack([torch.randn(shape, generator=g, dtype=dtype) for _ in range(40)])
        for g in N.sample_generators(5, range(4))
    ]
    assert draws.shape == (4, 40, *shape) and draws.dtype == dtype
    assert torch.equal(draws, torch.stack(alone))
    assert not torch.equal(draws[0, 0], draws[1, 0]) and not torch.equal(draws[0, 1], draws[0, 2])


def test_noise_rows_in_blocks_do_not_depend_on_the_batch(monkeypatch):
    """Drawn ahead in blocks (as on a GPU), where a block is not successive draws (numel 150),
    a row's stream is still its index's alone: the same in a batch of 6 and of 2."""
    monkeypatch.setattr(N, "block_size", lambda shape, device: 7)
    full, part = N.sample_generators(3, range(6)), N.sample_generators(3, range(3, 5))
    draws = []
    for _ in range(20):
        draws.append(N.per_sample_noise((1, 150), full))
        assert torch.equal(draws[-1][3:5], N.per_sample_noise((1, 150), part))
    assert full._ahead is not None and full._ahead.shape[1] == 7  # taken ahead, 7 at a time
    assert len({float(d[0].sum()) for d in draws}) == 20  # each draw new


def test_ddim_eta1_all_steps_matches_ddpm_small_variance():
    """With eta = 1 and every timestep, DDIM's sigma is the posterior std (Song et al. §4.1)."""
    schedule = make_schedule("linear", 40)
    model = lambda x, t: 0.3 * x + 0.01 * t.view(-1, 1, 1, 1)  # noqa: E731
    x_T = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    a = S.ddpm_sample(
        model, schedule, x_T, variance="small", generator=torch.Generator().manual_seed(0)
    )
    b = S.ddim_sample(
        model, schedule, x_T, steps=40, eta=1.0, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(a, b)


def test_clip_keeps_x0_predictions_in_range(schedule):
    seen = []
    model = lambda x, t: -5 * torch.ones_like(x)  # noqa: E731  (pushes x0 far out of range)
    S.ddim_sample(
        model,
        schedule,
        torch.randn(2, 1, 4, 4),
        steps=5,
        clip=True,
        callback=lambda i, t, x, x0: seen.append(x0),
    )
    assert all(float(x0.abs().max()) <= 1.0 for x0 in seen) and len(seen) == 5


def test_dispatch_rejects_unknown_sampler(schedule):
    with pytest.raises(ValueError, match="unknown sampler"):
        S.sample("euler", lambda x, t: x, schedule, torch.zeros(1, 1, 2, 2), steps=5)


# --- learned variances and respaced DDPM (Nichol & Dhariwal 2021 §3.1, §4) ----------------------


def with_var_values(model, raw):
    """`model` with a constant variance output `var_values` appended: (B, 2C, ...)."""
    return lambda x, t: torch.cat([model(x, t), torch.full_like(x, raw)], 1)


def test_ddpm_learned_variance_at_its_ends_is_small_and_large():
    schedule = make_schedule("linear", 60)
    model = lambda x, t: 0.2 * x + 0.01 * t.view(-1, 1, 1, 1)  # noqa: E731
    x_T = torch.randn(2, 1, 4, 4, dtype=torch.float64)

    def run(m, variance):
        gen = torch.Generator().manual_seed(0)
        return S.ddpm_sample(m, schedule, x_T, variance=variance, generator=gen)

    torch.testing.assert_close(run(with_var_values(model, -1.0), "learned"), run(model, "small"))
    torch.testing.assert_close(run(with_var_values(model, 1.0), "learned"), run(model, "large"))
    # fixed variances ignore a model's variance output; learned needs one
    assert torch.equal(run(with_var_values(model, 0.7), "small"), run(model, "small"))
    with pytest.raises(ValueError, match="learned variances"):
        run(model, "learned")


def test_ddim_and_dpm_solver_ignore_the_variance_output():
    schedule = make_schedule("linear", 100)
    model = lambda x, t: 0.3 * x  # noqa: E731
    x_T = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    for name in ("ddim", "dpm-solver", "dpm-solver-3m"):
        a = S.sample(name, model, schedule, x_T, steps=10)
        assert torch.equal(a, S.sample(name, with_var_values(model, 0.9), schedule, x_T, steps=10))


@pytest.mark.parametrize("steps", [2, 10, 100])
def test_respaced_ddpm_with_an_oracle_ends_at_x0(steps):
    schedule = make_schedule("cosine", 100)
    x_0 = torch.rand(1, 1, 4, 4, dtype=torch.float64) * 2 - 1
    out = S.sample(
        "ddpm", with_var_values(oracle_for(schedule, x_0), 0.0), schedule,
        torch.randn(3, 1, 4, 4, dtype=torch.float64), steps=steps, variance="learned",
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    torch.testing.assert_close(out, x_0.expand_as(out), atol=1e-9, rtol=0)


def test_respaced_ddpm_runs_the_respaced_chain():
    """K steps: the model sees the kept original timesteps, the learned variance interpolates
    the respaced β'; with all T steps the result is plain DDPM, bit for bit."""
    from ddpm.diffusion.process import respace_model

    schedule = make_schedule("linear", 200)
    seen = []

    def model(x, t):
        seen.append(int(t[0]))
        return torch.cat([0.1 * x, torch.ones_like(x)], 1)  # var_values 1: ν = 1, Σ_θ = β

    x_T = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    ours = S.sample("ddpm", model, schedule, x_T, steps=8, variance="learned", generator=gen())
    assert seen == respaced_timesteps(200, 8)[::-1]
    wrapped, respaced = respace_model(model, schedule, 8)
    ref = S.ddpm_sample(wrapped, respaced, x_T, variance="large", generator=gen())
    torch.testing.assert_close(ours, ref)
    full = S.sample("ddpm", model, schedule, x_T, steps=200, variance="small", generator=gen())
    assert torch.equal(full, S.ddpm_sample(model, schedule, x_T, variance="small", generator=gen()))
    with pytest.raises(ValueError, match="steps"):
        S.sample("ddpm", model, schedule, x_T, steps=201)


def test_a_sampler_without_steps_takes_50_or_all_of_a_shorter_schedule():
    assert S.default_steps("ddim", None, 1000) == S.DEFAULT_STEPS == 50
    assert S.default_steps("dpm-solver", None, 40) == 40  # 50 would overrun T = 40
    assert S.default_steps("heun", 20, 1000) == 20  # given steps stay as given
    assert S.default_steps("ddpm", None, 1000) is None  # ancestral: every timestep


def test_samplers_take_everything_after_x_T_by_keyword(schedule):
    """One signature: (model, schedule, x_T, *, steps, ...); a positional step count is refused."""
    model = lambda x, t: 0.1 * x  # noqa: E731
    x_T = torch.zeros(1, 1, 2, 2)
    samplers = (S.ddim_sample, S.dpm_solver_sample, S.heun_sample, S.ddpm_sample)
    for fn in (*samplers, S.unipc_sample, S.ipndm_sample):
        with pytest.raises(TypeError):
            fn(model, schedule, x_T, 5)
    with pytest.raises(TypeError):
        S.sample("ddim", model, schedule, x_T, 5)


def test_ddpm_sample_with_steps_is_the_respaced_chain_of_the_dispatcher():
    schedule = make_schedule("linear", 60)
    model = lambda x, t: 0.2 * x  # noqa: E731
    x_T = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    ours = S.ddpm_sample(model, schedule, x_T, steps=6, variance="large", generator=gen())
    ref = S.sample("ddpm", model, schedule, x_T, steps=6, variance="large", generator=gen())
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("sampler", ["unipc", "ipndm"])
@pytest.mark.parametrize("spacing", ["edm", "logsnr", "trailing"])
@pytest.mark.parametrize("steps", [1, 2, 5, 25])
def test_unipc_and_ipndm_recover_x0_from_an_oracle(schedule, sampler, spacing, steps):
    """For a point mass x̂_0 is the same everywhere and eps constant along the ODE's path, so
    every multistep update (UniPC's extrapolated x̂_0s, iPNDM's eps) is exact."""
    x_0 = torch.rand(1, 1, 4, 4, dtype=torch.float64) * 2 - 1
    x_T = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    model = oracle_for(schedule, x_0)
    out = S.sample(sampler, model, schedule, x_T, steps=steps, spacing=spacing)
    torch.testing.assert_close(out, x_0.expand_as(out), atol=1e-9, rtol=0)


@pytest.mark.parametrize("sampler", [s for s in S.SAMPLERS if s != "ddpm"])
@pytest.mark.parametrize("steps", [1, 5, 12])
def test_network_evaluations_counts_the_calls_each_sampler_makes(schedule, sampler, steps):
    calls = []

    def model(x, t):
        calls.append(t)
        return 0.1 * x

    seen = []
    x_T = torch.randn(2, 1, 2, 2, dtype=torch.float64)
    S.sample(sampler, model, schedule, x_T, steps=steps, callback=lambda *a: seen.append(a))
    assert len(calls) == S.network_evaluations(sampler, steps, schedule.T)
    assert len(seen) == steps  # the callback sees each step once


def test_ipndm_of_order_1_is_ddim_and_unipc_takes_only_orders_up_to_3(schedule):
    """dx̃/dσ = eps with Euler's step is DDIM (eta 0) on the same timesteps."""
    model = lambda x, t: 0.3 * x + 0.001 * t.view(-1, 1, 1, 1)  # noqa: E731
    x_T = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    euler = S.ipndm_sample(model, schedule, x_T, steps=8, spacing="leading", order=1)
    ddim = S.ddim_sample(model, schedule, x_T, steps=8, spacing="leading")
    torch.testing.assert_close(euler, ddim)
    with pytest.raises(ValueError, match="order"):
        S.unipc_sample(model, schedule, x_T, steps=8, order=4)


@pytest.mark.usefixtures("tiny_preset")
def test_ddpm_sample_runs_the_new_samplers_and_grids(tmp_path, capsys):
    from ddpm.cli import main
    from ddpm.data.images import ImageDataset
    from ddpm.train import TrainConfig, train

    run = str(tmp_path / "run")
    cfg = TrainConfig(preset="tiny", T=20, steps=1, batch_size=2, out=run, num_samples=2)
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    ckpt = str(train(cfg, data=ImageDataset(images), progress=False).last_checkpoint)
    for sampler, spacing in (("unipc", "edm"), ("ipndm", "logsnr")):
        out = tmp_path / f"{sampler}-{spacing}.png"
        argv = ["sample", "--checkpoint", ckpt, "--n", "2", "--sampler", sampler]
        assert main([*argv, "--steps", "5", "--spacing", spacing, "--out", str(out)]) == 0
        assert out.exists() and f"({sampler}, 5 steps ({spacing}))" in capsys.readouterr().out
