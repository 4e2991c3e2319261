"""Data that is not pictures: points / tabular rows (N, D) and sequences (N, C, L) as floats.

`--data` takes, besides images (`ddpm.data.images`):
  toy:NAME            a 2-D toy distribution (`ddpm.data.toys`), drawn afresh for every batch
  PATH.npy            (N, D) points or (N, C, L) sequences, numeric
  PATH.csv            (N, D) numeric columns (a header row of names is skipped)
  timeseries:PATH     UCR/UEA `.ts` sequences with labels (`ddpm.data.timeseries`); PATH.ts also
Images arrive as uint8 and are mapped to [-1, 1]; these are standardised instead, per column
(points) or per channel (sequences): z = (x - mean) / std, with mean and std from the training
data. The `Standardizer` is stored in the checkpoint and inverted on samples, so samples come
back in the data's own units. Random flips, an image augmentation, do not apply.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ddpm.data import toys
from ddpm.data.stream import batch_indices, to_device
from ddpm.data.timeseries import resolve_timeseries
from ddpm.errors import DataError

KINDS = ("images", "points", "sequences")
TOY_REFERENCE = 20_000  # points kept of a toy: its scaler, plots and the training reference
REFERENCE_ROWS = {"points": 2000, "sequences": 64}  # kept in checkpoints, for plots


@dataclass
class Standardizer:
    """z = (x - mean) / std per column (points) or per channel (sequences), and back.

    mean and std are float32, shaped to broadcast against one sample: (D,) or (C, 1).
    """

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, x: Tensor) -> Standardizer:
        """From data (N, D) or (N, C, L); a constant column or channel keeps std 1."""
        x = x.double()
        dims = (0,) if x.ndim == 2 else (0, *range(2, x.ndim))
        mean = x.mean(dims, keepdim=True)[0]
        std = x.std(dims, keepdim=True, correction=0)[0]
        std = torch.where(std > 1e-12 * mean.abs().clamp(min=1), std, torch.ones_like(std))
        return cls(mean.float(), std.float())

    def apply(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def invert(self, z: Tensor) -> Tensor:
        return z * self.std.to(z.device) + self.mean.to(z.device)

    def state(self) -> dict[str, Tensor]:
        return {"mean": self.mean.clone(), "std": self.std.clone()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Standardizer:
        return cls(torch.as_tensor(state["mean"]).float(), torch.as_tensor(state["std"]).float())


@dataclass
class ArrayInfo:
    """What a checkpoint keeps of points or sequences (its "data" entry, plain data): the kind,
    the standardisation, class names, a few rows in the data's units (for plots), the toy."""

    kind: str  # "points" or "sequences"
    scaler: Standardizer
    class_names: list[str] | None = None
    reference: Tensor | None = None  # (m, D) or (m, C, L), data units
    reference_labels: Tensor | None = None  # int64 (m,)
    toy: str | None = None
    source: str = ""
    columns: list[str] | None = None  # a CSV header's column names (absent before: x1..xD)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            **self.scaler.state(),
            "class_names": self.class_names,
            "reference": self.reference,
            "reference_labels": self.reference_labels,
            "toy": self.toy,
            "source": self.source,
            "columns": self.columns,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArrayInfo:
        if d.get("kind") not in ("points", "sequences"):
            raise ValueError(f"unknown data kind {d.get('kind')!r}")
        return cls(
            d["kind"],
            Standardizer.from_state(d),
            d.get("class_names"),
            d.get("reference"),
            d.get("reference_labels"),
            d.get("toy"),
            d.get("source", ""),
            d.get("columns"),
        )


@dataclass
class ArrayDataset:
    """Points or sequences, standardised: what the batch stream indexes.

    For a toy, `x` is a fixed reference sample (the scaler's, the plots') and every batch is
    drawn afresh from the distribution (`toy` names it).
    """

    x: Tensor  # float32 (N, D) or (N, C, L), standardised
    kind: str  # "points" or "sequences"
    scaler: Standardizer
    labels: Tensor | None = None  # int64 (N,)
    class_names: list[str] | None = None
    source: str = ""
    toy: str | None = None
    columns: list[str] | None = None  # a CSV header's names, for plots and written CSVs

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample's shape: (D,) or (C, L)."""
        return tuple(self.x.shape[1:])

    @property
    def channels(self) -> int:
        return self.x.shape[1]

    def raw(self) -> Tensor:
        """The data in its own units (N, ...)."""
        return self.scaler.invert(self.x)

    def describe(self) -> str:
        n = f"{len(self)} " if self.toy is None else "fresh "
        what = "points" if self.kind == "points" else "sequences"
        shape = "x".join(map(str, self.shape))
        classes = f", {len(self.class_names)} classes" if self.class_names else ""
        return f"{self.source}, {n}{what} of shape {shape}{classes}"

    def info(self) -> ArrayInfo:
        """What a checkpoint keeps of this data, with up to REFERENCE_ROWS rows for plots."""
        k = min(len(self), REFERENCE_ROWS[self.kind])
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(0))[:k]
        labels = self.labels[idx].clone() if self.labels is not None else None
        ref = self.raw()[idx].clone()
        return ArrayInfo(
            self.kind,
            self.scaler,
            self.class_names,
            ref,
            labels,
            self.toy,
            self.source,
            self.columns,
        )


# --- reading ------------------------------------------------------------------------------------


def is_array_spec(spec: str | None) -> bool:
    """Whether `--data` names points or sequences rather than images."""
    if spec is None:
        return False
    return spec.startswith(("toy:", "timeseries:")) or Path(spec).suffix.lower() in (
        ".npy",
        ".csv",
        ".ts",
    )


def _check_finite(path: str, a: np.ndarray) -> None:
    if not np.isfinite(a).all():
        bad = np.argwhere(~np.isfinite(a))[0]
        raise DataError(
            f"{path}: non-finite value (NaN or inf) at index {tuple(int(i) for i in bad)}"
        )


def read_npy(path: Path) -> np.ndarray:
    """A numeric .npy array (no pickles), as float64."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{path}: not a numeric .npy array ({str(e).splitlines()[0]})") from None
    except Exception as e:
        raise DataError(f"{path}: not a readable .npy file ({type(e).__name__})") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
        raise DataError(f"{path}: expected a numeric array, got dtype {getattr(a, 'dtype', '?')}")
    a = a.astype(np.float64)
    _check_finite(str(path), a)
    return a


def read_csv(path: Path, missing: bool = False) -> tuple[np.ndarray, list[str] | None]:
    """Numeric columns of a .csv (N, D); a first row with any non-number is a header. With
    `missing`, an empty cell (or nan) is a missing value, NaN, as editing fills them."""
    number = _number if not missing else lambda c: _number(c) if c.strip() else float("nan")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    if not rows:
        raise DataError(f"{path}: no rows")
    header = None
    first = rows[0]
    if not all(number(c) is not None for c in first):
        header, rows = [c.strip() for c in first], rows[1:]
    width = len(header) if header is not None else len(rows[0]) if rows else 0
    values = np.empty((len(rows), width), dtype=np.float64)
    start = 2 if header is not None else 1
    for i, row in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{path}:{i + start}: {len(row)} columns, expected {width}")
        for j, cell in enumerate(row):
            v = number(cell)
            if v is None:
                col = f"column {header[j]!r}" if header else f"column {j + 1}"
                hint = (
                    "leave a missing value empty or write nan"
                    if missing
                    else "only numeric columns can be modelled; drop or encode the others"
                )
                raise DataError(
                    f"{path}:{i + start}: {cell.strip()!r} in {col} is not a number ({hint})"
                )
            values[i, j] = v
    if not len(values):
        raise DataError(f"{path}: a header but no data rows")
    if not missing:
        _check_finite(str(path), values)
    return values, header


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def load_arrays(
    spec: str,
    split: str | None = None,
    pad: bool = False,
    *,
    scaler: Standardizer | None = None,
    default_split: str = "train",
    toy_seed: int = 0,
) -> ArrayDataset:
    """Load `--data` points or sequences, standardised with `scaler` (None: fitted to them).

    split: train, test or both for `timeseries:DIR` (default `default_split`); other data has
    no splits. toy_seed: the toy's reference sample (0 for training; evaluation draws its
    held-out points from other seeds).
    """
    kind, sep, rest = spec.partition(":")
    labels, names, toy, columns = None, None, None, None
    if sep and kind == "toy":
        try:
            toys.check_name(rest)
        except ValueError as e:
            raise DataError(str(e)) from None
        if split is not None:
            raise DataError(f"--split does not apply to {spec}: its points are drawn afresh")
        g = torch.Generator().manual_seed(toy_seed)
        raw, source, toy = toys.sample_toy(rest, TOY_REFERENCE, g), spec, rest
    elif (sep and kind == "timeseries") or Path(spec).suffix.lower() == ".ts":
        path = rest if sep and kind == "timeseries" else spec
        s = resolve_timeseries(path, split, pad, default_split)
        raw = torch.from_numpy(s.x)
        source, names = s.description, s.class_names
        labels = torch.from_numpy(s.labels) if s.labels is not None else None
    else:
        path = Path(spec)
        if split is not None:
            raise DataError(f"--split does not apply to {spec}: a single file has no splits")
        if path.suffix.lower() == ".csv":
            a, columns = read_csv(path)
        else:
            a = read_npy(path)
        if a.ndim not in (2, 3) or a.shape[0] < 2:
            raise DataError(
                f"{path}: expected (N, D) points or (N, C, L) sequences with N >= 2, got shape "
                f"{a.shape}"
            )
        raw, source = torch.from_numpy(a).float(), str(path)
    kind = "points" if raw.ndim == 2 else "sequences"
    scaler = scaler if scaler is not None else Standardizer.fit(raw)
    stat_shape = (raw.shape[1],) if raw.ndim == 2 else (raw.shape[1], 1)
    if tuple(scaler.mean.shape) != stat_shape:
        raise DataError(
            f"{spec}: data of shape {tuple(raw.shape[1:])} per sample does not fit the model, "
            f"whose standardisation has shape {tuple(scaler.mean.shape)}"
        )
    x = scaler.apply(raw.float())
    return ArrayDataset(x, kind, scaler, labels, names, source, toy, columns)


def save_npy(a: np.ndarray, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.save(path, a, allow_pickle=False)


def save_csv(a: np.ndarray, path: str | Path, columns: list[str] | None = None) -> None:
    """Points (N, D) as CSV rows under a header: `columns`, or x1..xD."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    names = columns if columns is not None else [f"x{i + 1}" for i in range(a.shape[1])]
    header = ",".join(names)
    np.savetxt(path, a, delimiter=",", header=header, comments="", fmt="%.7g")


# --- the training stream ------------------------------------------------------------------------


def toy_batch(name: str, scaler: Standardizer, batch_size: int, seed: int, step: int) -> Tensor:
    """Batch `step` of a toy: batch_size fresh points from a generator seeded by (seed, step)."""
    g = torch.Generator().manual_seed(seed * 100_043 + step + 1)
    return scaler.apply(toys.sample_toy(name, batch_size, g))


def array_batches(
    data: ArrayDataset,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    device: torch.device | str = "cpu",
    rows: slice | None = None,
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """An endless stream of (x_0: float (B, D) or (B, C, L), standardised; labels (B,) or None).

    As the image stream (`ddpm.data.stream.batches`), batch k depends only on (seed, k): a shuffled
    epoch order from `batch_indices`, or for a toy, fresh points drawn from (seed, k). Under
    DDP each process takes its `rows` of the global batch, so the data seen is the same at
    any number of processes.
    """
    device = torch.device(device)
    mine = rows if rows is not None else slice(None)
    if data.toy is not None:
        step = start_step
        while True:
            x = toy_batch(data.toy, data.scaler, batch_size, seed, step)[mine]
            yield to_device(x, device), None
            step += 1
    n = len(data)
    if batch_size > n:
        raise DataError(
            f"batch size {batch_size} is larger than the dataset ({n} rows); pass a smaller "
            "--batch-size"
        )
    x = data.x.to(device)
    labels = data.labels.to(device) if data.labels is not None else None
    for idx in batch_indices(n, batch_size, seed, start_step):
        i = to_device(idx[mine], device)
        yield x[i], (labels[i] if labels is not None else None)
