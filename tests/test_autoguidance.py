"""Autoguidance (a model guided by a weaker one) and limited guidance intervals: the guided
prediction, where it applies, what it costs in network evaluations, and the flags."""

import json

import pytest
import torch

from conftest import TINY_UNET, tiny_config
from ddpm.cli import main
from ddpm.diffusion.schedule import make_schedule
from ddpm.errors import ConfigError
from ddpm.eval.evaluate import load_stats, model_fid
from ddpm.models.unet import UNet, UNetConfig
from ddpm.sampling.generate import evaluations, generate
from ddpm.sampling.guidance import autoguided, interval_timesteps, limited
from ddpm.sampling.loaded import load_model, with_guidance
from ddpm.sampling.spec import SamplingSpec
from ddpm.train import train
from test_conditioning import error_line, randomised
from test_evaluate import FakeInception, image_folder

pytestmark = pytest.mark.usefixtures("tiny_preset")


@pytest.fixture
def run(tmp_path, blobs):
    """A tiny unconditional run: checkpoints at steps 10 and 20, an extra EMA of 0.2."""
    train(tiny_config(tmp_path, ema_extra=(0.2,)), data=blobs, progress=False)
    return tmp_path / "run"


def test_autoguidance_is_the_stated_combination_and_keeps_the_main_variance():
    main_net = randomised(UNet(UNetConfig(in_channels=2, learn_sigma=True, **TINY_UNET)))
    guide_net = randomised(UNet(UNetConfig(in_channels=2, learn_sigma=True, **TINY_UNET)))
    with torch.no_grad():  # a second randomisation would repeat the first: perturb the guide
        for p in guide_net.parameters():
            p.mul_(0.7)
    x, t = torch.randn(3, 2, 8, 8), torch.tensor([4, 40, 90])
    with torch.no_grad():
        a, b = main_net(x, t), guide_net(x, t)
        assert not torch.allclose(a, b)
        for w in (0.5, 2.0):
            out = autoguided(main_net, guide_net, w, channels=2)(x, t)
            torch.testing.assert_close(out[:, :2], a[:, :2] + w * (a[:, :2] - b[:, :2]))
            assert torch.equal(out[:, 2:], a[:, 2:])  # the variance channels: the main model's


def test_an_interval_holds_the_timesteps_of_its_noise_levels():
    abar = make_schedule("linear", 1000).alphas_cumprod
    sigma = ((1 - abar) / abar).sqrt()
    inside = interval_timesteps(abar, 0.28, 5.42)
    assert 0 < inside.start < inside.stop < 1000
    for t in range(1000):
        assert (t in inside) == (0.28 < float(sigma[t]) <= 5.42), t
    assert interval_timesteps(abar, 1e4, 2e4) == range(0)  # past the schedule's largest sigma
    with pytest.raises(ConfigError, match="low < high"):
        interval_timesteps(abar, 2.0, 1.0)


def test_a_limited_interval_guides_inside_and_runs_the_model_alone_outside():
    which = []
    strong = lambda x, t: which.append("guided") or x + 1  # noqa: E731
    plain = lambda x, t: which.append("plain") or x  # noqa: E731
    model = limited(strong, plain, range(10, 20))
    for step in (5, 10, 19, 20):
        model(torch.zeros(2), torch.full((2,), step))
    assert which == ["plain", "guided", "guided", "plain"]


def test_a_model_guided_by_itself_samples_as_it_does_alone(run):
    loaded = load_model(run / "ckpt-0000020.pt")
    alone = generate(loaded, 4, seed=3, sampler="ddim", steps=6)
    selfguided = with_guidance(loaded, load_model(run / "ckpt-0000020.pt"))
    # (1 + w) eps - w eps = eps, up to rounding
    torch.testing.assert_close(
        generate(selfguided, 4, seed=3, sampler="ddim", steps=6, guidance=2.0), alone
    )
    weaker = with_guidance(loaded, load_model(run / "ckpt-0000010.pt"))
    assert not torch.allclose(
        generate(weaker, 4, seed=3, sampler="ddim", steps=6, guidance=2.0), alone, atol=1e-3
    )
    assert torch.equal(generate(weaker, 4, seed=3, sampler="ddim", steps=6, guidance=0.0), alone)


@pytest.mark.parametrize("sampler", ["ddim", "dpm-solver", "heun", "ddpm"])
def test_evaluations_count_the_networks_calls(run, sampler):
    loaded = with_guidance(
        load_model(run / "ckpt-0000020.pt"), load_model(run / "ckpt-0000010.pt"), (0.5, 3.0)
    )
    images = []
    for net in (loaded.model, loaded.guide.model):
        net.register_forward_pre_hook(lambda m, args: images.append(args[0].shape[0]))
    steps = 8 if sampler != "ddpm" else 12
    generate(loaded, 2, sampler=sampler, steps=steps, guidance=1.0)
    counted = evaluations(loaded, sampler=sampler, steps=steps, guidance=1.0)
    assert sum(images) == 2 * counted  # two images, each through `counted` evaluations
    assert steps < counted < 2 * steps + (sampler == "heun") * steps  # some steps guided
    unlimited = with_guidance(loaded, loaded.guide)
    once = evaluations(loaded, sampler=sampler, steps=steps)
    assert evaluations(unlimited, sampler=sampler, steps=steps, guidance=1.0) == 2 * once


def test_a_guide_that_does_not_fit_is_refused(run, tmp_path, blobs):
    loaded = load_model(run / "ckpt-0000020.pt")
    other = train(tiny_config(tmp_path / "other", T=50), data=blobs, progress=False)
    with pytest.raises(ConfigError, match="the guide model does not fit the model: its noise"):
        with_guidance(loaded, load_model(other.last_checkpoint))


def test_the_flags_sample_and_evaluate_as_the_library_does(run, tmp_path, capsys, monkeypatch):
    from ddpm.eval import evaluate

    monkeypatch.setattr(evaluate, "FEATURE_DIM", 16)
    monkeypatch.setattr(evaluate, "load_inception", lambda path=None, device="cpu": FakeInception())
    monkeypatch.setattr(evaluate, "find_inception", lambda path=None: "fake-inception.pt")
    stats = tmp_path / "ref.npz"
    assert main(["fid-stats", str(image_folder(tmp_path / "ref", 8, 0)), "-o", str(stats)]) == 0
    ckpt, guide = str(run / "ckpt-0000020.pt"), str(run / "ckpt-0000010.pt")
    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", ckpt, "--fid-stats", str(stats), "--n", "6", "--steps", "5"]
    argv += ["--guidance", "1.5", "--guide-model", guide, "--guidance-interval", "0.3,8"]
    assert main([*argv, "--json", str(out), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert f"autoguidance w=1.5 by {guide}, guided only at sigma in (0.3, 8]" in said
    record = json.loads(out.read_text())["fid"]
    assert (record["guide_model"], record["guidance_interval"]) == (guide, [0.3, 8.0])
    loaded = with_guidance(load_model(ckpt), load_model(guide), (0.3, 8.0))
    # the guide runs only inside the interval
    nfe = evaluations(loaded, sampler="ddim", steps=5, guidance=1.5)
    assert record["nfe"] == nfe and 5 < nfe < 10 and f"{nfe} network evaluations" in said
    r = model_fid(loaded, load_stats(stats), FakeInception(), 6, SamplingSpec("ddim", 5))
    unguided = json.loads(out.read_text())["fid"]["fid"]
    assert r.fid != pytest.approx(unguided)  # the settings' w = 0: the model alone
    settings = SamplingSpec("ddim", 5, guidance=1.5)
    r = model_fid(loaded, load_stats(stats), FakeInception(), 6, settings)
    assert unguided == pytest.approx(r.fid, rel=1e-6)
    unguidable = ["eval", "--checkpoint", ckpt, "--fid-stats", str(stats), "--guidance", "1"]
    assert main(unguidable) == 2
    assert "needs a class-conditional model (trained with --class-cond) or a guide" in (
        error_line(capsys)
    )

    grid = str(tmp_path / "g.png")
    base = ["sample", "--checkpoint", ckpt, "--n", "4", "--steps", "4", "--out", grid]
    assert main([*base, "--guidance", "1", "--guide-ema", "0.2"]) == 0  # its own 0.2 EMA
    assert f"autoguidance w=1 by {ckpt} (EMA 0.2)" in capsys.readouterr().out
    assert main([*base, "--guide-model", guide]) == 2
    assert "--guide-model / --guide-ema acts through the guidance weight" in error_line(capsys)
    assert main([*base, "--guidance", "1"]) == 2  # one refusal for sample and eval
    assert "needs a class-conditional model (trained with --class-cond) or a guide" in (
        error_line(capsys)
    )
    with pytest.raises(SystemExit) as exit:  # a bad flag value: argparse's two-line error
        main([*base, "--guidance", "1", "--guidance-interval", "3,1"])
    assert exit.value.code == 2
    assert "--guidance-interval: expected LOW,HIGH with 0 <= LOW < HIGH" in capsys.readouterr().err
