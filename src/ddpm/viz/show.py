"""The tutorial's pictures, one function each (`ddpm show ...`): the data, the forward process
on real images, the schedules, a run's loss and FID curves. The reverse process is
`ddpm.sampling.generate.denoising_process`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ddpm.data.images import Dataset, ImageDataset, to_model_range, to_uint8
from ddpm.diffusion.process import q_sample
from ddpm.diffusion.schedule import SCHEDULES, NoiseSchedule, make_schedule
from ddpm.viz.grids import make_grid, to_pil
from ddpm.viz.plots import Panel, Series, font, training_curve

# The reference tutorial's schedule: linear, T = 300, β from 1e-4 to 0.02.
TUTORIAL_SCHEDULE = ("linear", 300, 1e-4, 0.02)


def pick_images(data: Dataset, n: int, seed: int = 0) -> Tensor:
    """n images (n, C, H, W) in [-1, 1], chosen by a generator seeded with `seed` (decoding
    only those n when the dataset streams)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data), generator=g)[: min(n, len(data))].tolist()
    if isinstance(data, ImageDataset):
        images = data.images[idx]
    else:
        images = torch.stack([data[i][0] for i in idx])
    return to_model_range(images)


def forward_process(
    x_0: Tensor, schedule: NoiseSchedule, columns: int = 10, seed: int = 0
) -> tuple[list[int], list[Tensor]]:
    """x_0, then x_t ~ q(x_t | x_0) (Ho et al. eq. 4) at `columns - 1` evenly spaced steps up
    to t = T, in the paper's numbering (code index t - 1).

    x_0: (B, C, H, W) in [-1, 1]. Each image keeps one eps for every t, so a row shows one
    draw of the noise fading the image out. Returns (the t's, a (B, C, H, W) tensor per t).
    """
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(x_0.shape, generator=g)
    ts = [round(k * schedule.T / max(columns - 1, 1)) for k in range(columns)]
    frames = [x_0] + [
        q_sample(schedule, x_0, torch.full((x_0.shape[0],), t - 1, dtype=torch.long), eps)
        for t in ts[1:]
    ]
    return ts, frames


def labelled_strip(frames: Sequence[Tensor], labels: Sequence[str], title: str) -> Image.Image:
    """Rows of images (one per sample) and columns (one per frame), each column headed by its
    label, the picture headed by `title`."""
    B, C, H, W = frames[0].shape
    scale = max(1, 64 // max(H, W))
    stacked = torch.stack([to_uint8(f) for f in frames], dim=1).flatten(0, 1)
    grid = to_pil(make_grid(stacked, nrow=len(frames))).convert("RGB")
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    f, small = font(16), font(13)
    top = 52
    img = Image.new("RGB", (max(grid.width, 360), grid.height + top), "white")
    img.paste(grid, (0, top))
    d = ImageDraw.Draw(img)
    d.text((4, 4), title, fill="black", font=f)
    cell = (W + 2) * scale
    for k, label in enumerate(labels):
        box = d.textbbox((0, 0), label, font=small)
        x = 2 * scale + k * cell + (W * scale - (box[2] - box[0])) / 2
        d.text((x, top - 20), label, fill="black", font=small)
    return img


def forward_picture(
    data: Dataset,
    path: str | os.PathLike,
    schedule_args: tuple = TUTORIAL_SCHEDULE,
    n: int = 4,
    columns: int = 10,
    seed: int = 0,
) -> Path:
    """The tutorial's first figure: n images of `data` noised by q(x_t | x_0) at evenly spaced
    t (columns: x_0, then t up to T). `schedule_args` are make_schedule's (name, T, start, end)."""
    with warnings.catch_warnings():  # a short schedule is shown on purpose, not used
        warnings.simplefilter("ignore")
        schedule = make_schedule(*schedule_args)
    ts, frames = forward_process(pick_images(data, n, seed), schedule, columns, seed)
    name, T = schedule_args[0], schedule_args[1]
    title = f"forward process q(x_t | x_0), {name} schedule, T = {T}"
    img = labelled_strip(frames, ["x_0"] + [f"t={t}" for t in ts[1:]], title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def data_picture(data: Dataset, path: str | os.PathLike, n: int = 32, seed: int = 0) -> Path:
    """A grid of n training images, as the tutorial shows its data first."""
    x = pick_images(data, n, seed)
    H = x.shape[-1]
    nrow = min(len(x), 8)
    img = to_pil(make_grid(to_uint8(x), nrow=nrow))
    scale = max(1, 64 // H)
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def schedule_panels(T: int = 1000) -> list[Panel]:
    """ᾱ_t and log SNR = log(ᾱ_t / (1 - ᾱ_t)) against t/T for every named schedule at T steps,
    and the tutorial's linear schedule at T = 300 (dashed)."""
    entries: list[tuple[str, NoiseSchedule, bool]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tutorial's schedule ends at ᾱ_T ≈ 0.05, shown
        for name in SCHEDULES:
            entries.append((f"{name}, T={T}", make_schedule(name, T), False))
        name, T_tut, start, end = TUTORIAL_SCHEDULE
        tutorial = make_schedule(name, T_tut, start, end)
        entries.append((f"tutorial: {name}, T={T_tut}, β {start:g}..{end:g}", tutorial, True))
    abar_panel = Panel("ᾱ_t: how much of x_0 is left", "t / T", "ᾱ_t")
    snr_panel = Panel("log SNR = log(ᾱ_t / (1 - ᾱ_t))", "t / T", "log SNR")
    for label, s, dashed in entries:
        x = [(t + 1) / s.T for t in range(s.T)]  # code index t is the paper's step t+1
        abar = s.alphas_cumprod
        log_snr = (abar / (1 - abar)).log()
        abar_panel.series.append(Series(label, x, abar.tolist(), dashed))
        snr_panel.series.append(Series(label, x, log_snr.tolist(), dashed))
    return [abar_panel, snr_panel]


def run_panels(rows: Sequence[dict]) -> list[Panel]:
    """The loss curve and, when FID was measured, the FID curve of a run's log.csv rows."""
    return [p for p in (training_curve(rows, "loss"), training_curve(rows, "fid")) if p]
