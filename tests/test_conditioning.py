"""Class conditioning and classifier-free guidance: label dropout, the guided prediction,
class names, seeds, and a tiny model that learns which colour each class name means."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import conftest
from conftest import TINY_UNET
from ddpm.cli import main
from ddpm.data.images import ImageDataset
from ddpm.diffusion.process import eps_model
from ddpm.diffusion.schedule import make_schedule
from ddpm.errors import ConfigError
from ddpm.eval import evaluate
from ddpm.eval.evaluate import load_stats, model_fid
from ddpm.io import checkpoint as C
from ddpm.models.tutorial_unet import TutorialUNet, TutorialUNetConfig
from ddpm.models.unet import UNet, UNetConfig
from ddpm.sampling.generate import generate
from ddpm.sampling.guidance import (
    class_index,
    class_weights,
    combine,
    draw_classes,
    drop_labels,
    guided,
)
from ddpm.sampling.loaded import load_model
from ddpm.sampling.spec import SamplingSpec
from ddpm.train import StopAfter, TrainConfig, setup, train, train_step
from test_evaluate import FakeInception

pytestmark = pytest.mark.usefixtures("tiny_preset")


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Give the zero-initialised output layers weights, so that every input matters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def cond_unet(K: int = 3, learn_sigma: bool = False) -> UNet:
    config = UNetConfig(in_channels=2, num_classes=K, learn_sigma=learn_sigma, **TINY_UNET)
    return randomised(UNet(config))


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


# --- training: the null label -----------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_labels_are_dropped_at_the_given_rate(p):
    y = torch.randint(0, 7, (200_000,), generator=torch.Generator().manual_seed(0))
    out = drop_labels(y, p, 7, torch.Generator().manual_seed(1))
    dropped = out == 7
    rate = dropped.double().mean().item()
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / y.numel())  # 5 binomial sigmas
    assert torch.equal(out[~dropped], y[~dropped])  # the rest are untouched
    again = drop_labels(y, p, 7, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # drawn from the generator alone
    assert drop_labels(y, 0.0, 7, torch.Generator()) is y


def two_colours(n: int = 32, size: int = 8) -> ImageDataset:
    """n 8x8 RGB images: even ones reddish ("red", label 0), odd ones bluish ("blue", 1)."""
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 3, size, size, generator=g) * 60).to(torch.uint8)
    labels = torch.arange(n) % 2
    images[labels == 0, 0] += 190
    images[labels == 1, 2] += 190
    return ImageDataset(images, labels, ["red", "blue"], source="red and blue")


def tiny_config(tmp_path, **kw) -> TrainConfig:
    """conftest's tiny run, class-conditional: 4 steps, no checkpoint before the last."""
    cond = dict(steps=4, lr=3e-3, warmup=10, log_every=50, checkpoint_every=1000, class_cond=True)
    return conftest.tiny_config(tmp_path, **{**cond, **kw})


def test_the_train_step_feeds_null_labels_at_cond_drop(tmp_path):
    cfg = tiny_config(tmp_path, cond_drop=0.5, batch_size=32)
    _, data, _, _, state = setup(cfg, two_colours(64))
    seen = []
    forward = state.model.forward
    state.model.forward = lambda x, t, y=None: seen.append(y.clone()) or forward(x, t, y)
    schedule = make_schedule("linear", cfg.T)
    y = data.labels[:32]
    for _ in range(8):
        train_step(state, schedule, cfg, torch.zeros(32, 3, 8, 8), y, autocast=False)
    seen = torch.cat(seen)
    null = seen == 2
    assert abs(null.double().mean().item() - 0.5) < 5 * math.sqrt(0.25 / seen.numel())
    assert torch.equal(seen[~null], y.repeat(8)[~null])
    assert state.num_classes == 2 and state.class_counts == [32, 32]


def test_class_cond_needs_labels(tmp_path, blobs, capsys):
    with pytest.raises(ConfigError, match="--class-cond needs labelled data"):
        setup(tiny_config(tmp_path), blobs)
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"{i}.png")
    argv = ["train", "--data", str(folder), "--preset", "tiny", "--class-cond"]
    assert main([*argv, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "--class-cond needs labelled data" in error_line(capsys)


# --- the networks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: cond_unet(K=3),
        lambda: randomised(
            TutorialUNet(TutorialUNetConfig(in_channels=2, channels=(8, 16), num_classes=3))
        ),
    ],
    ids=["unet", "tutorial"],
)
def test_both_networks_embed_the_class_and_none_is_the_null_class(make):
    model = make()
    x, t = torch.randn(2, 2, 8, 8), torch.tensor([5, 50])
    with torch.no_grad():
        a, b = model(x, t, torch.tensor([0, 0])), model(x, t, torch.tensor([1, 1]))
        null = model(x, t, torch.tensor([3, 3]))
        assert not torch.allclose(a, b)
        assert torch.equal(model(x, t), null)  # y=None is the null class, index num_classes
    assert model.class_emb.table.num_embeddings == 4


# --- guidance -----------------------------------------------------------------------------------


def test_guidance_zero_is_the_conditional_model_and_w_is_the_stated_combination():
    net = cond_unet(K=3)
    x, t, y = torch.randn(4, 2, 8, 8), torch.tensor([1, 20, 40, 99]), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        cond, uncond = net(x, t, y), net(x, t, torch.full_like(y, 3))
        assert torch.equal(guided(net, y, 0.0, 3)(x, t), cond)
        for w in (0.5, 3.0):
            expected = cond + w * (cond - uncond)  # Ho & Salimans eq. 6
            torch.testing.assert_close(guided(net, y, w, 3)(x, t), expected)
            torch.testing.assert_close(guided(net, y, w, 3)(x, t), (1 + w) * cond - w * uncond)


def test_guidance_is_one_forward_pass_of_2b():
    net = cond_unet(K=3)
    calls = []

    def spy(x, t, y):
        calls.append((x.shape[0], y.tolist()))
        return net(x, t, y)

    y = torch.tensor([2, 0])
    with torch.no_grad():
        guided(spy, y, 1.5, 3)(torch.randn(2, 2, 8, 8), torch.tensor([3, 3]))
    assert calls == [(4, [2, 0, 3, 3])]


def test_guidance_keeps_the_conditional_variance_channels():
    net = cond_unet(K=3, learn_sigma=True)
    x, t, y = torch.randn(3, 2, 8, 8), torch.tensor([1, 2, 3]), torch.tensor([0, 1, 2])
    with torch.no_grad():
        cond, uncond = net(x, t, y), net(x, t, torch.full_like(y, 3))
        out = guided(net, y, 2.0, 3)(x, t)
    assert out.shape == (3, 4, 8, 8)
    torch.testing.assert_close(out[:, :2], 3 * cond[:, :2] - 2 * uncond[:, :2])
    torch.testing.assert_close(out[:, 2:], cond[:, 2:], rtol=0, atol=1e-6)  # batch 2B vs B
    assert torch.equal(combine(cond, uncond, 0.0, 2), cond)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_guiding_any_parameterisation_equals_guiding_its_eps(prediction):
    net, schedule, w = cond_unet(K=3), make_schedule("cosine", 100), 2.0
    x, t, y = torch.randn(3, 2, 8, 8), torch.tensor([5, 50, 95]), torch.tensor([0, 1, 2])
    with torch.no_grad():
        eps_guided = eps_model(guided(net, y, w, 3), schedule, prediction)(x, t)  # type: ignore[arg-type]
        to_eps = lambda labels: eps_model(lambda a, b: net(a, b, labels), schedule, prediction)  # noqa: E731
        cond, uncond = to_eps(y)(x, t), to_eps(torch.full_like(y, 3))(x, t)
    torch.testing.assert_close(eps_guided, (1 + w) * cond - w * uncond, rtol=1e-4, atol=1e-4)


# --- names and seeds ----------------------------------------------------------------------------

CARS = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]


def test_class_names_resolve_by_name_case_or_index_and_typos_name_close_ones():
    assert class_index("Acura RL Sedan 2012", CARS) == 1
    assert class_index("am general hummer suv 2000", CARS) == 0
    assert class_index("2", CARS) == 2
    with pytest.raises(ConfigError, match="'Acura TL Sedan 2012'") as e:
        class_index("Acura TL Sedan 2021", CARS)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="'AM General Hummer SUV 2000'"):
        class_index("Hummer", CARS)
    with pytest.raises(ConfigError, match="3 classes, or an index 0..2"):
        class_index("zeppelin", CARS)


def test_drawn_classes_depend_on_seed_and_index_only():
    w = class_weights("uniform", 5, None)
    whole = draw_classes(3, range(200), w)
    assert torch.equal(draw_classes(3, range(150, 200), w), whole[150:])
    assert not torch.equal(draw_classes(4, range(200), w), whole)
    assert set(whole.tolist()) == set(range(5))
    skewed = draw_classes(0, range(400), class_weights("data", 2, [1, 3]))
    assert 0.65 < skewed.double().mean().item() < 0.85  # label 1 three times as often
    with pytest.raises(ConfigError, match="does not record"):
        class_weights("data", 2, None)


@pytest.mark.parametrize(
    "sampler, steps", [("ddpm", None), ("ddim", 5), ("dpm-solver", 5), ("dpm-solver-3m", 5)]
)
def test_image_i_depends_only_on_seed_index_and_class(tmp_path, sampler, steps):
    cfg = tiny_config(tmp_path, T=10, sample_steps=3)
    result = train(cfg, data=two_colours(), progress=False)
    loaded = load_model(result.last_checkpoint)
    assert loaded.names == ["red", "blue"] and loaded.num_classes == 2
    y = torch.tensor([0, 1, 1, 0])
    kw = dict(seed=7, sampler=sampler, steps=steps, guidance=1.5, clip=True)
    whole = generate(loaded, 4, class_labels=y, batch_size=3, **kw)
    tail = generate(loaded, 2, class_labels=y[2:], batch_size=1, first_index=2, **kw)
    # equal up to the float32 rounding of other batch sizes (other noise would differ by ~1)
    torch.testing.assert_close(whole[2:], tail, rtol=0, atol=1e-4)
    other = generate(loaded, 4, class_labels=1 - y, batch_size=4, **kw)
    assert not torch.allclose(other, whole)


def test_checkpoints_store_the_classes_and_old_ones_load_as_before(tmp_path, blobs):
    result = train(tiny_config(tmp_path), data=two_colours(), progress=False)
    ckpt = C.load_checkpoint(result.last_checkpoint)
    assert ckpt["class_names"] == ["red", "blue"] and ckpt["class_counts"] == [16, 16]
    assert ckpt["model_config"]["num_classes"] == 2

    cfg = tiny_config(tmp_path, class_cond=False, out=str(tmp_path / "u"))
    uncond = train(cfg, data=blobs, progress=False)
    path = uncond.last_checkpoint
    new = generate(load_model(path), 3, steps=4)
    old = C.load_checkpoint(path)
    for key in ("class_names", "class_counts"):  # a checkpoint from before conditioning
        del old[key]
    del old["model_config"]["num_classes"]
    C.atomic_save(old, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    assert loaded.num_classes is None and loaded.class_names is None
    assert torch.equal(generate(loaded, 3, steps=4), new)
    with pytest.raises(ConfigError, match="class-conditional"):
        generate(loaded, 3, steps=4, class_labels=torch.zeros(3, dtype=torch.long))


# --- the CLI ------------------------------------------------------------------------------------


def test_unknown_class_name_is_one_line_exit_2_before_sampling(tmp_path, capsys, monkeypatch):
    result = train(tiny_config(tmp_path), data=two_colours(), progress=False)
    import ddpm.sampling.generate

    monkeypatch.setattr(ddpm.sampling.generate, "generate", lambda *a, **k: pytest.fail("sampled"))
    argv = ["sample", "--checkpoint", str(result.last_checkpoint), "--out", str(tmp_path / "g.png")]
    assert main([*argv, "--class", "red", "--class", "bleu"]) == 2
    line = error_line(capsys)
    assert line.startswith("ddpm sample: error: unknown class 'bleu'") and "'blue'" in line


def test_class_flags_on_an_unconditional_model_are_refused(tmp_path, blobs, capsys):
    result = train(tiny_config(tmp_path, class_cond=False), data=blobs, progress=False)
    argv = ["sample", "--checkpoint", str(result.last_checkpoint)]
    for flags in (["--class", "0"], ["--guidance", "2"], ["--grid-by-class"]):
        assert main([*argv, *flags]) == 2
        assert f"{flags[0]} needs a class-conditional model" in error_line(capsys)


def mean_rgb(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float64)).flatten(0, 1).mean(0)


def test_a_tiny_model_samples_the_colour_each_class_name_asks_for(tmp_path, capsys):
    # v-prediction: its loss sees the class at high noise levels, where the colour is
    # decided; an eps-model needs several times the steps for the same (measured: 800 steps
    # gave 62% right colours unguided, 97% at w = 3; v gets 100% at 60 steps)
    cfg = tiny_config(tmp_path, steps=100, cond_drop=0.2, prediction="v")
    result = train(cfg, data=two_colours(64), progress=False)
    ckpt = str(result.last_checkpoint)
    for w in ("0", "3"):
        folder = tmp_path / f"w{w}"
        argv = ["sample", "--checkpoint", ckpt, "--class", "red", "--class", "blue", "--n", "6"]
        argv += ["--steps", "10", "--guidance", w, "--folder", str(folder)]
        assert main([*argv, "--out", str(tmp_path / f"w{w}.png")]) == 0
        assert "(2 classes: red, blue; guidance" in capsys.readouterr().out
        for i in range(6):
            with Image.open(folder / f"{i:06d}.png") as im:
                r, _, b = mean_rgb(im)
            red = i % 2 == 0  # --class red --class blue: images alternate
            assert (r - b > 60) if red else (b - r > 60), (w, i, r, b)
        assert (folder / "labels.csv").read_text().splitlines()[1:3] == [
            "000000.png,0,red",
            "000001.png,1,blue",
        ]
    grid = tmp_path / "grid.png"
    argv = ["sample", "--checkpoint", ckpt, "--grid-by-class", "--n", "3", "--steps", "10"]
    assert main([*argv, "--out", str(grid)]) == 0
    with Image.open(grid) as im:  # 2 rows (red, blue) of 3 8x8 images, 2 px apart, shown 2x
        assert im.size == (2 * (2 + 3 * 10), 2 * (2 + 2 * 10))
        im = im.resize((im.width // 2, im.height // 2), Image.Resampling.NEAREST)
        top, low = mean_rgb(im.crop((2, 2, 10, 10))), mean_rgb(im.crop((2, 12, 10, 20)))
    assert top[0] - top[2] > 60 and low[2] - low[0] > 60


@pytest.fixture
def fake_inception(monkeypatch):
    monkeypatch.setattr(evaluate, "FEATURE_DIM", 16)
    monkeypatch.setattr(
        evaluate, "load_inception", lambda path=None, device="cpu": FakeInception().to(device)
    )
    monkeypatch.setattr(evaluate, "find_inception", lambda path=None: "fake-inception.pt")


def test_eval_fid_of_a_conditional_model_at_a_guidance(tmp_path, capsys, fake_inception):
    data, rng = tmp_path / "data", np.random.default_rng(0)
    for k, (name, channel) in enumerate([("red", 0), ("blue", 2)]):
        (data / name).mkdir(parents=True)
        for i in range(4 + 4 * k):  # 4 red, 8 blue
            arr = rng.integers(0, 60, (8, 8, 3), dtype=np.uint8)
            arr[..., channel] += 190
            Image.fromarray(arr).save(data / name / f"{i}.png")
    stats = tmp_path / "ref.npz"
    assert main(["fid-stats", str(data), "-o", str(stats), "--quiet"]) == 0
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--preset", "tiny", "--class-cond", "--T", "20"]
    argv += ["--steps", "2", "--batch-size", "4", "--out", str(run), "--quiet"]
    assert main([*argv, "--sample-every", "100", "--num-samples", "4"]) == 0
    assert "class-conditional: 2 classes" in capsys.readouterr().out
    ckpt = run / "ckpt-0000002.pt"
    assert C.load_checkpoint(ckpt)["class_names"] == ["blue", "red"]  # sorted folder names

    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(ckpt), "--fid-stats", str(stats), "--n", "6"]
    argv += ["--steps", "5", "--guidance", "1.5", "--classes", "data", "--json", str(out)]
    assert main([*argv, "--quiet"]) == 0
    assert "classes data, guidance w=1.5" in capsys.readouterr().out
    record = json.loads(out.read_text())["fid"]
    assert record["guidance"] == 1.5 and record["classes"] == "data"
    # the library with the same settings: the same samples, the same FID
    settings = SamplingSpec("ddim", 5, guidance=1.5, classes="data")
    r = model_fid(load_model(ckpt), load_stats(stats), FakeInception(), 6, settings)
    assert record["fid"] == pytest.approx(r.fid, rel=1e-6)
    # "data": blue (label 0) has 8 training images, red 4, so 2/3 of the draws are blue
    labels = load_model(ckpt).draw_classes(0, range(300), "data")
    assert 0.55 < (labels == 0).double().mean().item() < 0.78

    old = C.load_checkpoint(ckpt)
    del old["class_counts"]
    C.atomic_save(old, tmp_path / "old.pt")
    argv[2] = str(tmp_path / "old.pt")
    assert main([*argv, "--quiet"]) == 2
    assert "--classes data needs the training label counts" in error_line(capsys)


def test_conditional_stop_and_resume_equals_an_uninterrupted_run_and_checks_classes(tmp_path):
    data = two_colours()
    full = train(tiny_config(tmp_path / "a", steps=8, cond_drop=0.5), data=data, progress=False)
    cfg = tiny_config(tmp_path / "b", steps=8, cond_drop=0.5)
    train(cfg, data=data, progress=False, hooks=[StopAfter(3)])
    resumed = train(cfg, data=data, progress=False, resume="auto")
    a, b = (C.load_checkpoint(r.last_checkpoint) for r in (full, resumed))
    for name in a["ema"]:  # the label coin flips come from the saved noise generator
        assert torch.equal(a["ema"][name], b["ema"][name]), name
    renamed = ImageDataset(data.images, data.labels, ["rouge", "bleu"])
    with pytest.raises(C.CheckpointError, match="classes"):
        train(tiny_config(tmp_path / "b", steps=10), data=renamed, progress=False, resume="auto")


def test_heun_padded_batches_and_safetensors_exports_keep_the_classes(tmp_path):
    from dataclasses import replace

    result = train(tiny_config(tmp_path, T=10), data=two_colours(), progress=False)
    loaded = load_model(result.last_checkpoint)
    y = torch.tensor([1, 0, 1, 1, 0])
    kw = dict(seed=3, sampler="heun", steps=3, guidance=2.0, clip=True, class_labels=y)
    plain = generate(loaded, 5, batch_size=5, **kw)
    # a compiled model pads the short last batch to a full one: the kept images do not change
    padded = generate(replace(loaded, fixed_batch=True), 5, batch_size=2, **kw)
    torch.testing.assert_close(padded, plain, rtol=0, atol=1e-4)
    out = tmp_path / "model.safetensors"
    assert main(["export", str(result.last_checkpoint), "--out", str(out)]) == 0
    exported = load_model(out)
    assert exported.names == ["red", "blue"] and exported.class_counts == [16, 16]
    assert torch.equal(generate(exported, 5, batch_size=5, **kw), plain)


def test_stanford_cars_samples_by_its_devkit_class_names(tmp_path, capsys):
    from datafixtures import stanford_cars_zip

    archive, _ = stanford_cars_zip(tmp_path, n_train=6)
    run = tmp_path / "run"
    argv = ["train", "--data", f"stanford-cars:{archive}", "--class-cond", "--preset", "tiny"]
    argv += ["--image-size", "8", "--resize", "squash", "--T", "20", "--steps", "2"]
    argv += ["--batch-size", "4", "--num-samples", "3", "--out", str(run), "--quiet"]
    assert main(argv) == 0
    assert "class-conditional: 3 classes" in capsys.readouterr().out
    ckpt = str(next(run.glob("ckpt-*.pt")))
    argv = ["sample", "--checkpoint", ckpt, "--class", "AM General Hummer SUV 2000", "--n", "2"]
    assert main([*argv, "--steps", "3", "--guidance", "2", "--out", str(tmp_path / "h.png")]) == 0
    assert "(1 class: AM General Hummer SUV 2000; guidance w=2)" in capsys.readouterr().out
    assert main([*argv[:4], "Hummer", "--steps", "3"]) == 2
    assert "close names: 'AM General Hummer SUV 2000'" in error_line(capsys)
