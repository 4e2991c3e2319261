"""`ddpm show data | forward | schedules | reverse | curves`: the tutorial's pictures, one command
each (library: `ddpm.viz.show`, `ddpm.viz.plots`, `ddpm.sampling.generate.denoising_process`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ddpm.cli.args import (
    ETA_HELP,
    SAMPLER_HELP,
    STEPS_HELP,
    VARIANCE_HELP,
    HelpFormatter,
    add_device_arg,
    add_quiet_arg,
    add_split_arg,
    image_size,
    nonneg_float,
    output_file,
    positive_int,
    resolve_device,
    sampling_spec,
    seed_int,
    unit_float,
)
from ddpm.diffusion.process import VARIANCES
from ddpm.diffusion.schedule import SCHEDULES
from ddpm.errors import ConfigError
from ddpm.sampling.samplers import SAMPLERS

BACKEND_HELP = "matplotlib when installed (the plots extra), else Pillow (default: auto)"


def _data_args(p: argparse.ArgumentParser, n: int) -> None:
    p.add_argument("--data", help="any `ddpm train --data` form (default: the bundled digits)")
    add_split_arg(p)
    p.add_argument("--image-size", type=image_size, help="N or HxW (default: the data's own)")
    p.add_argument("--channels", type=int, choices=(1, 3), help="1 or 3 (default: the data's own)")
    p.add_argument(
        "--resize",
        choices=("center-crop", "squash", "bbox"),
        default="center-crop",
        help="how --image-size is reached, as in `ddpm train`",
    )
    p.add_argument("--n", type=positive_int, default=n, help=f"images (default {n})")
    p.add_argument("--seed", type=seed_int, default=0, help="which images, and the noise")


def add_show_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", required=True, metavar="PICTURE")
    for add in (_add_data, _add_forward, _add_schedules, _add_reverse, _add_curves):
        add(sub)


def _add(sub: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    return sub.add_parser(name, prog=f"ddpm show {name}", formatter_class=HelpFormatter, **kwargs)


def _picture(q: argparse.ArgumentParser, default: str | None, what: str) -> None:
    q.add_argument(
        "--out",
        type=output_file("image", what),
        default=default,
        help=f"the {what} to write (.png, .jpg, .webp or .bmp)"
        + ("" if default else " (default: RUN/curves.png)"),
    )


def _add_data(sub: Any) -> None:
    d = _add(sub, "data", help="a grid of training images", description="A grid of images.")
    _data_args(d, 32)
    _picture(d, "data.png", "grid")


def _add_forward(sub: Any) -> None:
    f = _add(
        sub,
        "forward",
        help="the forward process on real images",
        description="Images noised by q(x_t | x_0) (Ho et al. eq. 4) at evenly spaced t: the "
        "reference tutorial's first figure. The default schedule is the tutorial's (linear, "
        "T = 300, beta from 1e-4 to 0.02).",
    )
    _data_args(f, 4)
    f.add_argument("--columns", type=positive_int, default=10, help="values of t (default 10)")
    f.add_argument("--schedule", choices=SCHEDULES, default="linear", help="the noise schedule")
    f.add_argument("--T", type=positive_int, default=300, help="number of diffusion steps T")
    f.add_argument("--beta-start", type=unit_float, help="default 1e-4 (not for cosine)")
    f.add_argument("--beta-end", type=unit_float, help="default 0.02 (not for cosine)")
    _picture(f, "forward.png", "picture")


def _add_schedules(sub: Any) -> None:
    s = _add(
        sub,
        "schedules",
        help="alpha-bar and log SNR of every schedule",
        description="ᾱ_t and log SNR against t/T for linear, cosine, quadratic and sigmoid at "
        "--T steps, and the reference tutorial's linear schedule at T = 300.",
    )
    s.add_argument("--T", type=positive_int, default=1000, help="number of diffusion steps T")
    _picture(s, "schedules.png", "plot")
    s.add_argument(
        "--backend", choices=("auto", "matplotlib", "pillow"), default="auto", help=BACKEND_HELP
    )


def _add_reverse(sub: Any) -> None:
    r = _add(
        sub,
        "reverse",
        help="the reverse process of a trained model",
        description="Snapshots of x_t from x_T (left) to x_0 (right), one row per sample.",
    )
    r.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="a checkpoint, safetensors export or diffusers folder",
    )
    r.add_argument("--n", type=positive_int, default=8, help="chains (one row each)")
    r.add_argument("--sampler", choices=SAMPLERS, default="ddpm", help=SAMPLER_HELP)
    r.add_argument("--steps", type=positive_int, help=STEPS_HELP)
    r.add_argument("--eta", type=nonneg_float, help=ETA_HELP)
    r.add_argument("--variance", choices=VARIANCES, help=VARIANCE_HELP)
    r.add_argument("--frames", type=positive_int, default=10, help="snapshots per chain")
    r.add_argument("--seed", type=seed_int, default=0, help="chain i depends on (seed, i) only")
    r.add_argument(
        "--clip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="clip each x_0 prediction to [-1, 1] (default: on for images, off for points and "
        "sequences)",
    )
    add_device_arg(r)
    add_quiet_arg(r)
    _picture(r, "process.png", "picture")
    r.add_argument(
        "--gif", type=output_file("gif", "GIF"), help="also an animated GIF (default: no)"
    )


def _add_curves(sub: Any) -> None:
    c = _add(
        sub,
        "curves",
        help="a run's loss and FID curves",
        description="The loss curve (and the FID curve, when measured) of a training run.",
    )
    c.add_argument(
        "run_dir", metavar="RUN", type=Path, help="a run folder (ddpm train's --out) or its log.csv"
    )
    _picture(c, None, "plot")
    c.add_argument(
        "--backend", choices=("auto", "matplotlib", "pillow"), default="auto", help=BACKEND_HELP
    )


def _load(args: argparse.Namespace):
    from ddpm.data.images import load_dataset, parse_size

    size = parse_size(args.image_size) if args.image_size else None
    return load_dataset(args.data, size, args.channels, args.resize, split=args.split, stream=True)


def run_show(args: argparse.Namespace) -> int:
    from ddpm.viz import show
    from ddpm.viz.plots import plot

    if args.what == "data":
        path = show.data_picture(_load(args), args.out, args.n, args.seed)
    elif args.what == "forward":
        if args.schedule == "cosine" and (args.beta_start or args.beta_end):
            raise ConfigError("--beta-start/--beta-end do not apply to --schedule cosine")
        betas = (
            (None, None)
            if args.schedule == "cosine"
            else (args.beta_start or 1e-4, args.beta_end or 0.02)
        )
        schedule = (args.schedule, args.T, *betas)
        path = show.forward_picture(
            _load(args), args.out, schedule, args.n, args.columns, args.seed
        )
    elif args.what == "schedules":
        plot(show.schedule_panels(args.T), args.out, args.backend)
        path = args.out
    elif args.what == "reverse":
        from ddpm.sampling.generate import denoising_process, save_array_process, save_process
        from ddpm.sampling.loaded import load_model

        loaded = load_model(args.checkpoint, resolve_device(args.device))
        if loaded.data is not None:  # points or sequences: their own pictures, in data units
            save_array_process(loaded, args.out, args.gif, sampling_spec(args))
        else:
            frames = denoising_process(
                loaded, args.n, sampling_spec(args), args.frames, progress=not args.quiet
            )
            save_process(frames, args.out, args.gif)
        path = args.out
    else:
        path = _curves(args, plot, show.run_panels)
    print(f"wrote {path}")
    return 0


def _curves(args: argparse.Namespace, plot, run_panels) -> Path:
    import csv

    from ddpm.errors import DataError

    log = args.run_dir / "log.csv" if args.run_dir.is_dir() else args.run_dir
    if not log.is_file():
        what = "a run folder without log.csv" if args.run_dir.is_dir() else "no such file or folder"
        raise DataError(
            f"{args.run_dir}: {what}; expected a run folder (ddpm train --out) or its log.csv"
        )
    try:
        with log.open(newline="") as f:
            rows = list(csv.DictReader(f))
        panels = run_panels(rows)
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{log}: not a readable training log ({type(e).__name__}: {e})") from None
    if not panels:
        raise DataError(f"{log}: no loss values logged yet")
    out = args.out or log.parent / "curves.png"
    plot(panels, out, args.backend)
    return out
