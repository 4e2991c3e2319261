"""Pictures: sample grids, the denoising strip and GIF, and a loss curve, with Pillow only."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ddpm.data import to_uint8


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


def save_gif(
    frames: Sequence[Tensor], path: str | os.PathLike, scale: int = 2, ms: int = 80
) -> None:
    """An animated GIF of the chain: each frame a grid of the batch at one step; holds x_0."""
    images = []
    for f in frames:
        img = to_pil(make_grid(to_uint8(f.cpu())))
        images.append(img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST))
    durations = [ms] * (len(images) - 1) + [2000]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)


def loss_curve(steps: Sequence[int], losses: Sequence[float], path: str | os.PathLike) -> None:
    """A plain line plot of the training loss (log scale), drawn with Pillow."""
    W, H, m = 640, 360, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    pts = [(s, v) for s, v in zip(steps, losses) if v > 0 and math.isfinite(v)]
    d.rectangle((m, 10, W - 10, H - m), outline="black")
    if len(pts) >= 2:
        s0, s1 = pts[0][0], pts[-1][0]
        lv = np.log10([v for _, v in pts])
        lo, hi = float(lv.min()), float(lv.max())
        hi = hi if hi > lo else lo + 1e-6

        def xy(s: float, l: float) -> tuple[float, float]:
            x = m + (s - s0) / max(s1 - s0, 1) * (W - 10 - m)
            y = H - m - (l - lo) / (hi - lo) * (H - m - 10)
            return x, y

        d.line([xy(s, l) for (s, _), l in zip(pts, lv)], fill=(31, 119, 180), width=2)
        d.text((m + 4, 14), f"loss {10**hi:.4g}", fill="black")
        d.text((m + 4, H - m - 14), f"loss {10**lo:.4g}", fill="black")
        d.text((m, H - m + 6), f"step {s0}", fill="black")
        d.text((W - 110, H - m + 6), f"step {s1}", fill="black")
    d.text((W // 2 - 60, H - 20), "training loss (log scale)", fill="black")
    img.save(path)
