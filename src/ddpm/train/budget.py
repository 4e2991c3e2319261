"""The run's clock, in one place: the time budget (`--max-minutes`) and the learning-rate decay
it drives, the snapshot marks (`--snapshot-minutes`), and stop requests (SIGINT/SIGTERM). Under
torchrun every process must stop at the same step and use the same learning rate, so the stop
request and the budget go through a host-side vote (`ddpm.train.distributed.Votes`)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from torch import Tensor

from ddpm.train import distributed
from ddpm.train.config import TrainConfig
from ddpm.train.distributed import Dist
from ddpm.train.hooks import At
from ddpm.train.state import TrainState

# what a first and a second Ctrl-C say (a FID check or pictures due at the step still run)
FIRST = b"ddpm train: stopping after this step and the work due at it, then a checkpoint\n"
AGAIN = b"ddpm train: still stopping: finishing the work under way and the checkpoint\n"


def _say(message: bytes) -> None:
    """os.write: print() in a handler could re-enter a write to stderr that the signal cut
    into. A closed stderr (`ddpm train ... | tee`, with tee gone) must not stop the stop."""
    try:
        os.write(2, message)
    except OSError:
        pass


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and exits. Once
    stopping has begun, a further signal waits for that checkpoint: noted, said once, and the
    run ends as the first one asked. Interrupting the write would leave no checkpoint of the
    steps since the last one (the files are renamed into place, so never a torn one)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.again = 0  # signals after the first, deferred
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequested:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        said = os.environ.get("RANK", "0") == "0"  # from one process
        if self.signal is None:
            self.signal = signum
            if said:
                _say(FIRST)
            return
        self.again += 1
        if self.again == 1 and said:
            _say(AGAIN)

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Budget:
    """The clock starts when the budget is made (after the data is decoded). After each step,
    `after_step` says where the run stands (`At`): the seconds spent, whether a stop was asked
    (by a signal to any process) and whether the time budget is spent (by the slowest clock).

    A time-limited cosine decay spans the budget left once the warm-up is over, so that the
    compile (in the first steps) does not spend the learning rate: in a 2-minute run it took
    half the budget, and the steps after it ran at under half the rate."""

    def __init__(self, cfg: TrainConfig, dist: Dist):
        self.steps, self.warmup = cfg.steps, max(cfg.warmup, 1)
        self.votes = distributed.Votes(dist)
        self.stop = StopRequested()  # entered by the loop around its steps
        self.t_start = time.perf_counter()
        self.deadline = None if cfg.max_minutes is None else self.t_start + 60 * cfg.max_minutes
        self.t_decay: float | None = None  # when the warm-up ended
        self.marks = sorted(cfg.snapshot_minutes)  # minutes not yet passed

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.perf_counter()

    def after_step(self, state: TrainState, loss: Tensor, ok: Tensor) -> At:
        """Where the run stands after the step that made `loss` and `ok`; sets the share of the
        budget spent that the learning-rate decay reads (state.time_fraction)."""
        now = time.perf_counter()
        fraction = decay = 0.0
        if self.deadline is not None:
            fraction = (now - self.t_start) / (self.deadline - self.t_start)
            if self.t_decay is None and state.step >= self.warmup:
                self.t_decay = now
            if self.t_decay is not None:
                decay = (now - self.t_decay) / max(self.deadline - self.t_decay, 1e-9)
        asked, fraction, decay = self.votes(float(self.stop.signal is not None), fraction, decay)
        if self.deadline is not None:
            state.time_fraction = decay
        seconds = now - self.t_start
        return At(
            state.step, self.steps, loss, ok, seconds, fraction > 1, asked > 0, self._mark(seconds)
        )

    def _mark(self, seconds: float) -> float | None:
        """The snapshot mark (minutes) passed by now, if any. A slow step can pass several
        marks: the first one is kept."""
        if not self.marks or seconds < 60 * self.marks[0]:
            return None
        minutes = self.marks.pop(0)
        while self.marks and seconds >= 60 * self.marks[0]:
            self.marks.pop(0)
        return minutes

    def close(self) -> None:
        """Wait for the last vote (every process casts the same number of votes)."""
        self.votes.close()
