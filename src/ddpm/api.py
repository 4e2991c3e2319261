"""The three calls a user needs to get pictures out of a trained model, exported as
`ddpm.load`, `ddpm.sample` and `ddpm.save_grid`:

    import ddpm

    model = ddpm.load("runs/default")          # the run's newest checkpoint, EMA weights
    images = ddpm.sample(model, n=16, seed=0)  # (16, C, H, W) in [-1, 1]
    ddpm.save_grid(images, "samples.png")

The defaults are those of `ddpm sample`; every piece underneath (`ddpm.samplers`,
`ddpm.generate`) stays available for more control.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from ddpm.generate import Loaded, generate, load_model
from ddpm.images import save_grid
from ddpm.train.config import resolve_device

__all__ = ["load", "sample", "save_grid"]


def load(
    path: str | os.PathLike, device: str | torch.device = "auto", raw_weights: bool = False
) -> Loaded:
    """A checkpoint file, or a run folder (its newest ckpt-<step>.pt), ready to sample: the
    EMA weights (`raw_weights` for the others) in eval mode, on CUDA when torch sees a GPU."""
    device = resolve_device(device) if isinstance(device, str) else device
    return load_model(path, device, raw_weights)


def sample(
    model: Loaded,
    n: int = 16,
    seed: int = 0,
    sampler: str = "ddim",
    steps: int | None = 50,
    eta: float = 0.0,
    clip: bool = True,
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """n images (n, C, H, W) in [-1, 1] on the CPU, as `ddpm sample` draws them: image i
    depends on (seed, i) only; `sampler` is "ddim" (with `steps` and `eta`), "ddpm"
    (ancestral, all T steps), "dpm-solver" or "dpm-solver-3m" (`steps`), or "heun"; x_0
    predictions clipped to [-1, 1]."""
    return generate(
        model, n, seed, sampler, steps, eta, clip=clip, batch_size=batch_size, progress=progress
    )
