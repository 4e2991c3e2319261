"""`ddpm inpaint | edit | invert | interpolate`: your own pictures (or sequences) through a
trained model (`ddpm.sampling.editing`). This module parses flags, reads the inputs and masks,
and writes the results; every check runs before any sampling."""

from __future__ import annotations

import argparse
import io
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
    guided_by,
    nonneg_float,
    number,
    output_file,
    output_folder,
    positive_int,
    resolve_device,
    sampling_spec,
    say_which_checkpoint,
    seed_int,
)
from ddpm.diffusion.process import VARIANCES
from ddpm.errors import ConfigError, DataError
from ddpm.sampling.samplers import SAMPLERS, SPACINGS

IMAGE_HELP = (
    "a picture (.png, .jpg, ...), or a folder or .zip of pictures (one result each, in sorted "
    "order); for a sequence model, a .npy (N, C, L) / (N, L) or .csv (one sequence a row), for "
    "a points model a .npy (N, D) or .csv (one point a row, a header row allowed), in the "
    "data's units, NaN where values are missing (inpaint fills them: y given x)"
)


# --- flags --------------------------------------------------------------------------------------


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = group(p, "model")
    g.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="a checkpoint (.pt), a run folder (its newest), a safetensors export or a diffusers "
        "folder, as for ddpm sample",
    )
    add_weights_args(g)


def add_input_args(p: argparse.ArgumentParser, several: bool = False) -> None:
    g = group(p, "input")
    if several:
        g.add_argument(
            "--image", action="append", required=True, type=Path, help="give it twice: A, then B"
        )
    else:
        g.add_argument("--image", required=True, type=Path, help=IMAGE_HELP)
    g.add_argument(
        "--resize",
        choices=("center-crop", "squash"),
        help="fit pictures of another size or channel count to the model's: center-crop keeps "
        "the aspect ratio, squash stretches (default: none; a mismatch is an error)",
    )


def add_sampling_args(p: argparse.ArgumentParser, n_help: str, samplers=SAMPLERS) -> None:
    g = group(p, "sampling")
    g.add_argument("--n", type=positive_int, help=n_help)
    g.add_argument("--sampler", choices=samplers, default="ddim", help=SAMPLER_HELP)
    g.add_argument("--steps", type=positive_int, help=STEPS_HELP)
    g.add_argument("--eta", type=nonneg_float, help=ETA_HELP)
    g.add_argument("--spacing", choices=SPACINGS, help=SPACING_HELP)
    g.add_argument("--variance", choices=VARIANCES, help=VARIANCE_HELP)
    g.add_argument(
        "--clip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="clip the x_0 prediction to [-1, 1] (default: on for images, off for sequences)",
    )
    g.add_argument("--seed", type=seed_int, default=0, help="result i depends on (seed, i) only")
    g.add_argument("--batch-size", type=positive_int, default=256, help="images per batch")


def add_class_args(p: argparse.ArgumentParser, guide: bool = True) -> None:
    g = group(p, "class-conditional models (trained with --class-cond)")
    g.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="NAME",
        help="the class, by name or index; repeat for several (result i gets the (i mod k)-th); "
        "default: drawn from (--seed, i) (invert / interpolate: the unconditional model)",
    )
    g.add_argument("--guidance", type=nonneg_float, default=0.0, metavar="W", help=GUIDANCE_HELP)
    if guide:
        add_guide_args(g)


def add_output_args(p: argparse.ArgumentParser, default: str, folder: bool = True) -> None:
    g = group(p, "output")
    g.add_argument(
        "--out",
        type=output_file("samples", "picture or array"),
        default=default,
        help="a grid of the results (.png, .jpg, ...) or an array .npy (images: uint8 N,C,H,W; "
        "sequences: the data's units); for sequences .png draws curves",
    )
    if folder:
        g.add_argument(
            "--folder",
            type=output_folder("folder of images"),
            help="also write each result as FOLDER/<index>.png, index as in the sorted inputs "
            "(default: no)",
        )
    add_quiet_arg(p)
    add_device_arg(group(p, "speed"))
    add_speed_args(p)


def add_inpaint_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_input_args(p)
    g = group(p, "mask")
    g.add_argument(
        "--mask",
        help="a picture of the input's size: white = keep, black = fill (a folder or .zip: one "
        "mask per input); or a built-in region to fill: center, left, right, top, bottom, "
        "random:P (each pixel filled with probability P, per result from (--seed, i)); for "
        "sequences and points a .npy/.csv of 1 = keep, 0 = fill (default: the NaNs of such an "
        "input, else center)",
    )
    g.add_argument("--invert-mask", action="store_true", help="swap kept and filled")
    g.add_argument(
        "--method",
        choices=("repaint", "replace"),
        default="repaint",
        help="repaint: Lugmayr et al. 2022 with resampling; replace: the plain replacement "
        "method (known pixels from q(x_t | x_0) at every step, no resampling)",
    )
    g.add_argument(
        "--jump",
        type=positive_int,
        help="RePaint: jump back J steps by the forward process (default: 10, or a fifth of "
        "--steps below 50)",
    )
    g.add_argument(
        "--resample",
        type=positive_int,
        default=10,
        help="RePaint: denoise each stretch R times (cost: about R x the sampler's steps)",
    )
    add_sampling_args(
        p, "results (default: one per input; a single picture: 8)", samplers=("ddpm", "ddim")
    )
    add_class_args(p)
    add_output_args(p, "inpainted.png")


def add_edit_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    add_input_args(p)
    group(p, "input").add_argument(
        "--strength",
        type=number,
        required=True,
        metavar="S",
        help="in [0, 1]: noise to t = S*T, then denoise; 0 returns the input, 1 ignores it",
    )
    add_sampling_args(p, "results (default: one per input; a single picture: 8)")
    add_class_args(p)
    add_output_args(p, "edited.png")


# --- reading inputs -----------------------------------------------------------------------------


def _entries(path: Path):
    from ddpm.data.files import Entry, list_images

    if path.is_dir() or path.suffix.lower() == ".zip":
        return list_images(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    return [Entry(path.name, str(path))]


def read_pictures(path: Path, shape, resize: str | None, what: str = "--image", gray=False):
    """uint8 (N, C, H, W) of the model's `shape` (C, H, W): a picture, or every picture of a
    folder / .zip. Another size or channel count is a ConfigError unless `resize`. `gray`:
    masks, read as one channel whatever the model's."""
    import numpy as np
    import torch
    from PIL import Image

    from ddpm.data.files import (
        DECODE_ERRORS,
        decode_error_reason,
        is_gray,
        read_bytes,
        resize_image,
        to_mode,
    )

    C, H, W = (1 if gray else shape[0]), shape[1], shape[2]
    out = []
    for e in _entries(path):
        try:
            with Image.open(io.BytesIO(read_bytes(e))) as img:
                img.load()
                own = 1 if is_gray(img) else 3
                if resize is None and (img.size != (W, H) or (own != C and not gray)):
                    mode = {1: "gray", 3: "RGB"}
                    raise ConfigError(
                        f"{what} {e.name} is {img.width}x{img.height} {mode[own]}; the model's "
                        f"images are {W}x{H} {mode[C]}: --resize center-crop or squash fits it"
                    )
                img = resize_image(to_mode(img, C), (H, W), resize or "squash")
                arr = np.asarray(img, dtype=np.uint8)
        except ConfigError:
            raise
        except DECODE_ERRORS as err:
            where = e.path if e.member is None else f"{e.path}: {e.member}"
            raise DataError(
                f"{what} {where}: not a readable picture ({decode_error_reason(err)})"
            ) from None
        out.append(
            torch.from_numpy((arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)).copy())
        )
    return torch.stack(out)


def read_sequences(path: Path, loaded):
    """(N, C, L) sequences or (N, D) points, float64 in the data's units, NaN where missing,
    from a .npy or .csv (a points .csv may have a header row of names)."""
    import numpy as np
    import torch

    from ddpm.data.arrays import read_csv

    unit = "sequence" if loaded.kind == "sequences" else "points"
    if path.is_dir():
        raise ConfigError(f"--image {path}: a {unit} model takes a .npy or .csv, not a folder")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv"):
        raise ConfigError(f"--image {path}: a {unit} model takes a .npy or .csv")
    try:
        if suffix == ".npy":
            a = np.load(path, allow_pickle=False).astype(np.float64)
        else:  # empty cells or nan are missing; a first row of names is a header
            a = read_csv(path, missing=True)[0]
    except ValueError as err:
        raise DataError(f"{path}: not a numeric array ({err})") from None
    if loaded.kind == "points":
        (D,) = loaded.shape
        a = a.reshape(1, -1) if a.ndim == 1 else a
        if a.ndim != 2 or a.shape[1] != D:
            got = f"of {a.shape[1]} coordinates" if a.ndim == 2 else "x".join(map(str, a.shape))
            raise ConfigError(f"--image {path} holds points {got}; the model's have {D}")
        return torch.from_numpy(a)
    C, L = loaded.shape
    if a.ndim == 1 or (a.ndim == 2 and C == 1):
        a = a.reshape(-1, 1, a.shape[-1])
    elif a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (C, L):
        raise ConfigError(
            f"--image {path} holds {'x'.join(map(str, a.shape))} values; the model's sequences "
            f"are {C}x{L} (channels x time steps)"
        )
    return torch.from_numpy(a)


def read_mask(args: argparse.Namespace, loaded, n_inputs: int, missing):
    """bool (M, 1 or C, *spatial), True = keep, from --mask / --invert-mask (`missing`: the
    NaNs of a sequence input, or None)."""
    import numpy as np
    import torch

    from ddpm.sampling.editing import named_mask

    spec = args.mask
    if spec is None and missing is not None and bool(missing.any()):
        keep = ~missing
    else:
        spec = spec or "center"
        path = Path(spec)
        if (
            loaded.kind == "images"
            and (path.suffix or path.is_dir())
            and not spec.startswith("random:")
        ):
            keep = read_pictures(path, loaded.shape, args.resize, "--mask", gray=True) >= 128
        elif loaded.kind != "images" and path.suffix.lower() in (".npy", ".csv"):
            a = read_sequences(path, loaded).numpy()
            keep = torch.from_numpy(np.nan_to_num(a) > 0.5)
        elif loaded.kind == "points":
            raise ConfigError(
                f"--mask {spec}: built-in masks are for pictures and sequences; a points model "
                "fills the NaN coordinates of --image, or those a --mask .npy or .csv marks 0"
            )
        else:
            keep = named_mask(spec, loaded.shape, max(args.n or 0, n_inputs), args.seed)
    return ~keep if args.invert_mask else keep


def read_inputs(args: argparse.Namespace, loaded, path: Path | None = None):
    """(x_0 in the model's units (N, *shape), the originals to paste back, missing or None):
    images as uint8, sequences in the data's units."""
    import torch

    from ddpm.data.images import to_model_range

    path = path or args.image
    if loaded.kind == "images":
        if path.suffix.lower() in (".npy", ".csv"):
            raise ConfigError(f"--image {path}: this model draws images; give a picture")
        u8 = read_pictures(path, loaded.shape, args.resize)
        return to_model_range(u8), u8, None
    if args.resize is not None:
        raise ConfigError(f"--resize fits pictures; {loaded.kind} are taken as they are")
    raw = read_sequences(path, loaded)
    missing = raw.isnan()
    x = loaded.data.scaler.apply(torch.nan_to_num(raw).float())
    return torch.where(missing, 0.0, x), raw, missing


def class_labels(args: argparse.Namespace, loaded, n: int):
    """(n,) labels of --class (cycled), or None (drawn, or none)."""
    import torch

    from ddpm.sampling.guidance import class_index

    if not args.classes:
        return None
    if loaded.num_classes is None:
        raise ConfigError(
            f"--class needs a class-conditional model (trained with --class-cond); "
            f"{args.checkpoint} is unconditional"
        )
    classes = [class_index(c, loaded.names) for c in args.classes]
    return torch.tensor([classes[i % len(classes)] for i in range(n)])


# --- writing ------------------------------------------------------------------------------------


def write_results(args, loaded, x, originals, keep, words: str) -> None:
    """The results as a grid / .npy (and --folder), with the kept values pasted back exactly:
    images as uint8, sequences in the data's units."""
    import torch

    from ddpm.data.arrays import save_npy
    from ddpm.data.images import to_model_range, to_uint8
    from ddpm.viz.grids import grid_scale, save_grid, save_images

    n = x.shape[0]
    rows = torch.arange(n) % originals.shape[0]
    suffix = args.out.suffix.lower()
    if loaded.kind == "images":
        u8 = to_uint8(x)
        if keep is not None:
            m = keep[torch.arange(n) % keep.shape[0]].expand_as(u8)
            u8 = torch.where(m, originals[rows], u8)
        if suffix == ".npy":
            save_npy(u8.numpy(), args.out)
        else:
            save_grid(to_model_range(u8), args.out, None, grid_scale(loaded.shape))  # as sample's
        if getattr(args, "folder", None):
            save_images(to_model_range(u8), args.folder)
    else:
        data = loaded.to_data(x).double()
        if keep is not None:
            m = keep[torch.arange(n) % keep.shape[0]].expand_as(data)
            data = torch.where(m, originals[rows], data)
        if suffix == ".npy":
            save_npy(data.numpy(), args.out)
        elif suffix == ".csv":  # points (_check_out), under the model's names or the input's
            from ddpm.data.arrays import read_csv, save_csv

            given = read_csv(args.image, True)[1] if args.image.suffix.lower() == ".csv" else None
            save_csv(data.numpy(), args.out, loaded.data.columns or given)
        elif keep is not None and loaded.kind == "sequences":  # the known steps as dots
            from ddpm.viz.arrayplots import save_imputation

            save_imputation(data.numpy(), m.numpy(), args.out)
        else:
            from ddpm.viz.arrayplots import save_samples

            save_samples(data.numpy(), args.out, loaded.data)
    where = f"{args.out}" + (
        f" and {args.folder.rstrip('/')}/" if getattr(args, "folder", None) else ""
    )
    print(f"wrote {n} {words} to {where}")


def _check_out(args, loaded) -> None:
    suffix = args.out.suffix.lower()
    points = loaded.kind == "points"
    if loaded.kind == "images":
        wrong = suffix == ".csv"  # any picture format, or .npy
    else:
        wrong = suffix not in ((".npy", ".csv", ".png") if points else (".npy", ".png"))
    if wrong:
        raise ConfigError(
            f"--out {args.out}: write a picture or .npy" + (" or .csv" if points else "")
        )
    if loaded.kind != "images" and getattr(args, "folder", None):
        raise ConfigError(
            f"--folder writes one PNG per image; for {loaded.kind} use --out FILE.npy"
        )


def _load(args):
    from ddpm.sampling.loaded import load_model

    loaded = load_model(args.checkpoint, resolve_device(args.device), args.raw_weights, args.ema)
    say_which_checkpoint(args.checkpoint, loaded)
    return loaded


# --- commands -----------------------------------------------------------------------------------


def run_inpaint(args: argparse.Namespace) -> int:
    from ddpm.sampling.editing import chain_steps, check_inputs, check_mask, inpaint, resolve_jump
    from ddpm.sampling.generate import resolve

    loaded = guided_by(_load(args), args)
    _check_out(args, loaded)
    x_0, originals, missing = read_inputs(args, loaded)
    check_inputs(loaded, x_0)
    keep = check_mask(loaded, read_mask(args, loaded, x_0.shape[0], missing))
    if missing is not None and keep.shape[0] in (1, len(missing)) and bool((missing & keep).any()):
        raise ConfigError(f"the mask keeps values that --image {args.image} lacks (NaN)")
    n = args.n or (8 if x_0.shape[0] == 1 else x_0.shape[0])
    spec = resolve(loaded, sampling_spec(args))
    labels = class_labels(args, loaded, n)
    repaint = args.method == "repaint"
    jump = resolve_jump(args.jump, chain_steps(loaded, spec), args.resample) if repaint else 1
    method = dict(method=args.method, jump=jump, resample=args.resample)
    x = inpaint(
        fast_path(loaded, args),
        x_0,
        keep,
        n,
        spec,
        class_labels=labels,
        progress=not args.quiet,
        **method,
    )
    how = args.method + (f", jump {jump}, resample {args.resample}" if repaint else "")
    write_results(
        args, loaded, x, originals, keep, f"inpainted {loaded.kind} ({how}; {spec.short()})"
    )
    return 0


def run_edit(args: argparse.Namespace) -> int:
    from ddpm.sampling.editing import check_inputs, check_strength, sdedit
    from ddpm.sampling.generate import resolve

    check_strength(args.strength)
    loaded = guided_by(_load(args), args)
    _check_out(args, loaded)
    x_0, originals, missing = read_inputs(args, loaded)
    if missing is not None and bool(missing.any()):
        raise ConfigError(f"--image {args.image} has missing values (NaN): use ddpm inpaint")
    check_inputs(loaded, x_0)
    n = args.n or (8 if x_0.shape[0] == 1 else x_0.shape[0])
    spec = resolve(loaded, sampling_spec(args))
    labels = class_labels(args, loaded, n)
    x = sdedit(
        fast_path(loaded, args),
        x_0,
        args.strength,
        n,
        spec,
        class_labels=labels,
        progress=not args.quiet,
    )
    words = f"edited {loaded.kind} (strength {args.strength:g}; {spec.short()})"
    write_results(args, loaded, x, originals, None, words)
    return 0
