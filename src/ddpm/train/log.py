"""What a run reports: the CSV log of loss and throughput, and the summary printed at the start."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from torch import nn

from ddpm.data import ImageDataset
from ddpm.images import loss_curve
from ddpm.train.config import TrainConfig
from ddpm.unet import count_parameters


class Log:
    """Loss and throughput to a CSV file (and the progress bar), read every `log_every` steps."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if resume and path.exists():
            with path.open() as f:
                self.rows = list(csv.DictReader(f))
        self.fields = ["step", "loss", "lr", "img_per_s", "nonfinite", "seconds", "fid"]

    def add(self, step: int, **values: Any) -> None:
        # a resumed run rewrites whatever was logged after its checkpoint
        self.rows = [r for r in self.rows if int(r["step"]) < step]
        self.rows.append({"step": step, **values})
        self._write()

    def set(self, step: int, **values: Any) -> None:
        """Add values (FID) to the row of `step`, or start a row for it."""
        row = next((r for r in self.rows if int(r["step"]) == step), None)
        if row is None:
            self.rows.append({"step": step, **values})
        else:
            row.update(values)
        self._write()

    def _write(self) -> None:
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, self.fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)

    def plot(self, path: Path) -> None:
        pts = [
            (int(r["step"]), float(r["loss"])) for r in self.rows if r.get("loss") not in ("", None)
        ]
        if pts:
            loss_curve([s for s, _ in pts], [v for _, v in pts], path)


def describe(cfg: TrainConfig, data: ImageDataset, model: nn.Module) -> str:
    H, W = data.image_size
    return (
        f"data: {data.source}, {len(data)} images {data.channels}x{H}x{W}\n"
        f"model: {cfg.preset}, {count_parameters(model):,} parameters\n"
        f"schedule: {cfg.schedule}, T={cfg.T}; {cfg.prediction}-prediction, {cfg.loss} loss"
    )
