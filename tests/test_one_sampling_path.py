"""One description of how to sample (`ddpm.sampling.spec.SamplingSpec`), one code path:
`ddpm sample` writes the very images `ddpm eval` scores, for every sampler, with and without
classifier-free guidance, autoguidance (a guide checkpoint, or the model's own extra EMA) and a
guidance interval; the library call, the denoising chain and the training grid draw them too."""

import numpy as np
import pytest
import torch
from PIL import Image

import ddpm
from conftest import tiny_config
from ddpm.cli import main
from ddpm.eval import evaluate
from ddpm.sampling.generate import chain_snapshots, generate
from ddpm.sampling.loaded import load_model, with_guidance
from ddpm.sampling.samplers import SAMPLERS
from ddpm.sampling.spec import SamplingSpec
from ddpm.train import grid_spec, train
from test_conditioning import two_colours
from test_evaluate import FakeInception, image_folder

pytestmark = pytest.mark.usefixtures("tiny_preset")

N = 4  # images per case: one batch of eval's and of sample's


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny runs, each with checkpoints at steps 10 and 20 and an extra EMA of 0.2: an
    unconditional one (the 10-step checkpoint guides the 20-step one) and a conditional one."""
    mp = pytest.MonkeyPatch()
    from conftest import PRESETS, TINY_UNET, ModelSpec

    mp.setitem(PRESETS, "tiny", ModelSpec("unet", dict(TINY_UNET), (8, 8)))
    root = tmp_path_factory.mktemp("runs")
    uncond = train(tiny_config(root / "u", ema_extra=(0.2,)), data=two_colours(), progress=False)
    cfg = tiny_config(root / "c", ema_extra=(0.2,), class_cond=True)
    cond = train(cfg, data=two_colours(), progress=False)
    mp.undo()
    return {"uncond": uncond.out, "cond": cond.out}


@pytest.fixture
def stats(tmp_path, monkeypatch):
    """A fake Inception network that records the uint8 images eval feeds it, and statistics."""
    monkeypatch.setattr(evaluate, "FEATURE_DIM", 16)
    monkeypatch.setattr(evaluate, "load_inception", lambda path=None, device="cpu": FakeInception())
    monkeypatch.setattr(evaluate, "find_inception", lambda path=None: "fake-inception.pt")
    path = tmp_path / "ref.npz"
    assert main(["fid-stats", str(image_folder(tmp_path / "ref", 8, 0)), "-o", str(path)]) == 0
    return path


def scored_images(monkeypatch) -> list[torch.Tensor]:
    """The uint8 batches `ddpm eval` passes on to the Inception network, as they come."""
    seen: list[torch.Tensor] = []
    real = evaluate.features

    def recording(net, images, device):
        seen.append(images.cpu().clone())
        return real(net, images, device)

    monkeypatch.setattr(evaluate, "features", recording)
    return seen


def folder_images(folder, n: int) -> torch.Tensor:
    arrays = [np.asarray(Image.open(folder / f"{i:06d}.png").convert("RGB")) for i in range(n)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def guidance_cases(kind: str, sampler: str, guide: str) -> dict[str, list[str]]:
    """The ways to guide, by flags. Every sampler with a guide and an interval; DDIM, the
    default, with every way (autoguidance by a checkpoint or by the model's own EMA, with and
    without an interval; classifier-free on a conditional model)."""
    auto = ["--guidance", "1.5", "--guide-model", guide]
    cases = {"unguided": [], "guide + interval": [*auto, "--guidance-interval", "0.3,8"]}
    if sampler == "ddim":
        cases |= {"guide model": auto, "guide EMA": ["--guidance", "1.5", "--guide-ema", "0.2"]}
    if kind == "cond":
        cases |= {
            "classifier-free": ["--guidance", "1.5"],
            "classifier-free + interval": ["--guidance", "1.5", "--guidance-interval", "0.3,8"],
        }
    return cases


PAIRS = [("uncond", s) for s in SAMPLERS] + [("cond", "ddim"), ("cond", "dpm-solver-3m")]


@pytest.mark.parametrize(("kind", "sampler"), PAIRS)
def test_sample_writes_the_images_eval_scores(runs, stats, tmp_path, monkeypatch, kind, sampler):
    run = runs[kind]
    ckpt, guide = str(run / "ckpt-0000020.pt"), str(run / "ckpt-0000010.pt")
    cases = guidance_cases(kind, sampler, guide)
    seen = scored_images(monkeypatch)
    common = ["--checkpoint", ckpt, "--sampler", sampler, "--steps", "5", "--seed", "3"]
    common += ["--batch-size", str(N), "--n", str(N), "--quiet"]
    written = {}
    for name, flags in cases.items():
        folder = tmp_path / name.replace(" ", "-")
        out = ["--folder", str(folder), "--out", str(tmp_path / "grid.png")]
        assert main(["sample", *common, *flags, *out]) == 0, name
        seen.clear()
        assert main(["eval", *common, *flags, "--fid-stats", str(stats)]) == 0, name
        scored = torch.cat(seen)
        written[name] = folder_images(folder, N)
        if scored.shape[1] == 1:
            scored = scored.expand(-1, 3, -1, -1)
        assert torch.equal(written[name], scored), f"{sampler}, {name}: sample and eval differ"
    for name in cases:
        if name != "unguided":  # the guide is used, not only named in the summary line
            assert not torch.equal(written[name], written["unguided"]), f"{sampler}, {name}"


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_library_the_chain_and_the_grid_draw_the_same_images(runs, sampler):
    run = runs["uncond"]
    guided = with_guidance(
        load_model(run / "ckpt-0000020.pt"), load_model(run / "ckpt-0000010.pt"), (0.3, 8.0)
    )
    spec = SamplingSpec(sampler, 5, eta=1.0, guidance=1.5, seed=7, batch_size=8)
    x = generate(guided, 3, spec)
    # the library call (it picks the thread count, so equal up to float rounding)
    torch.testing.assert_close(ddpm.sample(guided, 3, spec), x, atol=1e-4, rtol=0)
    assert torch.equal(chain_snapshots(guided, 3, spec)[1][-1], x)  # the chain's last frame
    assert not torch.equal(generate(guided, 3, spec.replace(guidance=0.0)), x)


def test_the_training_grid_is_what_sample_draws_with_the_runs_flags(tmp_path, blobs, capsys):
    cfg = tiny_config(tmp_path, steps=10, sample_every=10, sample_steps=6, sample_eta=1.0)
    result = train(cfg, data=blobs, progress=False)
    spec = grid_spec(cfg, cfg.T)
    assert result.last_grid == spec.replace(batch_size=cfg.num_samples)
    grid = np.asarray(Image.open(result.out / "samples" / "step-0000010.png"))
    out = tmp_path / "again.png"
    argv = ["sample", "--checkpoint", str(result.last_checkpoint), "--n", str(cfg.num_samples)]
    argv += ["--steps", "6", "--eta", "1", "--seed", str(cfg.seed), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    enlarged = np.asarray(Image.open(out))  # sample's grid is shown twice as large
    assert np.array_equal(enlarged[::2, ::2], grid)


def test_a_spec_names_the_field_it_refuses():
    with pytest.raises(ValueError, match="sampler must be one of"):
        SamplingSpec("euler")
    with pytest.raises(ValueError, match="steps must be at least 1"):
        SamplingSpec(steps=0)
    with pytest.raises(ValueError, match="classes must be one of"):
        SamplingSpec(classes="all")


def specs_drawn(monkeypatch) -> list[SamplingSpec]:
    """Every spec a batch or a chain is drawn with, from here on."""
    from ddpm.sampling import generate as gen

    seen: list[SamplingSpec] = []
    real = gen.run_sampler

    def recording(loaded, spec, *args, **kwargs):
        seen.append(spec)
        return real(loaded, spec, *args, **kwargs)

    monkeypatch.setattr(gen, "run_sampler", recording)
    return seen


@pytest.mark.parametrize("kind", ["images", "points"])
def test_the_chain_pictures_draw_with_every_sampling_flag(runs, tmp_path, monkeypatch, kind):
    """`--process` / `--gif` once dropped --spacing (images) and --guidance, --eta, --spacing
    and --variance (points): the chain is drawn with the very spec of the samples."""
    if kind == "images":
        run, out = runs["uncond"], tmp_path / "grid.png"
    else:
        from ddpm.models.presets import PRESETS, ModelSpec

        monkeypatch.setitem(PRESETS, "mlp", ModelSpec("mlp", {"width": 32, "num_blocks": 1}))
        run, out = tmp_path / "points", tmp_path / "points.png"
        argv = ["train", "--data", "toy:moons", "--steps", "20", "--T", "50", "--quiet"]
        argv += ["--no-final-pictures", "--sample-every", "1000"]
        assert main([*argv, "--checkpoint-every", "10", "--out", str(run)]) == 0
    seen = specs_drawn(monkeypatch)
    argv = ["sample", "--checkpoint", str(run / "ckpt-0000020.pt"), "--n", "4", "--quiet"]
    argv += ["--sampler", "ddim", "--steps", "5", "--eta", "0.5", "--spacing", "trailing"]
    argv += ["--guidance", "1.5", "--guide-model", str(run / "ckpt-0000010.pt"), "--seed", "2"]
    assert main([*argv, "--out", str(out), "--gif", str(tmp_path / "chain.gif")]) == 0
    assert len(seen) >= 2 and all(s == seen[0] for s in seen), seen  # the samples, the chain
    assert (seen[0].eta, seen[0].spacing, seen[0].guidance, seen[0].seed) == (
        0.5,
        "trailing",
        1.5,
        2,
    )
    assert (tmp_path / "chain.png").is_file()  # --gif alone writes the picture beside it
