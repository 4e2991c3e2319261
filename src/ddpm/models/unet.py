"""Ho et al. 2020's noise-prediction U-Net (the PixelCNN++-style backbone of their Appendix B).

It maps (x_t: (B, C, H, W), t: int64 (B,), y: int64 (B,) or None) to a tensor shaped like
x_t, or, built with `learn_sigma`, to (B, 2C, H, W): the prediction and then the variance
output v of Nichol & Dhariwal 2021 §3.1. With `num_classes` set, the class label y is embedded
and added to the time embedding (`ddpm.models.layers.ClassEmbedding`); y = None, or the label
`num_classes`, is the learned "null" class of classifier-free guidance. Its blocks live in
`ddpm.models.layers`; the same class over sequences is `ddpm.models.unet1d`. Presets (named
configs) and construction from plain data are `ddpm.models.presets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ddpm.errors import ConfigError
from ddpm.models.layers import (
    Attention,
    ClassEmbedding,
    Downsample,
    GroupNorm,
    Level,
    ResBlock,
    Upsample,
    check_num_classes,
    check_size,
    conv_nd,
    timestep_embedding,
)


@dataclass
class UNetConfig:
    """Hyperparameters of the U-Net; defaults are Ho et al.'s CIFAR-10 model."""

    in_channels: int = 3
    base_channels: int = 128  # ch: width of the first level; level i has ch * channel_mults[i]
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2  # residual blocks per level on the way down (one more on the way up)
    attention_levels: tuple[int, ...] = (1,)  # levels (0 = full resolution) with self-attention
    dropout: float = 0.1
    num_heads: int = 1
    norm_groups: int = 32
    num_classes: int | None = None  # class-conditional when set (see `ClassEmbedding`)
    learn_sigma: bool = False  # doubles the output channels (eps and the variance interpolation)
    # Three details in which published weights differ (google/ddpm-cifar10-32, Ho et al.'s TF
    # code, diffusers' defaults); the defaults are this project's own choices.
    norm_eps: float = 1e-5  # GroupNorm epsilon (Ho et al.'s TF code and google/ddpm-*: 1e-6)
    downsample_padding: int = 1  # 1: pad every side; 0: right and bottom only (TF's "SAME")
    freq_shift: int = 1  # time-embedding frequencies (`timestep_embedding`; diffusers' default 0)
    # Dhariwal & Nichol 2021's adaptive GroupNorm: the time embedding scales and shifts each
    # block's second normalisation instead of being added before it (diffusers' "scale_shift")
    scale_shift: bool = False
    dims: ClassVar[int] = (
        2  # images; `UNet1DConfig` (ddpm.models.unet1d) sets 1 (not stored: a ClassVar)
    )

    def __post_init__(self) -> None:
        self.channel_mults = tuple(self.channel_mults)
        self.attention_levels = tuple(self.attention_levels)
        if self.in_channels < 1:
            raise ConfigError(f"in_channels must be >= 1, got {self.in_channels}")
        if self.base_channels < 1 or not self.channel_mults or min(self.channel_mults) < 1:
            raise ConfigError("base_channels and every channel_mults entry must be >= 1")
        for m in self.channel_mults:
            if (self.base_channels * m) % self.norm_groups:
                raise ConfigError(
                    f"base_channels * mult = {self.base_channels * m} is not divisible by "
                    f"norm_groups = {self.norm_groups}"
                )
        if self.num_res_blocks < 1:
            raise ConfigError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")
        bad = [lv for lv in self.attention_levels if not 0 <= lv < len(self.channel_mults)]
        if bad:
            raise ConfigError(
                f"attention_levels {bad} out of range for {len(self.channel_mults)} levels"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not self.norm_eps > 0:
            raise ConfigError(f"norm_eps must be positive, got {self.norm_eps}")
        if self.downsample_padding not in (0, 1):
            raise ConfigError(f"downsample_padding must be 0 or 1, got {self.downsample_padding}")
        if self.freq_shift not in (0, 1):
            raise ConfigError(f"freq_shift must be 0 or 1, got {self.freq_shift}")
        check_num_classes(self.num_classes)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)


class UNet(nn.Module):
    """Ho et al. 2020's noise-prediction U-Net (their Appendix B; diffusers' UNet2DModel layout).

    Down path: for each level, `num_res_blocks` ResBlocks (+ attention), then a strided conv
    (not after the last level). Middle: ResBlock, attention, ResBlock. Up path: for each level,
    `num_res_blocks + 1` ResBlocks, each fed the matching down-path activation by concatenation,
    then a nearest-neighbour upsample. Output: GroupNorm, SiLU, 3x3 conv (zero-initialised).
    The same network over sequences (B, C, L) is `ddpm.models.unet1d.UNet1D` (config.dims = 1).
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        ch, groups, p, eps, dims, ss = (
            config.base_channels,
            config.norm_groups,
            config.dropout,
            config.norm_eps,
            config.dims,
            config.scale_shift,
        )
        t_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.class_emb = (
            ClassEmbedding(config.num_classes, t_dim) if config.num_classes is not None else None
        )
        self.conv_in = conv_nd(dims, config.in_channels, ch, 3, padding=1)

        widths = [ch * m for m in config.channel_mults]
        skip_channels = [ch]
        self.down = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        c = ch
        for level, width in enumerate(widths):
            blocks, attns = [], []
            for _ in range(config.num_res_blocks):
                blocks.append(ResBlock(c, width, t_dim, p, groups, eps, dims, ss))
                attns.append(Attention(width, config.num_heads, groups, eps, dims))
                c = width
                skip_channels.append(c)
            self.down.append(Level(blocks, attns if level in config.attention_levels else None))
            last = level == len(widths) - 1
            self.downsamplers.append(
                nn.Identity() if last else Downsample(c, config.downsample_padding, dims)
            )
            if not last:
                skip_channels.append(c)

        self.mid_block1 = ResBlock(c, c, t_dim, p, groups, eps, dims, ss)
        self.mid_attn = Attention(c, config.num_heads, groups, eps, dims)
        self.mid_block2 = ResBlock(c, c, t_dim, p, groups, eps, dims, ss)

        self.up = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            blocks, attns = [], []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(
                    ResBlock(c + skip_channels.pop(), width, t_dim, p, groups, eps, dims, ss)
                )
                attns.append(Attention(width, config.num_heads, groups, eps, dims))
                c = width
            self.up.append(Level(blocks, attns if level in config.attention_levels else None))
            self.upsamplers.append(Upsample(c, dims) if level > 0 else nn.Identity())

        self.norm_out = GroupNorm(groups, c, eps)
        self.conv_out = conv_nd(dims, c, config.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        check_size(x, self.config.downsample_factor)
        cfg = self.config
        emb = self.time_mlp(
            timestep_embedding(t, cfg.base_channels, freq_shift=cfg.freq_shift).to(x.dtype)
        )
        if self.class_emb is not None:
            emb = self.class_emb(emb, y)

        h = self.conv_in(x)
        skips = [h]
        for level, down in zip(self.down, self.downsamplers):
            for i, block in enumerate(level.blocks):
                h = block(h, emb)
                if level.attns is not None:
                    h = level.attns[i](h)
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)

        h = self.mid_block2(self.mid_attn(self.mid_block1(h, emb)), emb)

        for level, up in zip(self.up, self.upsamplers):
            for i, block in enumerate(level.blocks):
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
                if level.attns is not None:
                    h = level.attns[i](h)
            h = up(h)

        return self.conv_out(self.norm_out.act(h))
