"""Beyond images, measured: the 2-D toys and UCR/UEA sequences trained, sampled and evaluated
with the CLI's own commands (`ddpm train` then `ddpm eval --data HELDOUT`), one table.

Each row is a real run: its wall-clock seconds (training alone, from log.csv; and the whole
`ddpm train`, with its end pictures; and `ddpm eval`), the energy distance and MMD² of the
model's samples beside the floor (training vs held-out data) and the Gaussian baseline, and
these targets as PASS / FAIL:

  toys     energy(model) <= 2 x energy(floor) and energy(Gaussian) >= 5 x energy(model);
           8gaussians also: every mode gets between 8% and 17% of the samples
  series   MMD²(model) < MMD²(Gaussian), and conditional TSTR accuracy within 10 points of
           train-on-real

    PYTHONPATH=src python benchmarks/beyond_images.py                  # everything
    PYTHONPATH=src python benchmarks/beyond_images.py --toys moons --series none
    PYTHONPATH=src python benchmarks/beyond_images.py --pictures docs/beyond-images

Runs go under --out (default /tmp/beyond-images); --pictures copies each run's samples.png,
process.png and process.gif there as NAME-samples.png, NAME-process.png and NAME-process.gif.

Expected on a 2-core CPU (torch 2.14.1, 2026-11-27; the table of docs/beyond-images.md): each
toy trains in 33-39 s and lands at 1.0-1.6x the floor in energy distance, every toy PASS but
circles (Gaussian margin 4.3x < 5x); GunPoint TSTR 78.0% with DDIM-50 and 83.6% with DDPM-100
against 91.3% on real data, BasicMotions 100% against 100%.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import time
from pathlib import Path

from common import run_script

from ddpm.cli import main as ddpm

TOYS = ("moons", "swissroll", "8gaussians", "checkerboard", "circles")
# one setting for every toy: the mlp preset (0.43M), v-prediction (the default for points)
TOY_FLAGS = ["--steps", "2000", "--batch-size", "512", "--lr", "2e-3", "--lr-decay", "cosine"]
# the shared data beside the checkout (../shared/data/timeseries), as the README describes
SERIES_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "timeseries"
CLASS_FLAGS = ["--steps", "1500", "--batch-size", "32", "--lr", "2e-3", "--lr-decay", "cosine"]
SERIES = {"GunPoint": CLASS_FLAGS, "BasicMotions": CLASS_FLAGS}  # class-conditional unet1d
# the sequences are evaluated with two samplers: DDIM (deterministic, ddpm eval's default) and
# DDPM ancestral sampling on a 100-step respaced chain, whose fresh noise gives more varied
# samples (better TSTR, as measured in docs/beyond-images.md)
SERIES_SAMPLERS = (["--sampler", "ddim", "--steps", "50"], ["--sampler", "ddpm", "--steps", "100"])


def run(argv: list[str]) -> float:
    """`ddpm ARGV` in this process; its wall-clock seconds (an error stops the benchmark)."""
    print("$ ddpm " + " ".join(argv), flush=True)
    t0 = time.perf_counter()
    rc = ddpm(argv)
    if rc != 0:
        raise SystemExit(f"ddpm {argv[0]} exited with {rc}")
    return time.perf_counter() - t0


def train_seconds(out: Path) -> float:
    """The training steps' own seconds, summed from log.csv (without previews and pictures)."""
    with (out / "log.csv").open() as f:
        return sum(float(r["seconds"]) for r in csv.DictReader(f))


def last_checkpoint(out: Path) -> Path:
    return sorted(out.glob("ckpt-*.pt"))[-1]


def train(name: str, data: str, flags: list[str], root: Path) -> tuple[Path, float, float]:
    """`ddpm train`: (its folder, the training steps' seconds, the whole command's)."""
    out = root / name
    shutil.rmtree(out, ignore_errors=True)
    big = ["--sample-every", "1000000", "--checkpoint-every", "1000000", "--quiet"]
    wall = run(["train", "--data", data, *flags, "--out", str(out), *big])
    return out, train_seconds(out), wall


def evaluate(out: Path, data: str, flags: list[str], tag: str) -> tuple[float, dict]:
    """`ddpm eval --data HELDOUT`: (its seconds, its JSON record)."""
    report = out / f"eval{tag}.json"
    ckpt = str(last_checkpoint(out))
    secs = run(["eval", "--checkpoint", ckpt, "--data", data, *flags, "--json", str(report)])
    return secs, json.loads(report.read_text())


def toy_row(name: str, rec: dict) -> tuple[str, bool]:
    model, floor, gauss = rec["rows"][:3]
    ratio = model["energy"] / floor["energy"]
    ok = ratio <= 2 and gauss["energy"] >= 5 * model["energy"]
    extra = ""
    if name == "8gaussians":
        lo, hi = min(model["modes"]), max(model["modes"])
        ok = ok and lo >= 0.08 and hi <= 0.17
        extra = f"modes {100 * lo:.1f}-{100 * hi:.1f}%"
    if model.get("log_density") is not None:
        extra += f" log p {model['log_density']:.2f} (floor {floor['log_density']:.2f})"
    line = (
        f"{model['energy']:.4f} {floor['energy']:.4f} {gauss['energy']:.4f} {ratio:5.2f}x  "
        f"{model['mmd2']:.5f} {floor['mmd2']:.5f} {gauss['mmd2']:.5f}  {extra}"
    )
    return line, ok


def series_row(rec: dict) -> tuple[str, bool]:
    model, floor, gauss = rec["rows"][:3]
    t = rec["tstr"]
    ok = model["mmd2"] < gauss["mmd2"] and t["synthetic"] >= t["real"] - 0.10
    line = (
        f"{model['energy']:.4f} {floor['energy']:.4f} {gauss['energy']:.4f} "
        f"{model['energy'] / floor['energy']:5.2f}x  "
        f"{model['mmd2']:.5f} {floor['mmd2']:.5f} {gauss['mmd2']:.5f}  "
        f"TSTR {100 * t['synthetic']:.1f}% vs real {100 * t['real']:.1f}%"
    )
    return line, ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--toys", default=",".join(TOYS), help="comma-separated, or none")
    p.add_argument("--series", default=",".join(SERIES), help="comma-separated, or none")
    p.add_argument("--series-root", type=Path, default=SERIES_ROOT, help="UCR/UEA folders")
    p.add_argument("--out", type=Path, default=Path("/tmp/beyond-images"))
    p.add_argument("--pictures", type=Path, help="copy each run's pictures here")
    args = p.parse_args()
    toys = [t for t in args.toys.split(",") if t and t != "none"]
    series = [s for s in args.series.split(",") if s and s != "none"]
    rows = []
    for toy in toys:
        out, train_s, wall = train(toy, f"toy:{toy}", TOY_FLAGS, args.out)
        eval_s, rec = evaluate(out, f"toy:{toy}", [], "")
        rows.append((toy, train_s, wall, eval_s, *toy_row(toy, rec)))
        copy_pictures(out, toy, args.pictures)
    for name in series:
        data = f"timeseries:{args.series_root / name}"
        out, train_s, wall = train(name, data, [*SERIES[name], "--class-cond"], args.out)
        for sampler in SERIES_SAMPLERS:
            eval_s, rec = evaluate(out, data, sampler, "-" + "-".join(sampler[1::2]))
            label = f"{name} {sampler[1]}-{sampler[3]}"
            rows.append((label, train_s, wall, eval_s, *series_row(rec)))
        copy_pictures(out, name, args.pictures)
    cpu = platform.processor() or platform.machine()
    print(
        f"\n{time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} CPUs, torch threads "
        f"{os.environ.get('OMP_NUM_THREADS', 'default')}; seconds: training steps / whole "
        "`ddpm train` / `ddpm eval`"
    )
    head = "energy: model floor gauss  model/floor   MMD²: model floor gauss"
    print(f"{'data':<22}{'train':>7}{'total':>7}{'eval':>7}  {head}  target")
    for name, train_s, wall, eval_s, line, ok in rows:
        verdict = "PASS" if ok else "FAIL"
        print(f"{name:<22}{train_s:7.1f}{wall:7.1f}{eval_s:7.1f}  {line}  {verdict}")


def copy_pictures(out: Path, name: str, dest: Path | None) -> None:
    if dest is None:
        return
    dest.mkdir(parents=True, exist_ok=True)
    for pic in ("samples.png", "process.png", "process.gif"):
        if (out / pic).is_file():
            shutil.copyfile(out / pic, dest / f"{name}-{pic}")


if __name__ == "__main__":
    run_script(main)
