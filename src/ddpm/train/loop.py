"""The training loop: `train` runs the run's step (`ddpm.train.backend.make_step`) until the last
step or a stop request (`ddpm.train.budget.Budget`), and after each step asks its hooks
(`ddpm.train.hooks`: loss log, sample grids, FID, snapshots, checkpoints) for the periodic work.
Nothing in the hot loop reads a value back from the GPU except every `log_every` steps.

Under torchrun every process runs this loop on its rows of each global batch
(`ddpm.train.distributed`); they agree on stopping and on the time budget through a host-side
vote, share the FID sampling, and rank 0 alone writes the log, the grids and the checkpoints.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ddpm.data.arrays import ArrayDataset, array_batches
from ddpm.data.images import ImageDataset
from ddpm.data.stream import batches
from ddpm.diffusion.timesteps import make_timestep_sampler
from ddpm.errors import ConfigError
from ddpm.io import checkpoint as ckpt_io
from ddpm.io.paths import check_output_folder
from ddpm.progress import Progress
from ddpm.sampling.spec import SamplingSpec
from ddpm.train import distributed
from ddpm.train.backend import Step, make_step
from ddpm.train.budget import Budget
from ddpm.train.config import TrainConfig, build_schedule
from ddpm.train.distributed import Dist
from ddpm.train.hooks import Hook, Run, Standard, make_fid_evaluator
from ddpm.train.log import Log, describe
from ddpm.train.state import TrainState, read_resume, setup, use_timesteps


@dataclass
class TrainResult:
    step: int
    out: Path
    last_checkpoint: Path | None
    stopped_early: bool
    losses: list[tuple[int, float]]
    nonfinite_total: int
    fids: list[tuple[int, float]] = field(default_factory=list)  # (step, FID) of --eval-every
    train_seconds: float = 0.0  # wall-clock time up to the last grid, without the grids
    last_grid: SamplingSpec | None = None  # how the last sample grid was drawn


def train(
    cfg: TrainConfig,
    data: ImageDataset | ArrayDataset | None = None,
    resume: str | None = None,
    progress: bool = True,
    announce: Callable[[str], None] | None = None,
    dist: Dist | None = None,
    hooks: Sequence[Hook] = (),
) -> TrainResult:
    """Run (or resume) training to cfg.steps. `announce` receives a summary of the run; `hooks`
    run after each step where due, before the run's own (`ddpm.train.hooks`; `StopAfter` ends
    the run early, as a signal would). Sample grids take at most cfg.picture_budget of the
    training time before them (`picture_budget`).

    `dist` None joins the job torchrun started, if any (`distributed.init`); with several
    processes each trains on its rows of every global batch in DistributedDataParallel, and
    rank 0 alone writes files (and shows progress).
    """
    dist = distributed.init(cfg.device, cfg.batch_size) if dist is None else dist
    distributed.check_batch(cfg.batch_size, dist.world_size)
    main, progress = dist.is_main, progress and dist.is_main
    if main:  # the other processes never write to the run folder, nor look into it
        check_output_folder(cfg.out, "run folder")
    if resume is None:
        refuse_a_used_folder(cfg.out)
    made = main and resume is None and make_run_folder(Path(cfg.out))
    evaluator = make_fid_evaluator(cfg, dist) if cfg.eval_every is not None else None
    with removed_if_left_empty(Path(cfg.out), made):

        def read(resume: str, out: str) -> tuple[Path, dict]:  # rank 0 reads, the others receive
            return dist.on_main(lambda: read_resume(resume, out))

        device, data, arch, model_cfg, state = setup(cfg, data, resume, dist.device, read, progress)
    distributed.seed_process(cfg.seed, dist, state.step)  # dropout: a generator per process
    asked_batch = cfg.batch_size
    kind = getattr(data, "kind", "images")
    cfg = with_steps(clamp_batch_size(cfg, len(data), dist.world_size, kind), len(data))
    if announce is not None and main:
        W = dist.world_size
        procs = f" (rank 0 of {W} processes, {cfg.batch_size // W} images each)" if W > 1 else ""
        announce(describe(cfg, data, state.model) + f"\ndevice: {device}{procs}, out: {cfg.out}")
    schedule = build_schedule(cfg).to(device)
    sampler = make_timestep_sampler(cfg.timestep_sampling, schedule, cfg.t_mean, cfg.t_std)
    use_timesteps(state, sampler)
    if main:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
    step = make_step(state, schedule, cfg, dist, device)
    stream = data_stream(data, cfg, state.step, device, dist.rows(cfg.batch_size))
    log = Log.open(cfg, state.step, resumed=resume is not None, write=main)
    budget = Budget(cfg, dist)
    bar = Progress(
        cfg.steps,
        "training",
        "step",
        progress,
        initial=state.step,
        time_limit=budget.seconds_left(),
    )
    run = Run(cfg, schedule, arch, model_cfg, dist, log, bar, progress, asked_batch)
    std = Standard.make(run, evaluator, state, hooks)
    stopped = run_steps(state, step, stream, budget, bar, std.all())
    budget.close()
    dist.barrier()  # rank 0's last checkpoint is whole before any process returns (and exits)
    bar.close()
    for hook in std.all():
        hook.on_end()
    return TrainResult(
        state.step,
        run.out,
        std.checkpoints.last,
        stopped,
        std.loss_log.losses,
        state.nonfinite_total,
        std.fid.fids if std.fid is not None else [],
        std.grids.train_seconds,
        std.grids.last_grid,
    )


def run_steps(
    state: TrainState,
    step: Step,
    stream: Iterator,
    budget: Budget,
    bar: Progress,
    hooks: list[Hook],
) -> bool:
    """Ho et al. 2020 Algorithm 1 to the last step; after each step, the hooks that are due.
    Returns True when a stop request ended the run (after its checkpoint)."""
    state.model.train()
    with budget.stop:
        while state.step < budget.steps:
            x_0, y = next(stream)
            loss, ok = step(x_0, y)
            bar.update(1)
            at = budget.after_step(state, loss, ok)
            for hook in hooks:
                if hook.due(at):
                    hook.on_step(state, at)
            if at.stop or at.last:
                return at.stop
    return False


def make_run_folder(out: Path) -> bool:
    """Make a new run's folder before its data is decoded, so that a folder that cannot be made
    stops the run at once. True when this run made it."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    return made


@contextmanager
def removed_if_left_empty(out: Path, made: bool) -> Iterator[None]:
    """Bad data or flags, found before any file is written, leave no trace of a folder the run
    made (`make_run_folder`)."""
    try:
        yield
    except BaseException:
        if made and not any(out.iterdir()):
            out.rmdir()
        raise


def refuse_a_used_folder(out: str) -> None:
    """A new run would mix its files with an earlier run's there, and keeping the newest
    checkpoints would delete its own first ones (the earlier run's steps can be higher)."""
    found = ckpt_io.list_checkpoints(out)
    if found:
        raise ConfigError(
            f"--out {out} already holds a run (newest checkpoint {found[-1].name}): pass "
            f"--resume to continue it, or another --out (or remove the folder) for a new run"
        )


def clamp_batch_size(
    cfg: TrainConfig, n: int, processes: int = 1, kind: str = "images"
) -> TrainConfig:
    """A batch larger than the dataset becomes the whole dataset, said once (16 images train
    with the default batch size, as in diffusers' and lucidrains' trainers); under DDP, the
    largest multiple of the number of processes that fits."""
    if cfg.batch_size <= n:
        return cfg
    n -= n % processes
    if n < processes:
        raise ConfigError(f"the dataset has fewer {kind} than there are processes ({processes})")
    warnings.warn(
        f"batch size {cfg.batch_size} (--batch-size) is larger than the dataset ({n} {kind}): "
        f"training with batches of {n}",
        stacklevel=3,
    )
    return dataclasses.replace(cfg, batch_size=n)


def with_steps(cfg: TrainConfig, n: int) -> TrainConfig:
    """With cfg.epochs, whole passes over the n items of the data: as many steps as that takes."""
    if cfg.epochs is None:
        return cfg
    per_epoch = max(n // cfg.batch_size, 1)
    return dataclasses.replace(cfg, steps=max(1, round(cfg.epochs * per_epoch)))


def data_stream(
    data: ImageDataset | ArrayDataset,
    cfg: TrainConfig,
    step: int,
    device: torch.device,
    rows: slice | None,
) -> Iterator:
    """The batches (x_0, y) from `step` on, the same at any number of processes (each gets its
    `rows`); images flipped where cfg.hflip says (by default: for --data)."""
    if isinstance(data, ArrayDataset):  # points / sequences: standardised floats, no flips
        return array_batches(data, cfg.batch_size, cfg.seed, step, device, rows=rows)
    return batches(
        data,
        cfg.batch_size,
        cfg.seed,
        step,
        device,
        cfg.hflip if cfg.hflip is not None else cfg.data is not None,
        workers=cfg.data_workers,
        cache_on_device=cfg.data_on_device,
        rows=rows,
    )
