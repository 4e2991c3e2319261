"""What a new user meets in the first hour: a quick FID reference on a CPU (`fid-stats --n`)."""

import numpy as np
import pytest

from ddpm.cli import build_parser, main
from ddpm.eval import evaluate
from ddpm.eval.evaluate import images_stats, load_fid_images, load_stats
from ddpm.eval.nll import select_images
from test_evaluate import FakeInception, fake_inception, image_folder  # noqa: F401


@pytest.mark.usefixtures("fake_inception")
def test_fid_stats_of_n_images_are_the_stats_of_that_seeded_subset(tmp_path):
    folder = image_folder(tmp_path / "imgs", 8, 0)
    out = tmp_path / "sub.npz"
    assert main(["fid-stats", str(folder), "-o", str(out), "--n", "5", "--seed", "2"]) == 0
    sub = load_stats(out)
    assert sub.n == 5
    images = select_images(load_fid_images(str(folder)), 5, 2)
    want = images_stats(FakeInception(), images)
    np.testing.assert_allclose(sub.mu, want.mu, rtol=1e-6)
    np.testing.assert_allclose(sub.sigma, want.sigma, rtol=1e-5, atol=1e-7)
    whole = tmp_path / "all.npz"
    assert main(["fid-stats", str(folder), "-o", str(whole), "--n", "100"]) == 0  # n > the set
    assert load_stats(whole).n == 8
    assert evaluate.FEATURE_DIM == 16  # the fake network's features were used


@pytest.mark.parametrize("n", ["0", "-3", "x"])
def test_fid_stats_n_must_be_a_positive_count(tmp_path, capsys, n):
    with pytest.raises(SystemExit):
        main(["fid-stats", str(tmp_path), "-o", str(tmp_path / "s.npz"), "--n", n])
    assert "--n" in capsys.readouterr().err


@pytest.fixture
def umask_022():
    import os

    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("tiny_preset", "umask_022", "fake_inception")
def test_files_meant_to_be_shared_follow_the_umask(tmp_path, blobs):
    """Checkpoints, exports and statistics were written owner-only (0600, the folder 0700)
    because they are written to a temporary file first: they get what the umask gives."""
    from conftest import tiny_config
    from ddpm.train import train

    result = train(tiny_config(tmp_path), data=blobs, progress=False)
    ckpt = result.last_checkpoint
    exported, folder = tmp_path / "m.safetensors", tmp_path / "diffusers"
    assert main(["export", str(ckpt), "--out", str(exported)]) == 0
    assert main(["export", str(ckpt), "--format", "diffusers", "--out", str(folder)]) == 0
    stats = tmp_path / "s.npz"
    assert main(["fid-stats", str(image_folder(tmp_path / "i", 4, 0)), "-o", str(stats)]) == 0
    for path in (ckpt, exported, stats, folder / "unet" / "diffusion_pytorch_model.safetensors"):
        assert path.stat().st_mode & 0o777 == 0o644, path
    for path in (folder, folder / "unet"):
        assert path.stat().st_mode & 0o777 == 0o755, path


@pytest.mark.usefixtures("tiny_preset")
def test_sample_grids_are_enlarged_as_the_training_pictures_are(tmp_path):
    from PIL import Image

    run = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--T", "10"]
    assert main([*argv, "--num-samples", "4", "--out", str(run), "--quiet"]) == 0
    grid = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(run), "--n", "4", "--out", str(grid)]) == 0
    with Image.open(grid) as ours, Image.open(run / "samples.png") as training:
        assert ours.size == training.size == (44, 44)  # 2 x (2 + 2 x (8 + 2)): 8x8 images


def test_show_curves_of_a_missing_run_says_what_it_expected(tmp_path, capsys):
    for where, said in (
        (tmp_path / "nope", "no such file or folder"),
        (tmp_path, "without log.csv"),
    ):
        assert main(["show", "curves", str(where)]) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and "Errno" not in err
        assert said in err and "expected a run folder" in err


def test_a_model_samples_with_the_eta_of_its_own_training_pictures(tmp_path, capsys, tiny_preset):
    """`ddpm train`'s pictures are drawn at eta 1 (it measured better on the digits), so that
    is the run's default for `ddpm sample`, `ddpm.sample` and `ddpm eval`; a recipe measured
    at eta 0 keeps 0, and so does a diffusers folder, which has no training pictures."""
    import torch

    import ddpm
    from ddpm.data.images import ImageDataset
    from ddpm.io.interchange import export_model
    from ddpm.io.modelfile import sampling_defaults
    from ddpm.train import TrainConfig, save_checkpoint, setup
    from ddpm.train.recipes import recipe_settings
    from test_one_sampling_path import folder_images

    cfg = TrainConfig(preset="tiny", T=20, out=str(tmp_path / "run"))
    data = ImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8))
    _, _, arch, model_cfg, state = setup(cfg, data)
    save_checkpoint(state, cfg, arch, model_cfg)
    run = tmp_path / "run"
    model = ddpm.load(run, "cpu")
    assert cfg.sample_eta == 1.0 and model.sampling == {"eta": 1.0}
    same = dict(n=3, steps=5, seed=4)
    default = ddpm.sample(model, **same)
    torch.testing.assert_close(default, ddpm.sample(model, eta=1.0, **same))
    assert not torch.allclose(default, ddpm.sample(model, eta=0.0, **same))
    # a wrong argument is named in the user's terms, not from deep inside
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        ddpm.sample(model, n=0)
    with pytest.raises(TypeError, match="what ddpm.load returns, got str"):
        ddpm.sample(str(run), n=2)
    with pytest.raises(TypeError, match="unknown keywords stepz; it takes sampler, steps"):
        ddpm.sample(model, n=2, stepz=5)
    # numpy's ints are ints, and generate's own keywords pass through: image 1 alone
    one = ddpm.sample(model, n=np.int64(1), first_index=1, steps=5, seed=4)
    torch.testing.assert_close(one, default[1:2])
    for flags in ([], ["--eta", "1"]):
        folder = tmp_path / f"pngs{len(flags)}"
        argv = ["sample", "--checkpoint", str(run), "--n", "3", "--steps", "5", "--seed", "4"]
        grid = tmp_path / f"grid{len(flags)}.png"  # never into the working directory
        assert main([*argv, "--folder", str(folder), "--out", str(grid), *flags]) == 0
    assert torch.equal(folder_images(tmp_path / "pngs0", 3), folder_images(tmp_path / "pngs2", 3))
    assert "eta 1" in capsys.readouterr().out
    # the recipe measured at eta 0 keeps it; a safetensors export keeps the run's own
    assert sampling_defaults(recipe_settings("cifar10-8min")) == {"eta": 0.0}
    export_model(run, "safetensors", tmp_path / "m.safetensors")
    assert ddpm.load(tmp_path / "m.safetensors", "cpu").sampling == {"eta": 1.0}
    help_text = build_parser().commands["sample"].format_help()
    assert "the eta its training pictures were drawn with" in " ".join(help_text.split())


def test_the_bundled_digits_train_a_class_conditional_model_by_default():
    """Conditioned on the digit, the default run's samples are legible (docs/benchmarks.md);
    other data stays unconditional unless --class-cond says, and --no-class-cond undoes it."""
    import torch

    from ddpm.data.images import ImageDataset, load_dataset
    from ddpm.train import TrainConfig
    from ddpm.train.state import data_classes

    digits = load_dataset("mnist", (16, 16), 1, stream=False, progress=False)
    assert data_classes(TrainConfig(), digits)[0] == [str(d) for d in range(10)]
    assert data_classes(TrainConfig(class_cond=False), digits) is None
    labelled = ImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    assert data_classes(TrainConfig(), labelled) is None
    assert data_classes(TrainConfig(class_cond=True), labelled)[1] == [2, 2]
    flags = build_parser().parse_args(["train", "--no-class-cond"])
    assert flags.class_cond is False
