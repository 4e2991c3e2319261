"""The reference tutorial's SimpleUnet (DeepFindr, "Diffusion models from scratch"): plain conv
blocks with BatchNorm and ReLU, no attention; the same call as the U-Net's,
(x_t: (B, C, H, W), t: (B,), y: (B,) or None) -> a tensor shaped like x_t (twice the channels
with `learn_sigma`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddpm.errors import ConfigError
from ddpm.models.layers import ClassEmbedding, check_num_classes, check_size, timestep_embedding


@dataclass
class TutorialUNetConfig:
    """The tutorial's model: plain conv blocks with BatchNorm and ReLU, no attention."""

    in_channels: int = 3
    channels: tuple[int, ...] = (64, 128, 256, 512, 1024)
    time_dim: int = 32
    num_classes: int | None = None  # class-conditional when set (not in the tutorial)
    learn_sigma: bool = False  # doubles the output channels (eps and the variance interpolation)

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if self.in_channels < 1:
            raise ConfigError(f"in_channels must be >= 1, got {self.in_channels}")
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise ConfigError("channels needs at least two positive widths")
        if self.time_dim < 2:
            raise ConfigError(f"time_dim must be >= 2, got {self.time_dim}")
        check_num_classes(self.num_classes)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)


class TutorialBlock(nn.Module):
    """Conv-ReLU-BatchNorm, plus the projected time embedding, conv-ReLU-BatchNorm, then a
    stride-2 conv down (or a transposed conv up, its input the skip concatenated)."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, up: bool):
        super().__init__()
        self.time_mlp = nn.Linear(t_dim, c_out)
        self.conv1 = nn.Conv2d(2 * c_in if up else c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.bnorm1 = nn.BatchNorm2d(c_out)
        self.bnorm2 = nn.BatchNorm2d(c_out)
        if up:
            self.transform: nn.Module = nn.ConvTranspose2d(c_out, c_out, 4, 2, 1)
        else:
            self.transform = nn.Conv2d(c_out, c_out, 4, 2, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.bnorm1(F.relu(self.conv1(x)))
        h = h + F.relu(self.time_mlp(emb))[:, :, None, None]
        h = self.bnorm2(F.relu(self.conv2(h)))
        return self.transform(h)


class TutorialUNet(nn.Module):
    """SimpleUnet: conv_in, down blocks (stride-2 conv), up blocks (transposed conv), 1x1 out."""

    def __init__(self, config: TutorialUNetConfig):
        super().__init__()
        self.config = config
        chans, d = config.channels, config.time_dim
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU())
        self.class_emb = (
            ClassEmbedding(config.num_classes, d) if config.num_classes is not None else None
        )
        self.conv0 = nn.Conv2d(config.in_channels, chans[0], 3, padding=1)
        self.downs = nn.ModuleList(
            TutorialBlock(a, b, d, up=False) for a, b in zip(chans[:-1], chans[1:])
        )
        rev = chans[::-1]
        self.ups = nn.ModuleList(TutorialBlock(a, b, d, up=True) for a, b in zip(rev[:-1], rev[1:]))
        self.output = nn.Conv2d(chans[0], config.out_channels, 1)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        check_size(x, self.config.downsample_factor)
        emb = self.time_mlp(timestep_embedding(t, self.config.time_dim).to(x.dtype))
        if self.class_emb is not None:
            emb = self.class_emb(emb, y)
        h = self.conv0(x)
        skips = []
        for down in self.downs:
            h = down(h, emb)
            skips.append(h)
        for up in self.ups:
            h = up(torch.cat([h, skips.pop()], dim=1), emb)
        return self.output(h)
