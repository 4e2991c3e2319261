"""Behaviour kept across the package's regrouping: a checkpoint written by the code before it
(tests/data/before-layout: `ddpm train` on 16 generated 8x8 images, 6 steps, seed 3, one
thread; then `ddpm sample --n 4 --steps 5 --seed 1 --out samples.npy`) loads and samples the
same images, and the same command trains with the same losses, step for step."""

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddpm.cli import main

BEFORE = Path(__file__).parent / "data" / "before-layout"
TRAIN = [
    "train", "--image-size", "8", "--base-channels", "8", "--channel-mults", "1,2",
    "--num-res-blocks", "1", "--attention-levels", "1", "--T", "50", "--steps", "6",
    "--batch-size", "4", "--log-every", "1", "--checkpoint-every", "6", "--sample-every",
    "1000", "--num-samples", "4", "--seed", "3", "--no-final-pictures", "--threads", "1",
    "--quiet",
]  # fmt: skip


def images(folder: Path) -> Path:
    """The 16 RGB 8x8 images the recorded run trained on, from a formula."""
    folder.mkdir(parents=True)
    y, x = np.mgrid[0:8, 0:8]
    for i in range(16):
        rgb = [(x * 31 + y * 17 + i * 13) % 256, (x * 7 + i * 29) % 256, (y * 23 + i * 5) % 256]
        Image.fromarray(np.stack(rgb, -1).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def losses(log: Path) -> list[float]:
    with log.open(newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_a_checkpoint_from_before_samples_the_same_images(tmp_path):
    out = tmp_path / "samples.npy"
    argv = ["sample", "--checkpoint", str(BEFORE / "ckpt-0000006.pt"), "--n", "4"]
    argv += ["--eta", "0"]  # the default then; a model now samples with its own (its grids')
    assert main([*argv, "--steps", "5", "--seed", "1", "--out", str(out), "--threads", "1"]) == 0
    now, before = np.load(out).astype(int), np.load(BEFORE / "samples.npy").astype(int)
    assert now.shape == before.shape == (4, 3, 8, 8)
    assert np.abs(now - before).max() <= 1  # uint8, up to a rounding at a .5 boundary


def test_the_same_command_trains_with_the_same_losses(tmp_path):
    data = images(tmp_path / "data")
    out = tmp_path / "run"
    assert main([*TRAIN, "--data", str(data), "--out", str(out)]) == 0
    assert losses(out / "log.csv") == pytest.approx(losses(BEFORE / "log.csv"), rel=1e-4)
