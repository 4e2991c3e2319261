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
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ddpm.errors import CheckpointError
from ddpm.io.paths import written_atomically

FORMAT = "ddpm-from-scratch/1"


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_atomically(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def resolve_checkpoint(path: str | os.PathLike, also: str = "") -> Path:
    """A checkpoint file as given, or a run folder's newest `ckpt-<step>.pt` (as --resume).
    `also` adds to what a folder without checkpoints is said to have been searched for."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if found:
            return found[-1]
        best = (
            " (best.pt is there: pass that file to use it)" if (path / "best.pt").is_file() else ""
        )
        also = f" {also}" if also else ""
        raise CheckpointError(
            f"{path}: a folder without checkpoints: looked for ckpt-<step>.pt files, which "
            f"`ddpm train --out {path}` writes{also}{best}"
        )
    if not path.exists():
        raise CheckpointError(
            f"{path}: no such file or folder; expected a checkpoint file (ckpt-<step>.pt) or a "
            "run folder holding them"
        )
    return path


def describe_file(path: Path) -> str:
    """What a file that is not a checkpoint looks like: 'a text file starting with ...'."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(256)
    except OSError as e:
        return f"a file that cannot be read ({e.strerror})"
    if size == 0:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return f"a damaged zip archive of {size:,} bytes (a truncated copy?)"
        if not any(n.endswith("data.pkl") for n in names):
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            return f"a zip archive of other files ({shown})"
        return f"a torch.save archive of {size:,} bytes that does not unpickle (damaged?)"
    if head.startswith(b"\x80"):
        return "a pickle in torch's legacy (non-zip) format, which is not loaded"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"{size:,} bytes of unrecognised binary data"
    first = (text.strip().splitlines() or [""])[0][:40]
    return f"a text file starting with {first!r}"


def _describe_object(obj: Any) -> str:
    if isinstance(obj, dict):
        keys = [str(k) for k in list(obj)[:4]]
        return f"a dict with keys {', '.join(keys)}{', ...' if len(obj) > 4 else ''}"
    return f"a {type(obj).__name__}"


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint safely (a file, or a run folder's newest); raise CheckpointError with
    a message that says what was expected and what was found."""
    path = resolve_checkpoint(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on unusual pickle protocols
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = [ln.strip() for ln in str(e).splitlines() if "unsupported global" in ln.lower()]
        if not found:  # garbage rather than a crafted file
            raise CheckpointError(
                f"{path}: not a checkpoint: expected a file written by `ddpm train`, found "
                f"{describe_file(path)}"
            ) from None
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than plain data, which "
            f"would run code when unpickled ({found[0]})"
        ) from None
    except Exception:  # a corrupt file can fail anywhere inside the unpickler
        raise CheckpointError(
            f"{path}: not a checkpoint: expected a file written by `ddpm train`, found "
            f"{describe_file(path)}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a ddpm-from-scratch checkpoint: expected a dict with format "
            f"{FORMAT!r}, found {_describe_object(ckpt)}"
        )
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
