"""Checkpoints as plain data, written atomically and loaded without executing code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts saved with `torch.save`
and loaded with `torch.load(weights_only=True)`, which refuses anything that would run code
(a crafted pickle raises instead of executing). Writes go to a temporary file in the same
folder, are flushed and fsynced, then renamed over the target, so a crash at any moment
leaves the previous file whole.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

FORMAT = "ddpm-from-scratch/1"


class CheckpointError(Exception):
    """A checkpoint could not be read or does not fit; the message names the file."""


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint safely; raise CheckpointError with a clear message on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on unusual pickle protocols
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = [ln.strip() for ln in str(e).splitlines() if "unsupported global" in ln.lower()]
        if not found:  # garbage rather than a crafted file
            raise CheckpointError(f"{path}: not a readable checkpoint (corrupt pickle)") from None
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than plain data, which "
            f"would run code when unpickled ({found[0]})"
        ) from None
    except Exception as e:  # a corrupt file can fail anywhere inside the unpickler
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ddpm-from-scratch checkpoint (format {FORMAT})")
    return ckpt


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Checkpoints `ckpt-<step>.pt` in a folder, oldest first."""
    folder = Path(folder)
    found = []
    for p in folder.glob("ckpt-*.pt"):
        try:
            found.append((int(p.stem.split("-", 1)[1]), p))
        except ValueError:
            continue
    return [p for _, p in sorted(found)]


def prune_checkpoints(folder: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints (best.pt is never touched), and the
    temporary files of writes that a crash interrupted."""
    for p in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)
    for p in Path(folder).glob(".ckpt-*.pt.*.tmp"):
        p.unlink(missing_ok=True)
