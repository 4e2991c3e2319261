"""How long `ddpm train` takes to its first steps, and how fast it then runs, with the whole
network compiled as one graph (`--compile-scope model`) against each repeated block compiled
on its own (`--compile-scope blocks`, regional compilation). Each run is a fresh process with
an empty inductor cache, so every compile is cold, as on a newly started machine.

    PYTHONPATH=src python3 benchmarks/compile_scope.py --data cifar10:train.zip \
        --case cifar10-8min --case "cars64-fast --data stanford-cars:cars.zip --resize squash"

A case is a recipe name, optionally followed by more `ddpm train` flags (quoted as one
argument). The table gives, per case and scope: the first window's seconds (compilation,
CUDA-graph capture and the window's own steps), the median img/s of the later windows, and
how many steps each would make in --minutes (the first window, then the median rate of the
later ones).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median


def run(case: list[str], scope: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": os.path.join(tmp, "inductor")}
        env.setdefault("PYTHONPATH", str(Path(__file__).resolve().parents[1] / "src"))
        out = os.path.join(tmp, "run")
        cmd = [sys.executable, "-m", "ddpm", "train", "--recipe", case[0], "--data", args.data]
        cmd += [*case[1:], "--compile-scope", scope, "--steps", str(args.steps)]
        cmd += ["--log-every", str(args.window), "--max-minutes", "60", "--out", out, "--quiet"]
        cmd += ["--no-final-pictures", "--num-samples", "8", "--sample-every", "1000000"]
        cmd += shlex.split(args.extra)
        print("$", shlex.join(cmd), flush=True)
        subprocess.run(cmd, env=env, check=True)
        with open(os.path.join(out, "log.csv")) as f:
            rows = list(csv.DictReader(f))
    later = list(zip(rows, rows[1:]))  # (previous, this) for each window after the first
    img_s = [float(r["img_per_s"]) for _, r in later] or [float("nan")]
    steps_s = [(int(r["step"]) - int(p["step"])) / float(r["seconds"]) for p, r in later]
    return {
        "case": shlex.join(case),
        "scope": scope,
        "first_window_s": float(rows[0]["seconds"]),
        "first_window_steps": int(rows[0]["step"]),
        "img_per_s": median(img_s),
        "steps_per_s": median(steps_s or [float("nan")]),
        "windows": len(rows),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the --data of every case (a case may override)")
    p.add_argument("--case", action="append", required=True, help="RECIPE [more train flags]")
    p.add_argument("--scopes", default="model,blocks")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--window", type=int, default=100, help="steps per log window")
    p.add_argument("--minutes", type=float, default=8.0, help="for the steps-in-budget column")
    p.add_argument("--extra", default="", help="flags for every run, e.g. '--device cpu'")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rows = []
    for text in args.case:
        for scope in args.scopes.split(","):
            rows.append(run(shlex.split(text), scope, args))
    print(f"\n| case | scope | first window (s) | img/s after | steps in {args.minutes:g} min |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        rest = max(0.0, args.minutes * 60 - r["first_window_s"])
        steps = r["first_window_steps"] + rest * r["steps_per_s"]
        print(
            f"| {r['case']} | {r['scope']} | {r['first_window_s']:.1f} | {r['img_per_s']:,.0f} "
            f"| {steps:,.0f} |"
        )
        r["steps_in_budget"] = steps
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
