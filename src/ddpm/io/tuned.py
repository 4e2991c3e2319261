"""Time grids tuned for one model (`ddpm tune-steps`), kept beside it as JSON: for
`ckpt-0000600.pt`, `ckpt-0000600.tuned-steps.json`; for a diffusers folder, its
`tuned-steps.json`. A new checkpoint of the same run has none: the grid belongs to the weights
it was tuned on.

    {"grids": {"10": [999, 935, ...]}, "tuned_with": {"10": {...}}}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ddpm.errors import CheckpointError
from ddpm.io.paths import written_atomically


def tuned_path(model: str | os.PathLike) -> Path:
    """Where the tuned grids of the model file (or diffusers folder) `model` are kept."""
    model = Path(model)
    if model.is_dir():
        return model / "tuned-steps.json"
    return model.with_name(f"{model.stem}.tuned-steps.json")


def read_tuned(model: str | os.PathLike) -> dict[int, tuple[int, ...]]:
    """The grids tuned for `model`, by number of steps ({} where there are none)."""
    path = tuned_path(model)
    if not path.is_file():
        return {}
    try:
        grids = json.loads(path.read_text())["grids"]
        return {int(k): tuple(int(t) for t in v) for k, v in grids.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a file of tuned grids ({e})") from None


def write_tuned(model: str | os.PathLike, grid: list[int], info: dict[str, Any]) -> Path:
    """Add (or replace) the grid of len(grid) steps beside `model`; `info` says how it was
    tuned. Returns the file written."""
    path = tuned_path(model)
    data: dict[str, Any] = {"grids": {}, "tuned_with": {}}
    if path.is_file():
        read_tuned(model)  # a damaged file is named, not overwritten
        data = json.loads(path.read_text())
    data["grids"][str(len(grid))] = list(grid)
    data.setdefault("tuned_with", {})[str(len(grid))] = info
    data["grids"] = dict(sorted(data["grids"].items(), key=lambda kv: int(kv[0])))
    with written_atomically(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")
    return path
