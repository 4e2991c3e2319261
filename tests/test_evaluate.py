"""`ddpm fid-stats | fid | eval` and FID during training, end to end on tiny data.

The Inception network is replaced by a small fixed projection with 16 features (the real one
takes ~0.5 s per image on this CPU and a 2048-d matrix square root ~30 s); everything else,
the statistics files, sampling with the EMA weights, best.pt and the log, is the real code.
"""

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ddpm.cli import main
from ddpm.eval import evaluate
from ddpm.eval.evaluate import load_stats
from ddpm.eval.nll import model_nll, select_images
from ddpm.io import checkpoint as C
from ddpm.sampling.loaded import load_model


class FakeInception(nn.Module):
    """(B, 3, 299, 299) -> (B, 16): 4x4 average pooling and a fixed random projection."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Parameter(torch.randn(48, 16, generator=g), requires_grad=False)

    def forward(self, x):
        assert x.shape[1:] == (3, 299, 299)
        return F.adaptive_avg_pool2d(x, 4).flatten(1) @ self.proj


@pytest.fixture
def fake_inception(monkeypatch):
    monkeypatch.setattr(evaluate, "FEATURE_DIM", 16)
    monkeypatch.setattr(
        evaluate, "load_inception", lambda path=None, device="cpu": FakeInception().to(device)
    )
    monkeypatch.setattr(evaluate, "find_inception", lambda path=None: "fake-inception.pt")


pytestmark = pytest.mark.usefixtures("tiny_preset")


def image_folder(path, n, seed, size=(8, 8)):
    path.mkdir()
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        arr = (torch.rand(*size, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(path / f"{i:03d}.png")
    return path


def error_line(capsys) -> str:
    """The `ddpm ...: error: ...` line (a flag error adds a line pointing to --help)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return [line for line in err.splitlines() if ": error: " in line][-1]


def test_fid_stats_then_fid_between_folders_and_files(tmp_path, capsys, fake_inception):
    a = image_folder(tmp_path / "a", 12, 0, size=(10, 12))
    b = image_folder(tmp_path / "b", 9, 1, size=(10, 12))
    stats = tmp_path / "a.npz"
    assert main(["fid-stats", str(a), "-o", str(stats), "--quiet"]) == 0
    assert "12 images (10x12)" in capsys.readouterr().out  # the images' own size
    loaded = load_stats(stats)
    assert loaded.n == 12 and loaded.dim == 16
    assert main(["fid", str(a), str(stats), "--quiet"]) == 0
    same = float(capsys.readouterr().out.split()[1])
    assert abs(same) < 1e-6
    out = tmp_path / "r.json"
    assert main(["fid", str(a), str(b), "--json", str(out), "--quiet"]) == 0
    record = json.loads(out.read_text())
    assert record["fid"] > 0.01 and record["n_a"] == 12 and record["n_b"] == 9
    assert f"FID {record['fid']:.4f}" in capsys.readouterr().out


def test_bad_inputs_give_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(np.random.default_rng(0).bytes(500))
    assert main(["fid", str(junk), str(junk)]) == 1
    assert "junk.npz: not a readable .npz statistics file" in error_line(capsys)
    # a folder that is not there is named before the Inception network is looked for
    assert main(["fid", str(tmp_path / "nope"), str(tmp_path), "--inception", "none.pt"]) == 1
    line = error_line(capsys)
    assert "nope: no such file or folder" in line and "--data" not in line
    assert main(["fid", "toy:moons", str(tmp_path), "--inception", "none.pt"]) == 1
    assert "toy:moons: points or sequences, but FID compares images" in error_line(capsys)
    assert main(["fid", "mnist", str(tmp_path / "none"), "--inception", "none.pt"]) == 1
    assert "none: no such file or folder" in error_line(capsys)  # mnist itself is fine
    small = tmp_path / "small.npz"
    with small.open("wb") as f:
        np.savez(f, mu=np.zeros(64), sigma=np.eye(64))
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"garbage" * 100)
    assert main(["eval", "--checkpoint", str(ckpt), "--fid-stats", str(small)]) == 1
    assert "64-dimensional features" in error_line(capsys)
    assert main(["eval", "--checkpoint", str(ckpt), "--nll", "--data", str(tmp_path)]) == 1
    line = error_line(capsys)  # checkpoint.py's words for a file torch cannot unpickle
    assert "c.pt: not a checkpoint" in line and "found a text file starting with" in line
    assert main(["eval", "--checkpoint", str(ckpt)]) == 2
    assert "nothing to evaluate" in error_line(capsys)
    assert main(["eval", "--checkpoint", str(ckpt), "--nll"]) == 2
    assert "--nll needs --data" in error_line(capsys)
    assert main(["train", "--eval-every", "5", "--out", str(tmp_path / "r")]) == 2
    assert "--eval-every needs --fid-stats" in error_line(capsys)


def test_a_bad_stats_file_stops_training_before_it_starts(tmp_path, capsys):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"\x93NUMPY" + bytes(100))
    run = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--steps", "2", "--out", str(run), "--quiet"]
    assert main([*argv, "--eval-every", "1", "--fid-stats", str(junk)]) == 1
    assert "junk.npz" in error_line(capsys)
    assert not list(run.glob("*.pt"))


def test_fid_during_training_keeps_best_then_eval_reports_fid_and_nll(
    tmp_path, capsys, fake_inception
):
    data = image_folder(tmp_path / "data", 16, 2)
    stats = tmp_path / "ref.npz"
    assert main(["fid-stats", str(data), "-o", str(stats), "--quiet"]) == 0
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--preset", "tiny", "--image-size", "8", "--T", "20"]
    argv += ["--steps", "4", "--batch-size", "4", "--out", str(run), "--quiet"]
    argv += ["--sample-every", "100", "--checkpoint-every", "2", "--num-samples", "4"]
    argv += ["--eval-every", "2", "--eval-n", "6", "--fid-stats", str(stats)]
    assert main(argv) == 0
    with (run / "log.csv").open() as f:
        rows = {int(r["step"]): r for r in csv.DictReader(f)}
    fids = {s: float(rows[s]["fid"]) for s in (2, 4)}
    assert all(np.isfinite(v) and v > 0 for v in fids.values())
    best = C.load_checkpoint(run / "best.pt")
    assert best["best_metric"] == pytest.approx(min(fids.values()), rel=1e-3)
    assert best["step"] == min(fids, key=fids.get)
    last = C.load_checkpoint(run / "ckpt-0000004.pt")
    assert last["best_metric"] == best["best_metric"]

    ckpt = run / "ckpt-0000004.pt"
    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(ckpt), "--fid-stats", str(stats), "--n", "6"]
    argv += ["--steps", "20", "--batch-size", "4", "--json", str(out), "--quiet"]
    assert main([*argv, "--nll", "--data", str(data)]) == 0
    text = capsys.readouterr().out
    record = json.loads(out.read_text())
    # the same sampler settings and seeds as the training run's last check: the same FID
    assert record["fid"]["fid"] == pytest.approx(fids[4], rel=1e-3)
    assert record["fid"]["n"] == 6 and record["fid"]["sampler"] == "ddim"
    assert record["weights"] == "ema" and record["step"] == 4
    assert f"FID {record['fid']['fid']:.3f}: 6 samples, ddim 20 steps" in text
    nll = record["nll"]
    assert nll["n"] == 6 and nll["T"] == 20 and 0 < nll["bpd"] < 100 and nll["stderr"] > 0
    assert f"NLL {nll['bpd']:.4f} ± {nll['stderr']:.4f} bits/dim" in text

    assert main([*argv[:-3], "--n", "1"]) == 1
    assert "at least 2 samples" in error_line(capsys)


def test_nll_subset_is_seeded_and_matches_the_library(tmp_path):
    from ddpm.data.images import load_dataset
    from ddpm.train import TrainConfig, train

    data = image_folder(tmp_path / "d", 10, 3)
    cfg = TrainConfig(
        preset="tiny", data=str(data), image_size="8", T=10, steps=2, batch_size=4,
        sample_every=100, checkpoint_every=2, out=str(tmp_path / "run"),
    )  # fmt: skip
    result = train(cfg, progress=False)
    loaded = load_model(result.last_checkpoint)
    images = select_images(load_dataset(str(data), (8, 8), 3), 4, seed=5)
    assert images.shape == (4, 3, 8, 8)
    a = model_nll(loaded, images, seed=1, batch_size=4)
    b = model_nll(loaded, images, seed=1, batch_size=16)  # timesteps batched 4 at a time
    np.testing.assert_allclose(a.per_image, b.per_image, rtol=1e-5)
    assert a.stderr == pytest.approx(a.per_image.std(ddof=1) / 2)
