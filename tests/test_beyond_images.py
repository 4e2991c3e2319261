"""Training, sampling and evaluating models of points and sequences, through the library and
the CLI, with tiny networks."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.cli import main
from ddpm.data import toys
from ddpm.eval import arrays as evaluate_arrays
from ddpm.models.presets import PRESETS, ModelSpec
from ddpm.sampling.generate import generate
from ddpm.sampling.loaded import load_model
from ddpm.train import TrainConfig, train

TINY_MLP = {"width": 64, "num_blocks": 2, "hidden_mult": 2}
TINY_UNET1D = {
    "base_channels": 16,
    "channel_mults": (1, 2),
    "attention_levels": (1,),
    "num_res_blocks": 1,
    "norm_groups": 8,
}


@pytest.fixture
def tiny_nets(monkeypatch):
    """The mlp and unet1d presets, shrunk for the duration of a test."""
    monkeypatch.setitem(PRESETS, "mlp", ModelSpec("mlp", dict(TINY_MLP)))
    monkeypatch.setitem(PRESETS, "unet1d", ModelSpec("unet1d", dict(TINY_UNET1D)))
    monkeypatch.setattr(evaluate_arrays, "TSTR_STEPS", 20)


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


def test_a_toy_trains_and_its_samples_cover_every_mode(tmp_path, tiny_nets):
    cfg = TrainConfig(
        data="toy:8gaussians",
        T=100,
        steps=500,
        batch_size=256,
        lr=3e-3,
        warmup=20,
        lr_decay="cosine",
        log_every=100,
        sample_every=10_000,
        checkpoint_every=10_000,
        out=str(tmp_path / "run"),
    )
    result = train(cfg, progress=False)
    loaded = load_model(result.last_checkpoint)
    assert loaded.kind == "points" and loaded.shape == (2,)
    x = loaded.to_data(generate(loaded, 800, seed=1, sampler="ddim", steps=20))
    shares = torch.bincount(toys.mode_of("8gaussians", x), minlength=8).double() / len(x)
    assert shares.min() > 0.06 and shares.max() < 0.19, shares  # 1/8 ± 5 standard errors
    # most samples lie near a centre: within 3 standard deviations of the nearest
    d = (x[:, None].double() - toys.GAUSS_CENTRES[None]).norm(dim=-1).min(1).values
    assert float((d < 3 * toys.GAUSS_STD).double().mean()) > 0.8


def test_points_through_the_cli(tmp_path, capsys, tiny_nets):
    run = tmp_path / "run"
    argv = ["train", "--data", "toy:moons", "--steps", "20", "--batch-size", "64", "--T", "50"]
    argv += ["--out", str(run), "--quiet", "--sample-every", "20", "--checkpoint-every", "20"]
    assert main(argv) == 0
    for name in ("samples.png", "process.png", "process.gif", "loss.png"):
        assert (run / name).is_file()
    assert Image.open(run / "process.gif").n_frames > 10
    ckpt = str(run / "ckpt-0000020.pt")
    base = ["sample", "--checkpoint", ckpt, "--n", "30", "--steps", "10"]
    assert main([*base, "--out", str(tmp_path / "s.npy")]) == 0
    a = np.load(tmp_path / "s.npy")
    assert a.shape == (30, 2) and a.dtype == np.float32
    # the array is in the data's units: the model's output, de-standardised
    loaded = load_model(ckpt)
    z = generate(loaded, 30, seed=0, sampler="ddim", steps=10)
    assert np.allclose(a, loaded.data.scaler.invert(z).numpy(), atol=1e-5)
    assert main([*base, "--out", str(tmp_path / "s.csv"), "--gif", str(tmp_path / "g.gif")]) == 0
    assert np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1).shape == (30, 2)
    assert main([*base, "--out", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").width > 300
    capsys.readouterr()
    # image-only options are refused before any sampling, with exit code 2
    assert main([*base, "--clip", "--out", str(tmp_path / "c.npy")]) == 2
    assert "--clip clips x_0 to [-1, 1]" in error_line(capsys)
    with pytest.raises(SystemExit) as exit_:  # a bad suffix is a parse error (issue 16)
        main([*base, "--out", str(tmp_path / "s.txt")])
    assert exit_.value.code == 2
    assert "a sample grid must end in" in capsys.readouterr().err
    assert not (tmp_path / "c.npy").exists()
    # show reverse draws the points' own process (no --clip of pictures unless asked for)
    shown = ["show", "reverse", "--checkpoint", ckpt, "--steps", "10", "--quiet"]
    assert main([*shown, "--out", str(tmp_path / "r.png"), "--gif", str(tmp_path / "r.gif")]) == 0
    assert Image.open(tmp_path / "r.gif").n_frames > 5 and (tmp_path / "r.png").is_file()
    assert main([*shown, "--clip", "--out", str(tmp_path / "c.png")]) == 2
    assert "--clip clips x_0 to [-1, 1]" in error_line(capsys)

    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", ckpt, "--data", "toy:moons", "--n", "100", "--steps", "10"]
    assert main([*argv, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "floor: train vs held-out" in text and "Gaussian fit to train" in text
    record = json.loads(out.read_text())
    floor, gauss = record["rows"][1], record["rows"][2]
    assert record["n"] == record["m"] == 100
    assert 0 < floor["energy"] < gauss["energy"]  # the floor is the lower reference
    assert main(["eval", "--checkpoint", ckpt]) == 2
    assert "nothing to evaluate" in error_line(capsys)
    assert main([*base, "--guidance", "1", "--out", str(tmp_path / "s.npy")]) == 2
    assert "needs a class-conditional model" in error_line(capsys)
    assert main([*argv, "--nll"]) == 2
    assert "FID and --nll are for images" in error_line(capsys)


def test_8gaussians_eval_reports_density_and_modes(tmp_path, capsys, tiny_nets):
    run = tmp_path / "run"
    argv = ["train", "--data", "toy:8gaussians", "--steps", "5", "--batch-size", "32"]
    argv += ["--T", "20", "--out", str(run), "--quiet", "--sample-every", "100"]
    assert main(argv) == 0
    out = tmp_path / "e.json"
    argv = ["eval", "--checkpoint", str(run / "ckpt-0000005.pt"), "--data", "toy:8gaussians"]
    assert main([*argv, "--n", "1000", "--steps", "5", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    floor = rows[1]
    # held-out points of the true distribution score E log p = -log 8 - log(2πσ²) - 1 (the
    # modes barely overlap), with 1/8 of them in each mode
    expected = -math.log(8) - math.log(2 * math.pi * toys.GAUSS_STD**2) - 1
    assert floor["log_density"] == pytest.approx(expected, abs=0.15)
    assert all(abs(s - 0.125) < 0.035 for s in floor["modes"])  # 3.3 standard errors


def write_ts(path, x, labels, names):
    lines = ["@problemName Waves", "@univariate false", f"@classLabel true {' '.join(names)}"]
    lines.append("@data")
    for s, y in zip(x, labels):
        lines.append(":".join(",".join(f"{v:.4f}" for v in c) for c in s) + f":{names[y]}")
    path.write_text("\n".join(lines) + "\n")


def test_labelled_sequences_through_the_cli_with_tstr(tmp_path, capsys, tiny_nets):
    g = np.random.default_rng(0)
    folder = tmp_path / "Waves"
    folder.mkdir()
    t = np.linspace(0, 1, 24)
    for split, n in (("TRAIN", 24), ("TEST", 16)):
        y = np.arange(n) % 2
        x = np.stack(
            [np.sin(2 * np.pi * (1 + 2 * y[:, None]) * t), np.cos(6 * t) + 0 * y[:, None]], 1
        )
        x = x + 0.1 * g.normal(size=x.shape)
        write_ts(folder / f"Waves_{split}.ts", x, y, ["slow", "fast"])
    run = tmp_path / "run"
    argv = ["train", "--data", f"timeseries:{folder}", "--class-cond", "--steps", "10"]
    argv += ["--batch-size", "8", "--T", "20", "--out", str(run), "--quiet"]
    argv += ["--sample-every", "100", "--checkpoint-every", "10"]
    assert main(argv) == 0
    assert (run / "samples.png").is_file() and (run / "process.png").is_file()
    ckpt = str(run / "ckpt-0000010.pt")
    loaded = load_model(ckpt)
    assert loaded.kind == "sequences" and loaded.shape == (2, 24) and loaded.num_classes == 2
    assert loaded.data.class_names == ["slow", "fast"]
    argv = ["sample", "--checkpoint", ckpt, "--n", "6", "--steps", "5"]
    assert main([*argv, "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (6, 2, 24)
    assert np.load(tmp_path / "s-labels.npy").tolist() == [0, 1, 0, 1, 0, 1]
    # a class by name, with classifier-free guidance (the issue-12 flags work for sequences)
    guided = [*argv, "--class", "fast", "--guidance", "2", "--out", str(tmp_path / "g.npy")]
    assert main(guided) == 0
    assert np.load(tmp_path / "g-labels.npy").tolist() == [1] * 6
    assert not np.allclose(np.load(tmp_path / "g.npy"), np.load(tmp_path / "s.npy"))
    assert main([*argv, "--class", "medium", "--out", str(tmp_path / "x.npy")]) == 2
    assert "medium" in error_line(capsys)
    assert (
        main([*argv, "--out", str(tmp_path / "s.png"), "--process", str(tmp_path / "p.png")]) == 0
    )
    capsys.readouterr()
    out = tmp_path / "e.json"
    argv = ["eval", "--checkpoint", ckpt, "--data", f"timeseries:{folder}", "--steps", "5"]
    assert main([*argv, "--guidance", "1", "--json", str(out)]) == 0
    assert "guidance w=1" in capsys.readouterr().out
    assert main([*argv, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "TSTR accuracy on the 16 real test sequences: trained on 24 generated" in text
    record = json.loads(out.read_text())
    assert record["m"] == 16 and record["n"] == 24 and 0 <= record["tstr"]["real"] <= 1
    # --split picks the training split as held-out: the floor is then exactly zero
    assert main([*argv, "--split", "train", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][1]["energy"] == pytest.approx(0, abs=1e-6)


def test_a_sequence_with_missing_steps_is_imputed_through_the_cli(tmp_path, capsys, tiny_nets):
    data = np.sin(np.linspace(0, 6, 24))[None, None] * np.linspace(0.5, 1.5, 16)[:, None, None]
    np.save(tmp_path / "train.npy", data.astype(np.float32))
    run = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "train.npy"), "--steps", "5", "--T", "20",
            "--batch-size", "8", "--out", str(run), "--quiet", "--no-final-pictures"]  # fmt: skip
    assert main(argv) == 0
    gaps = data[:3].copy()
    gaps[:, :, [2, 3, 10, 17]] = np.nan
    np.save(tmp_path / "gaps.npy", gaps)
    for out in ("imputed.npy", "imputed.png"):
        argv = ["inpaint", "--checkpoint", str(run), "--image", str(tmp_path / "gaps.npy"),
                "--steps", "4", "--resample", "2", "--jump", "2",
                "--out", str(tmp_path / out)]  # fmt: skip
        assert main(argv) == 0
        assert "Traceback" not in capsys.readouterr().err
    filled = np.load(tmp_path / "imputed.npy")
    known = ~np.isnan(gaps)
    assert np.array_equal(filled[known], gaps[known]) and np.isfinite(filled).all()
    assert Image.open(tmp_path / "imputed.png").size[0] > 0
    argv = ["inpaint", "--checkpoint", str(run), "--image", str(tmp_path), "--out", "x.png"]
    assert main(argv) != 0  # a folder: one line saying what a sequence model takes
    assert "takes a .npy or .csv, not a folder" in error_line(capsys)


def test_points_and_sequences_distil_as_pictures_do(tmp_path, capsys, tiny_nets):
    argv = ["train", "--data", "toy:moons", "--steps", "150", "--batch-size", "128", "--T", "40",
            "--lr", "3e-3", "--quiet", "--no-final-pictures", "--sample-every", "1000",
            "--out", str(tmp_path / "points")]  # fmt: skip
    assert main(argv) == 0
    argv = ["distill", "--checkpoint", str(tmp_path / "points"), "--out", str(tmp_path / "two"),
            "--steps", "2", "--from-steps", "8", "--round-steps", "60", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    teacher, student = load_model(tmp_path / "points"), load_model(tmp_path / "two")
    assert student.kind == "points" and student.sampling["distilled"] == 2
    same = dict(sampler="ddim", eta=0.0, spacing="trailing", seed=3)
    reference = generate(teacher, 256, steps=8, **same)
    ours = float((generate(student, 256, **same) - reference).pow(2).mean().sqrt())
    theirs = float((generate(teacher, 256, steps=2, **same) - reference).pow(2).mean().sqrt())
    assert ours < 0.8 * theirs, (ours, theirs)
    # points of another dimension than the teacher's: one line, no traceback
    np.save(tmp_path / "d4.npy", np.zeros((16, 4), np.float32))
    argv = ["distill", "--checkpoint", str(tmp_path / "points"), "--out", str(tmp_path / "x"),
            "--from-steps", "8", "--data", str(tmp_path / "d4.npy")]  # fmt: skip
    assert main(argv) == 2
    assert "the teacher draws (2,), --data" in error_line(capsys)
    # sequences: a round trains and its student draws sequences of the data's shape
    np.save(tmp_path / "seq.npy", np.sin(np.linspace(0, 6, 24))[None, None].repeat(8, 0))
    argv = ["train", "--data", str(tmp_path / "seq.npy"), "--steps", "5", "--T", "20",
            "--batch-size", "8", "--quiet", "--no-final-pictures",
            "--out", str(tmp_path / "s")]  # fmt: skip
    assert main(argv) == 0
    argv = ["distill", "--checkpoint", str(tmp_path / "s"), "--out", str(tmp_path / "s1"),
            "--steps", "1", "--from-steps", "2", "--round-steps", "3", "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert main(["sample", "--checkpoint", str(tmp_path / "s1"), "--n", "3",
                 "--out", str(tmp_path / "x.npy")]) == 0  # fmt: skip
    assert np.load(tmp_path / "x.npy").shape == (3, 1, 24)
