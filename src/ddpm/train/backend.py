"""How a run takes its steps, chosen in one place (`make_step`): the eager `train_step`, the
model compiled (`--compile`), the whole step captured as one CUDA graph (`--step-graph`,
`ddpm.train.step.StepGraph`), and under several processes the model wrapped in
DistributedDataParallel. Whatever the choice, a step is a callable `(x_0, y) -> (loss, ok)`
that leaves both on the device."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.speed import compile_model, mark_step, without_cudagraphs
from ddpm.train import distributed
from ddpm.train.config import TrainConfig
from ddpm.train.distributed import Dist
from ddpm.train.state import TrainState
from ddpm.train.step import StepGraph, step_graph_unavailable, train_step

Step = Callable[[Tensor, "Tensor | None"], tuple[Tensor, Tensor]]  # (x_0, y) -> (loss, ok)


def make_step(
    state: TrainState,
    schedule: NoiseSchedule,
    cfg: TrainConfig,
    dist: Dist,
    device: torch.device,
) -> Step:
    """The run's training step on x_0 (B, C, H, W) (under DDP: this process's rows of the
    global batch) and labels y (B,) or None. Compiles `state.model` in place (parameter names,
    and the EMA's pairing, stay the same) and wraps it for DDP where the config asks."""
    no_graph = step_graph_unavailable(cfg, device, dist.world_size) if cfg.step_graph else None
    if no_graph is not None and dist.is_main and device.type == "cuda":  # elsewhere: quietly
        warnings.warn(f"--step-graph ignored: {no_graph}", stacklevel=3)  # as channels-last is
    use_step_graph = cfg.step_graph and no_graph is None
    # the model replays no CUDA graphs of its own inside the step's
    mode = without_cudagraphs(cfg.compile_mode) if use_step_graph else cfg.compile_mode
    compiled = cfg.compile and compile_model(state.model, device, mode)
    graph_mode = mode if compiled else None
    autocast = cfg.bf16 and device.type == "cuda"
    if use_step_graph:
        step: Step = StepGraph(state, schedule, cfg, autocast, device)
    else:
        ddp = None
        if dist.world_size > 1:
            ddp = distributed.wrap(state.model, dist, cfg.ddp_bucket_mb)
        rows = dist.rows(cfg.batch_size)

        def step(x_0: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
            return train_step(state, schedule, cfg, x_0, y, autocast, ddp, rows)

    def marked(x_0: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        mark_step(graph_mode)  # CUDA-graph trees: a new step begins (no-op otherwise)
        return step(x_0, y)

    return marked
