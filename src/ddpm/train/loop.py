"""The training loop: `train` runs `train_step` until the last step or a stop request, and does
the periodic work around it (loss log, sample grids, FID, checkpoints). Nothing in the hot loop
reads a value back from the GPU except every `log_every` steps.

Under torchrun every process runs this loop on its rows of each global batch
(`ddpm.train.distributed`); they agree on stopping and on the time budget through a host-side
vote, share the FID sampling, and rank 0 alone writes the log, the grids and the checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ddpm.data.arrays import ArrayDataset, array_batches
from ddpm.data.images import ImageDataset
from ddpm.data.stream import batches
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.diffusion.timesteps import make_timestep_sampler
from ddpm.errors import ConfigError
from ddpm.io import checkpoint as ckpt_io
from ddpm.io.paths import check_output_folder
from ddpm.progress import Progress
from ddpm.sampling.generate import Loaded, generate, picture_plan, seconds_per_evaluation
from ddpm.sampling.samplers import default_steps
from ddpm.sampling.spec import SamplingSpec
from ddpm.speed import compile_model, mark_step, without_cudagraphs
from ddpm.train import distributed
from ddpm.train.config import TrainConfig, build_schedule, lr_at
from ddpm.train.distributed import Dist
from ddpm.train.log import Log, describe
from ddpm.train.state import (
    TrainState,
    checkpoint_dict,
    checkpoint_path,
    read_resume,
    save_checkpoint,
    setup,
    snapshot_dict,
    use_timesteps,
)
from ddpm.train.step import StepGraph, step_graph_unavailable, train_step
from ddpm.train.tensorboard import TensorBoard
from ddpm.viz.arrayplots import save_samples
from ddpm.viz.grids import save_grid

PICTURE_FLOOR_S = 30.0  # a sample grid may always take this long, however short the run


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


PLOT_SAMPLES = {"points": 2000, "sequences": 64}  # samples in a preview plot


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
        seed=cfg.seed,
    )


def picture_budget(cfg: TrainConfig, seconds: float) -> float:
    """Seconds a picture may take after `seconds` of training: cfg.picture_budget of them,
    and at least PICTURE_FLOOR_S."""
    return max(PICTURE_FLOOR_S, cfg.picture_budget * seconds)


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and exits."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequested:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def make_fid_evaluator(cfg: TrainConfig, dist: Dist):
    """The FID check of `--eval-every` (ddpm.eval.evaluate.TrainingFID), loaded before training so
    that a bad statistics or network file stops the run at once. Under DDP every process
    samples its share of the images."""
    from ddpm.eval.evaluate import TrainingFID

    # as `ddpm eval --sampler S --steps K` scores the checkpoint: its default eta is 0
    settings = grid_spec(cfg, cfg.T).replace(eta=0.0)
    assert cfg.fid_stats is not None
    return TrainingFID(cfg.fid_stats, cfg.eval_n, dist.device, cfg.inception, settings, dist)


def evaluate_fid(
    evaluator,
    state: TrainState,
    schedule: NoiseSchedule,
    cfg: TrainConfig,
    arch: str,
    model_cfg: dict,
    log: Log,
    write: bool = True,
) -> float:
    """FID of the EMA weights, logged beside the loss; best.pt is written (if `write`) when it
    improves. Every process gets the same value, so best_metric stays the same on all."""
    fid = evaluator(state.ema.model, schedule, cfg.prediction, state.shape, state.step)
    log.set(state.step, fid=f"{fid:.4f}")
    if state.best_metric is None or fid < state.best_metric:
        state.best_metric = fid
        if write:
            best = Path(cfg.out) / "best.pt"
            ckpt_io.atomic_save(checkpoint_dict(state, cfg, arch, model_cfg), best)
    return fid


class Snapshots:
    """Sampling-only checkpoints (`snapshot-<m>min.pt`: weights and EMAs, no optimizer) at given
    minutes of training wall-clock, for a curve of quality against training time from one run.
    The copy to host memory happens in the loop; the file is written by a background thread."""

    def __init__(self, out: Path, minutes: tuple[float, ...], t_start: float):
        self.out, self.t_start = out, t_start
        self.pending = sorted(minutes)
        self.threads: list[threading.Thread] = []

    def maybe_write(
        self, now: float, state: TrainState, cfg: TrainConfig, arch: str, model_cfg: dict
    ) -> None:
        if not self.pending or now - self.t_start < 60 * self.pending[0]:
            return
        minutes = self.pending.pop(0)
        while self.pending and now - self.t_start >= 60 * self.pending[0]:
            self.pending.pop(0)  # a slow step can pass several marks: the first one is kept
        data = snapshot_dict(state, cfg, arch, model_cfg)
        data["minutes"] = (now - self.t_start) / 60
        path = self.out / f"snapshot-{minutes:g}min.pt"
        thread = threading.Thread(target=ckpt_io.atomic_save, args=(data, path), daemon=False)
        thread.start()
        self.threads.append(thread)

    def wait(self) -> None:
        for t in self.threads:
            t.join()


def refuse_a_used_folder(out: str) -> None:
    """A new run would mix its files with an earlier run's there, and keeping the newest
    checkpoints would delete its own first ones (the earlier run's steps can be higher)."""
    found = ckpt_io.list_checkpoints(out)
    if found:
        raise ConfigError(
            f"--out {out} already holds a run (newest checkpoint {found[-1].name}): pass "
            f"--resume to continue it, or another --out (or remove the folder) for a new run"
        )


def clamp_batch_size(cfg: TrainConfig, n: int, processes: int = 1) -> TrainConfig:
    """A batch larger than the dataset becomes the whole dataset, said once (16 images train
    with the default batch size, as in diffusers' and lucidrains' trainers); under DDP, the
    largest multiple of the number of processes that fits."""
    if cfg.batch_size <= n:
        return cfg
    n -= n % processes
    if n < processes:
        raise ConfigError(f"the dataset has fewer images than there are processes ({processes})")
    warnings.warn(
        f"batch size {cfg.batch_size} (--batch-size) is larger than the dataset ({n} images): "
        f"training with batches of {n}",
        stacklevel=3,
    )
    return dataclasses.replace(cfg, batch_size=n)


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


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
    stop_after: int | None = None,
    inject_nan_at: set[int] | None = None,
    announce: Callable[[str], None] | None = None,
    dist: Dist | None = None,
) -> TrainResult:
    """Run (or resume) training to cfg.steps. `announce` receives a summary of the run.
    `stop_after` stops early at that step (as a signal would) and `inject_nan_at` poisons the
    loss at those steps: both exist for tests. Sample grids take at most cfg.picture_budget
    of the training time before them (`picture_budget`).

    `dist` None joins the job torchrun started, if any (`distributed.init`); with several
    processes each trains on its rows of every global batch in DistributedDataParallel, and
    rank 0 alone writes files (and shows progress).
    """
    check_output_folder(cfg.out, "run folder")
    if resume is None:
        refuse_a_used_folder(cfg.out)
    dist = distributed.init(cfg.device, cfg.batch_size) if dist is None else dist
    distributed.check_batch(cfg.batch_size, dist.world_size)
    main, W = dist.is_main, dist.world_size
    progress = progress and main
    made = False  # this run made --out: a failure before any file is written removes it
    if main and resume is None:  # before the data is decoded: a folder that cannot be made
        made = not Path(cfg.out).exists()
        Path(cfg.out).mkdir(parents=True, exist_ok=True)  # stops the run at once
    evaluator = make_fid_evaluator(cfg, dist) if cfg.eval_every is not None else None
    fids: list[tuple[int, float]] = []

    def read(resume: str, out: str) -> tuple[Path, dict]:  # rank 0 reads, the others receive
        return dist.on_main(lambda: read_resume(resume, out))

    try:
        device, data, arch, model_cfg, state = setup(cfg, data, resume, dist.device, read, progress)
    except BaseException:
        if made and not any(Path(cfg.out).iterdir()):  # bad data or flags: leave no trace
            Path(cfg.out).rmdir()
        raise
    distributed.seed_process(cfg.seed, dist, state.step)  # dropout: a generator per process
    cfg = clamp_batch_size(cfg, len(data), W)
    if cfg.epochs is not None:  # whole passes over the data, as many steps as that takes
        per_epoch = max(len(data) // cfg.batch_size, 1)
        cfg = dataclasses.replace(cfg, steps=max(1, round(cfg.epochs * per_epoch)))
    if announce is not None and main:
        procs = f" (rank 0 of {W} processes, {cfg.batch_size // W} images each)" if W > 1 else ""
        announce(describe(cfg, data, state.model) + f"\ndevice: {device}{procs}, out: {cfg.out}")
    schedule = build_schedule(cfg).to(device)
    sampler = make_timestep_sampler(cfg.timestep_sampling, schedule, cfg.t_mean, cfg.t_std)
    use_timesteps(state, sampler)
    out = Path(cfg.out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    no_graph = step_graph_unavailable(cfg, device, W) if cfg.step_graph else None
    if no_graph is not None and main and device.type == "cuda":  # elsewhere: as channels-last
        warnings.warn(f"--step-graph ignored: {no_graph}", stacklevel=2)
    use_step_graph = cfg.step_graph and no_graph is None
    # the model replays no CUDA graphs of its own inside the step's
    mode = without_cudagraphs(cfg.compile_mode) if use_step_graph else cfg.compile_mode
    # in place: parameter names (and the EMA's pairing) stay the same
    compiled = cfg.compile and compile_model(state.model, device, mode, cfg.compile_scope)
    graph_mode = mode if compiled else None
    ddp = None
    if W > 1:
        ddp = distributed.wrap(
            state.model,
            dist,
            cfg.ddp_bucket_mb,
            cfg.ddp_static_graph,
            cfg.ddp_grad_as_bucket_view,
            cfg.ddp_split_graph,
        )
    rows = dist.rows(cfg.batch_size)
    autocast = cfg.bf16 and device.type == "cuda"
    hflip = cfg.hflip if cfg.hflip is not None else cfg.data is not None
    if isinstance(data, ArrayDataset):  # points / sequences: standardised floats, no flips
        stream: Iterator = array_batches(
            data, cfg.batch_size, cfg.seed, state.step, device, rows=rows
        )
    else:
        stream = batches(
            data,
            cfg.batch_size,
            cfg.seed,
            state.step,
            device,
            hflip,
            workers=cfg.data_workers,
            cache_on_device=cfg.data_on_device,
            rows=rows,
        )
    shape = state.shape
    tensorboard = TensorBoard.open(cfg, state.step) if cfg.tensorboard and main else None
    log = Log(out / "log.csv", resume is not None, tensorboard, write=main)
    votes = distributed.Votes(dist)
    losses: list[tuple[int, float]] = []
    loss_sum = torch.zeros((), device=device)
    ok_count = torch.zeros((), device=device)
    run = torch.zeros((), device=device)  # current streak of skipped steps
    worst_run = torch.zeros((), device=device)
    last_ckpt: Path | None = None
    stopped = False
    t_last, step_last = time.perf_counter(), state.step
    t_start = t_last  # the budget and snapshot clocks start here: data decoding excluded
    deadline = None if cfg.max_minutes is None else t_start + 60 * cfg.max_minutes
    # A time-limited cosine decay spans the budget left once the warm-up is over, so that the
    # compile (in the first steps) does not spend the learning rate: in a 2-minute run it took
    # half the budget, and the steps after it ran at under half the rate.
    t_decay = None
    snapshots = Snapshots(out, cfg.snapshot_minutes if main else (), t_start)
    bar = Progress(
        cfg.steps,
        "training",
        "step",
        progress,
        initial=state.step,
        time_limit=None if deadline is None else deadline - time.perf_counter(),
    )
    train_seconds = 0.0  # wall-clock time of the run without its sample grids
    last_grid = None
    t_grid = time.perf_counter()  # the end of the previous grid (or the start)

    step_graph = StepGraph(state, schedule, cfg, autocast, device) if use_step_graph else None
    state.model.train()
    with StopRequested() as stop:
        while state.step < cfg.steps:
            x_0, y = next(stream)
            if inject_nan_at and state.step in inject_nan_at:
                x_0 = x_0 * float("nan")
            mark_step(graph_mode)  # CUDA-graph trees: a new step begins (no-op otherwise)
            if step_graph is not None:
                loss, ok = step_graph(x_0, y)
            else:
                loss, ok = train_step(state, schedule, cfg, x_0, y, autocast, ddp, rows)
            loss_sum += torch.where(ok, loss.float(), 0.0)
            ok_count += ok
            run = (run + 1) * (~ok)
            worst_run = torch.maximum(worst_run, run)
            step = state.step
            bar.update(1)
            now = time.perf_counter()
            fraction = decay = 0.0
            if deadline is not None:
                fraction = (now - t_start) / (deadline - t_start)
                if t_decay is None and step >= max(cfg.warmup, 1):
                    t_decay = now
                if t_decay is not None:
                    decay = (now - t_decay) / max(deadline - t_decay, 1e-9)
            # a signal (to any process) and the time budget (of the slowest clock), agreed by
            # all processes: they must stop at the same step and use the same learning rate
            asked, fraction, decay = votes(float(stop.signal is not None), fraction, decay)
            stop_now = asked > 0 or (stop_after is not None and step >= stop_after)
            if deadline is not None:
                state.time_fraction = decay
            # a spent time budget ends the run as its last step would (a stop request does not)
            out_of_time = fraction > 1
            snapshots.maybe_write(now, state, cfg, arch, model_cfg)
            last = step == cfg.steps or (out_of_time and not stop_now)

            if step % cfg.log_every == 0 or last:
                dist.mean_(loss_sum)  # each process summed the mean loss of its rows
                n_ok, total, worst = int(ok_count), float(loss_sum), int(worst_run)
                skipped = (step - step_last) - n_ok
                state.nonfinite_total += skipped
                dt = time.perf_counter() - t_last
                mean = total / n_ok if n_ok else float("nan")
                img_s = (step - step_last) * cfg.batch_size / max(dt, 1e-9)
                log.add(
                    step,
                    loss=f"{mean:.6g}",
                    lr=f"{lr_at(cfg, step - 1, state.time_fraction):.3g}",
                    img_per_s=f"{img_s:.1f}",
                    nonfinite=state.nonfinite_total,
                    seconds=f"{dt:.2f}",
                )
                losses.append((step, mean))
                bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{img_s:.0f}")
                if worst >= cfg.max_nonfinite:
                    bar.close()
                    log.close()
                    raise NonFiniteError(
                        f"{worst} consecutive steps had a non-finite loss or gradient (by step "
                        f"{step}); stopped. The last good checkpoint is "
                        f"{last_ckpt or 'not written yet'}. Try a lower --lr or --no-bf16."
                    )
                loss_sum.zero_(), ok_count.zero_(), worst_run.zero_()
                t_last, step_last = time.perf_counter(), step

            if step % cfg.sample_every == 0 or last:
                elapsed = time.perf_counter() - t_grid
                train_seconds += elapsed
                if main:
                    path = out / "samples" / f"step-{step:07d}.png"
                    budget = picture_budget(cfg, elapsed)
                    grid, last_grid = sample_grid(
                        state, schedule, cfg, shape, path, budget, progress
                    )
                    if grid is not None:
                        log.grid(step, grid)
                    state.model.train()
                t_grid = time.perf_counter()
            if evaluator is not None and (step % cfg.eval_every == 0 or last):
                fid = evaluate_fid(evaluator, state, schedule, cfg, arch, model_cfg, log, main)
                fids.append((step, fid))
                if main:
                    bar.write(f"step {step}: FID {fid:.2f} ({cfg.eval_n} samples)")
            if step % cfg.checkpoint_every == 0 or last or stop_now:
                if main:
                    last_ckpt = save_checkpoint(state, cfg, arch, model_cfg)
                else:
                    last_ckpt = checkpoint_path(cfg, state.step)
            if stop_now:
                stopped = True
                break
            if last:
                break
    votes.close()
    dist.barrier()  # rank 0's last checkpoint is whole before any process returns (and exits)
    bar.close()
    snapshots.wait()
    log.close()
    log.plot(out / "loss.png")
    return TrainResult(
        state.step,
        out,
        last_ckpt,
        stopped,
        losses,
        state.nonfinite_total,
        fids,
        train_seconds,
        last_grid,
    )
