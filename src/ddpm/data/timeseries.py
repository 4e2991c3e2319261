"""Reading sequences: the UCR/UEA `.ts` text format, with its train/test splits and labels.

A `.ts` file (the format of the UCR/UEA archive and of aeon/sktime) has comment lines (`#`),
header lines (`@problemName`, `@univariate`, `@dimensions`, `@equalLength`, `@seriesLength`,
`@classLabel true A B C`, ...), then after `@data` one series per line: each channel's
values separated by commas, channels separated by colons, the class label last.

`--data timeseries:DIR` reads `DIR/*_TRAIN.ts` and `DIR/*_TEST.ts` (the archive's layout;
`--split` picks one or both), `timeseries:FILE.ts` one file. Series of different lengths
are refused with the lengths found, or, with `pad=True`, padded at the end with their last
value up to the longest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddpm.errors import DataError

SPLITS = ("train", "test", "both")


@dataclass
class SeriesSet:
    """Sequences read from `.ts` files: x float32 (N, C, L), labels int64 (N,) or None."""

    x: np.ndarray
    labels: np.ndarray | None
    class_names: list[str] | None
    description: str
    padded: int = 0  # how many series were padded to the longest


def _parse_header(path: Path, lines: list[str]) -> tuple[dict[str, str], int]:
    """The `@key value` lines before `@data`, and the index of the first data line."""
    header: dict[str, str] = {}
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("@"):
            raise DataError(f"{path}:{i + 1}: expected a header line (@...) before @data")
        key, _, value = line[1:].partition(" ")
        if key.lower() == "data":
            return header, i + 1
        header[key.lower()] = value.strip()
    raise DataError(f"{path}: no @data line: not a UCR/UEA .ts file")


def _values(path: Path, lineno: int, text: str) -> np.ndarray:
    if "(" in text:
        raise DataError(f"{path}:{lineno}: series with time stamps are not supported")
    try:
        v = np.array([float(s) for s in text.split(",")], dtype=np.float64)
    except ValueError:
        bad = next(s for s in text.split(",") if not _is_float(s))
        raise DataError(f"{path}:{lineno}: {bad.strip()!r} is not a number") from None
    if not np.isfinite(v).all():
        raise DataError(
            f"{path}:{lineno}: missing or non-finite values (? or NaN) are not supported"
        )
    return v


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def read_ts(path: str | Path, pad: bool = False) -> SeriesSet:
    """Read one `.ts` file into (N, C, L) float32 and its labels."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such .ts file")
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None
    header, first = _parse_header(path, lines)
    labelled = header.get("classlabel", "false").split()[:1] == ["true"]
    names = header.get("classlabel", "").split()[1:] if labelled else None
    series: list[list[np.ndarray]] = []
    labels: list[int] = []
    for i in range(first, len(lines)):
        line = lines[i].strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if labelled:
            label = parts.pop().strip()
            if names is not None and names and label not in names:
                raise DataError(
                    f"{path}:{i + 1}: class {label!r} is not among the header's "
                    f"@classLabel values ({', '.join(names)})"
                )
            labels.append(names.index(label) if names else -1)
        series.append([_values(path, i + 1, p) for p in parts])
    if not series:
        raise DataError(f"{path}: no series after @data")
    channels = {len(s) for s in series}
    if len(channels) > 1:
        raise DataError(f"{path}: series have different numbers of channels: {sorted(channels)}")
    lengths = {len(c) for s in series for c in s}
    L = max(lengths)
    padded = 0
    if len(lengths) > 1:
        if not pad:
            raise DataError(
                f"{path}: series lengths differ ({min(lengths)} to {L}); pass --pad-sequences "
                "to pad each at the end with its last value, or give equal-length series"
            )
        padded = sum(any(len(c) < L for c in s) for s in series)
        series = [[np.pad(c, (0, L - len(c)), mode="edge") for c in s] for s in series]
    x = np.stack([np.stack(s) for s in series]).astype(np.float32)
    y = np.array(labels, dtype=np.int64) if labelled and names else None
    return SeriesSet(x, y, names or None, header.get("problemname", path.stem), padded)


def find_splits(root: Path) -> dict[str, Path]:
    """{"train": ..., "test": ...} for the `*_TRAIN.ts` / `*_TEST.ts` files in a folder."""
    found: dict[str, Path] = {}
    for split in ("train", "test"):
        hits = sorted(root.glob(f"*_{split.upper()}.ts"))
        if len(hits) > 1:
            raise DataError(f"{root}: several *_{split.upper()}.ts files: {hits[0].name}, ...")
        if hits:
            found[split] = hits[0]
    return found


def resolve_timeseries(
    path: str | Path, split: str | None = None, pad: bool = False, default: str = "train"
) -> SeriesSet:
    """`timeseries:PATH`: a folder with *_TRAIN.ts / *_TEST.ts (split `default` unless told),
    or one .ts file (which has no splits)."""
    root = Path(path)
    if split is not None and split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if root.is_file():
        if split is not None:
            raise DataError(f"{root}: --split needs a folder with *_TRAIN.ts and *_TEST.ts")
        return read_ts(root, pad)
    if not root.is_dir():
        raise DataError(f"{root}: no such .ts file or folder")
    splits = find_splits(root)
    if not splits:
        raise DataError(f"{root}: no *_TRAIN.ts or *_TEST.ts file in this folder")
    want = ["train", "test"] if split == "both" else [split or default]
    missing = [s for s in want if s not in splits]
    if missing:
        raise DataError(f"{root}: no *_{missing[0].upper()}.ts file for split {missing[0]}")
    parts = [read_ts(splits[s], pad) for s in want]
    if len(parts) == 1:
        one = parts[0]
        one.description = f"{one.description} ({want[0]})"
        return one
    a, b = parts
    if a.x.shape[1:] != b.x.shape[1:]:
        raise DataError(
            f"{root}: the train and test series differ in shape: {a.x.shape[1:]} vs "
            f"{b.x.shape[1:]} (C, L)"
        )
    if a.class_names != b.class_names:
        raise DataError(f"{root}: the train and test files list different classes")
    labels = np.concatenate([a.labels, b.labels]) if a.labels is not None else None
    x = np.concatenate([a.x, b.x])
    return SeriesSet(
        x, labels, a.class_names, f"{a.description} (train + test)", a.padded + b.padded
    )
