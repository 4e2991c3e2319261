"""`ddpm sample`: a grid, a folder of PNGs and the denoising process from a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from ddpm.cli.args import (
    ETA_HELP,
    GUIDANCE_HELP,
    SAMPLER_HELP,
    SPACING_HELP,
    STEPS_HELP,
    VARIANCE_HELP,
    add_device_arg,
    add_guide_args,
    add_quiet_arg,
    add_speed_args,
    add_weights_args,
    fast_path,
    group,
    guide_words,
    guided_by,
    nonneg_float,
    output_file,
    output_folder,
    positive_int,
    refuse_unguidable,
    resolve_device,
    sampling_spec,
    say_which_checkpoint,
    seed_int,
)
from ddpm.diffusion.process import VARIANCES
from ddpm.errors import ConfigError
from ddpm.progress import count
from ddpm.sampling.samplers import SAMPLERS, SPACINGS


def add_sample_args(p: argparse.ArgumentParser) -> None:
    add_sample_model_args(p)
    add_sample_sampling_args(p)
    add_sample_output_args(p)
    add_sample_class_args(p)
    add_speed_args(p)


def add_sample_model_args(p: argparse.ArgumentParser) -> None:
    g = group(p, "model")
    g.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="a checkpoint (.pt), a run folder (its newest checkpoint), a safetensors export "
        "(`ddpm export`), or a diffusers UNet2DModel folder (config.json + "
        "diffusion_pytorch_model.safetensors, with its scheduler config)",
    )
    add_weights_args(g)


def add_sample_sampling_args(p: argparse.ArgumentParser) -> None:
    g = group(p, "sampling")
    g.add_argument(
        "--n",
        type=positive_int,
        help="number of images (default 64; with --grid-by-class, per class: default 8)",
    )
    g.add_argument("--sampler", choices=SAMPLERS, default="ddim", help=SAMPLER_HELP)
    g.add_argument("--steps", type=positive_int, help=STEPS_HELP)
    g.add_argument(
        "--eta",
        type=nonneg_float,
        help=ETA_HELP,
    )
    g.add_argument(
        "--spacing",
        choices=SPACINGS,
        help=SPACING_HELP,
    )
    g.add_argument("--variance", choices=VARIANCES, help=VARIANCE_HELP)
    g.add_argument(
        "--clip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="clip the x_0 prediction to [-1, 1] (default: on for images, as Ho et al.; "
        "points and sequences are standardised, not confined to [-1, 1]: off)",
    )
    g.add_argument("--seed", type=seed_int, default=0, help="image i depends on (seed, i) only")
    g.add_argument(
        "--batch-size",
        type=positive_int,
        default=256,
        help="images per network batch (does not change the images)",
    )


def add_sample_output_args(p: argparse.ArgumentParser) -> None:
    g = group(p, "output")
    g.add_argument(
        "--out",
        type=output_file("samples", "sample grid"),
        default="samples.png",
        help="the grid of all images (.png, .jpg, .webp or .bmp); a scatter plot of points over "
        "the data, or curves of sequences beside it; .npy: the samples as an array in the "
        "data's units (images: uint8 N,C,H,W); .csv: points as rows",
    )
    g.add_argument(
        "--folder",
        type=output_folder("folder of images"),
        help="also write each image as FOLDER/<index>.png (default: no)",
    )
    g.add_argument(
        "--process",
        type=output_file("image", "picture of the denoising chain"),
        help="picture of the denoising chains of the first 8 images, x_T to x_0 (default: no)",
    )
    g.add_argument(
        "--gif",
        type=output_file("gif", "GIF"),
        help="animated GIF of those chains (points: the cloud flowing from noise to data; "
        "default: no; with it alone, the picture is written beside it as .png)",
    )
    add_quiet_arg(p)
    add_device_arg(group(p, "speed"))


def add_sample_class_args(p: argparse.ArgumentParser) -> None:
    g = group(p, "class-conditional models (trained with --class-cond)")
    g.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="NAME",
        help="sample this class, by name (e.g. 'AM General Hummer SUV 2000') or index; repeat "
        "for several (image i gets the (i mod k)-th); default: each image's class drawn "
        "uniformly from (--seed, i)",
    )
    g.add_argument("--guidance", type=nonneg_float, default=0.0, metavar="W", help=GUIDANCE_HELP)
    add_guide_args(g)
    g.add_argument(
        "--grid-by-class",
        action="store_true",
        help="one row per class (the --class ones, else every class) of --n images; column j "
        "starts from the same noise (--seed, j) in every row",
    )


def class_plan(args: argparse.Namespace, loaded) -> tuple[list[int] | None, int, int | None]:
    """What --class, --grid-by-class and --n ask of this checkpoint, checked before sampling:
    (the classes, one per grid row or cycled through; None for drawn or no classes), the
    images per row (grid) or in all, and the grid's row length (None: square)."""
    from ddpm.sampling.guidance import class_index

    if loaded.num_classes is None:
        asked = [
            flag
            for flag, on in (
                ("--class", args.classes),
                ("--grid-by-class", args.grid_by_class),
            )
            if on
        ]
        if asked:
            raise ConfigError(
                f"{asked[0]} needs a class-conditional model (trained with --class-cond); "
                f"{args.checkpoint} is unconditional"
            )
        return None, args.n or 64, None
    names = loaded.names
    classes = [class_index(c, names) for c in args.classes] if args.classes else None
    if args.grid_by_class:
        n = args.n or 8
        return classes or list(range(loaded.num_classes)), n, n
    return classes, args.n or 64, None


def run_sample(args: argparse.Namespace) -> int:
    import torch

    from ddpm.sampling.generate import denoising_process, generate, resolve, save_process
    from ddpm.sampling.loaded import load_model
    from ddpm.viz.grids import grid_scale, save_grid, save_images

    loaded = load_model(args.checkpoint, resolve_device(args.device), args.raw_weights, args.ema)
    say_which_checkpoint(args.checkpoint, loaded)
    loaded = guided_by(loaded, args)
    refuse_unguidable(loaded, args)
    spec = resolve(loaded, sampling_spec(args))  # every sampling flag, checked before work
    if loaded.data is not None:
        return run_sample_arrays(args, loaded, spec)
    if args.out.suffix.lower() == ".csv":
        raise ConfigError(f"--out {args.out}: images are written as a grid picture or .npy")
    classes, n, nrow = class_plan(args, loaded)
    loaded = fast_path(loaded, args)

    def write(start: int, x) -> None:
        if args.folder is not None:
            save_images(x, args.folder, start)

    progress = not args.quiet
    labels = None
    if args.grid_by_class:
        # each row from the same seeds (seed, 0..n-1): the classes differ, the noise does not
        assert classes is not None
        rows = []
        for r, c in enumerate(classes):
            row = generate(loaded, n, spec, class_labels=torch.full((n,), c), progress=progress)
            write(r * n, row)
            rows.append(row)
        x = torch.cat(rows)
        labels = torch.tensor(classes).repeat_interleave(n)
    else:
        if classes is not None:
            labels = torch.tensor([classes[i % len(classes)] for i in range(n)])
        elif loaded.num_classes is not None:
            labels = loaded.draw_classes(spec.seed, range(n), spec.classes)
        x = generate(loaded, n, spec, on_batch=write, class_labels=labels, progress=progress)
    if args.out.suffix.lower() == ".npy":  # the images as uint8 (N, C, H, W)
        from ddpm.data.arrays import save_npy
        from ddpm.data.images import to_uint8

        save_npy(to_uint8(x).numpy(), args.out)
    else:
        save_grid(x, args.out, nrow, grid_scale(loaded.shape))  # as training's samples.png
    where = f"{args.out}" + (f" and {args.folder.rstrip('/')}/" if args.folder else "")
    what = ""
    if labels is not None:
        names = loaded.names
        shown = [names[c] for c in dict.fromkeys(labels.tolist())]
        kinds = ", ".join(shown[:8]) + (", ..." if len(shown) > 8 else "")
        drawn = " drawn uniformly" if classes is None else ""
        what = f" ({count(len(shown), 'class')}{drawn}: {kinds}; guidance w={spec.guidance:g})"
        if args.folder is not None:
            write_labels(Path(args.folder), labels, names)
    print(f"wrote {x.shape[0]} samples to {where} ({spec.short()}){what}{guide_words(args)}")
    if args.process or args.gif:
        m = min(x.shape[0], 8)
        chain_labels = labels[:m] if labels is not None else None
        frames = denoising_process(loaded, m, spec, class_labels=chain_labels, progress=progress)
        png = args.process or args.gif.with_suffix(".png")
        save_process(frames, png, args.gif)
        print(f"wrote the denoising process to {png}" + (f" and {args.gif}" if args.gif else ""))
    return 0


def write_labels(folder: Path, labels, names: list[str]) -> None:
    """`folder/labels.csv`: each written image's file name, class index and class name."""
    import csv

    with (folder / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "class", "name"])
        for i, c in enumerate(labels.tolist()):
            w.writerow([f"{i:06d}.png", c, names[c]])


def run_sample_arrays(args: argparse.Namespace, loaded, spec) -> int:
    """`ddpm sample` for points and sequences: .npy / .csv / .png, and the chain."""
    import torch

    from ddpm.data.arrays import save_csv, save_npy
    from ddpm.sampling.generate import generate, save_array_process
    from ddpm.viz.arrayplots import save_samples

    kind = loaded.kind
    suffix = args.out.suffix.lower()
    allowed = (".npy", ".png") + ((".csv",) if kind == "points" else ())
    if suffix not in allowed:
        raise ConfigError(f"--out {args.out}: {kind} are written as {' or '.join(allowed)}")
    if args.folder is not None:
        raise ConfigError(f"--folder writes one PNG per image; for {kind} use --out FILE.npy")
    if args.grid_by_class:
        raise ConfigError(f"--grid-by-class lays out a grid of images; {kind} are plotted")
    classes, _, _ = class_plan(args, loaded)  # checks --class / --guidance against the model
    n = args.n or (2000 if kind == "points" else 64)
    K = loaded.num_classes
    cycle = classes if classes is not None else list(range(K)) if K else None
    labels = torch.tensor([cycle[i % len(cycle)] for i in range(n)]) if cycle else None
    x = generate(loaded, n, spec, class_labels=labels, progress=not args.quiet)
    data = loaded.to_data(x).numpy()
    written = [str(args.out)]
    if suffix == ".npy":
        save_npy(data, args.out)
        if labels is not None:
            path = args.out.with_name(args.out.stem + "-labels.npy")
            save_npy(labels.numpy(), path)
            written.append(f"{path} (class indices)")
    elif suffix == ".csv":
        save_csv(data, args.out, loaded.data.columns)
    else:
        save_samples(data, args.out, loaded.data, labels)
    print(f"wrote {n} {kind} to {' and '.join(written)} ({spec.short()}){guide_words(args)}")
    if args.process or args.gif:
        chain_labels = torch.tensor(cycle) if cycle else None
        png = args.process or args.gif.with_suffix(".png")  # as for images: --gif alone, both
        save_array_process(loaded, png, args.gif, spec, chain_labels)
        shown = [str(p) for p in (png, args.gif) if p is not None]
        print(f"wrote the denoising process to {' and '.join(shown)}")
    return 0
