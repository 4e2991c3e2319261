"""The tutorial's pictures (`ddpm show ...`), the plots behind them (both backends), and
training on fewer images than one batch."""

import csv
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ddpm.cli import main
from ddpm.data.images import ImageDataset
from ddpm.diffusion.schedule import make_schedule
from ddpm.io import checkpoint as C
from ddpm.viz.plots import COLORS, Panel, Series, log_ticks, nice_ticks, plot
from ddpm.viz.show import TUTORIAL_SCHEDULE, forward_process, schedule_panels
from test_evaluate import image_folder

finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(finite, finite)
def test_nice_ticks_cover_the_range_with_round_steps(a, b):
    lo, hi = min(a, b), max(a, b)
    ticks = nice_ticks(lo, hi)
    slack = 1e-9 * (ticks[-1] - ticks[0])  # float rounding of k * step
    assert ticks[0] <= lo + slack and ticks[-1] >= hi - slack
    assert 2 <= len(ticks) <= 12
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 5, 10))


@given(st.floats(1e-8, 1e8), st.floats(1.01, 1e6))
def test_log_ticks_bracket_the_range(lo, ratio):
    hi = lo * ratio
    ticks = log_ticks(lo, hi)
    assert ticks[0] <= lo * (1 + 1e-9) and ticks[-1] >= hi * (1 - 1e-9)
    assert ticks == sorted(ticks) and len(ticks) >= 2


@pytest.mark.parametrize("backend", ["pillow", "matplotlib"])
def test_both_backends_draw_every_series_inside_labelled_axes(tmp_path, backend):
    if backend == "matplotlib":
        pytest.importorskip("matplotlib")
    panels = [
        Panel("a", "step", "loss", [Series("one", [0, 1, 2], [3.0, 1.0, 0.5])], logy=True),
        Panel("b", "t / T", "value", [Series("x", [0, 1], [0, 1]), Series("y", [0, 1], [1, 0])]),
        Panel("c", "NFE", "FID", [Series("z", [1, 4, 50], [30, 14, 12])], logx=True, logy=True),
    ]
    assert plot(panels, tmp_path / "p.png", backend) == backend
    img = Image.open(tmp_path / "p.png").convert("RGB")
    assert img.width > img.height > 200
    colors = {c for _, c in img.getcolors(img.width * img.height)}
    for hex_ in COLORS[:2]:  # each series' colour is drawn (up to anti-aliasing)
        rgb = tuple(int(hex_[i : i + 2], 16) for i in (1, 3, 5))
        assert any(sum(abs(a - b) for a, b in zip(rgb, c)) < 30 for c in colors), hex_
    assert (0, 0, 0) in colors or any(sum(c) < 100 for c in colors)  # text and axes


def test_schedule_curves_are_the_closed_forms():
    abar, snr = schedule_panels(1000)
    labels = [s.label for s in abar.series]
    assert len(labels) == 5 and labels[-1].startswith("tutorial")
    with pytest.warns(UserWarning, match="ends at alpha_bar_T = 0.0481"):
        tutorial = make_schedule(*TUTORIAL_SCHEDULE)
    a = torch.tensor(abar.series[-1].y, dtype=torch.float64)
    torch.testing.assert_close(a, tutorial.alphas_cumprod)
    torch.testing.assert_close(
        torch.tensor(snr.series[-1].y, dtype=torch.float64), (a / (1 - a)).log()
    )
    # the tutorial's chain stops short of noise: ᾱ_T = ∏(1 - β_t) ≈ 0.048
    betas = torch.linspace(1e-4, 0.02, 300, dtype=torch.float64)
    assert a[-1].item() == pytest.approx(torch.prod(1 - betas).item(), rel=1e-12)
    for s in abar.series:  # ᾱ_t decreases, and x runs over (0, 1]
        assert all(u >= v for u, v in zip(s.y, s.y[1:])) and s.x[-1] == 1.0


def test_the_forward_process_has_the_moments_of_q():
    schedule = make_schedule("linear", 300, 1e-4, 0.05)
    x_0 = torch.full((4000, 1, 2, 2), 0.7)
    ts, frames = forward_process(x_0, schedule, columns=4, seed=0)
    assert ts == [0, 100, 200, 300] and torch.equal(frames[0], x_0)
    for t, x_t in zip(ts[1:], frames[1:]):  # the paper's step t is code index t - 1
        abar = schedule.alphas_cumprod[t - 1].item()
        assert x_t.mean().item() == pytest.approx(abar**0.5 * 0.7, abs=0.02)
        assert x_t.var().item() == pytest.approx(1 - abar, abs=0.02 + 0.05 * (1 - abar))


def png_size(path):
    with Image.open(path) as img:
        return img.size


@pytest.mark.usefixtures("tiny_preset")
def test_each_show_command_writes_its_png(tmp_path, capsys):
    data = image_folder(tmp_path / "data", 16, 0)
    out = tmp_path / "pics"
    assert main(["show", "data", "--data", str(data), "--n", "8", "--out", str(out / "d.png")]) == 0
    argv = ["show", "forward", "--data", str(data), "--image-size", "8", "--n", "2"]
    assert main([*argv, "--columns", "5", "--out", str(out / "f.png")]) == 0
    assert main(["show", "schedules", "--backend", "pillow", "--out", str(out / "s.png")]) == 0
    run = tmp_path / "run"
    train = ["train", "--data", str(data), "--preset", "tiny", "--image-size", "8", "--T", "20"]
    train += ["--steps", "4", "--log-every", "2", "--out", str(run), "--quiet"]
    assert main(train) == 0  # 16 images, the default batch size of 64
    assert (
        main(
            [
                "show",
                "reverse",
                "--checkpoint",
                str(run / "ckpt-0000004.pt"),
                "--n",
                "2",
                "--frames",
                "4",
                "--out",
                str(out / "r.png"),
            ]
        )
        == 0
    )
    assert main(["show", "curves", str(run), "--backend", "pillow"]) == 0
    for name in ("d", "f", "s", "r"):
        assert png_size(out / f"{name}.png")[0] > 50, name
    assert png_size(run / "curves.png")[0] > 50
    assert main(["show", "curves", str(tmp_path / "nowhere")]) == 1
    assert "no such file or folder; expected a run folder" in capsys.readouterr().err
    argv = ["show", "forward", "--schedule", "cosine", "--beta-start", "0.1"]
    assert main(argv) == 2


@pytest.mark.usefixtures("tiny_preset")
def test_sixteen_images_train_with_the_default_batch_size(tmp_path, capsys):
    data = image_folder(tmp_path / "data", 16, 0)
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--preset", "tiny", "--image-size", "8", "--T", "20"]
    assert main([*argv, "--steps", "3", "--log-every", "1", "--out", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("larger than the dataset (16 images): training with batches of 16") == 1
    ckpt = C.load_checkpoint(run / "ckpt-0000003.pt")
    # kept as asked (the default, 64), so that the same command resumes the run
    assert ckpt["train_config"]["batch_size"] == 64 and ckpt["step"] == 3
    with (run / "log.csv").open() as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["1", "2", "3"]
    # the library function that cuts batches still refuses a batch it cannot fill
    from ddpm.data.stream import batches
    from ddpm.errors import DataError

    tiny = ImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(DataError, match="larger than the dataset"):
        next(batches(tiny, 8, 0, 0, torch.device("cpu"), False))


def test_without_matplotlib_auto_draws_with_pillow(tmp_path, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    panel = Panel("a", "x", "y", [Series("s", [0, 1], [0, 1])])
    assert plot([panel], tmp_path / "p.png") == "pillow"
    with pytest.raises(ImportError):
        plot([panel], tmp_path / "q.png", backend="matplotlib")
