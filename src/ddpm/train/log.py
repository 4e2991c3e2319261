"""What a run reports: the CSV log of loss and throughput, and the summary printed at the start."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ddpm.data.arrays import ArrayDataset
from ddpm.data.images import ImageDataset
from ddpm.models.presets import DEFAULT_PRESETS, count_parameters
from ddpm.train.config import TrainConfig
from ddpm.train.tensorboard import TensorBoard
from ddpm.viz.plots import plot, training_curve


class Log:
    """Loss and throughput to a CSV file (and the progress bar), read every `log_every` steps;
    with `tensorboard`, the same values and the sample grids go to its event files too. With
    `write` False (every process but rank 0 under torchrun) it keeps its rows, writes nothing."""

    def __init__(
        self,
        path: Path,
        resume: bool,
        tensorboard: TensorBoard | None = None,
        write: bool = True,
    ):
        self.path = path
        self.tensorboard = tensorboard
        self.write = write
        self.rows: list[dict[str, Any]] = []
        if write and resume and path.exists():
            with path.open() as f:
                self.rows = list(csv.DictReader(f))
        self.fields = ["step", "loss", "lr", "img_per_s", "nonfinite", "seconds", "fid"]

    @classmethod
    def open(cls, cfg: TrainConfig, start_step: int, resumed: bool, write: bool = True) -> Log:
        """The log of the run in cfg.out (log.csv, and TensorBoard with cfg.tensorboard)."""
        tensorboard = TensorBoard.open(cfg, start_step) if cfg.tensorboard and write else None
        return cls(Path(cfg.out) / "log.csv", resumed, tensorboard, write)

    def add(self, step: int, **values: Any) -> None:
        # a resumed run rewrites whatever was logged after its checkpoint
        self.rows = [r for r in self.rows if int(r["step"]) < step]
        self.rows.append({"step": step, **values})
        self._write()
        if self.tensorboard is not None:
            self.tensorboard.scalars(step, values)

    def drop(self, step: int) -> None:
        """Remove the row of `step` (a provisional one, which a later row replaces)."""
        self.rows = [r for r in self.rows if int(r["step"]) != step]

    def set(self, step: int, **values: Any) -> None:
        """Add values (FID) to the row of `step`, or start a row for it."""
        row = next((r for r in self.rows if int(r["step"]) == step), None)
        if row is None:
            self.rows.append({"step": step, **values})
        else:
            row.update(values)
        self._write()
        if self.tensorboard is not None:
            self.tensorboard.scalars(step, values)

    def grid(self, step: int, x: Tensor) -> None:
        """A sample grid (B, C, H, W) in [-1, 1] (written as a PNG by the loop)."""
        if self.tensorboard is not None:
            self.tensorboard.grid(step, x)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()

    def _write(self) -> None:
        if not self.write:
            return
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, self.fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)

    def plot(self, path: Path) -> None:
        """The loss curve to `path` and, when FID was measured, the FID curve to fid.png."""
        if not self.write:
            return
        for key, target in (("loss", path), ("fid", path.with_name("fid.png"))):
            panel = training_curve(self.rows, key)
            if panel is not None:
                plot([panel], target)


def describe(cfg: TrainConfig, data: ImageDataset | ArrayDataset, model: nn.Module) -> str:
    if isinstance(data, ArrayDataset):
        what = data.describe() + ", standardised"
        name = cfg.preset or DEFAULT_PRESETS[data.kind]
    else:
        H, W = data.image_size
        what = f"{data.source}, {len(data)} images {data.channels}x{H}x{W}"
        name = cfg.preset or DEFAULT_PRESETS["images"]
    variances = "learned" if cfg.learn_sigma else "fixed"
    return (
        f"data: {what}\n"
        f"model: {name}, {count_parameters(model):,} parameters\n"
        f"schedule: {cfg.schedule}, T={cfg.T}; {cfg.prediction}-prediction, {cfg.loss} loss, "
        f"{variances} variances, {cfg.timestep_sampling} t" + _describe_classes(cfg, model)
    )


def _describe_classes(cfg: TrainConfig, model: nn.Module) -> str:
    K = getattr(getattr(model, "config", None), "num_classes", None)
    if K is None:
        return ""
    return f"\nclass-conditional: {K} classes, label dropped to the null class p={cfg.cond_drop}"
