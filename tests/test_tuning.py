"""Tuned time grids (`ddpm.sampling.tuning`, `ddpm tune-steps`, `--spacing tuned`): the dynamic
programme finds the cheapest path, a tuned grid lands nearer the exact ODE solution than the
fixed grids on Gaussian data, and the grid travels beside its checkpoint."""

import itertools
import json
import math

import pytest
import torch

from conftest import run
from ddpm.sampling import noise as N
from ddpm.sampling import samplers as S
from ddpm.sampling.generate import generate
from ddpm.sampling.loaded import load_model
from ddpm.sampling.tuning import cheapest_path, end_error, tune_grid
from test_editing import C, gaussian
from test_usability import tiny_run  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("tiny_preset")


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_the_cheapest_path_is_the_brute_force_minimum(steps):
    M = 7
    g = torch.Generator().manual_seed(steps)
    cost = torch.rand(M, M + 1, generator=g, dtype=torch.float64)
    cost = torch.where(torch.arange(M + 1)[None, :] > torch.arange(M)[:, None], cost, math.inf)

    def total(path):
        return sum(float(cost[a, b]) for a, b in zip(path, [*path[1:], M]))

    brute = min(total((0, *c)) for c in itertools.combinations(range(1, M), steps - 1))
    path = cheapest_path(cost, steps)
    assert path[0] == 0 and len(path) == steps and path == sorted(set(path))
    assert total(path) == pytest.approx(brute)


@pytest.mark.parametrize("steps", [4, 8])
def test_a_tuned_grid_lands_nearer_the_exact_solution_than_the_fixed_grids(steps):
    loaded = gaussian(shape=(1, 4, 4), T=1000)
    tuned = tune_grid(loaded, steps, candidates=60, n=32)
    ref = tuned.reference
    assert tuned.grid[0] == 999 and len(tuned.grid) == steps
    assert all(a > b for a, b in zip(tuned.grid, tuned.grid[1:]))
    # the reference is the exact solution, x_T scaled to the data's N(0, C²) along the ODE,
    # where images are not clipped to [-1, 1]
    a_top = float(loaded.schedule.alphas_cumprod[999])
    sigma_top = math.sqrt((1 - a_top) / a_top)
    exact = ref.xs[0] / math.sqrt(a_top) * C / math.sqrt(C**2 + sigma_top**2)
    inside = exact.abs() < 0.9
    assert (ref.end - exact)[inside].abs().max() < 1e-3
    fixed = {
        sp: end_error(loaded, ref, "ddim", steps, sp)
        for sp in ("leading", "trailing", "edm", "logsnr")
    }
    assert end_error(loaded, ref, "ddim", steps, tuned.grid) < min(fixed.values())


def test_tune_steps_keeps_the_grid_beside_the_checkpoint_for_spacing_tuned(tiny_run, capsys):  # noqa: F811
    code, out, _ = run(capsys, ["tune-steps", "--checkpoint", str(tiny_run), "--nfe", "4",
                                "--candidates", "12", "--n", "4"])  # fmt: skip
    assert code == 0, out
    kept = tiny_run / "ckpt-0000000.tuned-steps.json"
    grid = json.loads(kept.read_text())["grids"]["4"]
    assert "ipndm" in out and str(grid) in out
    loaded = load_model(tiny_run)
    assert loaded.tuned == {4: tuple(grid)}
    # --spacing tuned samples on exactly those timesteps, with any sampler
    seen = []
    for sampler in ("ddim", "dpm-solver", "ipndm"):
        x = generate(loaded, 2, sampler=sampler, steps=4, spacing="tuned", eta=0.0)
        y = S.sample(sampler, loaded.eps_given(None, 0.0), loaded.schedule,
                     N.per_sample_noise(loaded.shape, N.sample_generators(0, range(2), "cpu"),
                                        "cpu"), steps=4, spacing=grid, clip=True)  # fmt: skip
        torch.testing.assert_close(x, y)
        seen.append(x)
    # the one grid is the default number of steps; another number is refused in one line
    assert generate(loaded, 2, steps=None, spacing="tuned").shape == (2, 1, 8, 8)
    code, _, err = run(capsys, ["sample", "--checkpoint", str(tiny_run), "--spacing", "tuned",
                                "--steps", "5", "--out", "x.png"])  # fmt: skip
    assert code != 0 and "no grid of 5 steps" in err and "tune-steps" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--nfe", "21"], "--nfe 21 exceeds the model's T = 20"),
        (["--nfe", "8", "--candidates", "5"], "--nfe 8 exceeds --candidates 5"),
    ],
)
def test_tune_steps_refuses_impossible_grids_before_any_work(tiny_run, capsys, flags, message):  # noqa: F811
    code, _, err = run(capsys, ["tune-steps", "--checkpoint", str(tiny_run), *flags])
    assert code != 0 and message in err
    assert not list(tiny_run.glob("*.json"))


def test_a_damaged_grid_file_is_named_and_ddpm_sampling_refuses_tuned(tiny_run, capsys):  # noqa: F811
    (tiny_run / "ckpt-0000000.tuned-steps.json").write_text("{not json")
    code, _, err = run(capsys, ["tune-steps", "--checkpoint", str(tiny_run), "--nfe", "2"])
    assert code != 0 and "ckpt-0000000.tuned-steps.json: not a file of tuned grids" in err
    (tiny_run / "ckpt-0000000.tuned-steps.json").unlink()
    code, _, err = run(capsys, ["sample", "--checkpoint", str(tiny_run), "--sampler", "ddpm",
                                "--spacing", "tuned", "--out", "x.png"])  # fmt: skip
    assert code != 0 and "--spacing applies to every sampler but ddpm" in err


def test_inpainting_follows_a_tuned_grid_and_sdedit_refuses_one():
    import dataclasses

    from ddpm.errors import ConfigError
    from ddpm.sampling import editing as E

    loaded = gaussian(shape=(1, 4, 4), T=100)
    grid = (99, 60, 30, 5)
    tuned = dataclasses.replace(loaded, tuned={4: grid})
    x = torch.zeros(2, 1, 4, 4)
    keep = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    keep[..., :2] = True
    seen = []
    model = tuned.model
    model.eps = lambda x_t, t, f=model.eps: (seen.append(int(t[0])), f(x_t, t))[1]
    E.inpaint(tuned, x, keep, sampler="ddim", steps=4, spacing="tuned", method="replace")
    assert seen == list(grid)
    with pytest.raises(ConfigError, match="--spacing tuned is a grid for the whole chain"):
        E.sdedit(tuned, x, 0.5, sampler="ddim", steps=4, spacing="tuned")
