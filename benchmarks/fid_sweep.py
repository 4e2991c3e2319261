"""FID of many (checkpoint, weights, sampler, steps) cases in one process: a network is built
and compiled once per architecture, each case loads its weights into it, and the Inception
network and the reference statistics are loaded once. The matrix square roots run on CPU
threads while the GPU samples the next case. Each case is `ddpm eval`'s computation
(`ddpm.eval.evaluate.model_stats`); results go to a JSON file as they arrive.

    R=runs/cifar   # a run of `ddpm train --recipe cifar10-8min`
    python benchmarks/fid_sweep.py --stats cifar10-train-inception-stats.npz \
        --inception fid-inception-fp16.pt --n 10000 --json sweep.json \
        --case $R/snapshot-8min.pt:ema:ddim:50 --case $R/snapshot-8min.pt:ema:dpm-solver:50 \
        --case $R/snapshot-8min.pt:ema:dpm-solver-3m:25::guidance=1.5:guide=$R/snapshot-4min.pt

A case is CHECKPOINT:WEIGHTS:SAMPLER:STEPS[:SPACING][:KEY=VALUE...], WEIGHTS being `ema`,
`raw` or the sigma_rel of an extra power-function EMA, SPACING possibly empty, and the
KEY=VALUE options any of `ddpm eval`'s sampling settings: `variance=small|large|learned` (DDPM),
`eta=` (DDIM), `guidance=W` and `classes=uniform|data` (class-conditional models), and for
autoguidance `guide=CHECKPOINT` (its EMA weights) and/or `guide_ema=SIGMA_REL` (that EMA of the
guide, by default of the case's own checkpoint) and `interval=LOW,HIGH` (guidance only at noise
levels in that range), e.g. `run/ckpt.pt:ema:ddpm:50::variance=large` or
`run/snapshot-8min.pt:ema:dpm-solver:25::guidance=1:guide=run/snapshot-4min.pt`. The NFE
column counts two evaluations for each guided step. `--grid CASE_INDEX:PNG` also saves 100
samples of a case as a 10x10 grid.

Expected for a run of `ddpm train --recipe cifar10-8min` on one H100 (torch 2.11, 2026-11-27/28),
one table row per case: DDIM-50 about 12.8, DPM-Solver-50 12.1-12.6, the guided (3M) case
8.2-9.6 (NFE 50); docs/results/cifar10-quality/ holds such JSON files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from common import run_script

from ddpm.cli.args import interval
from ddpm.eval.evaluate import load_inception, load_stats, model_stats
from ddpm.eval.fid import fid_from_stats
from ddpm.sampling.generate import evaluations, generate
from ddpm.sampling.loaded import Loaded, load_model, speed_up, with_guidance
from ddpm.sampling.spec import SamplingSpec
from ddpm.viz.grids import save_grid


@dataclass
class Case:
    checkpoint: str
    weights: str  # ema | raw | an extra EMA's sigma_rel
    sampler: str
    steps: int
    spacing: str | None = None
    options: dict = dataclasses.field(default_factory=dict)  # more SamplingSpec fields

    @classmethod
    def parse(cls, text: str) -> Case:
        parts = text.split(":")
        fixed = [p for p in parts if "=" not in p]
        pairs = [p.split("=", 1) for p in parts[len(fixed) :]]
        if len(fixed) not in (4, 5) or any("=" not in p for p in parts[len(fixed) :]):
            raise SystemExit(
                f"--case {text!r}: expected CHECKPOINT:WEIGHTS:SAMPLER:STEPS[:SPACING]"
                "[:KEY=VALUE...]"
            )
        options = {}
        for key, value in pairs:
            if key not in OPTIONS:
                raise SystemExit(f"--case {text!r}: unknown option {key!r}; expected {OPTIONS}")
            options[key] = float(value) if key in ("eta", "guidance") else value
        if "interval" in options:  # parsed as ddpm's --guidance-interval
            try:
                options["interval"] = interval(options["interval"])
            except argparse.ArgumentTypeError as e:
                raise SystemExit(f"--case {text!r}: interval: {e}") from None
        spacing = fixed[4] or None if len(fixed) == 5 else None
        return cls(fixed[0], fixed[1], fixed[2], int(fixed[3]), spacing, options)

    def settings_options(self) -> dict:
        """The options that are SamplingSpec fields (the guide's are the model's)."""
        return {k: v for k, v in self.options.items() if k not in GUIDE_OPTIONS}

    def label(self) -> str:
        sp = f" {self.spacing}" if self.spacing else ""
        opts = "".join(f" {k}={v}" for k, v in self.options.items())
        return f"{Path(self.checkpoint).name} {self.weights} {self.sampler}-{self.steps}{sp}{opts}"


GUIDE_OPTIONS = ("guide", "guide_ema", "interval")
OPTIONS = ("variance", "eta", "guidance", "classes", *GUIDE_OPTIONS)


def on_device(case: Case, cache: dict, device: torch.device, compile: bool) -> Loaded:
    """The case's model (and guide) on `device`, with the case's guide and interval."""
    loaded = weights_on_device(case.checkpoint, case.weights, cache, device, compile)
    opts = case.options
    guide = None
    if "guide" in opts or "guide_ema" in opts:
        path, weights = opts.get("guide", case.checkpoint), opts.get("guide_ema", "ema")
        guide = weights_on_device(path, weights, cache, device, compile, role="guide")
    if guide is None and "interval" not in opts:
        return loaded
    return with_guidance(loaded, guide, opts.get("interval"))


def weights_on_device(
    checkpoint: str, weights: str, cache: dict, device: torch.device, compile: bool, role=""
) -> Loaded:
    """A checkpoint's weights on `device`, copied into an already compiled network of the same
    architecture (and role: a guide needs a network of its own) where there is one
    (diffusers' and ours differ), else a new one."""
    raw = weights == "raw"
    ema = None if weights in ("ema", "raw") else weights
    loaded = load_model(checkpoint, "cpu", raw_weights=raw, ema=ema)
    key = (role, type(loaded.model).__name__, repr(getattr(loaded.model, "config", None)))
    if key not in cache:
        loaded.model.to(device)
        cache[key] = speed_up(loaded, compile=compile and device.type == "cuda")
        return cache[key]
    ready = cache[key]
    ready.model.load_state_dict(loaded.model.state_dict())
    # everything but the network is this checkpoint's own: its schedule, step, classes and
    # sampling defaults (a distilled student's steps are not its teacher's)
    return dataclasses.replace(
        loaded,
        model=ready.model,
        schedule=loaded.schedule.to(device),
        bf16=ready.bf16,
        fixed_batch=ready.fixed_batch,
    )


def parse_grids(specs: list[str], n_cases: int, error) -> dict[int, str]:
    """--grid CASE_INDEX:PNG values as {index: path}; a bad one is an error before any sampling
    (an index past the cases used to draw nothing, silently: a lost grid is a lost GPU call)."""
    grids = {}
    for spec in specs:
        index, _, path = spec.partition(":")
        if not index.isdigit() or not path or int(index) >= n_cases:
            error(
                f"--grid {spec!r}: expected CASE_INDEX:PNG with CASE_INDEX a case's position "
                f"from 0 to {n_cases - 1} (in --case order)"
            )
        grids[int(index)] = path
    return grids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stats", required=True)
    p.add_argument("--inception")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--case", action="append", required=True, type=Case.parse)
    p.add_argument("--grid", action="append", default=[], help="CASE_INDEX:PNG")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    device = torch.device(args.device)
    reference = load_stats(args.stats)
    net = load_inception(args.inception, device)
    models: dict = {}
    grids = parse_grids(args.grid, len(args.case), p.error)
    pool = ThreadPoolExecutor(max_workers=4)
    pending, results = [], []

    def record(case: Case, future, seconds: float, step: int, nfe: int) -> None:
        fid = future.result()
        row = {
            **case.__dict__,
            "nfe": nfe,
            "step": step,
            "fid": fid,
            "n": args.n,
            "seconds": seconds,
        }
        results.append(row)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"FID {fid:8.3f}  {case.label()}  (step {step}, {seconds:.0f} s)", flush=True)

    for k, case in enumerate(args.case):
        t0 = time.perf_counter()
        loaded = on_device(case, models, device, not args.no_compile)
        settings = SamplingSpec(
            case.sampler,
            case.steps,
            seed=args.seed,
            batch_size=args.batch_size,
            spacing=case.spacing,
            **case.settings_options(),
        )
        stats = model_stats(loaded, net, args.n, settings)
        if k in grids:  # images 0..99 again: each depends on (seed, index, class) alone
            labels = None
            if loaded.num_classes is not None:  # the classes model_stats drew for them
                labels = loaded.draw_classes(settings.seed, range(100), settings.classes)
            x = generate(loaded, 100, settings, class_labels=labels, batch_size=100)
            save_grid(x, grids[k], nrow=10)
        seconds = time.perf_counter() - t0
        future = pool.submit(fid_from_stats, stats, reference)
        nfe = evaluations(loaded, settings)
        pending.append((case, future, seconds, loaded.step, nfe))
        while pending and pending[0][1].done():
            record(*pending.pop(0))
    for item in pending:
        record(*item)
    print("\n| case | NFE | FID |\n|---|---:|---:|")
    for r in results:
        case = Case(**{k: r[k] for k in Case.__dataclass_fields__})
        print(f"| {case.label()} | {r['nfe']} | {r['fid']:.2f} |")


if __name__ == "__main__":
    run_script(main)
