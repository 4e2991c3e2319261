"""A U-Net for sequences: Ho et al.'s network (`ddpm.models.unet.UNet`) with 1-D convolutions.

Nothing is copied: the same `UNet` class builds itself from the same blocks (ResBlock,
Attention, Downsample, Upsample) with `dims = 1`, so x_t is (B, C, L) and every convolution
runs along L. Attention sees the L (or L / 2^k) positions of a level as its tokens.

A sequence of any length L is accepted: it is padded on the right with zeros to the next
multiple of 2^(levels - 1) (so every downsampling halves it exactly) and the output is cut
back to L. The padded positions never reach the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from ddpm.models.unet import UNet, UNetConfig


@dataclass
class UNet1DConfig(UNetConfig):
    """The fields of `UNetConfig`; defaults sized for the UCR/UEA sequences on a CPU
    (GunPoint, L = 150: 0.6M parameters, attention at L/4)."""

    in_channels: int = 1
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (2,)
    dropout: float = 0.0
    norm_groups: int = 8
    dims: ClassVar[int] = 1


class UNet1D(UNet):
    """`UNet` over (B, C, L) with right zero-padding to a multiple of the downsampling factor."""

    config: UNet1DConfig

    def __init__(self, config: UNet1DConfig):
        super().__init__(config)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if x.ndim != 3:
            raise ValueError(f"UNet1D expects sequences (B, C, L), got shape {tuple(x.shape)}")
        L = x.shape[-1]
        pad = -L % self.config.downsample_factor
        out = super().forward(F.pad(x, (0, pad)) if pad else x, t, y)
        return out[..., :L] if pad else out
