"""`ddpm export`: a checkpoint's weights as a shareable safetensors file or a diffusers folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from ddpm.errors import ConfigError


def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        type=Path,
        help="a training checkpoint (.pt); a safetensors export or diffusers folder also works",
    )
    p.add_argument(
        "--format",
        choices=("safetensors", "diffusers"),
        default="safetensors",
        help="safetensors: one file, the weights plus a JSON description in its header, "
        "loadable by `ddpm sample`; diffusers: a DDPMPipeline folder (unet/, scheduler/) that "
        "diffusers.DDPMPipeline.from_pretrained loads (default: safetensors)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="the .safetensors file, or a new (or empty) folder for --format diffusers",
    )
    p.add_argument(
        "--raw-weights", action="store_true", help="export the raw, not the EMA, weights"
    )


def run_export(args: argparse.Namespace) -> int:
    from ddpm.io.interchange import export_model
    from ddpm.io.paths import check_output_folder, check_writable_file

    if args.format == "safetensors" and args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a folder; --format safetensors writes one file")
    if args.format == "safetensors" and args.out.suffix.lower() != ".safetensors":
        raise ConfigError(f"--out {args.out}: a safetensors export must end in .safetensors")
    try:  # before the checkpoint is read: a bad --out costs nothing
        if args.format == "safetensors":
            check_writable_file(args.out)
        else:
            check_output_folder(args.out, "diffusers folder")
    except ConfigError as e:
        raise ConfigError(f"--out {e}") from None
    model = export_model(args.checkpoint, args.format, args.out, args.raw_weights)
    step = f" of step {model.step}" if model.step is not None else ""
    weights = "raw" if args.raw_weights else ("EMA" if model.origin == "checkpoint" else "the")
    print(f"wrote {weights} weights{step} ({model.arch}, {model.prediction}) to {args.out}")
    return 0
