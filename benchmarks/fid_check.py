"""Check our FID against the shared CIFAR-10 reference statistics, and time each stage.

    python benchmarks/fid_check.py --train-zip TRAIN.zip --test-zip TEST.zip \\
        --inception fid-inception-fp16.pt \\
        --train-stats cifar10-train-inception-stats.npz \\
        --test-stats cifar10-test-inception-stats.npz [--limit 200] [--out DIR]

Computes, with the code `ddpm fid-stats` and `ddpm fid` run: the statistics of both zips
(written as .npz and read back, as the CLI does), then
  - FID(shared train, shared test): the distance alone, on the shared files (3.114)
  - FID(our train, our test): the whole pipeline (expected 3.114 ± 0.02)
  - FID(our train, shared train) and FID(our test, shared test): the statistics themselves
    (expected < 0.01)
and prints a markdown table with the timings. `--limit N` takes N images of each zip, evenly
spread over the classes, for a quick trial (the expectations then do not apply). Needs no
installation: run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ddpm import datasets
from ddpm.data import decode_entries, default_workers
from ddpm.evaluate import (
    images_stats,
    load_fid_images,
    load_inception,
    load_stats,
    native_size,
    save_stats,
)
from ddpm.fid import FIDStats, fid_from_stats

EXPECTED_TRAIN_TEST = 3.114  # ../shared/fid/README.md
TOLERANCE = 0.02
SAME_STATS = 0.01


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def load_images(path: str, limit: int | None, workers: int) -> tuple[torch.Tensor, str]:
    """uint8 (N, 3, H, W) of a zip at its own size: all of it (the `ddpm fid-stats` path), or
    `limit` pictures evenly spaced over its sorted entries (so every class is present)."""
    if limit is None:
        data = load_fid_images(path)
        return data.images, data.source
    src = datasets.resolve(path)
    entries = src.entries or []
    step = max(1, len(entries) // limit)
    picked = entries[::step][:limit]
    size = native_size(path)
    assert size is not None, f"{path}: no readable picture"
    images, _ = decode_entries(picked, size, 3, "center-crop", False, workers, path)
    return images, f"{path} ({len(picked)} of {len(entries)})"


def timed_fid(a: FIDStats, b: FIDStats) -> tuple[float, float]:
    t0 = time.perf_counter()
    value = fid_from_stats(a, b)
    return value, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--train-zip", required=True)
    p.add_argument("--test-zip", required=True)
    p.add_argument("--inception", required=True, help="TorchScript Inception (.pt)")
    p.add_argument("--train-stats", required=True, help="shared train statistics .npz")
    p.add_argument("--test-stats", required=True, help="shared test statistics .npz")
    p.add_argument("--limit", type=int, help="images per zip (a quick trial)")
    p.add_argument("--batch-size", type=int, help="Inception batch (default 500 GPU, 50 CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=None, help="decoding processes")
    p.add_argument("--out", type=Path, help="folder for our .npz statistics and results.json")
    p.add_argument(
        "--also-tf32",
        action="store_true",
        help="also compute the test statistics with TF32 convolutions, to see what TF32 changes",
    )
    args = p.parse_args(argv)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    batch = args.batch_size or (500 if device.type == "cuda" else 50)
    workers = args.workers or default_workers()
    out = args.out or Path("fid_check_out")
    out.mkdir(parents=True, exist_ok=True)
    cpu = f"CPU, {os.cpu_count()} cores"
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    print(f"device: {device} ({card}), torch {torch.__version__}, batch {batch}, workers {workers}")

    timings: list[tuple[str, float, str]] = []
    shared_train = load_stats(args.train_stats)
    shared_test = load_stats(args.test_stats)
    decoded = {}  # decoded before CUDA starts: the loader forks worker processes
    for name, path in (("train", args.train_zip), ("test", args.test_zip)):
        t0 = time.perf_counter()
        images, source = load_images(path, args.limit, workers)
        dt = time.perf_counter() - t0
        n = images.shape[0]
        timings.append(
            (f"decode {name}", dt, f"{n} images {tuple(images.shape[1:])}, {n / dt:,.0f} img/s")
        )
        decoded[name] = images
        print(f"{name}: {source}")
    t0 = time.perf_counter()
    net = load_inception(args.inception, device)
    sync(device)
    timings.append(("load Inception", time.perf_counter() - t0, args.inception))

    ours: dict[str, FIDStats] = {}
    for name, images in decoded.items():
        n = images.shape[0]
        if device.type == "cuda":  # one warm-up batch: cuDNN picks its algorithms
            images_stats(net, images[: min(batch, n)], batch)
            sync(device)
        t0 = time.perf_counter()
        stats = images_stats(net, images, batch)
        sync(device)
        dt = time.perf_counter() - t0
        timings.append((f"features + stats {name}", dt, f"{n / dt:,.0f} img/s, float32, no TF32"))
        path_npz = save_stats(stats, out / f"ours-{name}.npz")
        ours[name] = load_stats(path_npz)  # exactly what `ddpm fid-stats` leaves on disk
        if name == "test" and args.also_tf32 and device.type == "cuda":
            t0 = time.perf_counter()
            ours["test-tf32"] = images_stats(net, images, batch, tf32=True)
            sync(device)
            dt = time.perf_counter() - t0
            timings.append(("features + stats test, TF32", dt, f"{n / dt:,.0f} img/s"))

    full = args.limit is None
    rows = []
    checks = [
        ("shared train vs shared test", shared_train, shared_test, EXPECTED_TRAIN_TEST, TOLERANCE),
        ("our train vs our test", ours["train"], ours["test"], EXPECTED_TRAIN_TEST, TOLERANCE),
        ("our train vs shared train", ours["train"], shared_train, 0.0, SAME_STATS),
        ("our test vs shared test", ours["test"], shared_test, 0.0, SAME_STATS),
    ]
    if "test-tf32" in ours:
        checks += [
            ("our test TF32 vs shared test", ours["test-tf32"], shared_test, 0.0, SAME_STATS),
            ("our test TF32 vs our test", ours["test-tf32"], ours["test"], 0.0, SAME_STATS),
        ]
    for label, a, b, expected, tol in checks:
        value, dt = timed_fid(a, b)
        applies = full or label.startswith("shared")
        verdict = (
            ("PASS" if abs(value - expected) <= tol else "FAIL") if applies else "n/a (subset)"
        )
        want = f"{expected:.3f} ± {tol}" if expected else f"< {tol}"
        rows.append((label, value, want, verdict, dt))
        timings.append((f"FID {label}", dt, "scipy.linalg.sqrtm, float64"))

    print("\n| FID | value | expected | result |")
    print("|---|---|---|---|")
    for label, value, want, verdict, _ in rows:
        print(f"| {label} | {value:.4f} | {want} | {verdict} |")
    print("\n| stage | seconds | notes |")
    print("|---|---|---|")
    for stage, dt, note in timings:
        print(f"| {stage} | {dt:.2f} | {note} |")
    total = sum(dt for _, dt, _ in timings)
    print(f"\ntotal {total:.1f} s on {card}")
    record = {
        "device": card,
        "torch": torch.__version__,
        "limit": args.limit,
        "batch_size": batch,
        "fid": {label: {"value": v, "expected": w, "result": r} for label, v, w, r, _ in rows},
        "timings_s": {stage: dt for stage, dt, _ in timings},
    }
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    failed = any(r[3] == "FAIL" for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
