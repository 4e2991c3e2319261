"""`ddpm fid-stats` and `ddpm fid`: Inception statistics of image sets, and FID between two."""

from __future__ import annotations

import argparse
from pathlib import Path

from ddpm.cli.args import (
    add_inception_args,
    add_resize_arg,
    add_split_arg,
    group,
    image_size,
    json_arg,
    output_file,
    positive_int,
    resolve_device,
    seed_int,
    write_json,
)
from ddpm.data.images import parse_size
from ddpm.errors import DataError


def add_fid_stats_args(p: argparse.ArgumentParser) -> None:
    g = group(p, "data")
    g.add_argument(
        "data", help="any --data form: folder or .zip of images, cifar10:PATH, mnist, ..."
    )
    g.add_argument(
        "--image-size",
        type=image_size,
        help="resize to N or HxW first (default: the images' own size, e.g. 32 for CIFAR-10)",
    )
    add_resize_arg(g)
    add_split_arg(g)
    g.add_argument(
        "--n",
        type=positive_int,
        help="statistics of N images drawn at random (by --seed) instead of all: a quick "
        "reference on a CPU (default: all)",
    )
    g.add_argument("--seed", type=seed_int, default=0, help="which N images --n draws")
    group(p, "output").add_argument(
        "-o",
        "--out",
        type=output_file("npz", "statistics file"),
        required=True,
        help="the statistics file to write (.npz)",
    )
    add_inception_args(p)


def run_fid_stats(args: argparse.Namespace) -> int:
    import time

    from ddpm.eval.evaluate import (
        find_inception,
        images_stats,
        load_fid_images,
        load_inception,
        save_stats,
    )
    from ddpm.eval.nll import select_images

    t0 = time.perf_counter()
    find_inception(args.inception)  # before the images are read
    size = parse_size(args.image_size) if args.image_size else None
    data = load_fid_images(args.data, size, args.resize, split=args.split, progress=not args.quiet)
    images = select_images(data, args.n, args.seed)
    net = load_inception(args.inception, resolve_device(args.device))
    stats = images_stats(net, images, args.fid_batch_size, progress=not args.quiet)
    save_stats(stats, args.out)
    H, W = data.image_size
    print(
        f"wrote {args.out}: Inception statistics of {stats.n} images ({H}x{W}) from "
        f"{data.source} in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def add_fid_args(p: argparse.ArgumentParser) -> None:
    g = group(p, "data")
    g.add_argument("a", help="folder or .zip of images (any --data form), or a statistics .npz")
    g.add_argument("b", help="the same, for the other set")
    g.add_argument(
        "--image-size",
        type=image_size,
        help="resize images to N or HxW first (default: each set's own size)",
    )
    add_resize_arg(g)
    add_split_arg(g)
    json_arg(group(p, "output"), "the result")
    add_inception_args(p)


def check_images_spec(spec: str) -> None:
    """A set of images that is plainly not there, or not images, named before any work (the
    full check is the loader's, which reads the files)."""
    from ddpm.data.arrays import is_array_spec
    from ddpm.data.images import BUNDLED

    if is_array_spec(spec):
        raise DataError(f"{spec}: points or sequences, but FID compares images")
    kind, sep, path = spec.partition(":")
    where = path if sep and kind in ("cifar10", "stanford-cars") else spec
    if spec != BUNDLED and not Path(where).exists():
        raise DataError(
            f"{where}: no such file or folder; expected a folder or .zip of images, mnist, "
            "cifar10:PATH, stanford-cars:PATH or a statistics .npz"
        )


def run_fid(args: argparse.Namespace) -> int:
    from ddpm.eval.evaluate import load_inception, load_stats, source_stats
    from ddpm.eval.fid import fid_from_stats

    size = parse_size(args.image_size) if args.image_size else None
    for spec in (args.a, args.b):  # both sets are found before any images are read
        if spec.endswith(".npz"):
            load_stats(spec)
        else:
            check_images_spec(spec)
    needs_net = not (args.a.endswith(".npz") and args.b.endswith(".npz"))
    net = load_inception(args.inception, resolve_device(args.device)) if needs_net else None
    a, b = (
        source_stats(s, net, args.fid_batch_size, size, not args.quiet, args.split, args.resize)
        for s in (args.a, args.b)
    )
    fid = fid_from_stats(a, b)
    count = lambda s: "?" if s.n is None else str(s.n)  # noqa: E731
    print(f"FID {fid:.4f} ({args.a}: {count(a)} images, {args.b}: {count(b)} images)")
    write_json(args.json, {"fid": fid, "a": args.a, "b": args.b, "n_a": a.n, "n_b": b.n})
    return 0
