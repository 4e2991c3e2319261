"""The periodic work around the training steps, each job a hook: the loss log, the sample grids,
the FID check, snapshots and checkpoints. A hook is asked after every step whether it is `due`
(by default every `every` steps and at the run's last step); `on_step` then does its work, and
`on_end` runs once after the last step. `train(..., hooks=[...])` runs extra hooks before these.

Under torchrun every process runs the same hooks at the same steps (the FID sampling is shared);
only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ddpm.data.arrays import is_array_spec
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.io import checkpoint as ckpt_io
from ddpm.progress import Progress
from ddpm.sampling.spec import SamplingSpec
from ddpm.train.config import TrainConfig, lr_at
from ddpm.train.distributed import Dist
from ddpm.train.log import Log
from ddpm.train.pictures import grid_spec, picture_budget, sample_grid
from ddpm.train.state import (
    TrainState,
    checkpoint_dict,
    checkpoint_path,
    save_checkpoint,
    snapshot_dict,
)


@dataclass
class At:
    """Where the run stands after a step, as every hook sees it."""

    step: int  # steps done (state.step)
    steps: int  # the step the run ends at (cfg.steps)
    loss: Tensor  # this step's loss, on the device: read back only when logged
    ok: Tensor  # the step was taken (a finite loss and gradient), on the device
    seconds: float  # on the run's clock (data decoding excluded)
    out_of_time: bool  # the time budget is spent (agreed by all processes)
    stop: bool = False  # a stop request: checkpoint and end at this step (a hook may set it)
    snapshot: float | None = None  # the snapshot mark (minutes) passed at this step

    @property
    def last(self) -> bool:
        """The run's last step. A spent time budget ends the run as its last step would (grids,
        FID and all); a stop request does not."""
        return self.step == self.steps or (self.out_of_time and not self.stop)


class Hook:
    """Work done every `every` steps and at the last one; override `due` for another rhythm.
    An extra hook must be due at the same steps on every process."""

    every: int = 1

    def due(self, at: At) -> bool:
        return at.step % self.every == 0 or at.last

    def on_step(self, state: TrainState, at: At) -> None:
        pass

    def on_end(self) -> None:
        pass


@dataclass
class Run:
    """What the hooks share: the run's settings, the model's description (for checkpoints) and
    where it reports. Checkpoints keep the batch size asked for (`asked_batch`), not the one a
    small dataset cut it to, so that the same command resumes the run."""

    cfg: TrainConfig
    schedule: NoiseSchedule
    arch: str
    model_cfg: dict
    dist: Dist
    log: Log
    bar: Progress
    progress: bool = False  # show the grids' sampling
    asked_batch: int | None = None

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def saved_cfg(self) -> TrainConfig:
        """The settings a checkpoint keeps."""
        if self.asked_batch is None:
            return self.cfg
        return dataclasses.replace(self.cfg, batch_size=self.asked_batch)

    def checkpoint(self, state: TrainState) -> dict:
        return checkpoint_dict(state, self.saved_cfg, self.arch, self.model_cfg)


class StopAfter(Hook):
    """Stop at `step`, as a signal would: a checkpoint, and no last grid."""

    def __init__(self, step: int):
        self.step = step

    def due(self, at: At) -> bool:
        return at.step >= self.step

    def on_step(self, state: TrainState, at: At) -> None:
        at.stop = True


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


class LossLog(Hook):
    """The mean loss, learning rate, throughput and skipped steps to log.csv (and TensorBoard)
    and the progress bar every `log_every` steps; in between the sums stay on the device.
    `max_nonfinite` skipped steps in a row stop the run (NonFiniteError).

    A row between two multiples of log_every (where the run stops) is provisional: its window
    stays open, travels in the checkpoint (`window`), and a resumed run replaces the row by
    that of the whole window, so that every row averages log_every steps."""

    def __init__(self, run: Run, checkpoints: Checkpoints, step: int, window: dict | None = None):
        self.run, self.checkpoints = run, checkpoints
        device = run.dist.device
        w = window or {}
        self.loss_sum = torch.tensor(float(w.get("loss_sum", 0.0)), device=device)
        self.ok_count = torch.tensor(int(w.get("ok", 0)), device=device)
        self.streak = torch.zeros((), device=device)  # current streak of skipped steps
        self.worst = torch.zeros((), device=device)
        self.t_last, self.step_last = time.perf_counter(), int(w.get("since", step))
        self.seconds_before = float(w.get("seconds", 0.0))  # of the window, before a resume
        self.provisional: int | None = w.get("provisional")  # the open window's row
        # skipped steps are counted into the state up to `counted`, of which `ok_counted` ok
        self.counted, self.ok_counted = int(w.get("counted", step)), int(w.get("ok_counted", 0))
        self.losses: list[tuple[int, float]] = []

    def on_step(self, state: TrainState, at: At) -> None:
        self.loss_sum += torch.where(at.ok, at.loss.float(), 0.0)
        self.ok_count += at.ok
        self.streak = (self.streak + 1) * (~at.ok)
        self.worst = torch.maximum(self.worst, self.streak)
        if at.step % self.run.cfg.log_every == 0 or at.last:
            self.write(state, at.step)

    def window(self) -> dict:
        """The open window, for the checkpoint (every process takes part: a collective)."""
        total = self.loss_sum.clone()
        self.run.dist.mean_(total)
        return {
            "loss_sum": float(total),
            "ok": int(self.ok_count),
            "since": self.step_last,
            "seconds": self.seconds_before + time.perf_counter() - self.t_last,
            "provisional": self.provisional,
            "counted": self.counted,
            "ok_counted": self.ok_counted,
        }

    def write(self, state: TrainState, step: int) -> None:
        cfg, log, bar = self.run.cfg, self.run.log, self.run.bar
        self.run.dist.mean_(self.loss_sum)  # each process summed the mean loss of its rows
        n_ok, total, worst = int(self.ok_count), float(self.loss_sum), int(self.worst)
        state.nonfinite_total += (step - self.counted) - (n_ok - self.ok_counted)
        dt = self.seconds_before + time.perf_counter() - self.t_last
        mean = total / n_ok if n_ok else float("nan")
        img_s = (step - self.step_last) * cfg.batch_size / max(dt, 1e-9)
        if self.provisional is not None:  # this row takes the place of the open window's
            log.drop(self.provisional)
            self.losses = [(s, v) for s, v in self.losses if s != self.provisional]
        log.add(
            step,
            loss=f"{mean:.6g}",
            lr=f"{lr_at(cfg, step - 1, state.time_fraction):.3g}",
            img_per_s=f"{img_s:.1f}",
            nonfinite=state.nonfinite_total,
            seconds=f"{dt:.2f}",
        )
        self.losses.append((step, mean))
        rate = "samples_s" if is_array_spec(cfg.data) else "img_s"  # points and sequences
        bar.set_postfix(loss=f"{mean:.4f}", **{rate: f"{img_s:.0f}"})
        if worst >= cfg.max_nonfinite:
            bar.close()
            log.close()
            raise NonFiniteError(
                f"{worst} consecutive steps had a non-finite loss or gradient (by step "
                f"{step}); stopped. The last good checkpoint is "
                f"{self.checkpoints.last or 'not written yet'}. Try a lower --lr or --no-bf16."
            )
        self.counted, self.ok_counted = step, n_ok
        if step % cfg.log_every:  # a provisional row: the window stays open
            self.provisional = step
            return
        self.loss_sum.zero_(), self.ok_count.zero_(), self.worst.zero_()
        self.t_last, self.step_last = time.perf_counter(), step
        self.seconds_before, self.provisional, self.ok_counted = 0.0, None, 0

    def on_end(self) -> None:
        self.run.log.close()
        self.run.log.plot(self.run.out / "loss.png")


class Grids(Hook):
    """A sample grid every `sample_every` steps (`ddpm.train.pictures.sample_grid`), given at
    most cfg.picture_budget of the training time since the previous one. Every process keeps
    the clock of training time without the grids; rank 0 draws them."""

    def __init__(self, run: Run):
        self.run, self.every = run, run.cfg.sample_every
        self.train_seconds = 0.0  # wall-clock time of the run without its sample grids
        self.last_grid: SamplingSpec | None = None  # how the last grid was drawn
        self.t_grid = time.perf_counter()  # the end of the previous grid (or the start)

    def on_step(self, state: TrainState, at: At) -> None:
        run = self.run
        elapsed = time.perf_counter() - self.t_grid
        self.train_seconds += elapsed
        if run.dist.is_main:
            path = run.out / "samples" / f"step-{at.step:07d}.png"
            budget = picture_budget(run.cfg, elapsed)
            grid, self.last_grid = sample_grid(
                state, run.schedule, run.cfg, state.shape, path, budget, run.progress
            )
            if grid is not None:
                run.log.grid(at.step, grid)
            state.model.train()
        self.t_grid = time.perf_counter()


def make_fid_evaluator(cfg: TrainConfig, dist: Dist):
    """The FID check of `--eval-every` (ddpm.eval.evaluate.TrainingFID), loaded before training so
    that a bad statistics or network file stops the run at once. Under DDP every process
    samples its share of the images."""
    from ddpm.eval.evaluate import TrainingFID

    # as `ddpm eval --sampler S --steps K` scores the checkpoint: with the eta of its grids
    settings = grid_spec(cfg, cfg.T)
    assert cfg.fid_stats is not None
    return TrainingFID(cfg.fid_stats, cfg.eval_n, dist.device, cfg.inception, settings, dist)


class FIDCheck(Hook):
    """FID of the EMA weights every `eval_every` steps, logged beside the loss; best.pt is
    written (by rank 0) when it improves. Every process gets the same value, so best_metric
    stays the same on all."""

    def __init__(self, run: Run, evaluator):
        self.run, self.evaluator = run, evaluator
        self.every = run.cfg.eval_every
        self.fids: list[tuple[int, float]] = []  # (step, FID)

    def on_step(self, state: TrainState, at: At) -> None:
        run, cfg = self.run, self.run.cfg
        fid = self.evaluator(state.ema.model, run.schedule, cfg.prediction, state.shape, at.step)
        run.log.set(at.step, fid=f"{fid:.4f}")
        if state.best_metric is None or fid < state.best_metric:
            state.best_metric = fid
            if run.dist.is_main:
                ckpt_io.atomic_save(run.checkpoint(state), run.out / "best.pt")
        self.fids.append((at.step, fid))
        if run.dist.is_main:
            run.bar.write(f"step {at.step}: FID {fid:.2f} ({cfg.eval_n} samples)")


class Snapshots(Hook):
    """Sampling-only checkpoints (`snapshot-<m>min.pt`: weights and EMAs, no optimizer) at the
    minutes of training wall-clock of cfg.snapshot_minutes (`ddpm.train.budget.Budget` says
    when), for a curve of quality against training time from one run. The copy to host memory
    happens in the loop; the file is written by a background thread."""

    def __init__(self, run: Run):
        self.run = run
        self.threads: list[threading.Thread] = []

    def due(self, at: At) -> bool:
        return at.snapshot is not None

    def on_step(self, state: TrainState, at: At) -> None:
        run = self.run
        data = snapshot_dict(state, run.saved_cfg, run.arch, run.model_cfg)
        data["minutes"] = at.seconds / 60
        path = run.out / f"snapshot-{at.snapshot:g}min.pt"
        thread = threading.Thread(target=ckpt_io.atomic_save, args=(data, path), daemon=False)
        thread.start()
        self.threads.append(thread)

    def on_end(self) -> None:
        for t in self.threads:
            t.join()


class Checkpoints(Hook):
    """A checkpoint every `checkpoint_every` steps, at the last step and at a stop request,
    written by rank 0 (the others keep its path); the oldest beyond keep_checkpoints go."""

    def __init__(self, run: Run):
        self.run, self.every = run, run.cfg.checkpoint_every
        self.last: Path | None = None
        self.loss_log: LossLog | None = None  # its open window goes into the checkpoint

    def due(self, at: At) -> bool:
        return super().due(at) or at.stop

    def on_step(self, state: TrainState, at: At) -> None:
        run = self.run
        if self.loss_log is not None:
            state.log_window = self.loss_log.window()
        if run.dist.is_main:
            self.last = save_checkpoint(state, run.saved_cfg, run.arch, run.model_cfg)
        else:
            self.last = checkpoint_path(run.cfg, state.step)


@dataclass
class Standard:
    """The hooks every run has, in the order they run (FID and snapshots where asked for)."""

    snapshots: Snapshots | None
    loss_log: LossLog
    grids: Grids
    fid: FIDCheck | None
    checkpoints: Checkpoints
    extra: list[Hook] = field(default_factory=list)  # run before these

    @classmethod
    def make(cls, run: Run, evaluator, state: TrainState, extra=()) -> Standard:
        checkpoints = Checkpoints(run)
        checkpoints.loss_log = loss_log = LossLog(run, checkpoints, state.step, state.log_window)
        main_snapshots = run.dist.is_main and run.cfg.snapshot_minutes
        return cls(
            Snapshots(run) if main_snapshots else None,
            loss_log,
            Grids(run),
            FIDCheck(run, evaluator) if evaluator is not None else None,
            checkpoints,
            list(extra),
        )

    def all(self) -> list[Hook]:
        found = [self.snapshots, self.loss_log, self.grids, self.fid, self.checkpoints]
        return [*self.extra, *(h for h in found if h is not None)]
