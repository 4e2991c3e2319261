"""`ddpm invert` and `ddpm interpolate`: the noise behind a picture (DDIM run backwards) and a
walk between two pictures along the slerp of their noises (`ddpm.sampling.inversion`). Inputs
are read as `ddpm edit` reads them (`ddpm.cli.edit`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ddpm.cli.args import (
    add_device_arg,
    add_quiet_arg,
    group,
    integer,
    output_file,
    positive_int,
)
from ddpm.cli.edit import (
    _load,
    add_class_args,
    add_input_args,
    add_model_args,
    class_labels,
    read_inputs,
)
from ddpm.errors import ConfigError
from ddpm.progress import count


def add_invert_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_input_args(p)
    g = group(p, "inversion")
    g.add_argument(
        "--steps", type=positive_int, help="DDIM steps (default: 50, a distilled model's own)"
    )
    g.add_argument(
        "--psnr",
        action="store_true",
        help="also decode the noise and print the reconstruction's PSNR (images)",
    )
    g.add_argument("--batch-size", type=positive_int, default=256, help="images per batch")
    add_class_args(p, guide=False)
    o = group(p, "output")
    o.add_argument(
        "--out",
        type=output_file("samples", "noise array (.npy)"),
        default="z.npy",
        help="the noise z, float32 (N, *shape), as a .npy",
    )
    add_quiet_arg(p)
    add_device_arg(group(p, "speed"))


def add_interpolate_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_input_args(p, several=True)
    g = group(p, "interpolation")
    g.add_argument("--frames", type=integer, default=8, help="pictures on the path, ends included")
    g.add_argument(
        "--steps", type=positive_int, help="DDIM steps (default: 50, a distilled model's own)"
    )
    add_class_args(p, guide=False)
    o = group(p, "output")
    o.add_argument(
        "--out",
        type=picture_or_gif,
        default="interpolation.png",
        help="a strip of the frames (.png, .jpg, ...) or an animated .gif",
    )
    add_quiet_arg(p)
    add_device_arg(group(p, "speed"))


def picture_or_gif(text: str) -> Path:
    """An argparse type: a picture or a .gif to write, checked at once."""
    kind = "gif" if text.lower().endswith(".gif") else "image"
    return output_file(kind, "strip (.png, ...) or animation (.gif)")(text)


def run_invert(args: argparse.Namespace) -> int:
    from ddpm.data.arrays import save_npy
    from ddpm.sampling.editing import check_inputs
    from ddpm.sampling.inversion import ddim_invert, decode, decode_spec, psnr

    if args.out.suffix.lower() != ".npy":
        raise ConfigError(f"--out {args.out}: the noise is written as a .npy array")
    loaded = _load(args)
    x_0, _, missing = read_inputs(args, loaded)
    if missing is not None and bool(missing.any()):
        raise ConfigError(f"--image {args.image} has missing values (NaN): nothing to invert")
    check_inputs(loaded, x_0)
    steps = decode_spec(loaded, args.steps, None).steps  # refuses a distilled model's excess
    labels = class_labels(args, loaded, x_0.shape[0])
    guide = dict(class_labels=labels, guidance=args.guidance, batch_size=args.batch_size)
    z = ddim_invert(loaded, x_0, steps, **guide)
    save_npy(z.numpy(), args.out)
    noise = f"{count(x_0.shape[0], loaded.kind[:-1])}"
    print(f"wrote the noise of {noise} to {args.out} ({count(steps, 'DDIM step')})")
    if args.psnr:
        r = decode(loaded, z, steps, **guide)
        err = (r - x_0).abs().max().item()
        if loaded.kind == "images":
            print(
                f"reconstruction: PSNR {psnr(r, x_0).mean().item():.2f} dB, largest error {err:.4f}"
            )
        else:
            print(f"reconstruction: largest error {err:.4f} (standardised units)")
    return 0


def run_interpolate(args: argparse.Namespace) -> int:
    from ddpm.sampling.inversion import check_frames, decode_spec, interpolate
    from ddpm.viz.grids import make_grid, save_gif, to_pil

    check_frames(args.frames)
    if len(args.image) != 2:
        raise ConfigError(f"--image: give exactly two inputs (A and B), got {len(args.image)}")
    loaded = _load(args)
    if loaded.kind != "images":
        raise ConfigError(f"interpolate draws pictures; this model draws {loaded.kind}")
    decode_spec(loaded, args.steps, None)  # refuses steps the model cannot take, before reading
    a, _, _ = read_inputs(args, loaded, args.image[0])
    b, _, _ = read_inputs(args, loaded, args.image[1])
    if a.shape[0] != 1 or b.shape[0] != 1:
        raise ConfigError("--image: each of A and B must be one picture")
    labels = class_labels(args, loaded, 1)
    x = interpolate(
        loaded, a, b, args.frames, args.steps, class_labels=labels, guidance=args.guidance
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix.lower() == ".gif":
        save_gif([f[None] for f in x], args.out)
    else:
        from ddpm.data.images import to_uint8

        img = to_pil(make_grid(to_uint8(x), nrow=args.frames))
        img.resize((img.width * 2, img.height * 2)).save(args.out)
    print(f"wrote {args.frames} frames from {args.image[0]} to {args.image[1]} to {args.out}")
    return 0
