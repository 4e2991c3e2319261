"""`ddpm tune-steps`: a K-step time grid tuned for one model (`ddpm.sampling.tuning`), kept
beside its checkpoint (`ddpm.io.tuned`) for `ddpm sample/eval --spacing tuned --steps K`."""

from __future__ import annotations

import argparse
import time

from ddpm.cli.args import add_device_arg, add_quiet_arg, group, positive_int
from ddpm.cli.edit import _load, add_model_args
from ddpm.errors import ConfigError
from ddpm.progress import count
from ddpm.sampling.samplers import DEFAULT_SPACING

COMPARED = ("ddim", "dpm-solver", "unipc", "ipndm")  # the report's samplers: one call a step


def add_tune_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    g = group(p, "tuning")
    g.add_argument(
        "--nfe",
        "--steps",
        dest="nfe",
        type=positive_int,
        required=True,
        help="network evaluations of the sampler to tune for: the grid's steps (DDIM, "
        "DPM-Solver++, UniPC and iPNDM evaluate once a step)",
    )
    g.add_argument(
        "--candidates",
        type=positive_int,
        default=100,
        help="the fine grid the K steps are chosen from (log-SNR even); the reference "
        "trajectories are solved on it by DPM-Solver++(3M) (default: %(default)s)",
    )
    g.add_argument(
        "--n", type=positive_int, default=64, help="trajectories tuned on (default: %(default)s)"
    )
    g.add_argument("--seed", type=int, default=0, help="of their noises (default: %(default)s)")
    add_quiet_arg(p)
    add_device_arg(group(p, "speed"))


def run_tune(args: argparse.Namespace) -> int:
    from ddpm.io.interchange import model_path
    from ddpm.io.paths import check_writable_file
    from ddpm.io.tuned import read_tuned, tuned_path, write_tuned
    from ddpm.sampling.tuning import end_error, tune_grid

    loaded = _load(args)
    if distilled := loaded.sampling.get("distilled"):
        raise ConfigError(
            f"{args.checkpoint} was distilled to draw in {count(distilled, 'step')} on its "
            "own grid, which it was trained for: tune the grid of its teacher instead"
        )
    if args.nfe > loaded.schedule.T:
        raise ConfigError(f"--nfe {args.nfe} exceeds the model's T = {loaded.schedule.T}")
    target = model_path(args.checkpoint)
    check_writable_file(tuned_path(target))  # before the work, as every output
    read_tuned(target)  # and a damaged file of grids is named now, not after it
    start = time.perf_counter()
    tuned = tune_grid(loaded, args.nfe, candidates=args.candidates, n=args.n, seed=args.seed)
    seconds = time.perf_counter() - start
    info = {"candidates": args.candidates, "n": args.n, "seed": args.seed, "cost": tuned.cost}
    written = write_tuned(target, tuned.grid, info)
    print(f"tuned {args.nfe} steps in {seconds:.1f} s: {tuned.grid}")
    print(f"wrote {written}; sample with --spacing tuned --steps {args.nfe}")
    if args.quiet:
        return 0
    print(f"distance of {args.nfe}-step end points to the reference (RMS, lower is better):")
    print(f"{'sampler':<12} {'its default grid':>22} {'tuned':>8}")
    for sampler in COMPARED:
        default = DEFAULT_SPACING[sampler]
        a = end_error(loaded, tuned.reference, sampler, args.nfe, default)
        b = end_error(loaded, tuned.reference, sampler, args.nfe, tuned.grid)
        print(f"{sampler:<12} {default:>12} {a:>9.4f} {b:>8.4f}")
    return 0
