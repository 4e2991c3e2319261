"""`ddpm sample`: a grid, a folder of PNGs and the denoising process from a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from ddpm.cli.args import (
    STEPS_HELP,
    VARIANCE_HELP,
    add_speed_args,
    add_weights_args,
    device_name,
    fast_path,
    nonneg_float,
    positive_int,
    resolve_device,
    seed_int,
)
from ddpm.diffusion import VARIANCES
from ddpm.samplers import SAMPLERS, SPACINGS
from ddpm.unet import ConfigError


def add_sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="a checkpoint (.pt), a safetensors export (`ddpm export`), or a diffusers "
        "UNet2DModel folder (config.json + diffusion_pytorch_model.safetensors, with its "
        "scheduler config)",
    )
    p.add_argument("--n", type=positive_int, default=64, help="number of images")
    p.add_argument("--sampler", choices=SAMPLERS, default="ddim")
    p.add_argument("--steps", type=positive_int, help=STEPS_HELP)
    p.add_argument("--eta", type=nonneg_float, default=0.0, help="DDIM noise (0: deterministic)")
    p.add_argument(
        "--spacing",
        choices=SPACINGS,
        help="timesteps of ddim / dpm-solver / heun: leading (DDIM's), trailing (start at T) or "
        "karras (EDM's ρ=7 noise levels); default: karras for heun, leading otherwise",
    )
    p.add_argument("--variance", choices=VARIANCES, help=VARIANCE_HELP)
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
    add_weights_args(p)
    p.add_argument("--device", type=device_name, default="auto")
    add_speed_args(p)


def run_sample(args: argparse.Namespace) -> int:
    from ddpm.generate import denoising_process, generate, load_model, save_process
    from ddpm.images import save_grid, save_images

    loaded = load_model(args.checkpoint, resolve_device(args.device), args.raw_weights, args.ema)
    loaded = fast_path(loaded, args)
    if args.steps is not None and args.steps > loaded.schedule.T:
        raise ConfigError(f"--steps {args.steps} exceeds the model's T = {loaded.schedule.T}")
    variance = loaded.variance(args.variance)

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
        variance,
        args.clip,
        args.batch_size,
        on_batch=write,
        spacing=args.spacing,
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
            variance=variance,
        )
        png = args.process or args.gif.with_suffix(".png")
        save_process(frames, png, args.gif)
        print(f"wrote the denoising process to {png}" + (f" and {args.gif}" if args.gif else ""))
    return 0
