"""Training: Ho et al. 2020 Algorithm 1 and the practice around it, in named parts.

- `config`: `TrainConfig` (stored in every checkpoint) and the schedules derived from it;
- `state`: the model, EMA, optimizer and generators, built from a config and checkpointed;
- `step`: one optimisation step (`train_step`) with the non-finite guard;
- `log`: the CSV log and the run's summary;
- `backend`: the step a run takes (eager, compiled, one CUDA graph, DDP), chosen in one place;
- `budget`: the run's clock: the time budget, snapshot marks and stop requests, agreed by all;
- `hooks`: the periodic work after a step (loss log, grids, FID, snapshots, checkpoints);
- `pictures`: the sample grids a run draws, and how they sample;
- `loop`: `train`, which runs the steps and asks the hooks;
- `distributed`: several processes under torchrun (DDP): each one's slice of the global batch.
"""

from ddpm.train.budget import StopRequested
from ddpm.train.config import TrainConfig, build_schedule, ema_decay_at, lr_at, resolve_device
from ddpm.train.hooks import Hook, NonFiniteError, StopAfter
from ddpm.train.log import Log, describe
from ddpm.train.loop import TrainResult, train
from ddpm.train.pictures import PICTURE_FLOOR_S, grid_spec, picture_budget, sample_grid
from ddpm.train.state import (
    EMA,
    TrainState,
    checkpoint_dict,
    find_resume,
    make_model,
    make_optimizer,
    restore,
    save_checkpoint,
    setup,
)
from ddpm.train.step import train_step

__all__ = [
    "EMA",
    "PICTURE_FLOOR_S",
    "Hook",
    "Log",
    "NonFiniteError",
    "StopAfter",
    "StopRequested",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "build_schedule",
    "checkpoint_dict",
    "describe",
    "ema_decay_at",
    "find_resume",
    "grid_spec",
    "lr_at",
    "make_model",
    "make_optimizer",
    "picture_budget",
    "resolve_device",
    "restore",
    "sample_grid",
    "save_checkpoint",
    "setup",
    "train",
    "train_step",
]
