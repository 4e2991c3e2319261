"""From a loaded model (`ddpm.sampling.loaded`) to pictures: sample in batches with per-image
seeds, count the network evaluations, and record the denoising process. Points and sequences
come out standardised, as the network sees them; `Loaded.to_data` maps them back to the data's
units."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ddpm.errors import ConfigError
from ddpm.progress import Progress, count
from ddpm.sampling.grids import Spacing
from ddpm.sampling.loaded import UNCONDITIONAL, Loaded
from ddpm.sampling.noise import per_sample_noise, sample_generators
from ddpm.sampling.samplers import (
    DEFAULT_SPACING,
    Callback,
    EpsModel,
    network_evaluations,
    sample,
)
from ddpm.sampling.spec import SamplingSpec
from ddpm.viz import arrayplots
from ddpm.viz.grids import process_strip, save_gif


def resolve(loaded: Loaded, spec: SamplingSpec | None, **fields: Any) -> SamplingSpec:
    """`spec` (default: `SamplingSpec()`) with `fields` replaced and its defaults filled in for
    this model: the steps, the clip (on for images) and the variance (learned if it has it)."""
    spec = (spec or SamplingSpec()).replace(**fields) if fields else spec or SamplingSpec()
    spec = with_model_defaults(loaded, spec)
    if loaded.data is not None and spec.clip:
        raise ConfigError(
            f"--clip clips x_0 to [-1, 1], the range of images; {loaded.kind} are standardised"
        )
    if spec.steps is not None and spec.steps > loaded.schedule.T:
        raise ConfigError(f"--steps {spec.steps} exceeds the model's T = {loaded.schedule.T}")
    if spec.spacing == "tuned":
        spec = spec.replace(steps=tuned_steps(loaded, spec))
    T = loaded.schedule.T
    return spec.resolved(T, loaded.data is None, loaded.variance(spec.variance))


def with_model_defaults(loaded: Loaded, spec: SamplingSpec) -> SamplingSpec:
    """`spec` with the model's own defaults (`Loaded.sampling`) where it leaves a field None:
    the eta of its training pictures; a distilled model's steps and grid, beyond which it
    was not trained (more steps are refused)."""
    own = loaded.sampling
    distilled = own.get("distilled")
    if distilled and spec.steps is not None and spec.steps > distilled:
        raise ConfigError(
            f"--steps {spec.steps}: this model was distilled to draw in "
            f"{count(distilled, 'step')}; "
            f"give at most {distilled} (or sample its teacher)"
        )
    fill = {k: v for k, v in own.items() if k in ("eta", "steps", "spacing")}
    fill = {k: v for k, v in fill.items() if getattr(spec, k) is None}
    return spec.replace(**fill) if fill else spec


def tuned_steps(loaded: Loaded, spec: SamplingSpec) -> int:
    """The steps of `--spacing tuned`: those asked for, or the one grid tuned for the model,
    if a grid of that many steps was tuned for it (`ddpm tune-steps`)."""
    if spec.sampler == "ddpm":
        raise ConfigError("--spacing applies to every sampler but ddpm (its steps are all T)")
    have = sorted(loaded.tuned)
    if spec.steps in have or (spec.steps is None and len(have) == 1):
        return spec.steps or have[0]
    tuned = f"grids of {', '.join(map(str, have))} steps" if have else "no grid"
    if spec.steps is None and have:
        raise ConfigError(f"--spacing tuned: the model has {tuned}: choose one with --steps")
    nfe = spec.steps or 10
    raise ConfigError(
        f"--spacing tuned: no grid of {nfe} steps was tuned for this model (it has {tuned}); "
        f"make one with: ddpm tune-steps --checkpoint CHECKPOINT --nfe {nfe}"
    )


def generate(
    loaded: Loaded,
    n: int,
    spec: SamplingSpec | None = None,
    *,
    first_index: int = 0,
    on_batch: Callable[[int, Tensor], None] | None = None,
    class_labels: Tensor | None = None,
    progress: bool | str = False,
    **fields: Any,
) -> Tensor:
    """n images (n, C, H, W) in [-1, 1] (or n standardised points (n, D) / sequences (n, C, L))
    drawn as `spec` says (`ddpm.sampling.spec.SamplingSpec`; keyword `fields` override it, e.g.
    `generate(loaded, 16, seed=1, steps=20)`); image i is a function of (spec.seed,
    first_index + i) only (and, for a class-conditional model, of its class).

    This is the one path from a model to samples: `ddpm sample`, `ddpm eval`, `ddpm.sample`
    and the training grids all call it. `on_batch(start, x)` is called after each batch (to
    write files or compute features as they come). `class_labels` (n,) are the classes of a
    conditional model (None: drawn from (seed, first_index + i) as `spec.classes` says).
    `spec.guidance` is w: classifier-free guidance for a conditional model (each step then
    runs the network on 2B images), autoguidance when `loaded` carries a guide. With
    `progress`, a bar (or a line every 30 s off a terminal) counts the network calls (a
    string `progress` is the bar's label, and the bar is cleared when done).
    """
    spec = resolve(loaded, spec, **fields)
    device = next(loaded.model.parameters()).device
    labels = draw_labels(loaded, n, spec, first_index, class_labels)
    batch_size = spec.batch_size
    calls = math.ceil(n / batch_size) * network_evaluations(
        spec.sampler, spec.steps, loaded.schedule.T
    )
    label = progress if isinstance(progress, str) else f"sampling {n} {loaded.kind}"
    bar = Progress(
        calls, label, "network call", bool(progress), leave=not isinstance(progress, str)
    )
    out = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        # a compiled network would recompile for a short last batch: draw a full one (images
        # past n come from their own seeds and are dropped, so the kept ones do not change)
        full = start + batch_size if loaded.fixed_batch and n > batch_size else stop
        idx = range(first_index + start, first_index + full)
        gens = sample_generators(spec.seed, idx, device)
        x_T = per_sample_noise(loaded.shape, gens, device)
        y = labels[start:full] if labels is not None else None
        if y is not None and len(y) < full - start:  # padding: dropped, so any label will do
            y = torch.cat([y, y[:1].expand(full - start - len(y))])
        x = run_sampler(loaded, spec, counted(loaded.eps_given(y, spec.guidance), bar), x_T, gens)
        x = x[: stop - start]
        if on_batch is not None:
            on_batch(start, x)
        out.append(x.cpu())
    bar.close()
    return torch.cat(out)


def run_sampler(
    loaded: Loaded,
    spec: SamplingSpec,
    model: EpsModel,
    x_T: Tensor,
    generators: list[torch.Generator],
    callback: Callback | None = None,
) -> Tensor:
    """One batch through the resolved `spec`'s sampler (`ddpm.sampling.samplers.sample`)."""
    return sample(
        spec.sampler,
        model,
        loaded.schedule,
        x_T,
        steps=spec.steps,
        eta=spec.eta,
        variance=spec.variance,  # type: ignore[arg-type]
        clip=bool(spec.clip),
        generator=generators,
        callback=callback,
        spacing=grid_of(loaded, spec),
    )


def grid_of(loaded: Loaded, spec: SamplingSpec) -> Spacing | None:
    """The time grid of a resolved `spec`: a grid tuned for the model, as its timesteps, or
    the name of one (the sampler's default where none is asked for; None for DDPM)."""
    if spec.spacing == "tuned":
        return loaded.tuned[spec.steps]  # type: ignore[index]
    return spec.spacing or DEFAULT_SPACING.get(spec.sampler)


def evaluations(loaded: Loaded, spec: SamplingSpec | None = None, **fields: Any) -> int:
    """Network evaluations per image of `generate`'s sampling: one a sampler step, two where
    it is guided (classifier-free: the batch of 2B; autoguidance: the two networks). With a
    guidance interval the sampler's timesteps are found by running it once on one image
    with a stand-in model that records them."""
    spec = resolve(loaded, spec, **fields)
    calls = network_evaluations(spec.sampler, spec.steps, loaded.schedule.T)
    if spec.guidance == 0 or loaded.guidance_interval is None:
        return calls * (1 if spec.guidance == 0 else 2)
    seen: list[int] = []

    def record(x_t: Tensor, t: Tensor) -> Tensor:
        seen.append(int(t[0]))
        return torch.zeros_like(x_t)

    x_T = torch.zeros(1, *loaded.shape, device=loaded.schedule.alphas_cumprod.device)
    variance = "small" if spec.variance == "learned" else spec.variance
    run_sampler(loaded, spec.replace(variance=variance), record, x_T, [torch.Generator()])
    return len(seen) + sum(t in loaded.guidance_interval for t in seen)


def counted(model: EpsModel, progress: Progress) -> EpsModel:
    """`model`, advancing `progress` by one at each call (pure Python: no device sync)."""

    def call(x_t: Tensor, t: Tensor) -> Tensor:
        progress.update(1)
        return model(x_t, t)

    return call


@torch.no_grad()
def seconds_per_evaluation(model: EpsModel, shape: tuple[int, ...], batch: int, device) -> float:
    """Wall-clock seconds of one network call on `batch` images of `shape` (C, H, W): the
    second of two calls (the first warms up), synchronised on CUDA."""
    x = torch.zeros(batch, *shape, device=device)
    t = torch.full((batch,), 1, device=device, dtype=torch.long)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    model(x, t)
    sync()
    t0 = time.perf_counter()
    model(x, t)
    sync()
    return time.perf_counter() - t0


MIN_PICTURE_STEPS = 10  # below this the chains draw blurs: better to overrun the budget a little


def picture_plan(
    spec: SamplingSpec, T: int, seconds_per_eval: float, budget_s: float
) -> SamplingSpec:
    """`spec` cut down for pictures that should take at most `budget_s` seconds.

    As asked when its chain fits; otherwise the same sampler on as many steps as fit (DDPM:
    its respaced chain), at least MIN_PICTURE_STEPS (or T when smaller). A 1-step run on a
    CPU then draws a 10-step chain, not 1000 steps.
    """
    if network_evaluations(spec.sampler, spec.steps, T) * seconds_per_eval <= budget_s:
        return spec
    fit = int(budget_s / max(seconds_per_eval, 1e-9))
    if spec.sampler == "heun":  # 2 steps - 1 network calls
        fit = (fit + 1) // 2
    return spec.replace(steps=min(T, max(MIN_PICTURE_STEPS, fit)))


def draw_labels(
    loaded: Loaded,
    n: int,
    spec: SamplingSpec,
    first_index: int,
    class_labels: Tensor | None,
) -> Tensor | None:
    """The checked labels (n,) of `generate` (drawn as `spec.classes` says when None), or None
    for an unconditional model (which takes no labels, and guidance only with a guide)."""
    if loaded.num_classes is None:
        if class_labels is not None or (spec.guidance != 0 and loaded.guide is None):
            raise ConfigError(UNCONDITIONAL)
        return None
    if class_labels is None:
        indices = range(first_index, first_index + n)
        return loaded.draw_classes(spec.seed, indices, spec.classes)
    return loaded.check_labels(class_labels, n)


def chain_snapshots(
    loaded: Loaded,
    n: int = 8,
    spec: SamplingSpec | None = None,
    frames: int = 10,
    class_labels: Tensor | None = None,
    progress: bool = False,
    **fields: Any,
) -> tuple[list[int], list[Tensor]]:
    """The reverse chain of the first n samples of `generate(loaded, n, spec)` as `frames`
    snapshots of x_t, from x_T to x_0, and the timestep of each (-1 for the final x_0). The
    final frame is the image `generate` draws for the same spec, seed and labels."""
    spec = resolve(loaded, spec, **fields)
    device = next(loaded.model.parameters()).device
    labels = draw_labels(loaded, n, spec, 0, class_labels)
    gens = sample_generators(spec.seed, range(n), device)
    x_T = per_sample_noise(loaded.shape, gens, device)
    total = loaded.schedule.T if spec.steps is None else spec.steps
    keep = {round(k * (total - 1) / max(frames - 1, 1)) for k in range(frames - 1)}
    snaps: list[Tensor] = []
    times: list[int] = []

    def record(i: int, t: int, x_t: Tensor, x0: Tensor) -> None:
        if i in keep:
            snaps.append(x_t.cpu())
            times.append(t)

    calls = network_evaluations(spec.sampler, spec.steps, loaded.schedule.T)
    with Progress(calls, "denoising chain", "network call", enabled=progress) as bar:
        model = counted(loaded.eps_given(labels, spec.guidance), bar)
        x = run_sampler(loaded, spec, model, x_T, gens, callback=record)
    return [*times, -1], [*snaps, x.cpu()]


def denoising_process(
    loaded: Loaded,
    n: int = 8,
    spec: SamplingSpec | None = None,
    frames: int = 10,
    class_labels: Tensor | None = None,
    progress: bool = False,
    **fields: Any,
) -> list[Tensor]:
    """The reverse chain of n samples as `frames` snapshots of x_t, from x_T to x_0 (as
    `chain_snapshots`). `progress` counts the network calls."""
    return chain_snapshots(loaded, n, spec, frames, class_labels, progress, **fields)[1]


def save_process(
    frames: list[Tensor], png: str | os.PathLike, gif: str | os.PathLike | None
) -> None:
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    process_strip(frames).save(png)
    if gif is not None:
        save_gif(frames, gif)


def save_array_process(
    loaded: Loaded,
    png: str | os.PathLike | None,
    gif: str | os.PathLike | None,
    spec: SamplingSpec | None = None,
    class_labels: Tensor | None = None,
) -> None:
    """The denoising chain of points (the cloud flowing from noise to data: 1,000 points) or
    of sequences (4 curves), in the data's units: a strip of 6 snapshots and/or a GIF. For a
    class-conditional model the classes cycle through `class_labels` (default: all)."""
    assert loaded.data is not None
    spec = resolve(loaded, spec)
    points = loaded.kind == "points"
    n = 1000 if points else 4
    K = loaded.num_classes
    labels = None
    if K:
        cycle = class_labels.tolist() if class_labels is not None else list(range(K))
        labels = torch.tensor([cycle[i % len(cycle)] for i in range(n)])
    total = loaded.schedule.T if spec.steps is None else spec.steps
    times, frames = chain_snapshots(loaded, n, spec, total, labels)
    # frames evenly spaced in the signal level √ᾱ_t (from x_T's to x_0's 1), where the chain
    # changes, rather than in t (most of a linear schedule's steps are nearly pure noise)
    abar = loaded.schedule.alphas_cumprod.cpu()
    level = torch.tensor([float(abar[t].sqrt()) if t >= 0 else 1.0 for t in times])
    goals = torch.linspace(float(level[0]), 1.0, 48 if gif else 6)
    keep = sorted({int((level - g).abs().argmin()) for g in goals})
    times, frames = [times[i] for i in keep], [frames[i] for i in keep]
    data = [loaded.to_data(f).numpy() for f in frames]
    names = [f"x_t, t = {t + 1}" if t >= 0 else "x_0" for t in times]  # the paper's 1..T
    if points:
        ref = loaded.data.reference.numpy() if loaded.data.reference is not None else None
        images = arrayplots.scatter_frames(data, ref, names)
    else:
        images = arrayplots.curve_frames(data, names)
    if png is not None:
        pick = sorted({round(k * (len(images) - 1) / 5) for k in range(6)})
        strip = arrayplots.figure([images[i] for i in pick], 3 if not points else 6)
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        strip.save(png)
    if gif is not None:
        arrayplots.save_animation(images, gif)
