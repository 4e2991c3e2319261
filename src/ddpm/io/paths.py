"""Output paths, checked before any work starts: a bad `--out` fails in a second with one line,
not after an hour of sampling with a traceback.

Each check leaves nothing behind: it looks at the suffix, at whether the path is a folder or a
file, and at the nearest existing folder above it, which must take a file (a nameless
temporary file is opened there and closed at once: permission bits do not tell root, a
read-only mount or a pseudo file system such as /proc or /sys). The missing folders below it
are created when the file is written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ddpm.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # what Pillow writes for us
SUFFIXES = {
    "image": IMAGE_SUFFIXES,
    "gif": (".gif",),
    "npz": (".npz",),
    "json": (".json",),
    # `ddpm sample --out`: a grid or plot, or the samples as an array (points: also .csv)
    "samples": (*IMAGE_SUFFIXES, ".npy", ".csv"),
}


def _writable_base(path: Path) -> None:
    """The nearest existing ancestor of `path` must be a writable folder."""
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{path}: cannot write here: {parent} is a file, not a folder")
    _probe(path, parent)


def _probe(path: Path, folder: Path) -> None:
    """Open (and at once close) a nameless temporary file in `folder`, or say why not."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(f"{path}: cannot write here: {folder}: {reason}") from None


def check_output_file(path: str | os.PathLike, kind: str, what: str = "file") -> Path:
    """Raise ConfigError unless `path` can be written as a file of `kind` (a key of SUFFIXES:
    image, gif, npz, json). `what` names it in the message ("sample grid")."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; expected the name of a {what} to write")
    allowed = SUFFIXES[kind]
    if path.suffix.lower() not in allowed:
        found = f"'{path.suffix}'" if path.suffix else "no extension"
        raise ConfigError(f"{path}: a {what} must end in {', '.join(allowed)}; got {found}")
    return check_writable_file(path)


def check_writable_file(path: str | os.PathLike) -> Path:
    """Raise ConfigError unless a file can be written at `path`, whatever its suffix."""
    path = Path(path)
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{path}: the file exists and is not writable")
    _writable_base(path)
    return path


def check_output_folder(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Raise ConfigError unless `path` is a writable folder or can be created as one."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{path}: is a file; expected a folder for the {what}")
        _probe(path, path)
        return path
    _writable_base(path)
    return path


def umask() -> int:
    """This process's file-creation mask (os.umask can only be read by setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def shareable(path: str | os.PathLike) -> None:
    """Give `path` the permissions a new file (or folder) gets under the umask: a temporary
    file is made owner-only (0600, 0700), which a checkpoint meant to be shared must not keep."""
    mode = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, mode & ~umask())


@contextmanager
def written_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside `path` to write; when the block ends it gets the umask's
    permissions and is renamed over `path` in one step (readers never see half a file); on an
    error or an interrupt it is removed and `path` is left as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
