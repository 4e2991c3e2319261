"""A model's bits/dim on held-out uint8 images (N, C, H, W): the variational bound of Ho et al.
2020 eq. 5, term by term (`ddpm.diffusion.likelihood`), with its standard error over the images.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ddpm.data.images import ImageDataset
from ddpm.diffusion.likelihood import VARIANCES, bits_per_dim, strata
from ddpm.diffusion.process import respace_model
from ddpm.errors import FIDError
from ddpm.progress import Progress
from ddpm.sampling.generate import counted
from ddpm.sampling.loaded import Loaded


@dataclass
class NLLResult:
    """The bound in bits/dim: the mean over images and its standard error."""

    bpd: float
    stderr: float
    n: int
    variance: str
    clip: bool
    T: int  # the steps of the bound: the model's T, or K of a respaced bound
    seconds: float
    per_image: np.ndarray
    t_samples: int | None = None  # timesteps per image of the stratified estimate (None: all)
    respaced: bool = False  # the bound of the K-step respaced model

    def describe(self) -> str:
        """What the number is, in words."""
        chain = f"the {self.T}-step respaced model" if self.respaced else f"T={self.T} steps"
        if self.t_samples is None:
            return f"bound over {chain}"
        return (
            f"bound over {chain}, estimated from {self.t_samples} stratified timesteps per "
            "image (unbiased; the error includes the t sampling)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "bpd": self.bpd,
            "stderr": self.stderr,
            "n": self.n,
            "variance": self.variance,
            "clip": self.clip,
            "T": self.T,
            "t_samples": self.t_samples,
            "respaced": self.respaced,
            "seconds": self.seconds,
        }


def select_images(data: ImageDataset, n: int | None, seed: int) -> Tensor:
    """n images drawn without replacement (all when n is None or >= the dataset's size)."""
    N = len(data)
    if n is None or n >= N:
        return data.images
    g = torch.Generator().manual_seed(seed)
    return data.images[torch.randperm(N, generator=g)[:n]]


def model_nll(
    loaded: Loaded,
    images: Tensor,
    variance: str | None = "small",
    clip: bool = True,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
    steps: int | None = None,
    t_samples: int | None = None,
) -> NLLResult:
    """bits/dim of uint8 images (N, C, H, W) under the model's variational bound.

    By default the bound over all T steps. `steps` = K: the bound of the respaced K-step model
    (Nichol & Dhariwal §4; what `--sampler ddpm --steps K` samples from; a true bound on that
    model's NLL, usually above the T-step one). `t_samples` = K: an unbiased stratified
    estimate of the bound from K timesteps per image instead of all of them. `variance` None:
    learned if the model has it, else "small".
    """
    variance = loaded.variance(variance)
    if variance not in VARIANCES:
        raise FIDError(f"variance must be one of {', '.join(VARIANCES)}, got {variance!r}")
    if tuple(images.shape[1:]) != tuple(loaded.shape):
        raise FIDError(
            f"the images are {tuple(images.shape[1:])} (C, H, W) but the model was trained on "
            f"{tuple(loaded.shape)}"
        )
    device = next(loaded.model.parameters()).device
    model, schedule = loaded.eps, loaded.schedule
    if steps is not None:
        if not 1 <= steps <= schedule.T:
            raise FIDError(f"the bound's steps must lie in [1, {schedule.T}], got {steps}")
        model, schedule = respace_model(model, schedule, steps)
    if t_samples is not None:
        try:
            strata(schedule.T, t_samples)  # raises on a count the chain cannot take
        except ValueError as e:
            raise FIDError(str(e)) from None
    gen = torch.Generator(device=device).manual_seed(seed)
    t_gen = torch.Generator().manual_seed(seed + 1)
    per_batch = min(batch_size, images.shape[0])
    starts = range(0, images.shape[0], per_batch)
    # network calls: each batch of B images takes its timesteps k = batch_size // B at a time
    sizes = [min(per_batch, images.shape[0] - s) for s in starts]
    per_image = t_samples or schedule.T
    calls = sum(math.ceil(per_image / max(1, batch_size // B)) for B in sizes)
    t0 = time.perf_counter()
    out = []
    with Progress(calls, f"bits/dim of {images.shape[0]} images", enabled=progress) as bar:
        net = counted(model, bar)
        for start in starts:
            x = images[start : start + per_batch].to(device)
            bpd_batch = bits_per_dim(
                net, schedule, x, variance, clip, gen, batch_size, t_samples, t_gen
            )
            out.append(bpd_batch.cpu())
    bpd = torch.cat(out).numpy()
    n = bpd.shape[0]
    stderr = float(bpd.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    seconds = time.perf_counter() - t0
    return NLLResult(
        float(bpd.mean()),
        stderr,
        n,
        variance,
        clip,
        schedule.T,
        seconds,
        bpd,
        t_samples,
        steps is not None and steps < loaded.schedule.T,
    )
