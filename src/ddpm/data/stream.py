"""The deterministic training stream: batch k of a dataset depends only on (seed, k).

`batches()` takes a cached `ImageDataset` or a `StreamingDataset` (`ddpm.data.images`) and
gives the same batches from both, so a run resumed at step k sees exactly the batches an
uninterrupted run would have, and under DDP each process sees its rows of the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from ddpm.data.images import (
    Dataset,
    StreamingDataset,
    default_workers,
    to_model_range,
    warn_list,
)
from ddpm.errors import DataError


def batch_indices(n: int, batch_size: int, seed: int, start_step: int = 0) -> Iterator[Tensor]:
    """Indices (B,) of batch k = start_step, start_step + 1, ...: epoch e is a permutation
    drawn from a generator seeded with (seed, e), and batch k its (k mod n // B)-th slice."""
    per_epoch = n // batch_size
    step, epoch, perm = start_step, -1, torch.empty(0, dtype=torch.int64)
    while True:
        if step // per_epoch != epoch:
            epoch = step // per_epoch
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            perm = torch.randperm(n, generator=g)
        j = step % per_epoch
        yield perm[j * batch_size : (j + 1) * batch_size]
        step += 1


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """A host tensor on `device` without a host sync: a plain `.to("cuda")` waits for every
    queued kernel (it synchronises the stream), a pinned non-blocking copy does not."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def flip_batch(
    x: Tensor, seed: int, step: int, rows: slice | None = None, batch_size: int | None = None
) -> Tensor:
    """Mirror each image of batch `step` with probability 1/2, drawn from (seed, step).

    `rows`: x holds only these rows of a global batch of `batch_size` images (one process's
    share under DDP); the flips are drawn for the whole global batch and sliced, so image j
    of batch k is mirrored or not whatever the number of processes.
    """
    g = torch.Generator().manual_seed(seed * 100_019 + step + 1)
    flip = torch.rand(batch_size or x.shape[0], generator=g) < 0.5
    flip = to_device(flip if rows is None else flip[rows], x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class _Lists:
    """batch_indices as lists, for DataLoader's batch_sampler."""

    def __init__(self, indices: Iterable[Tensor]):
        self.indices = indices

    def __iter__(self) -> Iterator[list[int]]:
        return (idx.tolist() for idx in self.indices)


def _streamed(
    data: StreamingDataset,
    batch_size: int,
    seed: int,
    start_step: int,
    device: torch.device,
    workers: int,
    rows: slice,
) -> Iterator[tuple[Tensor, Tensor]]:
    """(uint8 (B, C, H, W) on device, indices (B,)) decoded by DataLoader worker processes;
    only `rows` of each batch are decoded."""
    from torch.utils.data import DataLoader

    def indices() -> Iterator[Tensor]:
        return (idx[rows] for idx in batch_indices(len(data), batch_size, seed, start_step))

    loader = DataLoader(
        data,  # type: ignore[arg-type]
        batch_sampler=_Lists(indices()),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
    )
    warned = False
    for idx, (x, ok) in zip(indices(), loader):
        if not bool(ok.all()):
            names = [data.entries[int(i)].name for i in idx[~ok]]
            if data.strict:
                raise DataError(f"{data.source}: {names[0]} is not a readable image")
            if not bool(ok.any()):
                raise DataError(f"{data.source}: no image of a batch could be read: {names}")
            first = int(ok.nonzero()[0])
            idx = idx.clone()  # a view of the epoch's permutation: leave that alone
            x[~ok], idx[~ok] = x[first].clone(), idx[first].clone()  # same size, deterministic
            if not warned:
                warn_list(f"{data.source}: {{n}} unreadable image(s) replaced in a batch", names)
                warned = True
        yield x.to(device, non_blocking=True), idx


def batches(
    data: Dataset,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    device: torch.device | str = "cpu",
    hflip: bool = True,
    *,
    workers: int | None = None,
    cache_on_device: bool = True,
    rows: slice | None = None,
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """An endless stream of (x_0: float (B, C, H, W) in [-1, 1], labels (B,) or None).

    Batch k depends only on (seed, k) (`batch_indices`, `flip_batch`), whether the data is
    cached or streamed, so a run resumed at step k sees exactly the batches an uninterrupted
    run would have. A cached dataset is moved to `device` once (`cache_on_device`) and
    indexed and flipped there; a streamed one is decoded by `workers` DataLoader processes.
    `rows` keeps only those rows of every batch of `batch_size` (one process's share of the
    global batch under DDP): the same images, flipped the same way, as in the whole batch.
    """
    n = len(data)
    if batch_size > n:
        raise DataError(f"batch size {batch_size} is larger than the dataset ({n} images)")
    device = torch.device(device)
    labels = data.labels.to(device) if data.labels is not None else None
    part = slice(None) if rows is None else rows
    if isinstance(data, StreamingDataset):
        w = default_workers() if workers is None else workers
        source: Iterator[tuple[Tensor, Tensor]] = _streamed(
            data, batch_size, seed, start_step, device, w, part
        )
    else:
        store = device if cache_on_device else torch.device("cpu")
        images = data.images.to(store)
        if store.type == "cpu" and device.type == "cuda":
            images = images.pin_memory()

        def gather() -> Iterator[tuple[Tensor, Tensor]]:
            for idx in batch_indices(n, batch_size, seed, start_step):
                idx = idx[part]
                yield images[to_device(idx, store)].to(device, non_blocking=True), idx

        source = gather()
    for step, (x_u8, idx) in enumerate(source, start=start_step):
        x = to_model_range(x_u8)
        if hflip:
            x = flip_batch(x, seed, step, rows, batch_size)
        yield x, (labels[to_device(idx, device)] if labels is not None else None)
