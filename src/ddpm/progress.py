"""Progress of long work: a tqdm bar on a terminal, a plain line every few seconds elsewhere.

A bar redrawn with carriage returns is right for a terminal and wrong for a log file, where it
becomes one endless line. So `Progress` looks at where it writes (stderr by default): a
terminal gets tqdm; anything else (a pipe, a file, a CI log) gets one line every `interval`
seconds and a last line at the end, such as

    training: 150/600 steps (25%), 2.6 steps/s, 0:58 elapsed, ~2:53 left, loss 0.0381

`update` does no I/O between lines (no host sync either: it only counts), so it is cheap
enough to call once per network evaluation.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

INTERVAL = 30.0  # seconds between lines when not on a terminal


def _now() -> float:
    return time.monotonic()


def plural(unit: str) -> str:
    """step -> steps, batch -> batches."""
    return unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")


def count(n: int, unit: str) -> str:
    """1 step, 2 steps."""
    return f"{n} {unit if n == 1 else plural(unit)}"


def _clock(seconds: float) -> str:
    s = round(seconds)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Count `total` units of work, shown as `desc: n/total unit`.

    enabled=False shows nothing (`--quiet`); leave=False clears the bar when done (a bar
    shown below another). `time_limit`: seconds from now at which the work stops whatever
    the count (a time-limited training run); the total shown is then the count that the rate
    so far reaches by that time, when that is fewer. `file` defaults to sys.stderr at
    construction; `interval` is the seconds between plain lines (default: INTERVAL); `clock`
    exists for tests.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str = "step",
        enabled: bool = True,
        initial: int = 0,
        leave: bool = True,
        file: TextIO | None = None,
        interval: float | None = None,
        clock: Callable[[], float] | None = None,
        time_limit: float | None = None,
    ):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.limit = total  # the count asked for; `total` may shrink to the time limit's
        self.file = file if file is not None else sys.stderr
        self.enabled = enabled
        self.interval = INTERVAL if interval is None else interval
        self.clock = clock or _now
        self.postfix: dict[str, Any] = {}
        self.start = self.last = self.clock()
        self.ends_at = None if time_limit is None else self.start + time_limit
        self.start_n = initial
        self.closed = False
        self.bar = None
        if enabled and _is_terminal(self.file):
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                file=self.file,
                dynamic_ncols=True,
                leave=leave,
            )

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.ends_at is not None and self.enabled:  # nothing to project when quiet
            self._project(self.clock())
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled:
            now = self.clock()
            if now - self.last >= self.interval:
                self.last = now
                self._line(now)

    def _project(self, now: float) -> None:
        """Shrink the total to the count reached by the time limit at the rate so far."""
        elapsed, done = now - self.start, self.n - self.start_n
        if elapsed <= 0 or done <= 0:
            return
        reached = self.n + int(done / elapsed * max(self.ends_at - now, 0.0))
        total = reached if self.limit is None else min(self.limit, reached)
        if total != self.total:
            self.total = total
            if self.bar is not None:
                self.bar.total = total

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the counts (on the bar, or at the end of each line)."""
        self.postfix.update(values)
        if self.bar is not None:
            self.bar.set_postfix(**self.postfix)

    def write(self, message: str) -> None:
        """A message on its own line, which does not break the bar."""
        if self.bar is not None:
            self.bar.write(message, file=self.file)
        else:
            print(message, file=self.file, flush=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.n > self.start_n:
            self._line(self.clock(), final=True)

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self.start
        done = self.n - self.start_n
        counts = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.desc}: {counts} {plural(self.unit)}{pct}"]
        if final:
            parts.append(f"in {_clock(elapsed)}")
        else:
            rate = done / elapsed if elapsed > 0 else 0.0
            parts.append(
                f"{rate:.3g} {plural(self.unit)}/s"
                if rate >= 1 or rate == 0
                else f"{1 / rate:.3g} s/{self.unit}"
            )
            parts.append(f"{_clock(elapsed)} elapsed")
            if self.total and rate > 0:
                parts.append(f"~{_clock((self.total - self.n) / rate)} left")
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        print(", ".join(parts), file=self.file, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _is_terminal(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False
