"""`ddpm train | sample | inpaint | edit | invert | interpolate | distill | tune-steps | fid-stats |
fid | eval | export | show`: parse flags, call the library, turn its errors into one line.

Every flag is checked by its argparse type (output paths included, before any work), so a bad
value is reported as `ddpm train: error: argument --steps: expected a positive integer, got
'0'` plus a line pointing to `--help`, with exit code 2. Errors the library raises on bad input
(data, checkpoints) print one line and exit 1; flag combinations it refuses exit 2.
"""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from argparse import SUPPRESS
from collections.abc import Sequence

from ddpm.cli import distill as distill_cmd
from ddpm.cli import edit as edit_cmd
from ddpm.cli import eval as eval_cmd
from ddpm.cli import export as export_cmd
from ddpm.cli import fid as fid_cmd
from ddpm.cli import invert as invert_cmd
from ddpm.cli import sample as sample_cmd
from ddpm.cli import show as show_cmd
from ddpm.cli import train as train_cmd
from ddpm.cli import tune as tune_cmd
from ddpm.cli.args import HelpFormatter, Parser, group, positive_int
from ddpm.errors import USER_ERRORS, ConfigError

# name, help, description, examples, argument adders, what runs it
COMMANDS = (
    (
        "train",
        "train a model (default: the bundled digits, about 2 minutes on 2 CPU cores)",
        "Train a diffusion model; checkpoints, log.csv and pictures go to --out.",
        "ddpm train\n"
        "ddpm train --data ~/photos --image-size 64 --preset cars64 --out runs/cars\n"
        "ddpm train --out runs/cars --resume\n"
        "ddpm train --recipe cifar10-8min --data cifar10:cifar10/train.zip --out runs/cifar\n"
        "torchrun --standalone --nproc-per-node 4 -m ddpm train ...   # several GPUs",
        (train_cmd.add_train_args, train_cmd.add_train_eval_args),
        train_cmd.run_train,
    ),
    (
        "sample",
        "draw images from a checkpoint: a grid, a folder of PNGs, the denoising chain",
        "Draw samples from a trained checkpoint.",
        "ddpm sample --checkpoint runs/default --out grid.png\n"
        "ddpm sample --checkpoint runs/default --sampler ddpm --n 16 --process chain.png",
        (sample_cmd.add_sample_args,),
        sample_cmd.run_sample,
    ),
    (
        "inpaint",
        "fill the black part of a picture's mask (RePaint, or plain replacement)",
        "Inpaint pictures (or impute sequences) with a trained model: the mask's white pixels "
        "are kept exactly, its black ones are filled (Lugmayr et al. 2022, RePaint).",
        "ddpm inpaint --checkpoint runs/default --image photo.png --mask center --out filled.png\n"
        "ddpm inpaint --checkpoint runs/cifar --image test/ --mask center --n 1000 "
        "--folder filled/",
        (edit_cmd.add_inpaint_args,),
        edit_cmd.run_inpaint,
    ),
    (
        "edit",
        "image-to-image: noise a picture part of the way, then denoise it (SDEdit)",
        "Image-to-image with a trained model (Meng et al. 2022, SDEdit): noise to t = S*T, "
        "then sample from there.",
        "ddpm edit --checkpoint runs/default --image sketch.png --strength 0.5 --out edited.png",
        (edit_cmd.add_edit_args,),
        edit_cmd.run_edit,
    ),
    (
        "invert",
        "the noise that DDIM decodes into a picture (DDIM run backwards)",
        "Invert pictures to their DDIM noise z (Song et al. 2021, eq. 13 run backwards).",
        "ddpm invert --checkpoint runs/default --image photo.png --out z.npy --psnr",
        (invert_cmd.add_invert_args,),
        invert_cmd.run_invert,
    ),
    (
        "interpolate",
        "a path between two pictures through their inverted noise",
        "Interpolate between two pictures: invert both, slerp the noise, decode with DDIM.",
        "ddpm interpolate --checkpoint runs/default --image a.png --image b.png --out path.gif",
        (invert_cmd.add_interpolate_args,),
        invert_cmd.run_interpolate,
    ),
    (
        "distill",
        "a student that samples in a few steps (progressive distillation)",
        "Distill a trained model into one that samples in --steps DDIM steps (Salimans & Ho "
        "2022): each round halves the steps, its student learning to take in one step what "
        "its teacher takes in two. The student is an ordinary checkpoint: ddpm sample draws "
        "in its steps by default.",
        "ddpm distill --checkpoint runs/default --out runs/default-4 --steps 4\n"
        "ddpm sample --checkpoint runs/default-4 --out four-steps.png",
        (distill_cmd.add_distill_args,),
        distill_cmd.run_distill,
    ),
    (
        "tune-steps",
        "a few-step time grid tuned for one model (GITS), for --spacing tuned",
        "Choose the K timesteps at which a K-step sampler keeps closest to the model's own "
        "finely solved trajectories (Chen et al. 2024, GITS), and keep them beside the "
        "checkpoint for ddpm sample / eval --spacing tuned --steps K.",
        "ddpm tune-steps --checkpoint runs/default --nfe 10\n"
        "ddpm sample --checkpoint runs/default --sampler ipndm --spacing tuned --steps 10",
        (tune_cmd.add_tune_args,),
        tune_cmd.run_tune,
    ),
    (
        "fid-stats",
        "Inception statistics (mu, sigma) of a dataset, for FID",
        "Compute FID reference statistics (mu, sigma) of a folder or .zip of images.",
        "ddpm fid-stats cifar10:cifar10/train.zip -o cifar10-train.npz",
        (fid_cmd.add_fid_stats_args,),
        fid_cmd.run_fid_stats,
    ),
    (
        "fid",
        "FID between two image sets or statistics files",
        "FID between two folders / .zip files of images / statistics .npz files.",
        "ddpm fid generated/ cifar10-train.npz",
        (fid_cmd.add_fid_args,),
        fid_cmd.run_fid,
    ),
    (
        "eval",
        "FID of a checkpoint's samples and its bits/dim on held-out data",
        "Evaluate a checkpoint: FID of its samples, bits/dim on held-out data.",
        "ddpm eval --checkpoint runs/cifar --fid-stats cifar10-train.npz --n 10000\n"
        "ddpm eval --checkpoint runs/cifar --nll --data cifar10:test.zip --split test",
        (eval_cmd.add_eval_args,),
        eval_cmd.run_eval,
    ),
    (
        "export",
        "a checkpoint as safetensors or a diffusers folder",
        "Export a checkpoint's EMA weights: a safetensors file with a JSON description "
        "(loadable by `ddpm sample`), or a diffusers DDPMPipeline folder.",
        "ddpm export runs/default/ckpt-0000600.pt --out digits.safetensors\n"
        "ddpm export runs/cifar/ckpt-0800000.pt --format diffusers --out ddpm-cifar10/",
        (export_cmd.add_export_args,),
        export_cmd.run_export,
    ),
    (
        "show",
        "the tutorial's pictures: data, forward, schedules, reverse, curves",
        "Draw one of the tutorial's pictures: the data, the forward process on real images, "
        "the noise schedules, the reverse process of a model, a run's loss and FID curves.",
        "ddpm show forward --out forward.png\n"
        "ddpm show reverse --checkpoint runs/default --out reverse.png\n"
        "ddpm show curves runs/default",
        (show_cmd.add_show_args,),
        show_cmd.run_show,
    ),
)


def _examples(text: str) -> str:
    return "example:\n" + "\n".join(f"  {line}" for line in text.splitlines())


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ddpm-from-scratch")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def build_parser() -> Parser:
    width = max(len(c[0]) for c in COMMANDS)
    listing = "\n".join(f"  {name:<{width}}  {help_}" for name, help_, *_ in COMMANDS)
    parser = Parser(
        prog="ddpm",
        usage="ddpm COMMAND [flags]",
        description="Denoising diffusion models from first principles.\n\ncommands:\n" + listing,
        epilog=_examples(
            "ddpm train                                 # then look at runs/default/samples.png\n"
            "ddpm sample --checkpoint runs/default --n 16 --out grid.png\n"
            "ddpm train --help                          # every flag of a command, with its default"
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ddpm {_version()}")
    # the commands are listed in the description (one line each), not again by argparse
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help=SUPPRESS)
    parser.commands = {}
    for name, _, description, examples, add_args, run in COMMANDS:
        p = sub.add_parser(
            name,
            prog=f"ddpm {name}",
            description=description,
            epilog=_examples(examples),
            formatter_class=HelpFormatter,
        )
        for add in add_args:
            add(p)
        group(p, "speed").add_argument(
            "--threads",
            type=positive_int,
            help="torch CPU threads (default: OMP_NUM_THREADS where set, as torchrun does, else "
            "measured at the start: all cores when they are free, 1 when other work keeps them "
            "busy, which would make all cores 5-15x slower)",
        )
        p.usage = _usage(p)
        p.set_defaults(run=run)
        parser.commands[name] = p
    return parser


def _usage(p: Parser) -> str:
    """`ddpm sample --checkpoint CHECKPOINT [flags]`: what must be given, then the rest."""
    words = [p.prog]
    for a in p._actions:
        if a.required and a.option_strings:
            words.append(f"{a.option_strings[-1]} {a.metavar or a.dest.upper()}")
    words += [a.metavar or a.dest.upper() for a in p._actions if not a.option_strings]
    return " ".join([*words, "[flags]"])


def _subcommand(p: Parser, name: str) -> Parser:
    for action in p._subparsers._group_actions if p._subparsers else []:
        if isinstance(action.choices, dict) and name in action.choices:
            return action.choices[name]
    return p


def _unrecognized(parser: Parser, extra: list[str]) -> str:
    """'unrecognized arguments: --stpes 5 (did you mean --steps?)'."""
    message = f"unrecognized arguments: {' '.join(extra)}"
    flags = [f for f in parser._option_string_actions if f.startswith("--")]
    for word in extra:
        if word.startswith("-"):
            close = difflib.get_close_matches(word.split("=", 1)[0], flags, n=1, cutoff=0.6)
            if close:
                return f"{message} (did you mean {close[0]}?)"
    return message


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
    train_cmd.apply_recipe(parser.commands["train"], argv)
    args, extra = parser.parse_known_args(argv)
    command = parser.commands[args.command]
    if getattr(args, "what", None) is not None:  # `ddpm show PICTURE`: the picture's parser
        command = _subcommand(command, args.what)
    if extra:
        command.error(_unrecognized(command, extra))
    for name, value in vars(args).items():
        if isinstance(value, list) and not value:  # argparse turns `--flag=--` into []
            command.error(f"argument --{name.replace('_', '-')}: expected a value, got '--'")
    warnings.showwarning = _show_warning
    import torch

    from ddpm.speed import set_cpu_threads

    threads = torch.get_num_threads()  # restored after the command: main() may run in-process
    try:
        set_cpu_threads(args.threads)
        return args.run(args)
    except ConfigError as e:  # a flag combination the parser could not check on its own
        print(f"{_who(args.command)}: error: {e}", file=sys.stderr)
        return 2
    except USER_ERRORS as e:
        print(f"{_who(args.command)}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a file the checks could not foresee (a full disk, a read-only mount)
        where = f"{e.filename}: " if e.filename else ""
        print(f"{_who(args.command)}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ddpm: interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    sys.exit(main())
