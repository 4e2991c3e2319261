"""A time grid tuned for one model: the K timesteps at which a K-step sampler loses least, found
as GITS does (Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion Sampling",
§4, Algorithm 1).

1. A reference: the model's own ODE trajectories for a small batch of noises, solved finely
   (DPM-Solver++(3M) on `candidates` log-SNR-even timesteps) and kept at each of them.
2. Costs: from the reference point at each candidate t_i, one DDIM step (eta 0) to each later
   candidate t_j, and to the data; cost(i, j) = the mean squared distance of where it lands to
   the reference there. One network call per candidate.
3. The grid: the path from the first candidate (T - 1) to the data in exactly K steps whose
   summed cost is least, by dynamic programming over the candidates.

The cost of the whole search is about 2 x `candidates` network calls on the batch: a tenth of
the sampling of one FID-10k set. GITS tunes with DDIM's step and uses the grid with other
solvers too (iPNDM, DPM-Solver); so does `--spacing tuned`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ddpm.errors import ConfigError
from ddpm.sampling.generate import draw_labels, resolve, run_sampler
from ddpm.sampling.grids import Spacing
from ddpm.sampling.loaded import Loaded
from ddpm.sampling.noise import per_sample_noise, sample_generators
from ddpm.sampling.samplers import predict_x0
from ddpm.sampling.spec import SamplingSpec


@dataclass(frozen=True)
class Reference:
    """Fine trajectories: x at each candidate timestep (M, n, ...) and at the data (n, ...)."""

    timesteps: list[int]  # M decreasing candidates, from T - 1
    xs: Tensor
    end: Tensor
    labels: Tensor | None
    seed: int


@torch.no_grad()
def reference(loaded: Loaded, n: int, candidates: int, seed: int = 0) -> Reference:
    """The model's ODE trajectories of the noises of samples 0..n-1 (as `generate` draws them
    for `seed`), solved by DPM-Solver++(3M) on `candidates` log-SNR-even timesteps."""
    spec = resolve(loaded, SamplingSpec(seed=seed, sampler="dpm-solver-3m", steps=candidates))
    spec = spec.replace(spacing="logsnr")
    device = next(loaded.model.parameters()).device
    gens = sample_generators(seed, range(n), device)
    x_T = per_sample_noise(loaded.shape, gens, device)
    labels = draw_labels(loaded, n, spec, 0, None)
    seen: list[tuple[int, Tensor]] = []
    model = loaded.eps_given(labels, 0.0)
    end = run_sampler(loaded, spec, model, x_T, gens, lambda i, t, x, x_0: seen.append((t, x)))
    ts = [t for t, _ in seen]
    return Reference(ts, torch.stack([x for _, x in seen]), end, labels, seed)


@torch.no_grad()
def step_costs(loaded: Loaded, ref: Reference, clip: bool) -> Tensor:
    """cost[i, j] (M, M + 1): the mean squared distance between one DDIM step (eta 0) from the
    reference at candidate i to candidate j (j = M: to the data) and the reference there;
    infinite for j <= i."""
    M = len(ref.timesteps)
    abar = loaded.schedule.alphas_cumprod.tolist()
    targets = [abar[t] for t in ref.timesteps] + [1.0]
    refs = [*ref.xs, ref.end]
    model = loaded.eps_given(ref.labels, 0.0)
    cost = torch.full((M, M + 1), math.inf, dtype=torch.float64)
    for i, t in enumerate(ref.timesteps):
        x = ref.xs[i]
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps, x_0 = predict_x0(model, loaded.schedule, x, tt, clip)
        for j in range(i + 1, M + 1):
            a = targets[j]
            landed = math.sqrt(a) * x_0 + math.sqrt(1 - a) * eps
            cost[i, j] = float((landed - refs[j]).double().pow(2).mean())
    return cost


def cheapest_path(cost: Tensor, steps: int) -> list[int]:
    """The candidates 0 = i_1 < i_2 < ... < i_K (K = `steps`) minimising cost[i_1, i_2] + ...
    + cost[i_K, M], the last step going to the data (column M): dynamic programming, O(K M²)."""
    M = cost.shape[0]
    if not 1 <= steps <= M:
        raise ValueError(f"steps must be in [1, {M}], got {steps}")
    # best[k, j]: the least cost of reaching candidate j from candidate 0 in k steps
    best = torch.full((steps, M), math.inf, dtype=torch.float64)
    came = torch.zeros((steps, M), dtype=torch.long)
    best[0, 0] = 0.0
    for k in range(1, steps):
        total = best[k - 1][:, None] + cost[:, :M]  # from i (rows) to j (columns)
        best[k], came[k] = total.min(0)
    last = best[steps - 1] + cost[:, M]
    path = [int(last.argmin())]
    for k in range(steps - 1, 0, -1):
        path.append(int(came[k, path[-1]]))
    return path[::-1]


@dataclass(frozen=True)
class Tuned:
    grid: list[int]  # the K timesteps, decreasing from T - 1
    cost: float  # the summed local cost of the grid's path
    reference: Reference


def tune_grid(
    loaded: Loaded, steps: int, *, candidates: int = 100, n: int = 64, seed: int = 0
) -> Tuned:
    """The `steps`-step grid of least summed one-step error against the model's own fine
    trajectories for n noises (GITS; the module docstring)."""
    T = loaded.schedule.T
    if not 1 <= steps <= T:
        raise ConfigError(f"--nfe {steps}: a grid needs 1 to T = {T} steps")
    candidates = min(candidates, T)
    if steps > candidates:
        raise ConfigError(f"--nfe {steps} exceeds --candidates {candidates}: give more")
    ref = reference(loaded, n, candidates, seed)
    cost = step_costs(loaded, ref, clip=loaded.data is None)
    path = cheapest_path(cost, steps)
    total = sum(float(cost[a, b]) for a, b in zip(path, [*path[1:], len(ref.timesteps)]))
    return Tuned([ref.timesteps[i] for i in path], total, ref)


@torch.no_grad()
def end_error(loaded: Loaded, ref: Reference, sampler: str, steps: int, spacing: Spacing) -> float:
    """The root mean squared distance between the end points of a `steps`-step `sampler` on
    `spacing` (a grid's name, or its timesteps) from the reference's noises and the
    reference's own: how far the few steps land from where the fine solver does."""
    n = ref.end.shape[0]
    if not isinstance(spacing, str):
        loaded, spacing = dataclasses.replace(loaded, tuned={steps: tuple(spacing)}), "tuned"
    spec = resolve(loaded, SamplingSpec(sampler, steps, spacing=spacing, seed=ref.seed))
    gens = sample_generators(ref.seed, range(n), ref.end.device)
    x_T = per_sample_noise(loaded.shape, gens, ref.end.device)
    x = run_sampler(loaded, spec, loaded.eps_given(ref.labels, 0.0), x_T, gens)
    return float((x - ref.end).double().pow(2).mean().sqrt())
