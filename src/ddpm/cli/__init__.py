"""`ddpm train | sample | ...`: parse flags, call the library, turn its errors into one line.

Every flag is checked by its argparse type, so a bad value is reported as
`ddpm train: error: argument --steps: expected a positive integer, got '0'` with exit code 2.
Errors the library raises on bad input (data, checkpoints, configs) print one line and exit 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from ddpm.checkpoint import CheckpointError
from ddpm.cli import eval as eval_cmd
from ddpm.cli import export as export_cmd
from ddpm.cli import fid as fid_cmd
from ddpm.cli import sample as sample_cmd
from ddpm.cli import show as show_cmd
from ddpm.cli import train as train_cmd
from ddpm.data import DataError
from ddpm.schedule import ScheduleError
from ddpm.unet import ConfigError

USER_ERRORS = (ConfigError, ScheduleError, DataError, CheckpointError)


# name, help, description, argument adders, what runs it
COMMANDS = (
    (
        "train",
        "train a model",
        "Train a diffusion model.",
        (train_cmd.add_train_args, train_cmd.add_train_eval_args),
        train_cmd.run_train,
    ),
    (
        "sample",
        "sample from a checkpoint",
        "Draw samples from a trained checkpoint.",
        (sample_cmd.add_sample_args,),
        sample_cmd.run_sample,
    ),
    (
        "fid-stats",
        "Inception statistics of a dataset, for FID",
        "Compute FID reference statistics (mu, sigma) of a folder or .zip of images.",
        (fid_cmd.add_fid_stats_args,),
        fid_cmd.run_fid_stats,
    ),
    (
        "fid",
        "FID between two image sets or statistics files",
        "FID between two folders / .zip files of images / statistics .npz files.",
        (fid_cmd.add_fid_args,),
        fid_cmd.run_fid,
    ),
    (
        "eval",
        "FID and bits/dim of a checkpoint",
        "Evaluate a checkpoint: FID of its samples, bits/dim on held-out data.",
        (eval_cmd.add_eval_args,),
        eval_cmd.run_eval,
    ),
    (
        "export",
        "a checkpoint as safetensors or a diffusers folder",
        "Export a checkpoint's EMA weights: a safetensors file with a JSON description "
        "(loadable by `ddpm sample`), or a diffusers DDPMPipeline folder.",
        (export_cmd.add_export_args,),
        export_cmd.run_export,
    ),
    (
        "show",
        "the tutorial's pictures: data, forward, schedules, reverse, curves",
        "Draw one of the tutorial's pictures: the data, the forward process on real images, "
        "the noise schedules, the reverse process of a model, a run's loss and FID curves.",
        (show_cmd.add_show_args,),
        show_cmd.run_show,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddpm", description="Denoising diffusion models from first principles."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    parser.commands = {}  # type: ignore[attr-defined]
    for name, help_, description, add_args, run in COMMANDS:
        p = sub.add_parser(name, help=help_, description=description)
        for add in add_args:
            add(p)
        p.set_defaults(run=run)
        parser.commands[name] = p  # type: ignore[attr-defined]
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"ddpm: warning: {message}", file=sys.stderr)


def _who(command: str) -> str:
    """`ddpm train`, or `ddpm train [rank 1]` in a process of a torchrun job."""
    if os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1") and "RANK" in os.environ:
        return f"ddpm {command} [rank {os.environ['RANK']}]"
    return f"ddpm {command}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    train_cmd.apply_recipe(parser.commands["train"], argv)  # type: ignore[attr-defined]
    args = parser.parse_args(argv)
    for name, value in vars(args).items():
        if isinstance(value, list) and not value:  # argparse turns `--flag=--` into []
            parser.error(f"argument --{name.replace('_', '-')}: expected a value, got '--'")
    warnings.showwarning = _show_warning
    try:
        return args.run(args)
    except ConfigError as e:  # a flag combination the parser could not check on its own
        print(f"{_who(args.command)}: error: {e}", file=sys.stderr)
        return 2
    except USER_ERRORS as e:
        print(f"{_who(args.command)}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ddpm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
