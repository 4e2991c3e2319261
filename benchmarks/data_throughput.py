"""Data throughput: how many training images per second the data side delivers.

    python benchmarks/data_throughput.py [--cifar PATH/train.zip] [--workers N] [--device cuda]

Rows (images/s, higher is better):
  CIFAR-10 zip, first decode   load_dataset("cifar10:ZIP"): every JPEG decoded once into the
                               uint8 cache, in `--workers` processes
  CIFAR-10 cached, batches()   the training stream from that cache (gather, [-1, 1], flips)
                               on --device
  64x64 JPEG folder, streamed  batches() over a StreamingDataset: DataLoader workers decode
                               each batch (a generated folder of --jpegs files)
  64x64 JPEG folder, first decode  the same folder decoded into the cache, for comparison
  640x480 photos -> 64x64      --photos generated JPEGs the size of Stanford Cars photos,
                               decoded into the cache (the JPEG decoder's draft mode
                               shrinks them by 4 while decoding)

Without ../shared/data/cifar10/train.zip (or with --cifar synthetic), a CIFAR-like zip of
50,000 generated 32x32 JPEGs (smooth noise, stored, one folder per class) stands in, and the
table says so.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ddpm.data import batches, default_workers, load_dataset

REAL_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / "train.zip"


def smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """A photo-like picture: noise at 1/4 resolution, upsampled (JPEGs of white noise are
    several times larger and slower to decode than photos)."""
    small = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def make_cifar_like_zip(path: Path, n: int = 50_000) -> Path:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            img = Image.fromarray(smooth_noise(rng, 32))
            with zf.open(f"class{i % 10}/{i:05d}.jpg", "w") as f:
                img.save(f, "JPEG", quality=90)
    return path


def make_jpeg_folder(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(1)
    for i in range(n):
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_noise(rng, 64)).save(sub / f"{i:06d}.jpg", quality=90)
    return folder


def make_photo_folder(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(2)
    folder.mkdir(parents=True)
    for i in range(n):
        small = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((640, 480), Image.Resampling.BICUBIC)
        img.save(folder / f"{i:05d}.jpg", quality=90)
    return folder


def stream_rate(data, batch_size: int, device: str, workers: int, seconds: float) -> float:
    """images/s of batches() after its first batch (start-up is reported separately)."""
    it = batches(data, batch_size, seed=0, device=device, workers=workers)
    next(it)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x, _ = next(it)
        n += x.shape[0]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--cifar",
        help="CIFAR-10 class-folder zip, or 'synthetic' (default: ../shared's, else synthetic)",
    )
    p.add_argument("--synthetic-n", type=int, default=50_000, help="images in a synthetic zip")
    p.add_argument("--workers", type=int, default=default_workers())
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--jpegs", type=int, default=5000, help="64x64 JPEGs to generate")
    p.add_argument("--photos", type=int, default=1000, help="640x480 JPEGs to generate")
    p.add_argument("--seconds", type=float, default=5.0, help="time per stream measurement")
    args = p.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cifar = args.cifar or (str(REAL_CIFAR) if REAL_CIFAR.is_file() else "synthetic")
        what = f"CIFAR-10 zip {cifar}"
        if cifar == "synthetic":
            cifar = make_cifar_like_zip(Path(tmp) / "cifar_like.zip", args.synthetic_n)
            what = f"CIFAR-like zip ({args.synthetic_n:,} generated 32x32 JPEGs)"
        elif cifar == str(REAL_CIFAR):
            what = "CIFAR-10 train.zip (50,000 32x32 JPEGs)"
        t0 = time.perf_counter()
        data = load_dataset(f"cifar10:{cifar}", (32, 32), workers=args.workers)
        dt = time.perf_counter() - t0
        rows.append((f"{what}: first decode into the cache", len(data) / dt, f"{dt:.1f} s total"))
        rate = stream_rate(data, args.batch_size, args.device, 0, args.seconds)
        rows.append((f"CIFAR-10 cached, batches() on {args.device}, flips", rate, ""))

        folder = make_jpeg_folder(Path(tmp) / "jpegs", args.jpegs)
        t0 = time.perf_counter()
        streamed = load_dataset(str(folder), (64, 64), stream=True, workers=args.workers)
        dt_probe = time.perf_counter() - t0
        rate = stream_rate(streamed, args.batch_size, args.device, args.workers, args.seconds)
        rows.append(
            (
                f"{args.jpegs} 64x64 JPEGs, streamed, {args.workers} DataLoader workers",
                rate,
                f"header scan {dt_probe:.1f} s",
            )
        )
        t0 = time.perf_counter()
        cached = load_dataset(str(folder), (64, 64), workers=args.workers)
        dt = time.perf_counter() - t0
        rows.append(
            (f"{args.jpegs} 64x64 JPEGs: first decode into the cache", len(cached) / dt, "")
        )
        photos = make_photo_folder(Path(tmp) / "photos", args.photos)
        t0 = time.perf_counter()
        cached = load_dataset(str(photos), (64, 64), workers=args.workers)
        dt = time.perf_counter() - t0
        name = f"{args.photos} 640x480 JPEG photos -> 64x64: first decode into the cache"
        rows.append((name, len(cached) / dt, ""))

    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "-"
    print(
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs (using {args.workers} decoding processes), GPU {gpu}, "
        f"torch {torch.__version__}, Pillow {Image.__version__}, batch {args.batch_size}\n"
    )
    print("| data path | images/s | note |\n|---|---:|---|")
    for name, rate, note in rows:
        print(f"| {name} | {rate:,.0f} | {note} |")


if __name__ == "__main__":
    main()
