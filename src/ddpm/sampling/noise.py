"""The noise of sampling: one stream per image, so that an image depends only on (seed, index),
as in EDM's generate.py, and never on the batch it was drawn in.

A batch of B images draws from B generators, one row each. Filled row by row, every draw is B
small kernels: for a batch of 1,000 on a GPU, more time than the network's step itself in an
ancestral or RePaint chain, which draws once or twice a step. So on a GPU `NoiseRows` draws each
row's stream ahead, `block_size` draws at a time: one kernel a row per block, then a slice a draw.

Image i's stream is its generator's first draw `randn(shape)` (x_T), then draws of
`randn((block, *shape))`, taken in order; the block depends on the shape and device only,
never on B. On the CPU, where a kernel a row costs little, the block is 1: the values of
successive `randn(shape)` calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

Generators = torch.Generator | Sequence[torch.Generator] | None
ROW_ELEMENTS = 2**18  # the most noise values drawn ahead for one image: 1 MB in float32
MAX_BLOCK = 16  # the most draws taken at once


def per_sample_noise(
    shape: Sequence[int],
    generators: Sequence[torch.Generator],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(len(generators), *shape) standard normal noise, row i as `torch.randn(shape, generator=
    generators[i])`, filled in place: no tensor a row and no stack. Given `NoiseRows`, the next
    draw of each row's stream (`NoiseRows.draw`)."""
    if isinstance(generators, NoiseRows):
        return generators.draw(shape, device, dtype)
    out = torch.empty(len(generators), *shape, device=device, dtype=dtype)
    for row, g in zip(out, generators):
        row.normal_(generator=g)
    return out


class NoiseRows(Sequence[torch.Generator]):
    """Generators, one per image, whose draws (`draw`, or `per_sample_noise` given this) come
    from each one's stream drawn ahead in blocks (the module's docstring says which values)."""

    def __init__(self, generators: Sequence[torch.Generator]):
        self.generators = list(generators)
        self._ahead: Tensor | None = None  # (B, k, *shape): draws not yet taken
        self._taken = 0
        self._key: tuple = ()  # (shape, dtype, device) asked for the draws ahead

    def __len__(self) -> int:
        return len(self.generators)

    def __getitem__(self, i):  # type: ignore[override]
        return self.generators[i]

    def draw(
        self,
        shape: Sequence[int],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """The next (B, *shape) of every row's stream."""
        key, ahead = (tuple(shape), dtype, str(device)), self._ahead
        if ahead is None or self._taken == ahead.shape[1] or key != self._key:
            block = 1 if ahead is None else block_size(shape, torch.device(device))
            self._ahead = ahead = per_sample_noise((block, *shape), self.generators, device, dtype)
            self._key, self._taken = key, 0
        self._taken += 1
        return ahead[:, self._taken - 1]


def block_size(shape: Sequence[int], device: torch.device) -> int:
    """Draws taken at once: 1 on the CPU, else up to MAX_BLOCK within ROW_ELEMENTS a row."""
    if device.type == "cpu":
        return 1
    return max(1, min(MAX_BLOCK, ROW_ELEMENTS // math.prod(shape)))


def randn_like(x: Tensor, generator: Generators) -> Tensor:
    """Standard normal noise shaped like x, drawn per sample when given a list of generators."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    return per_sample_noise(x.shape[1:], generator, x.device, x.dtype)


def seeded(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed % (2**63))
    return g


def sample_generators(seed: int, indices: Sequence[int], device: torch.device | str = "cpu"):
    """One generator per image index, seeded from (seed, index) alone (as EDM's generate.py)."""
    return NoiseRows([seeded(seed * 1_000_003 + i, device) for i in indices])


def side_generators(seed: int, indices: Sequence[int], device: torch.device | str = "cpu"):
    """A second generator per image index, from (seed, index) alone: for editing, the noise of
    the known region and of RePaint's forward jumps, kept apart from the model's."""
    return NoiseRows([seeded(seed * 1_000_037 + i + 104_729, device) for i in indices])
