"""`ddpm train | sample`: parse flags, call the library, turn its errors into one line.

Every flag is checked by its argparse type, so a bad value is reported as
`ddpm train: error: argument --steps: expected a positive integer, got '0'` with exit code 2.
Errors the library raises on bad input (data, checkpoints, configs) print one line and exit 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ddpm.checkpoint import CheckpointError
from ddpm.data import DataError, parse_size
from ddpm.diffusion import LOSS_TYPES, PREDICTIONS
from ddpm.samplers import SAMPLERS
from ddpm.schedule import SCHEDULES, ScheduleError
from ddpm.unet import PRESETS, ConfigError

USER_ERRORS = (ConfigError, ScheduleError, DataError, CheckpointError)


# --- argument types: each returns the value or raises ArgumentTypeError with what was expected


def _number(kind: Callable[[str], Any], what: str, ok: Callable[[Any], bool]):
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = _number(int, "a positive integer", lambda v: v > 0)
nonneg_int = _number(int, "a non-negative integer", lambda v: v >= 0)
positive_float = _number(float, "a positive number", lambda v: v > 0)
nonneg_float = _number(float, "a non-negative number", lambda v: v >= 0)
unit_float = _number(float, "a number in (0, 1]", lambda v: 0 < v <= 1)
decay_float = _number(float, "a number in [0, 1)", lambda v: 0 <= v < 1)
seed_int = _number(int, "an integer in [0, 2^63)", lambda v: 0 <= v < 2**63)


def image_size(text: str) -> str:
    try:
        parse_size(text)
    except DataError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def device_name(text: str) -> str:
    import torch

    if text == "auto":
        return text
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"expected auto, cpu, cuda or cuda:N, got {text!r}"
        ) from None
    return text


# --- train --------------------------------------------------------------------------------------


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = {f.name: f.default for f in dataclasses.fields(_train_config_cls())}
    g = p.add_argument_group("data")
    g.add_argument("--data", help="folder or .zip of images; default: the bundled MNIST digits")
    g.add_argument("--image-size", type=image_size, help="N or HxW (default: the preset's)")
    g.add_argument("--channels", type=int, choices=(1, 3), help="default: the data's own")
    g.add_argument("--resize", choices=("center-crop", "squash"), default=d["resize"])
    g.add_argument(
        "--flip",
        dest="hflip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips (default: on, off for the bundled digits)",
    )
    g.add_argument(
        "--strict",
        dest="strict_data",
        action="store_true",
        help="stop at the first unreadable image instead of skipping it",
    )
    g = p.add_argument_group("model and diffusion")
    g.add_argument("--preset", choices=tuple(PRESETS), default=d["preset"])
    g.add_argument("--dropout", type=decay_float)
    g.add_argument("--schedule", choices=SCHEDULES, default=d["schedule"])
    g.add_argument("--T", "--timesteps", dest="T", type=positive_int, default=d["T"])
    g.add_argument("--beta-start", type=unit_float)
    g.add_argument("--beta-end", type=unit_float)
    g.add_argument("--prediction", choices=PREDICTIONS, default=d["prediction"])
    g.add_argument("--loss", choices=LOSS_TYPES, default=d["loss"])
    g.add_argument("--min-snr-gamma", type=positive_float)
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=positive_int, default=d["steps"])
    g.add_argument("--batch-size", type=positive_int, default=d["batch_size"])
    g.add_argument("--lr", type=positive_float, default=d["lr"])
    g.add_argument("--warmup", type=nonneg_int, default=d["warmup"])
    g.add_argument("--lr-decay", choices=("constant", "cosine"), default=d["lr_decay"])
    g.add_argument("--weight-decay", type=nonneg_float, default=d["weight_decay"])
    g.add_argument("--grad-clip", type=positive_float, default=d["grad_clip"])
    g.add_argument("--ema-decay", type=decay_float, default=d["ema_decay"])
    g.add_argument("--seed", type=seed_int, default=d["seed"])
    g.add_argument("--device", type=device_name, default=d["device"])
    g.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=d["bf16"],
        help="bfloat16 autocast on CUDA",
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=d["out"], help="run folder (checkpoints, samples, log)")
    g.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        help="continue from a checkpoint (default: the newest in --out)",
    )
    g.add_argument("--log-every", type=positive_int, default=d["log_every"])
    g.add_argument("--sample-every", type=positive_int, default=d["sample_every"])
    g.add_argument("--checkpoint-every", type=positive_int, default=d["checkpoint_every"])
    g.add_argument("--keep-checkpoints", type=positive_int, default=d["keep_checkpoints"])
    g.add_argument("--num-samples", type=positive_int, default=d["num_samples"])
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def _train_config_cls():
    from ddpm.train import TrainConfig

    return TrainConfig


def run_train(args: argparse.Namespace) -> int:
    from ddpm.generate import denoising_process, generate, load_model, save_process
    from ddpm.images import save_grid
    from ddpm.train import NonFiniteError, TrainConfig, train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    try:
        result = train(cfg, resume=args.resume, progress=not args.quiet)
    except NonFiniteError as e:
        print(f"ddpm train: error: {e}", file=sys.stderr)
        return 1
    if result.stopped_early:
        print(
            f"stopped at step {result.step}; checkpoint {result.last_checkpoint}\n"
            f"resume with: ddpm train --out {cfg.out} --resume (and the same flags)"
        )
        return 130
    out = result.out
    loaded = load_model(result.last_checkpoint, device=_device(cfg.device))
    x = generate(
        loaded,
        cfg.num_samples,
        cfg.seed,
        cfg.sample_sampler,
        min(cfg.sample_steps, cfg.T),
        clip=cfg.sample_clip,
    )
    save_grid(x, out / "samples.png", scale=2 if max(loaded.shape[1:]) <= 32 else 1)
    save_process(
        denoising_process(loaded, n=8, seed=cfg.seed, clip=cfg.sample_clip),
        out / "process.png",
        out / "process.gif",
    )
    print(
        f"trained {result.step} steps; wrote {out / 'samples.png'}, {out / 'process.png'}, "
        f"{out / 'process.gif'}, {out / 'loss.png'} and checkpoint {result.last_checkpoint}"
    )
    return 0


def _device(name: str):
    from ddpm.train import resolve_device

    return resolve_device(name)


# --- sample -------------------------------------------------------------------------------------


def add_sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--n", type=positive_int, default=64, help="number of images")
    p.add_argument("--sampler", choices=SAMPLERS, default="ddim")
    p.add_argument("--steps", type=positive_int, default=50, help="DDIM / DPM-Solver steps")
    p.add_argument("--eta", type=nonneg_float, default=0.0, help="DDIM noise (0: deterministic)")
    p.add_argument(
        "--variance",
        choices=("small", "large"),
        default="small",
        help="DDPM reverse variance: posterior (small) or beta_t (large)",
    )
    p.add_argument(
        "--clip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="clip the x_0 prediction to [-1, 1] (default: on, as Ho et al.)",
    )
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--out", type=Path, default=Path("samples.png"), help="grid PNG")
    p.add_argument("--folder", type=Path, help="also write each image as a PNG here")
    p.add_argument("--process", type=Path, help="picture of the denoising chain (PNG)")
    p.add_argument("--gif", type=Path, help="GIF of the denoising chain")
    p.add_argument("--raw-weights", action="store_true", help="use the raw, not the EMA, weights")
    p.add_argument("--device", type=device_name, default="auto")


def run_sample(args: argparse.Namespace) -> int:
    from ddpm.generate import denoising_process, generate, load_model, save_process
    from ddpm.images import save_grid, save_images

    loaded = load_model(args.checkpoint, _device(args.device), args.raw_weights)
    if args.sampler != "ddpm" and args.steps > loaded.schedule.T:
        raise ConfigError(f"--steps {args.steps} exceeds the model's T = {loaded.schedule.T}")

    def write(start: int, x) -> None:
        if args.folder is not None:
            save_images(x, args.folder, start)

    x = generate(
        loaded,
        args.n,
        args.seed,
        args.sampler,
        args.steps,
        args.eta,
        args.variance,
        args.clip,
        args.batch_size,
        on_batch=write,
    )
    save_grid(x, args.out)
    print(f"wrote {args.n} samples to {args.out}" + (f" and {args.folder}/" if args.folder else ""))
    if args.process or args.gif:
        frames = denoising_process(
            loaded,
            n=min(args.n, 8),
            seed=args.seed,
            sampler=args.sampler,
            steps=args.steps,
            clip=args.clip,
        )
        png = args.process or args.gif.with_suffix(".png")
        save_process(frames, png, args.gif)
        print(f"wrote the denoising process to {png}" + (f" and {args.gif}" if args.gif else ""))
    return 0


# --- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddpm", description="Denoising diffusion models from first principles."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model", description="Train a diffusion model.")
    add_train_args(p)
    p.set_defaults(run=run_train)
    p = sub.add_parser(
        "sample",
        help="sample from a checkpoint",
        description="Draw samples from a trained checkpoint.",
    )
    add_sample_args(p)
    p.set_defaults(run=run_sample)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"ddpm: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return args.run(args)
    except ConfigError as e:  # a flag combination the parser could not check on its own
        print(f"ddpm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except USER_ERRORS as e:
        print(f"ddpm {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ddpm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
