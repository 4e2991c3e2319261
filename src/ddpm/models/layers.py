"""The building blocks of the U-Nets, shared by the image U-Net (`ddpm.models.unet`), the
sequence U-Net (`ddpm.models.unet1d`), the tutorial's network and the MLP (`ddpm.models.mlp`).

Every block that convolves takes `dims`: 2 for images (B, C, H, W), 1 for sequences (B, C, L).
The time t enters as a sinusoidal embedding (`timestep_embedding`); a class label as a learned
vector added to it (`ClassEmbedding`).
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddpm.errors import ConfigError


def check_size(x: Tensor, factor: int) -> None:
    """Every spatial side of (B, C, H, W) (or (B, C, L)) must survive `factor`-fold
    downsampling exactly."""
    sizes = tuple(x.shape[2:])
    if any(s % factor for s in sizes):
        what = "image size" if len(sizes) == 2 else "length"
        shown = "x".join(map(str, sizes))
        raise ValueError(f"{what} {shown} is not divisible by 2^levels = {factor}")


def conv_nd(dims: int, *args: Any, **kwargs: Any) -> nn.Module:
    """nn.Conv1d or nn.Conv2d: the building blocks below serve images (2) and sequences (1)."""
    if dims not in (1, 2):
        raise ConfigError(f"dims must be 1 or 2, got {dims}")
    return (nn.Conv1d if dims == 1 else nn.Conv2d)(*args, **kwargs)


def timestep_embedding(
    t: Tensor, dim: int, max_period: float = 10000.0, freq_shift: int = 1
) -> Tensor:
    """Sinusoidal embedding of the timesteps (Vaswani et al. 2017, as used by Ho et al.): (B, dim).

    Frequency k of the `half = dim // 2` is max_period^(-k / (half - freq_shift)): with the
    default shift 1 they run from 1 to exactly 1/max_period (Ho et al.'s code); shift 0 is
    diffusers' UNet2DModel default. The first half is sin, the second cos.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device) / max(half - freq_shift, 1)
    )
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([args.sin(), args.cos()], dim=1)
    return F.pad(emb, (0, dim % 2))


class ClassEmbedding(nn.Module):
    """Learned class vectors, added to the time embedding (Ho & Salimans 2022, as Dhariwal &
    Nichol's class-conditional U-Net).

    The table has num_classes + 1 rows: row `num_classes` is the "null" class, which training
    substitutes for the label with probability p (`ddpm.sampling.guidance.drop_labels`), so one
    network learns both eps(x_t, t, y) and the unconditional eps(x_t, t). Any network with a
    time embedding can use it: `emb = class_emb(emb, y)`.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, emb: Tensor, y: Tensor | None) -> Tensor:
        """emb (B, dim) plus the vector of each label y (B,); y None means the null class."""
        if y is None:
            y = torch.full((emb.shape[0],), self.num_classes, device=emb.device)
        return emb + self.table(y).to(emb.dtype)


def check_num_classes(num_classes: int | None) -> None:
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ConfigError(f"num_classes must be a positive integer or None, got {num_classes!r}")


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm (the same parameters and state dict) that also applies, in `act`, what
    follows it in a block: silu(GN(x + add) * (1 + scale) + shift), each part optional. With
    `fused` set (`fuse_norms`) and x on CUDA, that is two Triton kernels a direction
    (`ddpm.models.fused_norm`); otherwise the plain modules, operation by operation."""

    fused = False

    def runs_fused(self, x: Tensor) -> bool:
        return self.fused and (x.is_cuda or _interpreting())

    def act(
        self,
        x: Tensor,
        *,
        add: Tensor | None = None,
        scale: Tensor | None = None,
        shift: Tensor | None = None,
        silu: bool = True,
    ) -> Tensor:
        if self.runs_fused(x):
            from ddpm.models.fused_norm import group_norm_act

            extra = dict(add=add, scale=scale, shift=shift)
            return group_norm_act(x, self.num_groups, self.weight, self.bias, self.eps, **extra,
                                  act=silu)  # fmt: skip
        h = self(x if add is None else x + add)
        if scale is not None:
            h = h * (1 + scale)
        if shift is not None:
            h = h + shift
        return F.silu(h) if silu else h


def _interpreting() -> bool:
    """Triton's CPU interpreter is on (the fused kernels' tests on a machine without a GPU)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def fuse_norms(model: nn.Module, on: bool = True) -> nn.Module:
    """Run every `GroupNorm` of `model` through the fused kernels (on CUDA) or not."""
    for m in model.modules():
        if isinstance(m, GroupNorm):
            m.fused = on
    return model


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, plus the projected time embedding, GroupNorm-SiLU-dropout-conv, skip.

    With `scale_shift` the embedding is projected to a scale s and a shift b that act after the
    second GroupNorm, GN(h)(1 + s) + b (Dhariwal & Nichol 2021's AdaGN, their Table 1 ablation),
    instead of being added to h. `dims` 2 for images (B, C, H, W), 1 for sequences (B, C, L).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        t_dim: int,
        dropout: float,
        groups: int,
        eps: float = 1e-5,
        dims: int = 2,
        scale_shift: bool = False,
    ):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = GroupNorm(groups, c_in, eps)
        self.conv1 = conv_nd(dims, c_in, c_out, 3, padding=1)
        self.time_proj = nn.Linear(t_dim, 2 * c_out if scale_shift else c_out)
        self.norm2 = GroupNorm(groups, c_out, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv_nd(dims, c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (as Ho et al.)
        nn.init.zeros_(self.conv2.bias)
        self.skip = conv_nd(dims, c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(self.norm1.act(x))
        e = self.time_proj(F.silu(emb))  # (B, c_out), or (B, 2 c_out) with scale_shift
        e = e.view(*e.shape, *([1] * (h.ndim - 2)))
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2.act(h, scale=scale, shift=shift)
        else:
            h = self.norm2.act(h, add=e)
        h = self.conv2(self.dropout(h))
        return self.skip(x) + h


class Attention(nn.Module):
    """Self-attention over the N = H*W (or L) positions, with a residual connection."""

    def __init__(
        self, channels: int, num_heads: int, groups: int, eps: float = 1e-5, dims: int = 2
    ):
        super().__init__()
        if channels % num_heads:
            raise ConfigError(f"{channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = GroupNorm(groups, channels, eps)
        self.qkv = conv_nd(dims, channels, 3 * channels, 1)
        self.proj = conv_nd(dims, channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C = x.shape[:2]
        spatial = x.shape[2:]  # (H, W) or (L,)
        N = math.prod(spatial)
        heads, d = self.num_heads, C // self.num_heads
        # Work on tokens (B, N, C): the 1x1 convs are linear maps, and q, k, v come out with
        # a unit-stride head dimension, which the fused (flash) attention kernels require. For
        # a channels-last x the token view is free and the result is channels-last again.
        tokens = self.norm.act(x, silu=False).movedim(1, -1).reshape(B, N, C)
        qkv = F.linear(tokens, self.qkv.weight.flatten(1), self.qkv.bias)  # (B, N, 3C)
        q, k, v = qkv.view(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)  # (B, heads, N, d)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
        h = F.linear(h, self.proj.weight.flatten(1), self.proj.bias)
        return x + h.view(B, *spatial, C).movedim(-1, 1)


class Downsample(nn.Module):
    """A stride-2 3x3 conv. `padding` 1 pads every side; 0 pads one row and column at the
    bottom and right, which is what TensorFlow's "SAME" does here (Ho et al.'s code)."""

    def __init__(self, channels: int, padding: int = 1, dims: int = 2):
        super().__init__()
        self.padding = padding
        self.conv = conv_nd(dims, channels, channels, 3, stride=2, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        if self.padding == 0:
            x = F.pad(x, (0, 1) * (x.ndim - 2))  # right (and bottom)
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int, dims: int = 2):
        super().__init__()
        self.conv = conv_nd(dims, channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """Residual blocks at one resolution, each optionally followed by self-attention."""

    def __init__(self, blocks: list[ResBlock], attention: list[Attention] | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attention) if attention else None
