"""How far each few-step solver ends from the ODE's solution on a trained model: every image
starts from the same x_T, the reference is a 200-step DPM-Solver++(2M) chain on log-SNR
timesteps, and the table gives the RMSE (data scale [-1, 1]) of each solver's result against
it, x̂_0 clipped at every step as `ddpm sample` does for images. On the CPU: about 7
minutes for three small models on 2 cores.

Besides our samplers it runs the variants the defaults chose against: UniPC of order 3 below
20 steps (`unipc_sample(order=3)`), iPNDM of order 4 (ours takes 3), and iPNDM with the
variable-step Adams-Bashforth weights of the grid as it is (`grid_weights_ipndm` below; ours
takes the equal-step weights on every grid, as zju-pi's diff-sampler does).

    ddpm train --out runs/default                       # digits, conditioned on the digit
    ddpm train --out runs/plain --no-class-cond
    ddpm train --data cifar10:cifar10/train.zip --preset small --image-size 16 \\
               --no-class-cond --out runs/c16          # 600 steps, about 4 minutes
    python benchmarks/solver_error.py --checkpoint runs/c16 --checkpoint runs/default \\
        --checkpoint runs/plain

prints one table per checkpoint: a row per (grid, steps), a column per solver; the
results are summed up in docs/benchmarks.md ("Few-step sampling").
"""

from __future__ import annotations

import argparse
import math

import torch
from common import run_script
from torch import Tensor

from ddpm.errors import ConfigError
from ddpm.sampling import samplers as S
from ddpm.sampling.grids import GRIDS
from ddpm.sampling.loaded import load_model
from ddpm.sampling.samplers import predict_x0, timesteps_for
from ddpm.sampling.solvers import ipndm_update


@torch.no_grad()
def grid_weights_ipndm(
    model, schedule, x_T: Tensor, steps: int, spacing: str, order: int = 4
) -> Tensor:
    """iPNDM with the variable-step weights of the grid as it is: our `ipndm_update` told
    where the slopes really lie, in σ: the alternative `ipndm_sample` was measured against."""
    ts = timesteps_for(schedule, steps, spacing)
    abar, sigma = schedule.alphas_cumprod.tolist(), schedule.sigmas.tolist()
    x, history = x_T / math.sqrt(abar[ts[0]]), []
    for i, t in enumerate(ts):
        tt = torch.full((x.shape[0],), t, dtype=torch.long)
        eps, x_0 = predict_x0(model, schedule, math.sqrt(abar[t]) * x, tt, True)
        if i + 1 == len(ts):
            return x_0
        history = [*history[1 - order :], eps]  # oldest first, the last `order`
        at = [sigma[u] for u in ts[i + 1 - len(history) : i + 1]]
        x = ipndm_update(x, history, at, sigma[ts[i + 1]])
    raise AssertionError("unreachable")


def ours(run, **options):
    return lambda m, s, x, k, g: run(m, s, x, steps=k, spacing=g, clip=True, **options)


SOLVERS = {
    "ddim": ours(S.ddim_sample),
    "dpm-solver": ours(S.dpm_solver_sample),
    "unipc": ours(S.unipc_sample),
    "unipc-3": ours(S.unipc_sample, order=3),
    "ipndm": ours(S.ipndm_sample),
    "ipndm-4": ours(S.ipndm_sample, order=4),
    "ipndm-grid": grid_weights_ipndm,
}


def table(path: str, loaded, n: int, steps: list[int], grids: list[str], bf16=False) -> None:
    labels = torch.arange(n) % loaded.num_classes if loaded.num_classes else None
    model, schedule = loaded.eps_given(labels), loaded.schedule
    solve = model
    if bf16:  # the solvers' network under bf16 autocast, as CUDA samples; the reference not

        def solve(x: Tensor, t: Tensor) -> Tensor:
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return model(x, t).float()

    if max(steps) > schedule.T:
        raise ConfigError(f"--steps {max(steps)}: {path} has only T = {schedule.T} timesteps")
    x_T = torch.randn(n, *loaded.shape, generator=torch.Generator().manual_seed(0))
    fine = min(200, schedule.T)  # the reference chain
    ref = S.sample("dpm-solver", model, schedule, x_T, steps=fine, spacing="logsnr", clip=True)
    print(f"\n{path}: RMSE to the {fine}-step solution, {n} samples" + ", bf16" * bf16)
    print(f"{'grid':9}{'steps':>6}" + "".join(f"{name:>13}" for name in SOLVERS))
    for grid in grids:
        for k in steps:
            errors = [(run(solve, schedule, x_T, k, grid) - ref).pow(2).mean().sqrt().item()
                      for run in SOLVERS.values()]  # fmt: skip
            print(f"{grid:9}{k:>6}" + "".join(f"{e:>13.4f}" for e in errors))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", action="append", required=True, help="repeat for several")
    p.add_argument("--n", type=int, default=64, help="samples per checkpoint")
    p.add_argument("--steps", default="5,8,10,15,20,30", help="comma-separated step counts")
    p.add_argument("--grids", default="edm,logsnr,trailing", help=f"any of {', '.join(GRIDS)}")
    p.add_argument("--bf16", action="store_true", help="solvers' network under bf16 autocast")
    args = p.parse_args()
    try:
        steps = [int(k) for k in args.steps.split(",")]
    except ValueError:
        p.error(f"--steps {args.steps}: expected positive integers such as 5,10,20")
    grids = args.grids.split(",")
    if args.n < 1 or min(steps) < 1:
        p.error("--n and --steps must be positive")
    if set(grids) - set(GRIDS):
        p.error(
            f"--grids: unknown {sorted(set(grids) - set(GRIDS))[0]} (any of {', '.join(GRIDS)})"
        )
    models = [load_model(path) for path in args.checkpoint]  # each one readable, before any work
    torch.set_grad_enabled(False)
    for path, loaded in zip(args.checkpoint, models):
        table(path, loaded, args.n, steps, grids, args.bf16)


if __name__ == "__main__":
    run_script(main)
