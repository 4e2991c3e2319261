"""Pictures: sample grids, the denoising strip and GIF, with Pillow only (curves:
`ddpm.viz.plots`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from ddpm.data.images import to_uint8


def make_grid(images: Tensor, nrow: int | None = None, pad: int = 2) -> Tensor:
    """uint8 (B, C, H, W) -> one uint8 (C, H', W') image, `nrow` images per row."""
    B, C, H, W = images.shape
    nrow = nrow or math.ceil(math.sqrt(B))
    rows = math.ceil(B / nrow)
    grid = torch.full((C, pad + rows * (H + pad), pad + nrow * (W + pad)), 255, dtype=torch.uint8)
    for i in range(B):
        r, c = divmod(i, nrow)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        grid[:, top : top + H, left : left + W] = images[i]
    return grid


def to_pil(image: Tensor) -> Image.Image:
    """uint8 (C, H, W) with C = 1 or 3 -> a PIL image."""
    arr = image.cpu().numpy()
    return (
        Image.fromarray(arr[0], "L")
        if arr.shape[0] == 1
        else Image.fromarray(arr.transpose(1, 2, 0), "RGB")
    )


def grid_scale(shape: tuple[int, ...]) -> int:
    """How many times a grid of images of `shape` (C, H, W) is enlarged for viewing: twice for
    the small ones (32 pixels or less: digits, CIFAR-10), else as they are."""
    return 2 if max(shape[-2:]) <= 32 else 1


def save_grid(x: Tensor, path: str | os.PathLike, nrow: int | None = None, scale: int = 1) -> None:
    """Save float images in [-1, 1], (B, C, H, W), as one PNG grid (optionally enlarged)."""
    img = to_pil(make_grid(to_uint8(x.cpu()), nrow))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def enlarge(src: str | os.PathLike, dst: str | os.PathLike, scale: int = 2) -> None:
    """Copy a picture, enlarged `scale` times with nearest-neighbour pixels."""
    with Image.open(src) as img:
        img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST).save(dst)


def save_images(x: Tensor, folder: str | os.PathLike, start: int = 0) -> list[Path]:
    """Save each image of (B, C, H, W) in [-1, 1] as `folder/{start + i:06d}.png`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(to_uint8(x.cpu())):
        p = folder / f"{start + i:06d}.png"
        to_pil(img).save(p)
        paths.append(p)
    return paths


def process_strip(frames: Sequence[Tensor], scale: int = 2) -> Image.Image:
    """The reverse chain as a picture: one row per sample, one column per kept step.

    `frames` are (B, C, H, W) in [-1, 1], from x_T (left) to x_0 (right), as in the tutorial.
    """
    # (B, steps, C, H, W) -> rows of samples, columns of steps
    stacked = torch.stack([to_uint8(f.cpu()) for f in frames], dim=1).flatten(0, 1)
    img = to_pil(make_grid(stacked, nrow=len(frames)))
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def full_grid_columns(n: int) -> int:
    """Columns for n images with no empty cell, as square as possible: 8 -> 4 (4x2), 9 -> 3."""
    return next(c for c in range(math.ceil(math.sqrt(n)), n + 1) if n % c == 0)


def save_gif(
    frames: Sequence[Tensor], path: str | os.PathLike, scale: int | None = None, ms: int = 80
) -> None:
    """An animated GIF of the chain: each frame a full grid of the batch at one step (8
    samples: 4x2); holds x_0. `scale` None enlarges small pictures to at least 256 px wide."""
    nrow = full_grid_columns(frames[0].shape[0])
    images = []
    for f in frames:
        img = to_pil(make_grid(to_uint8(f.cpu()), nrow))
        k = scale or max(2, math.ceil(256 / img.width))
        images.append(img.resize((img.width * k, img.height * k), Image.Resampling.NEAREST))
    durations = [ms] * (len(images) - 1) + [2000]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
