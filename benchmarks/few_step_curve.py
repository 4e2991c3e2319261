"""The few-step picture: FID against network evaluations (NFE) for our best training-free
solver and grid, diffusers' best scheduler on the same weights (both from `few_step_peers.py`),
the teacher's own many-step FID and the distilled students (from `fid_sweep.py`), and beside it
the students' FID against the minutes of distillation that made them. Prints both as tables.

The minutes of a student follow from `ddpm distill`'s flags: --max-minutes M is shared equally
by its rounds (from --from-steps F halving to --steps K), so the round whose student takes k
steps ends at log2(F/k) M / log2(F/K) minutes.

    ddpm export runs/cifar/snapshot-8min.pt --format diffusers --out runs/cd
    python benchmarks/few_step_peers.py --model runs/cd --stats STATS --n 10000 \\
        --nfe 5,10,20 --bf16 --json few-step-peers.json
    ddpm distill --checkpoint runs/cifar/snapshot-8min.pt --out runs/one --steps 1 \\
        --from-steps 32 --max-minutes 8
    python benchmarks/fid_sweep.py --stats STATS --n 10000 --no-compile --json students.json \\
        --case runs/one/round-16:ema:ddim:16 --case runs/one/round-8:ema:ddim:8 \\
        --case runs/one/round-4:ema:ddim:4 --case runs/one/round-2:ema:ddim:2 \\
        --case runs/one:ema:ddim:1
    python benchmarks/fid_sweep.py --stats STATS --n 10000 --json teacher.json \\
        --case runs/cifar/snapshot-8min.pt:ema:dpm-solver:50
    python benchmarks/few_step_curve.py --peers few-step-peers.json --students students.json \\
        --teacher teacher.json --distill-minutes 8 --from-steps 32 --steps 1 \\
        --out docs/cifar10-few-step.png

Expected output: a table of (NFE, FID) per series, then the students' (minutes, FID).
docs/cifar10-few-step.png is redrawn byte for byte from the results kept in the repository:

    R=docs/results/cifar10-few-step
    python benchmarks/few_step_curve.py --peers $R/peers.json --students $R/students.json \\
        --teacher $R/teacher.json --out docs/cifar10-few-step.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from common import run_script

from ddpm.io.paths import check_output_file
from ddpm.progress import count
from ddpm.viz.plots import Panel, Series, plot

SIDES = {"ours": "ours: best solver and grid", "diffusers": "diffusers: best scheduler"}


def envelope(peers: dict, side: str) -> list[tuple[int, float, str]]:
    """(NFE, FID, case) of the side's best row at each NFE of a few_step_peers.py result."""
    best: dict[int, tuple[float, str]] = {}
    for row in peers["rows"]:
        if row["side"] != side:
            continue
        for nfe, fid in row["fid"].items():
            case = f"{row['sampler']} {row['spacing']}"
            if int(nfe) not in best or fid < best[int(nfe)][0]:
                best[int(nfe)] = (fid, case)
    return [(n, f, c) for n, (f, c) in sorted(best.items())]


def student_minutes(steps: int, start: int, final: int, minutes: float) -> float:
    """When the round whose student takes `steps` steps ended, in minutes of distillation."""
    rounds = math.log2(start / final)
    done = math.log2(start / steps)
    if not (rounds >= 1 and done.is_integer() and 1 <= done <= rounds):
        raise SystemExit(
            f"a student of {count(steps, 'step')} is no round of --from-steps {start} to --steps "
            f"{final}"
        )
    return done * minutes / rounds


def students(rows: list[dict], args: argparse.Namespace) -> list[tuple[int, float, float]]:
    """(steps, FID, minutes) of each student in a fid_sweep.py result, fewest steps last."""
    out = {}
    for r in rows:
        m = student_minutes(r["steps"], args.from_steps, args.steps, args.distill_minutes)
        out[r["steps"]] = (r["steps"], r["fid"], m)
    return sorted(out.values(), reverse=True)


def load(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{what} {path}: not a readable JSON file ({e})") from None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peers", type=Path, required=True, help="few_step_peers.py's JSON")
    p.add_argument("--students", type=Path, help="fid_sweep.py's JSON of the distilled rounds")
    p.add_argument("--teacher", type=Path, help="fid_sweep.py's JSON of the teacher (many steps)")
    p.add_argument(
        "--distill-minutes",
        type=float,
        default=8.0,
        help="ddpm distill --max-minutes (default: %(default)s)",
    )
    p.add_argument(
        "--from-steps",
        type=int,
        default=32,
        help="ddpm distill --from-steps (default: %(default)s)",
    )
    p.add_argument(
        "--steps", type=int, default=1, help="ddpm distill --steps (default: %(default)s)"
    )
    p.add_argument("--out", type=Path, help="PNG with both panels")
    args = p.parse_args(argv)
    if args.out:  # a path it cannot write is said before the tables, not after them
        check_output_file(args.out, "image", "picture")

    peers = load(args.peers, "--peers")
    nfe_panel = Panel(
        "FID-10k against network evaluations", "network evaluations", "FID", logy=True, logx=True
    )
    time_panel = Panel("distilled students", "minutes of distillation", "FID", logy=True)
    print("| series | NFE | FID | case |\n|---|---:|---:|---|")
    for side, label in SIDES.items():
        points = envelope(peers, side)
        for n, f, case in points:
            print(f"| {label} | {n} | {f:.2f} | {case} |")
        if points:
            nfe_panel.series.append(
                Series(label, [n for n, *_ in points], [f for _, f, _ in points])
            )
    if args.teacher:
        for r in load(args.teacher, "--teacher"):
            print(f"| teacher | {r['nfe']} | {r['fid']:.2f} | {r['sampler']} |")
            nfe_panel.series.append(Series(f"teacher, {r['sampler']}", [r["nfe"]], [r["fid"]]))
    if args.students:
        kept = students(load(args.students, "--students"), args)
        for k, f, _ in kept:
            print(f"| distilled | {k} | {f:.2f} | DDIM, {count(k, 'step')} |")
        xs, ys = [k for k, *_ in kept], [f for _, f, _ in kept]
        nfe_panel.series.append(Series("distilled students", xs, ys, dashed=True))
        time_panel.series.append(Series("student", [m for *_, m in kept], ys))
        time_panel.title = f"students of {', '.join(map(str, xs))} steps"
        print("\n| student steps | minutes | FID |\n|---:|---:|---:|")
        for k, f, m in kept:
            print(f"| {k} | {m:.1f} | {f:.2f} |")
    if args.out:
        plot([nfe_panel, time_panel] if args.students else [nfe_panel], args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    run_script(main)
