"""Editing with a trained model: sampling under a constraint on x_0.

- `inpaint`: fill the unknown pixels (or time steps) of x_0 and keep the rest: RePaint
  (Lugmayr et al. 2022, Algorithm 1 with the jumps of §4.2) or the plain replacement method.
- `sdedit`: image-to-image (Meng et al. 2022): noise x_0 part of the way, then denoise.
- inversion and interpolation live beside it, in `ddpm.sampling.inversion`.

Shapes: inputs x_0 are (N, *shape) in the model's units (images (N, C, H, W) in [-1, 1],
sequences (N, C, L) and points (N, D) standardised); a mask `keep` is bool (M, C or 1,
*spatial) (points: (M, D)) with M = 1 or N, True where x_0 is kept. Output i edits input
i % N and, as in `ddpm.sampling.generate`, draws its noise from (spec.seed, first_index + i)
alone, so it does not depend on the batch size; the noise of the known region and of
RePaint's jumps comes from a second stream of the same (seed, i) (`side_generators`), so that
the model's own steps draw exactly what `generate` draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from ddpm.diffusion.process import EpsModel, respace_model
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import ConfigError
from ddpm.progress import Progress, count
from ddpm.sampling.generate import counted, draw_labels, grid_of, resolve, run_sampler
from ddpm.sampling.loaded import Loaded
from ddpm.sampling.noise import per_sample_noise, sample_generators, side_generators
from ddpm.sampling.samplers import (
    DEFAULT_SPACING,
    ddim_step,
    ddpm_step,
    network_evaluations,
    predict_x0,
    timesteps_for,
)
from ddpm.sampling.spec import SamplingSpec

METHODS = ("repaint", "replace")
MASKS = ("center", "left", "right", "top", "bottom")  # the region filled; also random:P
INPAINT_SAMPLERS = ("ddpm", "ddim")


# --- inputs -----------------------------------------------------------------------------------


def check_inputs(loaded: Loaded, x_0: Tensor, what: str = "the input") -> Tensor:
    """x_0 as (N, *shape), or a ConfigError that says how it differs from the model's."""
    shape = tuple(loaded.shape)
    x = x_0.unsqueeze(0) if x_0.ndim == len(shape) else x_0
    if tuple(x.shape[1:]) != shape:
        unit = {"images": "image", "sequences": "sequence"}.get(loaded.kind, "point")
        got = "x".join(map(str, x.shape[1:]))
        raise ConfigError(
            f"{what} is a {got} {unit} (channels first); the model's are "
            f"{'x'.join(map(str, shape))}" + (" (--resize fits it)" if unit == "image" else "")
        )
    return x


def check_mask(loaded: Loaded, keep: Tensor) -> Tensor:
    """`keep` as bool (M, C or 1, *spatial), or a ConfigError: another size than the model's,
    or a mask that keeps every value or none (nothing to fill, or nothing to keep)."""
    shape = tuple(loaded.shape)
    m = keep.unsqueeze(0) if keep.ndim == len(shape) else keep
    if (
        m.ndim != len(shape) + 1
        or tuple(m.shape[2:]) != shape[1:]
        or m.shape[1] not in (1, shape[0])
    ):
        got = "x".join(map(str, m.shape[2:] if m.ndim == len(shape) + 1 else m.shape))
        raise ConfigError(
            f"the mask is {got}; the model's inputs are {'x'.join(map(str, shape[1:]))}"
        )
    m = m.bool()
    kept = m.flatten(1).float().mean(1)
    pictures = loaded.kind == "images"
    if bool((kept == 1).any()):
        how = "black = fill" if pictures else "NaN in the input, or 0 in a mask, marks what to fill"
        raise ConfigError(f"the mask keeps everything: nothing to fill ({how})")
    if bool((kept == 0).any()):
        what = "the mask keeps nothing" if pictures else "an input has no known value"
        raise ConfigError(f"{what}: that is plain sampling" + (" (white = keep)" * pictures))
    return m


def named_mask(name: str, shape: Sequence[int], n: int = 1, seed: int = 0) -> Tensor:
    """A built-in mask, bool (1 or n, 1, *spatial), True = keep; `name` is the region filled:
    center (the middle half of each side), left, right, top, bottom (a half; sequences: left
    and right are the first and last half of the time steps), or random:P (each value filled
    with probability P, drawn per input i from (seed, i))."""
    spatial = tuple(shape[1:])
    if name.startswith("random:"):
        try:
            p = float(name.split(":", 1)[1])
        except ValueError:
            p = -1.0
        if not 0 < p < 1:
            raise ConfigError(f"--mask random:P takes a fraction P in (0, 1), got {name!r}")
        gens = [
            torch.Generator().manual_seed((seed * 1_000_039 + i + 15_485_863) % 2**63)
            for i in range(n)
        ]
        return torch.stack([torch.rand((1, *spatial), generator=g) >= p for g in gens])
    fill = torch.zeros(spatial, dtype=torch.bool)
    L = spatial[-1]
    if name == "center":
        box = tuple(slice(s // 4, s - s // 4) for s in spatial)
        fill[box] = True
    elif name in ("left", "right"):
        fill[..., : L // 2] = True
        fill = fill if name == "left" else fill.flip(-1)
    elif name in ("top", "bottom") and len(spatial) == 2:
        fill[: spatial[0] // 2] = True
        fill = fill if name == "top" else fill.flip(0)
    else:
        allowed = MASKS if len(spatial) == 2 else ("center", "left", "right")
        raise ConfigError(
            f"--mask {name}: expected a file, random:P or one of {', '.join(allowed)}"
        )
    return (~fill)[None, None]


# --- inpainting ---------------------------------------------------------------------------------


def repaint_schedule(K: int, jump: int, resample: int) -> list[int]:
    """The states RePaint visits on a chain of K timesteps, from K-1 (x_T) down to -1 (x_0):
    Lugmayr et al.'s `get_schedule_jump`. Going down, on arriving at each state j = 0, J, 2J, ...
    below K - J, the chain jumps J steps back up by the forward process, `resample` - 1 times
    (each segment is then denoised `resample` times). resample 1: straight down."""
    jumps = {j: resample - 1 for j in range(0, K - jump, jump)}
    t, states = K - 1, [K - 1]
    while t >= 0:
        t -= 1
        states.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump):
                t += 1
                states.append(t)
    return states


def resolve_jump(jump: int | None, K: int, resample: int) -> int:
    """RePaint's jump on a chain of K steps: `jump`, by default Lugmayr et al.'s 10 or a fifth
    of a chain shorter than 50 steps. A jump that leaves nothing to resample is refused."""
    if jump is None:
        return min(10, max(1, K // 5))
    if resample > 1 and jump >= K:
        raise ConfigError(f"--jump {jump}: the chain has only {count(K, 'step')}, so nothing "
                          f"would be resampled; give --jump below {K}")  # fmt: skip
    return jump


def chain_steps(loaded: Loaded, spec: SamplingSpec) -> int:
    """The steps of inpainting's reverse chain for `spec` (resolved): RePaint's K."""
    return len(_chain(loaded, spec, lambda x, t: x)[2])


def repaint_calls(K: int, jump: int, resample: int) -> int:
    """Network evaluations of RePaint on a chain of K timesteps: one per step down."""
    states = repaint_schedule(K, jump, resample)
    return sum(b < a for a, b in zip(states, states[1:]))


def _chain(loaded: Loaded, spec: SamplingSpec, model: EpsModel):
    """(model, schedule, timesteps) of the reverse chain: DDPM's respaced one, or DDIM's grid."""
    if spec.sampler == "ddpm":
        schedule = loaded.schedule
        if spec.steps is not None:
            model, schedule = respace_model(model, schedule, spec.steps)
        return model, schedule, list(range(schedule.T - 1, -1, -1))
    if spec.sampler == "ddim":
        grid = grid_of(loaded, spec)
        return model, loaded.schedule, timesteps_for(loaded.schedule, spec.steps, grid)
    raise ConfigError(
        f"inpainting runs ancestral steps: --sampler ddpm or ddim, not {spec.sampler}"
    )


def reverse_step(
    spec: SamplingSpec,
    model: EpsModel,
    schedule: NoiseSchedule,
    ts: Sequence[int],
    k: int,
    x: Tensor,
    generators: list[torch.Generator],
) -> Tensor:
    """One step of the spec's sampler from timestep ts[k] to ts[k+1] (or to x_0 after the last),
    the same arithmetic as `ddpm_sample` (Ho et al. Alg. 2) and `ddim_sample` (DDIM eq. 12)."""
    t = ts[k]
    if spec.sampler == "ddpm":
        return ddpm_step(model, schedule, x, t, str(spec.variance), bool(spec.clip), generators)[0]
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    eps, x_0 = predict_x0(model, schedule, x, tt, bool(spec.clip))
    a_t = float(schedule.alphas_cumprod[t])
    a_prev = float(schedule.alphas_cumprod[ts[k + 1]]) if k + 1 < len(ts) else 1.0
    return ddim_step(x_0, eps, a_t, a_prev, spec.eta, generators)


def inpaint_batch(
    loaded: Loaded,
    spec: SamplingSpec,
    model: EpsModel,
    x_0: Tensor,
    keep: Tensor,
    generators: list[torch.Generator],
    side: list[torch.Generator],
    states: Sequence[int],
) -> Tensor:
    """RePaint on one batch (Lugmayr et al. 2022, Algorithm 1; jumps of §4.2): x_T ~ N(0, I);
    then along `states` (`repaint_schedule`), each step down is the sampler's reverse step for
    the unknown values merged with a draw of q(x_{t-1} | x_0) for the known ones,
    x_{t-1} = m ⊙ x_{t-1}^known + (1 - m) ⊙ x_{t-1}^unknown, and each step up j levels is the
    forward process q(x_{t+j} | x_t) = N(√(ᾱ_{t+j}/ᾱ_t) x_t, (1 - ᾱ_{t+j}/ᾱ_t) I).
    x_0 (B, *shape), keep bool (B or 1, ...). The known values of the result are x_0's, exactly."""
    model, schedule, ts = _chain(loaded, spec, model)
    K = len(ts)
    abar = schedule.alphas_cumprod.tolist()
    level = {s: abar[ts[K - 1 - s]] if s >= 0 else 1.0 for s in range(-1, K)}  # ᾱ by state
    x = per_sample_noise(x_0.shape[1:], generators, x_0.device)
    for s, s_next in zip(states, states[1:]):
        if s_next < s:  # down: the model's step, then the known values from q(x_{t-1} | x_0)
            x = reverse_step(spec, model, schedule, ts, K - 1 - s, x, generators)
            a = level[s_next]
            z = per_sample_noise(x_0.shape[1:], side, x_0.device)
            known = x_0 if s_next < 0 else math.sqrt(a) * x_0 + math.sqrt(1 - a) * z
            x = torch.where(keep, known, x)
        else:  # up: the forward process from s to s_next
            ratio = level[s_next] / level[s]
            z = per_sample_noise(x_0.shape[1:], side, x_0.device)
            x = math.sqrt(ratio) * x + math.sqrt(1 - ratio) * z
    return x


@torch.no_grad()
def inpaint(
    loaded: Loaded,
    x_0: Tensor,
    keep: Tensor,
    n: int | None = None,
    spec: SamplingSpec | None = None,
    *,
    method: str = "repaint",
    jump: int | None = None,
    resample: int = 10,
    first_index: int = 0,
    class_labels: Tensor | None = None,
    on_batch: Callable[[int, Tensor], None] | None = None,
    progress: bool | str = False,
    **fields: Any,
) -> Tensor:
    """n inpainted inputs (n, *shape) (default n: one per input): output i fills input
    i % N where its mask is False, with the spec's sampler (ddpm, its respaced chain with
    `steps`, or ddim with its eta), classes and guidance.

    method "repaint": Lugmayr et al. 2022, "RePaint: Inpainting using Denoising Diffusion
    Probabilistic Models", Algorithm 1, with the jumps of §4.2 (`jump` steps back, each segment
    denoised `resample` times; the paper's j = 10, r = 10 on 250 steps costs about 10x the
    sampler's evaluations; `jump` None: `resolve_jump`'s default). method "replace": the
    same with r = 1, no jumps: the replacement method the paper compares with (known values
    from q(x_{t-1} | x_0) at every step).
    The kept values come back exactly as given.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if (jump is not None and jump < 1) or resample < 1:
        raise ConfigError("--jump and --resample must be at least 1")
    spec = resolve(loaded, spec, **fields)
    x_0 = check_inputs(loaded, x_0)
    keep = check_mask(loaded, keep)
    K = chain_steps(loaded, spec)  # refuses the samplers inpainting cannot run
    jump, resample = (1, 1) if method == "replace" else (resolve_jump(jump, K, resample), resample)
    n = x_0.shape[0] if n is None else n
    if keep.shape[0] not in (1, x_0.shape[0], n):  # output i takes mask i % M
        raise ConfigError(f"got {keep.shape[0]} masks for {x_0.shape[0]} inputs")
    labels = draw_labels(loaded, n, spec, first_index, class_labels)
    states = repaint_schedule(K, jump, resample)
    calls = repaint_calls(K, jump, resample)
    bar = _bar(progress, math.ceil(n / spec.batch_size) * calls, f"inpainting {n} {loaded.kind}")

    def run(idx: range, y: Tensor | None, gens, side) -> Tensor:
        x0 = _rows(x_0, idx, first_index).to(gens[0].device)
        m = _rows(keep, idx, first_index).to(x0.device) if keep.shape[0] > 1 else keep.to(x0.device)
        model = counted(loaded.eps_given(y, spec.guidance), bar)
        return inpaint_batch(loaded, spec, model, x0, m, gens, side, states)

    return _in_batches(loaded, n, spec, first_index, labels, run, on_batch, bar)


# --- SDEdit -------------------------------------------------------------------------------------


@torch.no_grad()
def sdedit(
    loaded: Loaded,
    x_0: Tensor,
    strength: float,
    n: int | None = None,
    spec: SamplingSpec | None = None,
    *,
    first_index: int = 0,
    class_labels: Tensor | None = None,
    on_batch: Callable[[int, Tensor], None] | None = None,
    progress: bool | str = False,
    **fields: Any,
) -> Tensor:
    """Image-to-image, Meng et al. 2022 ("SDEdit"): output i noises input i % N to
    t_0 = strength · T with q(x_{t_0} | x_0), then runs the spec's sampler from there down.

    The sampler runs on the schedule's first t_0 timesteps (the same network and ᾱ_t) with
    round(steps · t_0 / T) steps (all t_0 for ancestral DDPM without `steps`); x_0 is noised to
    the first timestep that sampler takes, with the noise `generate` would draw for x_T.
    strength 0 returns the inputs; strength 1 is `generate` itself (x_T is the noise alone).
    """
    check_strength(strength)
    spec = resolve(loaded, spec, **fields)
    if spec.spacing == "tuned" and strength < 1:
        raise ConfigError("--spacing tuned is a grid for the whole chain; SDEdit runs part of it")
    x_0 = check_inputs(loaded, x_0)
    n = x_0.shape[0] if n is None else n
    labels = draw_labels(loaded, n, spec, first_index, class_labels)
    T = loaded.schedule.T
    t_0 = round(strength * T)
    if t_0 == 0:
        return x_0[torch.arange(n) % x_0.shape[0]].cpu().clone()
    schedule = loaded.schedule if t_0 == T else truncated(loaded.schedule, t_0)
    steps = spec.steps if t_0 == T or spec.steps is None else max(1, round(spec.steps * t_0 / T))
    if spec.sampler != "ddpm":  # the first timestep the sampler takes
        first = timesteps_for(schedule, steps, spec.spacing or DEFAULT_SPACING[spec.sampler])[0]
    else:
        first = t_0 - 1
    short = spec.replace(steps=steps)
    a = float(schedule.alphas_cumprod[first])
    calls = network_evaluations(spec.sampler, steps, t_0)
    bar = _bar(progress, math.ceil(n / spec.batch_size) * calls, f"editing {n} {loaded.kind}")
    edited = loaded if t_0 == T else _on(loaded, schedule)

    def run(idx: range, y: Tensor | None, gens, side) -> Tensor:
        z = per_sample_noise(loaded.shape, gens, gens[0].device)
        x0 = _rows(x_0, idx, first_index).to(z.device)
        x_t = z if t_0 == T else math.sqrt(a) * x0 + math.sqrt(1 - a) * z
        model = counted(loaded.eps_given(y, spec.guidance), bar)
        return run_sampler(edited, short, model, x_t, gens)

    return _in_batches(loaded, n, spec, first_index, labels, run, on_batch, bar)


def check_strength(strength: float) -> None:
    if not 0 <= strength <= 1:
        raise ConfigError(f"--strength must lie in [0, 1], got {strength:g}")


def truncated(schedule: NoiseSchedule, t_0: int) -> NoiseSchedule:
    """The schedule's first t_0 timesteps: the same β_t, ᾱ_t and posterior at each of them."""
    return NoiseSchedule.from_betas(schedule.betas[:t_0].cpu()).to(schedule.betas.device)


def _on(loaded: Loaded, schedule: NoiseSchedule) -> Loaded:
    import dataclasses

    return dataclasses.replace(loaded, schedule=schedule)


# --- batches ------------------------------------------------------------------------------------


def _rows(x: Tensor, idx: range, first_index: int) -> Tensor:
    """The inputs that outputs `idx` edit: row (i - first_index) % N."""
    rows = torch.tensor([i - first_index for i in idx]) % x.shape[0]
    return x[rows]


def _bar(progress: bool | str, total: int, label: str) -> Progress:
    label = progress if isinstance(progress, str) else label
    return Progress(
        total, label, "network call", bool(progress), leave=not isinstance(progress, str)
    )


def _in_batches(
    loaded: Loaded,
    n: int,
    spec: SamplingSpec,
    first_index: int,
    labels: Tensor | None,
    run: Callable[[range, Tensor | None, list, list], Tensor],
    on_batch: Callable[[int, Tensor], None] | None,
    bar: Progress,
) -> Tensor:
    """`run(indices, labels, generators, side generators)` on batches of spec.batch_size, as
    `generate` batches (a compiled network gets full batches: the padding is dropped)."""
    device = next(loaded.model.parameters()).device
    out = []
    for start, stop, full in _batches(n, spec.batch_size, loaded.fixed_batch):
        idx = range(first_index + start, first_index + full)
        y = labels[start:full] if labels is not None else None
        if y is not None and len(y) < full - start:
            y = torch.cat([y, y[:1].expand(full - start - len(y))])
        gens = sample_generators(spec.seed, idx, device)
        x = run(idx, y, gens, side_generators(spec.seed, idx, device))[: stop - start]
        if on_batch is not None:
            on_batch(start, x)
        out.append(x.cpu())
    bar.close()
    return torch.cat(out)


def _batches(n: int, batch_size: int, fixed: bool) -> Iterator[tuple[int, int, int]]:
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yield start, stop, start + batch_size if fixed and n > batch_size else stop
