import subprocess
import sys

import pytest
import torch
from PIL import Image

from ddpm.cli import main

pytestmark = pytest.mark.usefixtures("tiny_preset")


def error_line(capsys) -> str:
    """The `ddpm ...: error: ...` line (a flag error adds a line pointing to --help)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return [line for line in err.splitlines() if ": error: " in line][-1]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--preset", "giant"], "argument --preset: invalid choice"),
        (["train", "--schedule", "exp"], "argument --schedule: invalid choice"),
        (["train", "--steps", "0"], "argument --steps: expected a positive integer, got '0'"),
        (["train", "--steps", "-3"], "argument --steps"),
        (["train", "--lr", "nan"], "argument --lr: expected a positive number"),
        (["train", "--image-size", "64x"], "argument --image-size"),
        (["sample", "--checkpoint", "x.pt", "--steps", "0"], "argument --steps"),
        (["sample", "--checkpoint", "x.pt", "--sampler", "no-such"], "argument --sampler"),
    ],
)
def test_bad_flags_exit_2_with_one_line(capsys, argv, expected):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert expected in error_line(capsys)


def test_missing_data_path(capsys, tmp_path):
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 1
    assert "no such file or folder" in error_line(capsys)


def test_empty_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "no images found" in error_line(capsys)


def test_missing_checkpoint(capsys, tmp_path):
    assert main(["sample", "--checkpoint", str(tmp_path / "c.pt")]) == 1
    line = error_line(capsys)
    assert "c.pt: no such file or folder; expected a checkpoint file" in line


def test_train_then_sample_end_to_end(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(20):
        arr = (torch.rand(10, 12, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"{i}.png")
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            str(folder),
            "--preset",
            "tiny",
            "--image-size",
            "8",
            "--steps",
            "6",
            "--batch-size",
            "4",
            "--T",
            "20",
            "--out",
            str(run),
            "--sample-every",
            "3",
            "--checkpoint-every",
            "3",
            "--num-samples",
            "4",
            "--quiet",
        ]
    )
    assert code == 0
    for name in ("samples.png", "process.png", "process.gif", "loss.png", "log.csv"):
        assert (run / name).exists(), name
    ckpt = sorted(run.glob("ckpt-*.pt"))[-1]
    out = tmp_path / "grid.png"
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(ckpt),
                "--n",
                "5",
                "--steps",
                "4",
                "--out",
                str(out),
                "--folder",
                str(tmp_path / "each"),
                "--batch-size",
                "2",
                "--process",
                str(tmp_path / "p.png"),
            ]
        )
        == 0
    )
    assert out.exists() and len(list((tmp_path / "each").glob("*.png"))) == 5
    with Image.open(tmp_path / "each" / "000003.png") as im:
        assert im.size == (8, 8) and im.mode == "RGB"
    # image i depends only on (seed, i): a batch of 2 and a batch of 5 agree
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(ckpt),
                "--n",
                "5",
                "--steps",
                "4",
                "--out",
                str(tmp_path / "g2.png"),
                "--folder",
                str(tmp_path / "each2"),
                "--batch-size",
                "5",
            ]
        )
        == 0
    )
    a = Image.open(tmp_path / "each" / "000004.png").tobytes()
    assert a == Image.open(tmp_path / "each2" / "000004.png").tobytes()
    assert main(["sample", "--checkpoint", str(ckpt), "--steps", "50"]) == 2  # a flag error
    assert "exceeds" in error_line(capsys)


@pytest.mark.subprocess
def test_console_script_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ddpm.cli", "train", "--data", str(tmp_path / "missing.zip")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "missing.zip" in proc.stderr


def test_architecture_flags_override_the_preset(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.new("L", (8, 8), color=i * 60).save(folder / f"{i}.png")
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(folder),
                "--image-size",
                "8",
                "--channels",
                "1",
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--T",
                "10",
                "--out",
                str(run),
                "--quiet",
                "--base-channels",
                "8",
                "--channel-mults",
                "1,2",
                "--num-res-blocks",
                "1",
                "--attention-levels",
                "1",
            ]
        )
        == 0
    )
    from ddpm.io.checkpoint import list_checkpoints, load_checkpoint

    cfg = load_checkpoint(list_checkpoints(run)[-1])["model_config"]
    assert cfg["base_channels"] == 8 and cfg["channel_mults"] == [1, 2]
    assert cfg["attention_levels"] == [1] and cfg["in_channels"] == 1


def test_bad_architecture_flag_values(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["train", "--channel-mults", "1,x"])
    assert e.value.code == 2 and "--channel-mults" in error_line(capsys)
    out = str(tmp_path / "run")
    assert main(["train", "--attention-levels", "9", "--steps", "1", "--out", out]) == 2
    assert "attention_levels" in error_line(capsys)


def test_learned_sigma_round_trip_train_sample_eval(tmp_path, capsys):
    """Improved DDPM through the CLI: train a tiny learned-variance model with the hybrid loss,
    sample with respaced DDPM and the learned variance, and score a few images' bits/dim."""
    import json

    folder = tmp_path / "imgs"
    folder.mkdir()
    g = torch.Generator().manual_seed(1)
    for i in range(8):
        arr = (torch.rand(8, 8, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(folder / f"{i}.png")
    run = tmp_path / "run"
    argv = ["train", "--data", str(folder), "--preset", "tiny", "--image-size", "8", "--T", "40"]
    argv += ["--steps", "4", "--batch-size", "4", "--out", str(run), "--quiet"]
    argv += ["--sample-every", "100", "--num-samples", "4"]
    assert main([*argv, "--loss", "hybrid"]) == 2  # hybrid needs --learn-sigma
    assert "--learn-sigma" in error_line(capsys)
    assert main([*argv, "--learn-sigma", "--loss", "hybrid"]) == 0
    assert "hybrid loss, learned variances, uniform t" in capsys.readouterr().out
    ckpt = str(sorted(run.glob("ckpt-*.pt"))[-1])

    sample = ["sample", "--checkpoint", ckpt, "--sampler", "ddpm", "--n", "3"]
    for variance in ("learned", "small", "large"):
        out = tmp_path / f"{variance}.png"
        argv = [*sample, "--steps", "10", "--variance", variance, "--out", str(out)]
        assert main(argv) == 0 and out.exists()
    assert main([*sample, "--steps", "41"]) == 2 and "exceeds" in error_line(capsys)

    report = tmp_path / "nll.json"
    nll = ["eval", "--checkpoint", ckpt, "--nll", "--data", str(folder), "--n", "4", "--quiet"]
    assert main([*nll, "--json", str(report)]) == 0
    full = json.loads(report.read_text())["nll"]
    assert full["variance"] == "learned" and full["T"] == 40 and full["t_samples"] is None
    assert main([*nll, "--nll-steps", "10", "--nll-t-samples", "5", "--json", str(report)]) == 0
    text = capsys.readouterr().out
    cheap = json.loads(report.read_text())["nll"]
    assert cheap["T"] == 10 and cheap["respaced"] and cheap["t_samples"] == 5
    assert "bound over the 10-step respaced model, estimated from 5 stratified" in text
    assert 0 < full["bpd"] < 50 and 0 < cheap["bpd"] < 50
    assert main([*nll, "--nll-t-samples", "41"]) == 2 and "--nll-t-samples" in error_line(capsys)


def test_learned_variance_on_a_fixed_variance_model_is_refused(tmp_path, capsys):
    from ddpm.data.images import ImageDataset
    from ddpm.train import TrainConfig, train

    cfg = TrainConfig(preset="tiny", T=10, steps=1, batch_size=2, out=str(tmp_path / "run"))
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    ckpt = str(train(cfg, data=ImageDataset(images), progress=False).last_checkpoint)
    out = str(tmp_path / "x.png")
    argv = ["sample", "--checkpoint", ckpt, "--sampler", "ddpm", "--variance", "learned"]
    assert main([*argv, "--out", out]) == 2
    assert "--variance learned needs a model trained with --learn-sigma" in error_line(capsys)
