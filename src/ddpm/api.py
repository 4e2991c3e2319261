"""The three calls a user needs to get pictures out of a trained model, exported as
`ddpm.load`, `ddpm.sample` and `ddpm.save_grid`:

    import ddpm

    model = ddpm.load("runs/default")          # the run's newest checkpoint, EMA weights
    images = ddpm.sample(model, n=16, seed=0)  # (16, C, H, W) in [-1, 1]
    ddpm.save_grid(images, "samples.png")

The defaults are those of `ddpm sample`; every piece underneath (`ddpm.sampling.samplers`,
`ddpm.sampling.generate`) stays available for more control.
"""

from __future__ import annotations

import operator
import os
from typing import Any

import torch
from torch import Tensor

from ddpm.sampling.generate import generate
from ddpm.sampling.loaded import Loaded, load_model
from ddpm.sampling.spec import SamplingSpec
from ddpm.speed import set_cpu_threads
from ddpm.train.config import resolve_device
from ddpm.viz.grids import save_grid

__all__ = ["SamplingSpec", "load", "sample", "save_grid"]


def load(
    path: str | os.PathLike, device: str | torch.device = "auto", raw_weights: bool = False
) -> Loaded:
    """A checkpoint file, a run folder (its newest ckpt-<step>.pt), a safetensors export or a
    diffusers folder, ready to sample: the EMA weights (`raw_weights` for the others) in eval
    mode, on CUDA when torch sees a GPU."""
    device = resolve_device(device) if isinstance(device, str) else device
    return load_model(path, device, raw_weights)


def sample(
    model: Loaded,
    n: int = 16,
    spec: SamplingSpec | None = None,
    *,
    class_labels: Tensor | None = None,
    progress: bool = False,
    **fields: Any,
) -> Tensor:
    """n images (n, C, H, W) in [-1, 1] on the CPU, drawn exactly as `ddpm sample` draws them
    (the same `ddpm.sampling.generate.generate`): image i depends on (seed, i) only. `spec` says how
    (`ddpm.SamplingSpec`); keyword `fields` override it: `sampler` ("ddim", "ddpm",
    "dpm-solver", "dpm-solver-3m", "heun", "unipc", "ipndm"), `steps`, `eta`, `clip`,
    `spacing`, `guidance`, `seed`, `batch_size`. On the CPU the thread count is chosen as the
    CLI chooses it (`ddpm.speed.set_cpu_threads`: all cores, or one when the others are busy),
    so the images agree with `ddpm sample`'s to float rounding, not bit for bit."""
    if not isinstance(model, Loaded):
        raise TypeError(f"model must be what ddpm.load returns, got {type(model).__name__}: "
                        "ddpm.sample(ddpm.load(path), ...)")  # fmt: skip
    # ints, numpy's too; not floats, strings or bools
    if isinstance(n, bool) or not hasattr(type(n), "__index__") or operator.index(n) < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    n = operator.index(n)
    threads = torch.get_num_threads()
    if next(model.model.parameters()).device.type == "cpu":
        set_cpu_threads(None)
    try:
        return generate(model, n, spec, class_labels=class_labels, progress=progress, **fields)
    finally:
        torch.set_num_threads(threads)
