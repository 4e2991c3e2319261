"""benchmarks/solver_error.py: its iPNDM with the grid's own weights and our `ipndm_sample`
(equal-step weights on every grid) draw the same result where the grid is even in σ and
different ones where it is not; and the script runs end to end on a tiny trained model to one
finite table row per (grid, steps)."""

import math

import pytest
import torch

from conftest import load_benchmark, tiny_config
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.sampling import samplers as S
from ddpm.train.loop import train
from test_solvers import gaussian_eps

se = load_benchmark("solver_error")


def even_sigma_schedule(T: int = 100) -> NoiseSchedule:
    """σ_t = √((1 - ᾱ_t)/ᾱ_t) = 0.2 (t + 1): trailing timesteps of a divisor of T are even in σ."""
    sigma = 0.2 * torch.arange(1, T + 1, dtype=torch.float64)
    abar = 1 / (1 + sigma**2)
    return NoiseSchedule.from_betas(1 - abar / torch.cat([abar.new_ones(1), abar[:-1]]))


def test_grid_weights_ipndm_is_ours_on_an_even_grid_and_not_on_edms():
    schedule = even_sigma_schedule()
    x_T = torch.randn(8, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eps = gaussian_eps(schedule)
    ts = S.timesteps_for(schedule, 10, "trailing")
    gaps = {round(float(schedule.sigmas[a] - schedule.sigmas[b]), 9) for a, b in zip(ts, ts[1:])}
    assert len(gaps) == 1  # the grid is even in σ
    for spacing, same in (("trailing", True), ("edm", False)):
        ours = S.ipndm_sample(eps, schedule, x_T, steps=10, spacing=spacing)
        reference = se.grid_weights_ipndm(eps, schedule, x_T, 10, spacing, order=3)
        assert torch.allclose(ours, reference, rtol=0, atol=1e-9) == same, spacing


def test_the_script_prints_a_finite_row_per_grid_and_steps(tmp_path, tiny_preset, blobs, capsys):
    train(tiny_config(tmp_path), data=blobs, progress=False)
    run = str(tmp_path / "run")
    se.table(run, se.load_model(run), n=4, steps=[3, 5], grids=["edm", "trailing"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[3:]]
    assert [(r[0], r[1]) for r in rows] == [("edm", "3"), ("edm", "5"), ("trailing", "3"),
                                            ("trailing", "5")]  # fmt: skip
    assert all(len(r) == 2 + len(se.SOLVERS) and all(math.isfinite(float(v)) for v in r[2:])
               for r in rows)  # fmt: skip
    # the solvers' network under bf16 autocast: another table, its header says so
    se.table(run, se.load_model(run), n=4, steps=[3], grids=["edm"], bf16=True)
    out = capsys.readouterr().out
    assert "4 samples, bf16" in out and len(out.strip().splitlines()) == 3


def test_a_missing_checkpoint_ends_the_script_in_one_line(tmp_path, monkeypatch):
    """Every script's __main__ runs through common.run_script: the library's input errors
    become one line naming the script and the file, not a traceback."""
    import common

    missing = tmp_path / "no-run"
    monkeypatch.setattr("sys.argv", ["solver_error.py", "--checkpoint", str(missing)])
    with pytest.raises(SystemExit) as e:
        common.run_script(se.main)
    assert str(e.value).startswith(f"solver_error.py: error: {missing}: no such file")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "flags, message",
    [(["--steps", "5,x"], "--steps 5,x: expected positive integers"),
     (["--grids", "even"], "--grids: unknown even"), (["--n", "0"], "must be positive")],
)  # fmt: skip
def test_bad_flags_are_refused_in_one_line_before_any_model_loads(
    flags, message, monkeypatch, capsys
):
    monkeypatch.setattr("sys.argv", ["solver_error.py", "--checkpoint", "no-run", *flags])
    with pytest.raises(SystemExit):
        se.main()
    assert message in capsys.readouterr().err
