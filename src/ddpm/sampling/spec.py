"""How to sample, as one value: the sampler and its steps, the noise and variance, clipping,
the time grid, the guidance weight, the seed and the batch. `ddpm sample`, `ddpm eval`,
`ddpm.sample`, the training grids and the pictures all draw through
`ddpm.sampling.generate.generate` with one `SamplingSpec`, so the same flags and seed give
the same image everywhere.

The model side of guidance (the autoguidance guide, the guidance interval) belongs to the
model being sampled (`ddpm.sampling.loaded.with_guidance`); the weight w is the spec's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ddpm.errors import SpecError
from ddpm.progress import count
from ddpm.sampling.guidance import CLASS_DISTRIBUTIONS
from ddpm.sampling.samplers import SAMPLERS, SPACINGS, default_steps


@dataclass(frozen=True)
class SamplingSpec:
    """How samples are drawn. Image i depends on (seed, i) only, never on `batch_size`.

    `steps` None: the model's own (a distilled model's), else the sampler's default
    (`ddpm.sampling.samplers.default_steps`: all T for DDPM, else min(50, T)). `eta` None: the
    model's own (the eta of its training pictures), else 0. `variance` None: the model's
    learned one if it has it, else "small" (β̃_t).
    `clip` None: on for images, off for standardised points and sequences. `spacing` None:
    each sampler's default time grid. `guidance` is w: classifier-free for a class-conditional
    model, autoguidance when the model carries a guide. `classes` is how a class-conditional
    model's labels are drawn when none are given: "uniform" or "data" (as in training).
    """

    sampler: str = "ddim"
    steps: int | None = None
    eta: float | None = None
    variance: str | None = None
    clip: bool | None = None
    spacing: str | None = None
    guidance: float = 0.0
    seed: int = 0
    batch_size: int = 256
    classes: str = "uniform"

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise SpecError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.spacing is not None and self.spacing not in SPACINGS:
            raise SpecError(f"spacing must be one of {', '.join(SPACINGS)}, got {self.spacing!r}")
        if self.steps is not None and self.steps < 1:
            raise SpecError(f"steps must be at least 1, got {self.steps}")
        if (self.eta is not None and self.eta < 0) or self.guidance < 0:
            raise SpecError("eta and guidance must be >= 0")
        if self.batch_size < 1:
            raise SpecError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.classes not in CLASS_DISTRIBUTIONS:
            raise SpecError(f"classes must be one of {', '.join(CLASS_DISTRIBUTIONS)}")

    def replace(self, **changes: Any) -> SamplingSpec:
        known = [f.name for f in dataclasses.fields(self)]
        if unknown := sorted(set(changes) - set(known)):
            raise TypeError(f"sampling got unknown keywords {', '.join(unknown)}; it takes "
                            f"{', '.join(known)}")  # fmt: skip
        return dataclasses.replace(self, **changes)

    def resolved(self, T: int, images: bool, variance: str) -> SamplingSpec:
        """The spec with its defaults filled in for a model of T timesteps: the steps, eta 0,
        the clip (on for images) and the variance (`variance`: the model's choice,
        `Loaded.variance`). The model's own defaults come first (`generate.resolve`)."""
        clip = images if self.clip is None else self.clip
        steps = default_steps(self.sampler, self.steps, T)
        eta = 0.0 if self.eta is None else self.eta
        return self.replace(steps=steps, eta=eta, clip=clip, variance=variance)

    def describe(self, conditional: bool = False) -> str:
        """The spec in words, for summary lines: "ddim 50 steps, eta 0, clip on, seed 0"."""
        if self.sampler == "ddpm":
            respaced = f" {self.steps} respaced steps," if self.steps is not None else ""
            steps = f"{respaced} variance {self.variance}"
        else:
            grid = f" ({self.spacing})" if self.spacing else ""
            steps = f" {count(self.steps or 0, 'step')}{grid}"
        eta = f", eta {self.eta:g}" if self.sampler == "ddim" else ""
        cond = f", classes {self.classes}, guidance w={self.guidance:g}" if conditional else ""
        clip = "on" if self.clip else "off"
        return f"{self.sampler}{steps}{eta}, clip {clip}{cond}, seed {self.seed}"

    def short(self) -> str:
        """The sampler and its steps, for "wrote ..." lines: "ddim, 50 steps, eta 1"."""
        if self.sampler == "ddpm":
            return (
                "ddpm, all T steps" if self.steps is None else f"ddpm, {self.steps} respaced steps"
            )
        eta = f", eta {self.eta:g}" if self.sampler == "ddim" and self.eta is not None else ""
        grid = f" ({self.spacing})" if self.spacing else ""
        return f"{self.sampler}, {count(self.steps or 0, 'step')}{grid}{eta}"
