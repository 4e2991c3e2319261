"""Image files -> uint8 arrays: listing folders and zips, reading, colour modes and geometry.

Free of torch on purpose: this is what the decoding processes run, and it is the one place
that knows about PIL. Everything returns numpy uint8 arrays laid out (C, H, W).
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from ddpm.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
RESIZE_MODES = ("center-crop", "squash", "bbox")
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# What a failed decode raises: PIL's UnidentifiedImageError is an OSError, a truncated file
# raises OSError or SyntaxError (some PNG chunks), odd headers ValueError.
# Reading a zip member adds BadZipFile (CRC), NotImplementedError (compression), RuntimeError
# (encrypted) and KeyError (missing).
DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    KeyError,
    RuntimeError,
    NotImplementedError,
    zipfile.BadZipFile,
    Image.DecompressionBombError,
)


def decode_error_reason(err: BaseException) -> str:
    """A short reason for a file that did not decode (PIL names its in-memory buffer)."""
    if isinstance(err, UnidentifiedImageError):
        return "not an image format Pillow recognises"
    return str(err) or type(err).__name__


@dataclass(frozen=True)
class Entry:
    """One image of a dataset: a file, or a member of a zip."""

    name: str  # shown in messages: the path relative to the dataset's root
    path: str  # the file, or the zip holding it
    member: str | None = None  # the name inside the zip
    box: tuple[int, int, int, int] | None = None  # (x1, y1, x2, y2): 0-based, end exclusive
    label: int = -1  # -1: none


# --- listing ------------------------------------------------------------------------------------


def is_image_name(name: str) -> bool:
    """An image extension, and not macOS litter (`__MACOSX/`, `._photo.jpg`)."""
    p = PurePosixPath(name)
    return (
        p.suffix.lower() in IMAGE_EXTENSIONS
        and not p.name.startswith("._")
        and "__MACOSX" not in p.parts
    )


def list_images(root: Path) -> list[Entry]:
    """Every image under a folder (recursively) or in a .zip, sorted by name.

    When every image sits in a sub-folder and there are at least two, the sub-folder names are
    the classes (`airplane/0001.jpg`, ...): `Entry.label` indexes their sorted list.
    """
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if root.is_dir():
        names = []
        # os.walk: directory entries carry their type, so this costs no stat() per file
        for folder, _, files in os.walk(root):
            rel = Path(folder).relative_to(root).as_posix()
            prefix = "" if rel == "." else rel + "/"
            names += [prefix + f for f in files if is_image_name(prefix + f)]
        names.sort()
        entries = [Entry(n, str(root / n)) for n in names]
    else:
        if root.suffix.lower() != ".zip":
            raise DataError(f"{root}: expected a folder or a .zip of images, got a file")
        try:
            with zipfile.ZipFile(root) as zf:
                names = sorted(n for n in zf.namelist() if not n.endswith("/") and is_image_name(n))
        except Exception as e:  # BadZipFile, OSError, ValueError, ... on a damaged archive
            raise DataError(f"{root}: not a readable zip archive ({e})") from None
        entries = [Entry(n, str(root), member=n) for n in names]
    if not entries:
        raise DataError(f"{root}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return entries


def folder_classes(entries: list[Entry]) -> tuple[list[Entry], list[str] | None]:
    """Label entries by their parent folder when there are class sub-folders."""
    parents = [PurePosixPath(e.name).parent.as_posix() for e in entries]
    classes = sorted(set(parents))
    if len(classes) < 2 or "." in classes:
        return entries, None
    index = {c: i for i, c in enumerate(classes)}
    labelled = [Entry(e.name, e.path, e.member, e.box, index[p]) for e, p in zip(entries, parents)]
    return labelled, classes


# --- reading ------------------------------------------------------------------------------------

_open: dict[tuple[int, str], zipfile.ZipFile] = {}  # (process id, path) -> open zip


def _zip(path: str) -> zipfile.ZipFile:
    # One handle per process: a handle inherited through fork shares its file offset.
    key = (os.getpid(), path)
    if key not in _open:
        _open[key] = zipfile.ZipFile(path)
    return _open[key]


def close_files() -> None:
    """Forget this process's open archives (a zip rewritten since must be opened afresh)."""
    for (pid, _), f in list(_open.items()):
        if pid == os.getpid():
            f.close()
    _open.clear()


def read_bytes(entry: Entry) -> bytes:
    if entry.member is None:
        return Path(entry.path).read_bytes()
    return _zip(entry.path).read(entry.member)


# --- colour -------------------------------------------------------------------------------------


def is_gray(img: Image.Image) -> bool:
    """Whether an image holds no colour: a gray mode, or a palette of grays only."""
    if img.mode in GRAY_MODES:
        return True
    if img.mode in ("P", "PA"):
        pal = np.asarray(img.getpalette() or [0], dtype=np.uint8)
        rgb = pal[: len(pal) // 3 * 3].reshape(-1, 3)
        return bool((rgb == rgb[:, :1]).all())
    return False


def to_mode(img: Image.Image, channels: int | None) -> Image.Image:
    """Any PIL image -> L (1 channel) or RGB (3; None: L if the image is gray, else RGB).

    16-bit gray is scaled to 8 bits (65535 -> 255), transparency is composited on white,
    CMYK and YCbCr go through PIL's conversions.
    """
    if channels is None:
        channels = 1 if is_gray(img) else 3
    if img.mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.float64) / 65535.0 * 255.0
        img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode in ("I", "F"):  # 32-bit: older Pillow opens 16-bit PNGs like this
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa") or "transparency" in img.info:
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    mode = "L" if channels == 1 else "RGB"
    return img if img.mode == mode else img.convert(mode)


# --- geometry -----------------------------------------------------------------------------------

Window = tuple[float, float, float, float]  # (left, top, right, bottom) in source pixels


def crop_window(
    width: int,
    height: int,
    size: tuple[int, int],
    mode: str,
    box: tuple[int, int, int, int] | None = None,
) -> Window:
    """The part of a (width x height) photo that becomes the (H, W) output.

    center-crop: the largest centred window of the output's aspect ratio. squash: the whole
    photo. bbox: the smallest window of the output's aspect ratio that holds `box`, moved
    inside the photo (and clipped to it when the photo is too small, which squashes a little).
    """
    H, W = size
    if mode == "squash":
        return (0.0, 0.0, float(width), float(height))
    if mode == "center-crop":
        box = (0, 0, width, height)
        ww, wh = min(width, height * W / H), min(height, width * H / W)
    elif mode == "bbox":
        if box is None:
            raise DataError("resize mode bbox needs bounding boxes (stanford-cars:PATH)")
        x1, y1 = max(0, min(box[0], width - 1)), max(0, min(box[1], height - 1))
        x2, y2 = max(x1 + 1, min(box[2], width)), max(y1 + 1, min(box[3], height))
        box = (x1, y1, x2, y2)
        bw, bh = x2 - x1, y2 - y1
        ww, wh = max(bw, bh * W / H), max(bh, bw * H / W)
        ww, wh = min(ww, width), min(wh, height)
    else:
        raise DataError(f"unknown resize mode {mode!r}; expected one of {', '.join(RESIZE_MODES)}")
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    left = min(max(cx - ww / 2, 0.0), width - ww)
    top = min(max(cy - wh / 2, 0.0), height - wh)
    return (left, top, left + ww, top + wh)


def resize_image(
    img: Image.Image,
    size: tuple[int, int],
    mode: str = "center-crop",
    box: tuple[int, int, int, int] | None = None,
) -> Image.Image:
    """Resize to (H, W) through `crop_window` (bicubic, antialiased)."""
    H, W = size
    window = crop_window(img.width, img.height, size, mode, box)
    if window == (0.0, 0.0, float(W), float(H)) and img.size == (W, H):
        return img
    return img.resize((W, H), Image.Resampling.BICUBIC, box=window)


def _draft(img: Image.Image, window: Window, size: tuple[int, int]) -> Window:
    """Let the JPEG decoder shrink by 2/4/8 while keeping >= 2x the output's pixels (much
    faster for photos); returns the window in the reduced image's pixels."""
    if img.format != "JPEG":
        return window
    H, W = size
    scale = min((window[2] - window[0]) / (2 * W), (window[3] - window[1]) / (2 * H))
    if scale < 2:
        return window
    full = img.size
    img.draft(img.mode, (math.ceil(full[0] / scale), math.ceil(full[1] / scale)))
    sx, sy = img.size[0] / full[0], img.size[1] / full[1]
    return (window[0] * sx, window[1] * sy, window[2] * sx, window[3] * sy)


def decode(
    data: bytes,
    channels: int | None,
    size: tuple[int, int],
    resize: str = "center-crop",
    box: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, bool]:
    """Image file bytes -> (uint8 array (C, H, W), whether it was upscaled).

    `channels` None keeps the image's own: 1 for gray images, 3 otherwise.
    """
    H, W = size
    with Image.open(io.BytesIO(data)) as img:
        window = crop_window(img.width, img.height, size, resize, box)
        upscaled = window[2] - window[0] < W - 1e-6 or window[3] - window[1] < H - 1e-6
        window = _draft(img, window, size)
        img.load()
        img = to_mode(img, channels)
        if window != (0.0, 0.0, float(W), float(H)) or img.size != (W, H):
            img = img.resize((W, H), Image.Resampling.BICUBIC, box=window)
        arr = np.asarray(img, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr), upscaled


def convert_array(
    hwc: np.ndarray, channels: int | None, size: tuple[int, int], resize: str
) -> tuple[np.ndarray, bool]:
    """An already-decoded uint8 (H, W, 3) or (H, W) picture -> ((C, H, W), upscaled)."""
    img = Image.fromarray(hwc)
    window = crop_window(img.width, img.height, size, resize)
    H, W = size
    upscaled = window[2] - window[0] < W - 1e-6 or window[3] - window[1] < H - 1e-6
    img = resize_image(to_mode(img, channels), size, resize)
    arr = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)), upscaled


# --- work for decoding processes -------------------------------------------------------------


@dataclass
class Decoded:
    """What decoding a chunk of entries gives back (pickled from a worker process)."""

    images: np.ndarray  # uint8 (n_ok, C, H, W); C = 1 only when `channels` was None and all gray
    ok: list[int]  # positions in the chunk that decoded
    errors: list[tuple[int, str]]  # (position, reason) for those that did not
    upscaled: list[int]  # positions that were smaller than the output


def decode_chunk(
    entries: list[Entry], channels: int | None, size: tuple[int, int], resize: str
) -> Decoded:
    arrays, ok, errors, upscaled = [], [], [], []
    for i, e in enumerate(entries):
        try:
            arr, up = decode(read_bytes(e), channels, size, resize, e.box)
        except DECODE_ERRORS as err:
            errors.append((i, decode_error_reason(err)))
            continue
        arrays.append(arr)
        ok.append(i)
        if up:
            upscaled.append(i)
    H, W = size
    C = max((a.shape[0] for a in arrays), default=channels or 1)
    out = np.empty((len(arrays), C, H, W), dtype=np.uint8)
    for j, a in enumerate(arrays):
        out[j] = a  # a gray (1, H, W) broadcasts into 3 channels
    return Decoded(out, ok, errors, upscaled)


def native_size(entries: list[Entry], tries: int = 10) -> tuple[int, int] | None:
    """(H, W) of the first of `entries` whose header opens (None if none of `tries` do)."""
    for e in entries[:tries]:
        try:
            with Image.open(io.BytesIO(read_bytes(e))) as img:
                return img.height, img.width
        except DECODE_ERRORS:
            continue
    return None


@dataclass
class Probe:
    """A file's header: enough to decide channels, spot non-images and small images."""

    ok: bool
    reason: str = ""
    gray: bool = True
    upscaled: bool = False


def probe_chunk(entries: list[Entry], size: tuple[int, int], resize: str) -> list[Probe]:
    """Open each header (no pixel decoding): cheap checks before streaming."""
    H, W = size
    out = []
    for e in entries:
        try:
            f = open(e.path, "rb") if e.member is None else io.BytesIO(read_bytes(e))  # noqa: SIM115
            with f, Image.open(f) as img:
                window = crop_window(img.width, img.height, size, resize, e.box)
                small = window[2] - window[0] < W - 1e-6 or window[3] - window[1] < H - 1e-6
                out.append(Probe(True, gray=is_gray(img), upscaled=small))
        except DECODE_ERRORS as err:
            out.append(Probe(False, decode_error_reason(err)))
    return out
