"""benchmarks/guidance_sweep.py end to end on the CPU with tiny settings: a conditional
checkpoint, zips of class folders, a TorchScript stand-in for Inception."""

import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.cli import main
from ddpm.eval import evaluate
from ddpm.train import TrainConfig, train
from test_evaluate import FakeInception

pytestmark = pytest.mark.usefixtures("tiny_preset")
SCRIPT = Path(__file__).resolve().parents[1] / "guidance_sweep.py"


def load_script():
    spec = importlib.util.spec_from_file_location("guidance_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def class_zip(path: Path, per_class: int, seed: int) -> Path:
    """A zip of 8x8 PNGs in one folder per class: 'blue' and 'red' noise."""
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as z:
        for name, channel in (("red", 0), ("blue", 2)):
            for i in range(per_class):
                arr = rng.integers(0, 60, (8, 8, 3), dtype=np.uint8)
                arr[..., channel] += 190
                tmp = path.parent / "tmp.png"
                Image.fromarray(arr).save(tmp)
                z.write(tmp, f"{name}/{i:03d}.png")
    return path


def test_augment_crops_and_flips_the_padded_image():
    sweep = load_script()
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8).remainder(251)
    x = x.to(torch.uint8)
    out = sweep.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    again = sweep.augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    padded = torch.nn.functional.pad(x.float(), (4, 4, 4, 4), mode="reflect").to(torch.uint8)
    for b in range(2):  # each output is some 8x8 window of the padded image, maybe mirrored
        windows = [
            w
            for dy in range(9)
            for dx in range(9)
            for w in (padded[b, :, dy : dy + 8, dx : dx + 8],)
            for w in (w, w.flip(-1))
        ]
        assert any(torch.equal(out[b], w) for w in windows)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_the_sweep_runs_end_to_end_on_the_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "FEATURE_DIM", 16)
    inception = tmp_path / "inception.pt"
    torch.jit.script(FakeInception()).save(str(inception))
    train_zip = class_zip(tmp_path / "train.zip", 24, 0)
    test_zip = class_zip(tmp_path / "test.zip", 8, 1)
    stats = tmp_path / "stats.npz"
    argv = ["fid-stats", str(train_zip), "-o", str(stats), "--inception", str(inception)]
    assert main([*argv, "--quiet"]) == 0
    cfg = TrainConfig(
        preset="tiny",
        data=str(train_zip),
        class_cond=True,
        T=20,
        steps=2,
        batch_size=8,
        sample_every=100,
        checkpoint_every=100,
        num_samples=2,
        out=str(tmp_path / "run"),
    )
    ckpt = train(cfg, progress=False).last_checkpoint
    out = tmp_path / "sweep.json"
    argv = ["--checkpoint", str(ckpt), "--train-zip", str(train_zip), "--test-zip", str(test_zip)]
    argv += ["--fid-stats", str(stats), "--inception", str(inception), "--n", "6"]
    argv += ["--ws", "0,2", "--steps", "3", "--batch-size", "4", "--device", "cpu"]
    argv += ["--classifier-epochs", "4", "--classifier-width", "8", "--classifier-batch", "8"]
    assert load_script().main([*argv, "--null-row", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| w | FID | class accuracy | sampling + features (s) |" in text
    record = json.loads(out.read_text())
    # red against blue noise: the classifier must learn it (the column is read against this)
    assert record["classifier"]["test_accuracy"] >= 0.9
    rows = record["rows"]
    assert [r["w"] for r in rows] == [0.0, 2.0, None]
    assert all(np.isfinite(r["fid"]) and r["fid"] >= 0 for r in rows)
    assert all(0 <= r["accuracy"] <= 1 for r in rows[:2]) and rows[2]["accuracy"] is None
    assert "| null class |" in text and "test accuracy" in text


def test_replot_draws_a_saved_sweep_and_the_sweep_needs_its_inputs(tmp_path, capsys):
    script = load_script()
    record = {
        "classifier": {"test_accuracy": 0.9, "train_seconds": 1.0},
        "rows": [
            {"w": 0.0, "fid": 12.0, "accuracy": 0.7, "seconds": 1.0},
            {"w": 1.0, "fid": 10.0, "accuracy": 0.95, "seconds": 1.0},
            {"w": None, "fid": 17.0, "accuracy": None, "seconds": 1.0},
        ],
    }
    saved = tmp_path / "sweep.json"
    saved.write_text(json.dumps(record))
    png = tmp_path / "plot.png"
    assert (
        script.main(["--replot", str(saved), "--plot", str(png), "--unconditional-fid", "15"]) == 0
    )
    assert Image.open(png).size[0] > 0
    with pytest.raises(SystemExit) as stop:
        script.main(["--train-zip", "x.zip"])
    assert stop.value.code == 2 and "--checkpoint is required" in capsys.readouterr().err
