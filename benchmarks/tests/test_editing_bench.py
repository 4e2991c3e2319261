"""benchmarks/editing.py: linear interpolation, its imputation baseline, is exact on a line;
each measurement runs end to end on tiny models (inversion; imputation of sequences with both
baselines; inpainting by RePaint, replacement and diffusers' RePaint on the same weights,
with a fake FID network) and writes its rows."""

import json

import numpy as np
import pytest

from conftest import load_benchmark
from test_beyond_images import tiny_nets, write_ts  # noqa: F401  (tiny_nets: a fixture)
from test_editing import run_folder  # noqa: F401  (a fixture)
from test_evaluate import fake_inception  # noqa: F401  (a fixture)

bench = load_benchmark("editing")


def test_linear_interpolation_fills_a_line_exactly():
    t = np.arange(12, dtype=float)
    x = np.stack([np.stack([2 * t + 1, -t]), np.stack([t, t])])  # (2, 2, 12)
    keep = np.ones((2, 12), bool)
    keep[0, [3, 4, 7]] = keep[1, [1, 10]] = False
    np.testing.assert_allclose(bench.linear_fill(x, keep), x)


@pytest.mark.usefixtures("fake_inception")
def test_inversion_and_inpainting_run_end_to_end(run_folder, tmp_path):  # noqa: F811
    from ddpm.cli import main

    d = run_folder
    common = ["--checkpoint", str(d / "run"), "--data", str(d / "pics"), "--n", "3"]
    rows = bench.main(["invert", *common, "--steps", "2,5", "--device", "cpu"])
    assert [r["steps"] for r in rows] == [2, 5] and all(np.isfinite(r["psnr_mean"]) for r in rows)
    # a run cut short (here at its second step count) keeps the rows it measured
    invert, cut = bench.ddim_invert, tmp_path / "cut.json"

    def stop_at_five(loaded, x, k, **kw):
        if k == 5:
            raise KeyboardInterrupt
        return invert(loaded, x, k, **kw)

    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(bench, "ddim_invert", stop_at_five)
        bench.main(["invert", *common, "--steps", "2,5", "--device", "cpu", "--json", str(cut)])
    assert [r["steps"] for r in json.loads(cut.read_text())["records"]] == [2]

    diffusers = pytest.importorskip("diffusers")
    assert diffusers is not None
    assert main(["export", str(d / "run"), "--format", "diffusers", "--out", str(d / "hf")]) == 0
    stats = tmp_path / "ref.npz"
    assert main(["fid-stats", str(d / "pics"), "-o", str(stats), "--quiet"]) == 0
    out = tmp_path / "inpaint.json"
    argv = ["inpaint", *common, "--model-steps", "4", "--jump", "2", "--resample", "2",
            "--replace-steps", "4,6", "--diffusers", str(d / "hf"), "--stats", str(stats),
            "--json", str(out), "--device", "cpu"]  # fmt: skip
    rows = bench.main(argv)
    assert [(r["method"], r["nfe"]) for r in rows] == [
        ("repaint", 6), ("replace", 4), ("replace", 6), ("diffusers RePaint", 6)
    ]  # fmt: skip
    assert all(np.isfinite(r["rmse"]) and np.isfinite(r["fid"]) for r in rows)
    assert len(json.loads(out.read_text())["records"]) == 4


@pytest.mark.usefixtures("tiny_nets")
def test_imputation_reports_the_model_and_both_baselines(tmp_path):
    from ddpm.cli import main

    g = np.random.default_rng(0)
    folder = tmp_path / "Waves"
    folder.mkdir()
    t = np.linspace(0, 1, 24)
    for split, n in (("TRAIN", 16), ("TEST", 8)):
        y = np.arange(n) % 2
        x = np.sin(2 * np.pi * (1 + y[:, None]) * t + g.uniform(0, 6, (n, 1)))[:, None]
        write_ts(folder / f"Waves_{split}.ts", x, y, ["slow", "fast"])
    run = tmp_path / "run"
    argv = ["train", "--data", f"timeseries:{folder}", "--class-cond", "--steps", "5",
            "--T", "20", "--batch-size", "8", "--out", str(run), "--quiet",
            "--no-final-pictures"]  # fmt: skip
    assert main(argv) == 0
    rows = bench.main(["impute", "--checkpoint", str(run), "--data", f"timeseries:{folder}",
                       "--model-steps", "5", "--jump", "2", "--resample", "2", "--n", "0",
                       "--samples", "2", "--device", "cpu"])  # fmt: skip
    by = {r["filled_by"].split(" ")[0]: r for r in rows}
    assert set(by) == {"model", "linear", "training"} and by["model"]["n"] == 8
    assert "mean of 2" in by["model"]["filled_by"]
    # smooth waves of random phase: their neighbours say more than the mean of all of them
    assert by["linear"]["rmse"] < by["training"]["rmse"]


def test_the_exact_conditional_of_8gaussians_and_conditioning_end_to_end(tmp_path, tiny_nets):  # noqa: F811
    # at x = 0 the two centres on the y axis, ±4/1.414, share p(y | x) equally: its own
    # draws are near it, and draws at the wrong height are not
    g = np.random.default_rng(0)
    c = 4 / 1.414
    right = np.where(g.uniform(size=4000) < 0.5, c, -c) + 0.5 / 1.414 * g.normal(size=4000)
    at_0 = bench.exact_cdf("8gaussians", 0.0)
    assert bench.exact_w1(*at_0, right) < 0.1
    assert bench.exact_w1(*at_0, right + 1.0) > 0.9
    from ddpm.cli import main

    run = tmp_path / "run"
    argv = ["train", "--data", "toy:8gaussians", "--steps", "5", "--batch-size", "32",
            "--T", "20", "--quiet", "--no-final-pictures", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    rows = bench.main(["condition", "--checkpoint", str(run), "--data", "toy:8gaussians",
                       "--n", "16", "--model-steps", "5", "--jump", "2", "--resample", "2",
                       "--given", "0,2", "--device", "cpu"])  # fmt: skip
    assert [r["filled_by"] for r in rows[:3]] == ["exact draws", "repaint", "replace"]
    assert len(rows) == 6 and all(np.isfinite(r["w1"]) for r in rows)
