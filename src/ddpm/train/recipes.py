"""Recipes: named sets of training settings, as data. `ddpm train --recipe NAME` starts from
one; any flag given on the command line still wins. Each recipe says where its values come
from (a paper, a tutorial, or a measurement in docs/benchmarks.md)."""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ddpm.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    description: str
    settings: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    # the `ddpm sample` / `ddpm eval` flags measured best for the model, {out} the run's folder
    sample_with: str = ""
    # the settings follow the global batch (`for_batch`), by default its batch_size per process
    scales_with_batch: bool = False


def for_batch(settings: dict[str, Any], batch: int) -> dict[str, Any]:
    """`settings`, tuned at their own batch_size B0, for a global batch of `batch` = k B0:

    - the learning rate times sqrt(k), the square-root rule for Adam (Malladi et al. 2022, "On
      the SDEs and scaling rules for adaptive gradient algorithms"; Hoffer et al. 2017): the
      gradient's noise falls as 1/sqrt(k), and so may the steps' share of it;
    - the warm-up, the log interval and a per-step EMA decay counted in images, not steps: 1/k
      of the steps, and the decay to the k-th power (the same half-life in images);
    - a power-function EMA's length (ema_sigma_rel, ema_extra) and the snapshots unchanged: the
      one is a share of the run, whatever its batch (Karras et al. 2024), the other in minutes.
    """
    base = settings["batch_size"]
    k = batch / base
    out = {**settings, "batch_size": batch}
    if k == 1:
        return out
    out["lr"] = settings["lr"] * math.sqrt(k)
    for key in ("warmup", "log_every"):
        if key in settings:
            out[key] = max(1 if key == "log_every" else 0, round(settings[key] / k))
    if settings.get("ema_sigma_rel") is None and settings.get("ema_decay"):
        out["ema_decay"] = settings["ema_decay"] ** k
    return out


# The fast path on one CUDA GPU (bf16 stays on by default): compile with CUDA graphs.
FAST = {"compile": True, "compile_mode": "reduce-overhead", "channels_last": True}

# cars64-fast's settings, which cars64-2min starts from.
CARS64_FAST = {
    "preset": "cars64-fast",
    "image_size": "64",
    "dropout": 0.0,
    "batch_size": 128,
    "lr": 1e-3,
    "warmup": 100,
    "lr_decay": "cosine",
    "t_sampling": "uniform",
    "loss_weight": "min-snr",
    "min_snr_gamma": 5.0,
    "ema_sigma_rel": 0.1,
    "steps": 10_000_000,
    "max_minutes": 5.0,
    "log_every": 100,
    "sample_every": 100_000,
    "checkpoint_every": 100_000,
    **FAST,
}

RECIPES: dict[str, Recipe] = {
    "tutorial": Recipe(
        "The reference tutorial's Stanford Cars run as it ran: its SimpleUnet, the linear "
        "schedule with T=300 from 1e-4 to 0.02, L1 loss on the noise, Adam at 1e-3 with no "
        "warm-up, no clipping and no EMA, batch 128, 100 epochs, images squashed to 64x64 and "
        "flipped; ancestral (DDPM) sampling. On CUDA, with our fast path.",
        {
            "preset": "tutorial",
            "schedule": "linear",
            "T": 300,
            "beta_start": 1e-4,
            "beta_end": 0.02,
            "loss": "l1",
            "prediction": "eps",
            "lr": 1e-3,
            "warmup": 0,
            "lr_decay": "constant",
            "weight_decay": 0.0,
            "grad_clip": 0.0,
            "ema_decay": 0.0,
            "batch_size": 128,
            "epochs": 100.0,
            "image_size": "64",
            "resize": "squash",
            "hflip": True,
            "sample_sampler": "ddpm",
            "sample_every": 1000,
            "checkpoint_every": 1000,
            "log_every": 100,
            **FAST,
        },
    ),
    "cifar10-8min": Recipe(
        "A CIFAR-10 model in 8 minutes of wall-clock on one H100 (compile included, data "
        "decoding not): Ho et al.'s U-Net with one residual block a level and adaptive "
        "GroupNorm (the cifar10-8min preset, 25.9M parameters), no dropout, twice Ho et al.'s "
        "learning rate after 500 warm-up steps, cosine decay to zero at the time limit, "
        "Min-SNR-5 loss weighting, a power-function EMA of length 0.1 (and one of 0.2 kept "
        "beside it), snapshots at 1, 2, 4 and 8 minutes, the whole training step as one "
        "CUDA graph, and the fused GroupNorm kernels of --fused-norm. Measured on 2026-12-07: "
        "27,656 steps (8,665 img/s once compiled, 75 s to compile), FID-10k 12.2 with DDIM-50 "
        "and 11.9 with DPM-Solver-50. Without the fused kernels (2026-11-27): 12.8 and 12.9 "
        "with DDIM-50 (`ddpm eval`, two runs) after 21,837-21,850 steps, 12.1-12.6 with "
        "DPM-Solver-50, and at the same 50 network evaluations, guided (w 1.5) by the run's "
        "own 4-minute snapshot, 8.2-9.6 with DPM-Solver++(3M) at 25 steps (median 9.1, five runs; "
        "`ddpm eval --guide-model snapshot-4min.pt --guidance 1.5 --sampler dpm-solver-3m "
        "--steps 25`) and 8.5-10.1 with (2M) (median 9.4, eight runs; 2026-11-28); Ho et al.'s "
        "network with the same training: 14.0-14.4; diffusers' "
        "recipe with the same speed features: 18.9 (docs/benchmarks.md, with the losers). "
        "Under torchrun each process keeps batch 128 and the learning rate, warm-up and log "
        "interval follow the global batch: x sqrt(k) and /k at k times the batch.",
        {
            "preset": "cifar10-8min",
            "image_size": "32",
            "dropout": 0.0,
            "batch_size": 128,
            "lr": 4e-4,
            "warmup": 500,
            "lr_decay": "cosine",
            "t_sampling": "uniform",
            "loss_weight": "min-snr",
            "min_snr_gamma": 5.0,
            "ema_sigma_rel": 0.1,
            "ema_extra": (0.2,),
            "steps": 10_000_000,
            "max_minutes": 8.0,
            "snapshot_minutes": (1.0, 2.0, 4.0, 8.0),
            "sample_eta": 0.0,  # the eta its FIDs were measured with (DDIM-50)
            "log_every": 250,
            "sample_every": 1_000_000,
            "checkpoint_every": 1_000_000,
            **FAST,
            # one CUDA graph for the whole step: 4,744 img/s, steady to 1%, where the steps
            # around the model's own graphs were host-bound (3,821-4,566; docs/benchmarks.md)
            "step_graph": True,
            # inside that graph the Triton GroupNorm kernels win (27,656 steps in the 8
            # minutes against 21,837); outside a graph they lose to inductor's own fusion
            "fused_norm": True,
        },
        # at 50 network evaluations, median of five runs 9.1 against 12.1-12.6 for
        # DPM-Solver-50 unguided; 0.3-0.5 below (2M) guided alike on each of the five
        "--checkpoint {out}/snapshot-8min.pt --guide-model {out}/snapshot-4min.pt "
        "--guidance 1.5 --sampler dpm-solver-3m --steps 25",
        scales_with_batch=True,
    ),
    "cars64-fast": Recipe(
        "A 9.0M U-Net (the cars64-fast preset) for 64x64 pictures in a few minutes on one "
        "GPU: the cifar10-8min choices at a quarter of the cost per image, with a higher "
        "learning rate for the smaller network (not yet measured on cars). Give the time "
        "with --max-minutes.",
        CARS64_FAST,
    ),
    "cars64-2min": Recipe(
        "64x64 pictures (Stanford Cars, squashed as the tutorial does) in the reference "
        "tutorial's own time, 2.15 minutes on one H100: the cars64-2min U-Net (6.1M, one "
        "residual block a level) at batch 64, for 3x the optimiser steps of cars64-fast in "
        "the same minutes; otherwise as cars64-fast. Sample it with ancestral DDPM "
        "(`--sampler ddpm --steps 100`), which after so short a run halves DDIM-50's FID. "
        "Measured on 2026-11-27: FID 34.1-35.1 against the 8,144 photos, where the "
        "tutorial's recipe scores 137.4-147.8 (docs/benchmarks.md).",
        {
            **CARS64_FAST,
            "preset": "cars64-2min",
            "resize": "squash",  # as the tutorial: the whole frame, squashed to 64x64
            "batch_size": 64,
            "max_minutes": 2.15,
            "sample_sampler": "ddpm",
            "sample_steps": 100,
        },
    ),
}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    return RECIPES[name]


def recipe_settings(name: str, processes: int = 1, batch: int | None = None) -> dict[str, Any]:
    """The TrainConfig fields a recipe sets (checked against TrainConfig's fields). A recipe
    that scales with its batch gets the global `batch`, by default its own batch_size from
    each of `processes` (`for_batch`)."""
    from ddpm.train.config import TrainConfig

    r = recipe(name)
    settings = dict(r.settings)
    if r.scales_with_batch:
        settings = for_batch(settings, batch or settings["batch_size"] * processes)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"recipe {name} sets unknown field(s) {unknown}")
    return settings


def sampling_advice(name: str | None, out: Path, max_minutes: float | None) -> str | None:
    """The flags a run of recipe `name` in `out` samples best with, as measured, where the run
    kept the recipe's minutes (its snapshots then hold the measured shares of the steps) and
    wrote the checkpoints the flags name; else None."""
    r = RECIPES.get(name or "")
    if r is None or not r.sample_with or max_minutes != r.settings.get("max_minutes"):
        return None
    flags = r.sample_with.format(out=shlex.quote(str(out)))
    named = [Path(w) for w in shlex.split(flags) if w.startswith(str(out))]
    return flags if all(f.is_file() for f in named) else None
