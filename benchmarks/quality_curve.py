"""The quality-per-minute pictures from `fid_sweep.py` results: FID against training minutes
(each run's snapshot-<m>min checkpoints, EMA weights, one sampler) and FID against network
evaluations for each sampler at the first run's last snapshot, with `ddpm eval` results
beside them as single points (--eval) and a guided sampler's median over several runs
(--guided; its file list may hold glob patterns). Prints both as tables.

docs/cifar10-quality.png, redrawn byte for byte from the results kept in the repository
(the 8-minute runs of `--recipe cifar10-8min`, of Ho et al.'s network with our training and of
diffusers' recipe by `peer_quality.py`, each scored by `fid_sweep.py`; eight seeds of the
recipe guided by their 4-minute snapshots):

    R=docs/results/cifar10-quality
    G="snapshot-4min.pt=$R/seed*-sweep.json"  # each run guided by its 4-minute snapshot
    python benchmarks/quality_curve.py --run "cifar10-8min recipe=$R/recipe-sweep.json" \
        --run "Ho et al.'s net, our training=$R/ho-network-sweep.json" \
        --run "diffusers' recipe (step graph)=$R/diffusers-sweep.json" \
        --eval "ddpm eval of the grid below (3M, guided)=$R/guided-eval.json" \
        --guided "recipe, guided: DPM-Solver++(3M), median over runs=dpm-solver-3m:1.5:$G" \
        --guided "recipe, guided: DPM-Solver++(2M), median of 7 runs=dpm-solver:1.5:$G" \
        --out docs/cifar10-quality.png

Expected output (abridged): the recipe at 1/2/4/8 minutes 510.06 / 80.46 / 17.76 / 12.77, Ho
et al.'s network 510.06 / 117.42 / 24.57 / 14.37, diffusers' recipe 500.65 / 500.65 / 30.39 /
18.93; at the recipe's last snapshot DDIM 23.31 / 15.48 / 12.77 and DPM-Solver++(2M)
20.51 / 15.09 / 12.59 at 10 / 20 / 50 evaluations; guided (3M) 35.96 / 16.83 / 12.04 / 9.14
at 10 / 20 / 30 / 50, guided (2M) 9.50 at 50, `ddpm eval` 8.21.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from common import run_script

from ddpm.sampling.samplers import network_evaluations
from ddpm.viz.plots import Panel, Series, plot

MINUTES = re.compile(r"snapshot-([0-9.]+)min")


def minutes(row: dict) -> float | None:
    """The training minutes of a row's checkpoint, read from its snapshot name."""
    m = MINUTES.search(Path(row["checkpoint"]).name)
    return float(m.group(1)) if m else None


def curve(rows: list[dict], sampler: str, steps: int) -> list[tuple[float, float]]:
    """(minutes, FID) of the EMA weights sampled with `sampler` at `steps`, by minutes."""
    points = {
        minutes(r): r["fid"]
        for r in rows
        if r["weights"] == "ema"
        and r["sampler"] == sampler
        and r["steps"] == steps
        and not r.get("spacing")
        and not r.get("options")
        and minutes(r) is not None
    }
    return sorted(points.items())


def by_nfe(rows: list[dict], at: float) -> dict[str, list[tuple[int, float]]]:
    """For each sampler (and spacing, and options such as DDPM's variance), (NFE, FID) of the
    EMA weights at `at` minutes."""
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        if r["weights"] == "ema" and minutes(r) == at:
            extra = [r["spacing"]] if r.get("spacing") else []
            extra += [f"{k} {v}" for k, v in r.get("options", {}).items()]
            name = r["sampler"] + (f" ({', '.join(extra)})" if extra else "")
            out[name].append((r["nfe"], r["fid"]))
    return {k: sorted(v) for k, v in out.items()}


def guided(rows: list[dict], sampler: str, w: float, guide: str) -> list[tuple[int, float]]:
    """(NFE, median FID) of `sampler` guided at weight `w` by a checkpoint named `guide`, and
    nothing else (no interval, no other EMA), over the rows of several runs: one seed's
    number is within about 0.8 FID of the next one's."""
    fids: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        o = r.get("options", {})
        if (
            r["sampler"] == sampler
            and set(o) == {"guidance", "guide"}
            and float(o["guidance"]) == w
            and Path(o["guide"]).name == guide
        ):
            fids[r["nfe"]].append(r["fid"])
    return sorted((n, statistics.median(f)) for n, f in fids.items())


def guided_spec(spec: str) -> tuple[str, str, float, str, list[str]]:
    """--guided's LABEL=SAMPLER:W:GUIDE=SWEEP.json,... as (label, sampler, w, guide, paths)."""
    label, _, rest = spec.partition("=")
    what, _, paths = rest.partition("=")
    parts = what.split(":")
    try:
        if len(parts) != 3 or not (label and paths):
            raise ValueError
        return label, parts[0], float(parts[1]), parts[2], paths.split(",")
    except ValueError:
        sys.exit(f"--guided {spec!r}: expected LABEL=SAMPLER:W:GUIDE=SWEEP.json,...")


def eval_point(record: dict, path: str) -> tuple[int, float]:
    """(NFE, FID) of a `ddpm eval` JSON. Older files lack "nfe"; it follows from the sampler
    then, unless a guidance interval makes it depend on the schedule."""
    fid = record["fid"]
    if "nfe" in fid:
        return fid["nfe"], fid["fid"]
    if fid.get("guidance_interval") or fid["steps"] is None:
        sys.exit(f'{path}: no "nfe" recorded; evaluate it again with this version of ddpm eval')
    nfe = network_evaluations(fid["sampler"], fid["steps"], T=0)  # T counts only without steps
    return nfe * (2 if fid["guidance"] else 1), fid["fid"]


def series(label: str, points: list[tuple[float, float]]) -> Series:
    """A plotted line through (x, y) points."""
    return Series(label, [x for x, _ in points], [y for _, y in points])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, help="LABEL=SWEEP.json")
    p.add_argument(
        "--eval", action="append", default=[], help="LABEL=EVAL.json: a `ddpm eval` point"
    )
    p.add_argument(
        "--guided",
        action="append",
        default=[],
        help="LABEL=SAMPLER:W:GUIDE=SWEEP.json,...: the median over the sweeps at each NFE",
    )
    p.add_argument("--sampler", default="ddim", help="the curve's sampler (default: ddim)")
    p.add_argument("--steps", type=int, default=50, help="the curve's steps (default: 50)")
    p.add_argument("--out", type=Path, help="PNG with both panels")
    args = p.parse_args()

    time_panel = Panel(
        f"FID-10k ({args.sampler}-{args.steps}, EMA)", "training minutes", "FID", logy=True
    )
    nfe_panel = Panel("FID-10k at the last snapshot", "network evaluations", "FID", logy=True)
    print(f"| run | minutes | FID ({args.sampler}-{args.steps}) |\n|---|---:|---:|")
    for k, spec in enumerate(args.run):
        label, _, path = spec.partition("=")
        rows = json.loads(Path(path).read_text())
        points = curve(rows, args.sampler, args.steps)
        if not points:
            continue
        for m, fid in points:
            print(f"| {label} | {m:g} | {fid:.2f} |")
        time_panel.series.append(series(label, points))
        if k > 0:
            continue
        for name, pts in by_nfe(rows, points[-1][0]).items():
            nfe_panel.series.append(series(f"{label} {name}", pts))
    for spec in args.eval:
        label, _, path = spec.partition("=")
        nfe, fid = eval_point(json.loads(Path(path).read_text()), path)
        nfe_panel.series.append(Series(label, [nfe], [fid]))
    for spec in args.guided:
        label, sampler, w, guide, paths = guided_spec(spec)
        files = [f for pattern in paths for f in sorted(glob.glob(pattern)) or [pattern]]
        rows = [r for path in files for r in json.loads(Path(path).read_text())]
        pts = guided(rows, sampler, w, guide)
        if not pts:
            sys.exit(f"--guided {spec}: no rows of {sampler} guided at w {w} by {guide}")
        nfe_panel.series.append(series(label, pts))
    print("\n| sampler at the last snapshot | NFE | FID |\n|---|---:|---:|")
    for s in nfe_panel.series:
        for n, f in zip(s.x, s.y):
            print(f"| {s.label} | {n} | {f:.2f} |")
    if args.out:
        plot([time_panel, nfe_panel], args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    run_script(main)
