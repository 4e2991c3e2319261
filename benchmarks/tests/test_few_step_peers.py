"""benchmarks/few_step_peers.py: on one tiny diffusers pipeline folder, diffusers'
DPM-Solver++(2M)/(3M) on its "trailing" timesteps and ours on our `trailing` grid draw the
same images from the same noise (so the benchmark compares samplers, not noise or weights);
every diffusers scheduler it runs makes exactly NFE UNet calls, and a wrong count is an error;
and the script runs end to end (fake Inception network, fake statistics) to a JSON file with
a row per (side, sampler, spacing) and an FID per NFE."""

import json
import math

import numpy as np
import pytest
import torch

from conftest import TINY_UNET2D, load_benchmark

diffusers = pytest.importorskip("diffusers")
from ddpm.eval import evaluate  # noqa: E402
from ddpm.eval.fid import FIDStats  # noqa: E402
from ddpm.sampling.generate import generate  # noqa: E402
from ddpm.sampling.loaded import load_model  # noqa: E402
from ddpm.sampling.noise import per_sample_noise, sample_generators  # noqa: E402
from ddpm.sampling.spec import SamplingSpec  # noqa: E402
from test_evaluate import FakeInception  # noqa: E402

T = 50  # few timesteps: every grid point is a distinct integer timestep, and sampling is fast


fsp = load_benchmark("few_step_peers")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A random tiny UNet2DModel saved as a DDPMPipeline (T = 50, linear betas up to 0.2, so
    that x_T is nearly pure noise), with a tuned grid of 3 steps beside it."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(in_channels=3, out_channels=3, **TINY_UNET2D).eval()
    path = tmp_path_factory.mktemp("pipe") / "tiny-diffusers"
    sched = diffusers.DDPMScheduler(num_train_timesteps=T, beta_end=0.2)
    diffusers.DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(path)
    (path / "tuned-steps.json").write_text(json.dumps({"grids": {"3": [49, 20, 4]}}))
    return path


def peer(folder):
    unet = diffusers.UNet2DModel.from_pretrained(folder, subfolder="unet").eval()
    config = diffusers.DDPMScheduler.from_pretrained(folder, subfolder="scheduler").config
    return unet, config


def noise(n: int, shape) -> torch.Tensor:
    return per_sample_noise(shape, sample_generators(0, range(n), "cpu"), "cpu")


@pytest.mark.parametrize("nfe", [3, 5, 10, 20])
@pytest.mark.parametrize(("ours", "theirs"), [("dpm-solver", "2M"), ("dpm-solver-3m", "3M")])
def test_diffusers_dpm_solver_pp_on_trailing_steps_is_ours(folder, nfe, ours, theirs):
    # The same algorithm with diffusers' defaults: "trailing" gives our trailing timesteps
    # (round(T - i T/K) - 1); diffusers' last update is first order and goes to σ = 0
    # (`final_sigmas_type="zero"`, at any number of steps), where it returns the last data
    # prediction, as ours does; below 15 steps (`lower_order_final`) 3M's second-to-last
    # update is second order in both, from 15 on third order in both. The one option that
    # must differ from our default is the clipping of x̂_0 at every step, which `ddpm eval`
    # (and so the benchmark) keeps on and diffusers does not do (`thresholding` is another
    # rule): with clip off the two agree to float32 rounding (measured: at most 3e-5 on
    # samples of magnitude ~57, this random network's x̂_0, so ~5e-7 relative; the bound is
    # 1e-5 relative).
    loaded = load_model(folder, "cpu")
    unet, config = peer(folder)
    sched = fsp.peer_scheduler(diffusers, config, f"dpm-solver++ {theirs}", "trailing")
    sched.set_timesteps(nfe)
    spec = SamplingSpec(sampler=ours, steps=nfe, spacing="trailing", clip=False, batch_size=4)
    assert sched.timesteps.tolist() == [round(T - i * T / nfe) - 1 for i in range(nfe)]

    ours_x = generate(loaded, 4, spec)
    theirs_x = fsp.peer_sample(unet, sched, noise(4, loaded.shape), nfe)
    torch.testing.assert_close(theirs_x, ours_x, atol=1e-5 * float(ours_x.abs().max()), rtol=0)
    # clipping x̂_0 at every step (our default) is another sampler, not just a final clamp
    clipped = generate(loaded, 4, spec.replace(clip=True))
    assert (clipped - theirs_x.clamp(-1, 1)).abs().max() > 0.1


@pytest.mark.parametrize("nfe", [1, 2, 3, 7])
def test_every_diffusers_scheduler_makes_nfe_unet_calls(folder, nfe):
    unet, config = peer(folder)
    calls = []
    unet.register_forward_pre_hook(lambda *_: calls.append(1))
    x_T = noise(2, (3, 8, 8))
    for name, (_, _, spacings) in fsp.PEERS.items():
        for spacing in spacings:
            calls.clear()
            sched = fsp.peer_scheduler(diffusers, config, name, spacing)
            x = fsp.peer_sample(unet, sched, x_T, nfe)
            assert len(calls) == nfe, (name, spacing)
            assert x.shape == x_T.shape and torch.isfinite(x).all()


def test_a_scheduler_that_calls_the_unet_more_often_is_reported(folder):
    unet, config = peer(folder)
    sched = fsp.peer_scheduler(diffusers, config, "dpm-solver++ 2M", "trailing")
    real = sched.set_timesteps

    def one_more(k, device=None):  # as a scheduler that adds a step of its own would
        real(k + 1, device=device)

    sched.set_timesteps = one_more
    with pytest.raises(AssertionError, match="made 4 UNet calls for NFE 3"):
        fsp.peer_sample(unet, sched, noise(1, (3, 8, 8)), 3)


def test_the_script_writes_a_row_per_solver_and_an_fid_per_nfe(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "FEATURE_DIM", 16)
    monkeypatch.setattr(fsp, "load_inception", lambda path, device: FakeInception().to(device))
    g = np.random.default_rng(0)
    feats = g.normal(size=(64, 16))
    stats = tmp_path / "ref.npz"
    evaluate.save_stats(FIDStats(feats.mean(0), np.cov(feats, rowvar=False), 64), stats)
    out = tmp_path / "out" / "peers.json"
    argv = ["--model", str(folder), "--stats", str(stats), "--n", "20", "--nfe", "3,2"]
    fsp.main([*argv, "--batch-size", "8", "--json", str(out), "--device", "cpu", "--no-clip"])

    result = json.loads(out.read_text())
    assert (result["n"], result["seed"], result["nfe"], result["device"]) == (20, 0, [2, 3], "cpu")
    assert result["diffusers"] == diffusers.__version__ and result["torch"] == torch.__version__
    rows = {(r["side"], r["sampler"], r["spacing"]): r for r in result["rows"]}
    assert len(rows) == len(result["rows"])  # one row per (side, sampler, spacing)
    ours = {(s, fsp.DEFAULT_SPACING[s]) for s in fsp.OURS} | {(s, "tuned") for s in fsp.OURS}
    theirs = {(n, s) for n, (_, _, spacings) in fsp.PEERS.items() for s in spacings}
    assert set(rows) == {("ours", *k) for k in ours} | {("diffusers", *k) for k in theirs}
    for (_, _, spacing), row in rows.items():  # tuned: only the NFE a grid was tuned for
        assert set(row["fid"]) == ({"3"} if spacing == "tuned" else {"2", "3"})
        assert all(math.isfinite(f) and f >= 0 for f in row["fid"].values())
    assert [b["nfe"] for b in result["best"]] == [2, 3]
    for b in result["best"]:
        assert b["ratio"] == pytest.approx(b["ours"] / b["diffusers"])
    # the same algorithm from the same noise, scored by the same code, has the same FID
    for mine, peers in [("dpm-solver", "dpm-solver++ 2M"), ("dpm-solver-3m", "dpm-solver++ 3M")]:
        a = rows["ours", mine, "trailing"]["fid"]
        b = rows["diffusers", peers, "trailing"]["fid"]
        assert a == pytest.approx(b, rel=1e-3)


def test_our_rows_follow_our_spacings_grid_by_grid():
    """Each sampler's own grid, then the ones named; a grid named twice is one row, and the
    tuned grid only at the NFEs it was tuned for; an unknown name is a one-line error."""
    loaded = type("Loaded", (), {"tuned": {5: [9, 5, 2, 1, 0]}})()
    spacings = ["default", "trailing", "edm", "tuned"]
    cases = fsp.our_cases(loaded, [5, 10], ["unipc", "ipndm"], spacings)
    assert cases == [
        ("unipc", "logsnr", [5, 10]), ("ipndm", "trailing", [5, 10]),
        ("unipc", "trailing", [5, 10]),
        ("unipc", "edm", [5, 10]), ("ipndm", "edm", [5, 10]),
        ("unipc", "tuned", [5]), ("ipndm", "tuned", [5]),
    ]  # fmt: skip
    with pytest.raises(SystemExit):
        fsp.parse_args(["--model", "m", "--stats", "s", "--our-spacings", "default,even"])
