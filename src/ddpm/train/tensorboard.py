"""`ddpm train --tensorboard`: the log's scalars, the sample grids, FID and the run's
configuration as TensorBoard event files under `<out>/tensorboard/`.

TensorBoard is an optional extra (`pip install tensorboard`); without it
the run goes on and says once that it is skipping TensorBoard.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from torch import Tensor

from ddpm.data.images import to_uint8
from ddpm.train.config import TrainConfig
from ddpm.viz.grids import make_grid

# log.csv column -> TensorBoard tag
TAGS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "img_per_s": "train/img_per_s",
    "nonfinite": "train/skipped_steps",
    "fid": "eval/fid",
}


class TensorBoard:
    """A SummaryWriter for one run; a resumed run drops the events after its checkpoint."""

    def __init__(self, writer: Any):
        self.writer = writer

    @classmethod
    def open(cls, cfg: TrainConfig, start_step: int) -> TensorBoard | None:
        """The writer for `cfg.out`, or None (with one warning) when tensorboard is missing."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn(
                "--tensorboard: the tensorboard package is not installed, so this run logs to "
                "log.csv only (pip install tensorboard)",
                stacklevel=2,
            )
            return None
        folder = Path(cfg.out) / "tensorboard"
        writer = SummaryWriter(str(folder), purge_step=start_step if start_step > 0 else None)
        if start_step == 0:
            writer.add_text("config", config_table(cfg), 0)
        return cls(writer)

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if key in TAGS and value not in ("", None):
                self.writer.add_scalar(TAGS[key], float(value), step)

    def grid(self, step: int, x: Tensor) -> None:
        """A sample grid, x: (B, C, H, W) in [-1, 1]."""
        self.writer.add_image("samples", make_grid(to_uint8(x.cpu())), step, dataformats="CHW")

    def close(self) -> None:
        self.writer.close()


def config_table(cfg: TrainConfig) -> str:
    """The run's settings as a two-column Markdown table (TensorBoard's text tab renders it)."""
    rows = [f"| {k} | `{v}` |" for k, v in dataclasses.asdict(cfg).items()]
    return "| setting | value |\n|---|---|\n" + "\n".join(rows)
