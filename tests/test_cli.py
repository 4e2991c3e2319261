import subprocess
import sys

import pytest
import torch
from PIL import Image

from ddpm.cli import main

pytestmark = pytest.mark.usefixtures("tiny_preset")


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


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
    assert "no such checkpoint" in error_line(capsys)


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
    from ddpm.checkpoint import list_checkpoints, load_checkpoint

    cfg = load_checkpoint(list_checkpoints(run)[-1])["model_config"]
    assert cfg["base_channels"] == 8 and cfg["channel_mults"] == [1, 2]
    assert cfg["attention_levels"] == [1] and cfg["in_channels"] == 1


def test_bad_architecture_flag_values(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--channel-mults", "1,x"])
    assert e.value.code == 2 and "--channel-mults" in error_line(capsys)
    assert main(["train", "--attention-levels", "9", "--steps", "1"]) == 2
    assert "attention_levels" in error_line(capsys)
