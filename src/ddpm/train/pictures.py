"""The sample grids a run draws as it trains: how they sample (`grid_spec`), how long they may
take (`picture_budget`) and the drawing itself (`sample_grid`), through the one sampling path
(`ddpm.sampling.generate.generate`)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.sampling.generate import generate, picture_plan, seconds_per_evaluation
from ddpm.sampling.loaded import Loaded
from ddpm.sampling.samplers import default_steps
from ddpm.sampling.spec import SamplingSpec
from ddpm.train.config import TrainConfig
from ddpm.train.state import TrainState
from ddpm.viz.arrayplots import save_samples
from ddpm.viz.grids import save_grid

PICTURE_FLOOR_S = 30.0  # a sample grid may always take this long, however short the run
PLOT_SAMPLES = {"points": 2000, "sequences": 64}  # samples in a preview plot


@torch.no_grad()
def sample_grid(
    state: TrainState,
    schedule: NoiseSchedule,
    cfg: TrainConfig,
    shape,
    path: Path,
    budget_s: float | None = None,
    progress: bool = False,
) -> tuple[Tensor | None, SamplingSpec]:
    """A grid of `num_samples` images from the EMA weights, the same seeds every time; for a
    class-conditional model one class per row (the first classes), unguided. For points and
    sequences, a plot of the samples beside the data (`ddpm.viz.arrayplots.save_samples`; the
    classes in turn) instead of a grid. Drawn by `ddpm.sampling.generate.generate` with `grid_spec`:
    the grid is what `ddpm sample` draws from that checkpoint with the same flags.

    With `budget_s`, the sampler is cut down to fit that many seconds (`picture_plan`, from
    one timed network call). Returns the images (B, C, H, W) in [-1, 1] (None for points and
    sequences) and the spec that drew them."""
    device = next(state.ema.model.parameters()).device
    info = state.data_info
    n = cfg.num_samples if info is None else max(cfg.num_samples, PLOT_SAMPLES[info.kind])
    loaded = Loaded(state.ema.model, schedule, cfg.prediction, tuple(shape), state.step, data=info)
    spec = grid_spec(cfg, schedule.T, images=info is None).replace(batch_size=n)
    nrow = math.ceil(math.sqrt(n))  # save_grid's default
    y = None
    if state.num_classes is not None:
        i = torch.arange(n)
        y = (i // nrow if info is None else i) % state.num_classes
    if budget_s is not None:
        per_eval = seconds_per_evaluation(loaded.eps_given(y), shape, n, device)
        spec = picture_plan(spec, schedule.T, per_eval, budget_s)
    label = f"sample grid ({spec.sampler})" if progress else False
    x = generate(loaded, n, spec, class_labels=y, progress=label)
    if info is not None:
        save_samples(info.scaler.invert(x).numpy(), path, info, y)
        return None, spec
    save_grid(x, path, nrow)
    return x, spec


def grid_spec(cfg: TrainConfig, T: int, images: bool = True) -> SamplingSpec:
    """How the training grids, pictures and FID sample (cfg.sample_*): sample_steps where set
    (DDPM: a respaced chain of that many steps; all T when it asks for T or more), else the
    sampler's default; clipped only for images, whose range is [-1, 1]."""
    steps = cfg.sample_steps
    if steps is not None:
        steps = None if cfg.sample_sampler == "ddpm" and steps >= T else min(steps, T)
    return SamplingSpec(
        sampler=cfg.sample_sampler,
        steps=default_steps(cfg.sample_sampler, steps, T),
        eta=cfg.sample_eta,
        clip=cfg.sample_clip and images,
        spacing="trailing" if cfg.distill_steps else None,  # a student's grid
        seed=cfg.seed,
    )


def picture_budget(cfg: TrainConfig, seconds: float) -> float:
    """Seconds a picture may take after `seconds` of training: cfg.picture_budget of them,
    and at least PICTURE_FLOOR_S."""
    return max(PICTURE_FLOOR_S, cfg.picture_budget * seconds)
