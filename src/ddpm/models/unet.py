"""The noise-prediction networks: Ho et al.'s U-Net and the reference tutorial's SimpleUnet.

Both map (x_t: (B, C, H, W), t: int64 (B,), y: int64 (B,) or None) to a tensor shaped like
x_t, or, built with `learn_sigma`, to (B, 2C, H, W): the prediction and then the variance
output v of Nichol & Dhariwal 2021 §3.1. With `num_classes` set, the class label y is embedded
and added to the time embedding (`ClassEmbedding`); y = None, or the label `num_classes`, is the
learned "null" class of classifier-free guidance. Presets are data (`PRESETS`), turned into
modules by `build_model`, which also builds the networks for other data: the U-Net over
sequences (`ddpm.models.unet1d`, from the blocks here) and an MLP for points (`ddpm.models.mlp`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

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


# --- Ho et al. 2020 U-Net (the PixelCNN++-style backbone of their Appendix B) -----------------


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
        self.norm1 = nn.GroupNorm(groups, c_in, eps)
        self.conv1 = conv_nd(dims, c_in, c_out, 3, padding=1)
        self.time_proj = nn.Linear(t_dim, 2 * c_out if scale_shift else c_out)
        self.norm2 = nn.GroupNorm(groups, c_out, eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv_nd(dims, c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (as Ho et al.)
        nn.init.zeros_(self.conv2.bias)
        self.skip = conv_nd(dims, c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.time_proj(F.silu(emb))  # (B, c_out), or (B, 2 c_out) with scale_shift
        e = e.view(*e.shape, *([1] * (h.ndim - 2)))
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
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
        self.norm = nn.GroupNorm(groups, channels, eps)
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
        tokens = self.norm(x).movedim(1, -1).reshape(B, N, C)
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

        self.norm_out = nn.GroupNorm(groups, c, eps)
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

        return self.conv_out(F.silu(self.norm_out(h)))


# --- The reference tutorial's SimpleUnet (DeepFindr, "Diffusion models from scratch") ---------


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


# --- Presets and construction ----------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A model as plain data: the architecture's name and its config fields."""

    arch: str  # "unet", "tutorial", "unet1d" or "mlp" (see `architectures`)
    config: dict[str, Any] = field(default_factory=dict)
    image_size: tuple[int, int] = (32, 32)  # the resolution the preset was designed for


PRESETS: dict[str, ModelSpec] = {
    # Ho et al. 2020, CIFAR-10: 35.7M parameters.
    "ddpm-cifar10": ModelSpec(
        "unet",
        {
            "base_channels": 128,
            "channel_mults": (1, 2, 2, 2),
            "attention_levels": (1,),
            "dropout": 0.1,
        },
        (32, 32),
    ),
    # Ho et al.'s CIFAR-10 layout for an 8-minute budget (the cifar10-8min recipe): one
    # residual block a level instead of two (1.48x the steps a second) and adaptive GroupNorm,
    # no dropout; 25.9M parameters (docs/benchmarks.md, issue 9's eighth round).
    "cifar10-8min": ModelSpec(
        "unet",
        {
            "base_channels": 128,
            "channel_mults": (1, 2, 2, 2),
            "attention_levels": (1,),
            "num_res_blocks": 1,
            "scale_shift": True,
            "dropout": 0.0,
        },
        (32, 32),
    ),
    # 64x64 Stanford Cars: one more level than CIFAR-10 so the 8x8 bottleneck matches; attention
    # at 16x16 as Ho et al. do for their 256x256 models (35.8M parameters at ch=96... see README).
    "cars64": ModelSpec(
        "unet",
        {
            "base_channels": 128,
            "channel_mults": (1, 1, 2, 2, 4),
            "attention_levels": (2, 3),
            "dropout": 0.1,
        },
        (64, 64),
    ),
    # 64x64 in a few minutes: Ho et al.'s CIFAR-10 layout at half the width, one more level so
    # the bottleneck is 8x8, attention at 16x16 (9.0M parameters, ~1/4 of cars64's cost an image).
    "cars64-fast": ModelSpec(
        "unet",
        {
            "base_channels": 64,
            "channel_mults": (1, 2, 2, 2),
            "attention_levels": (2,),
            "dropout": 0.0,
        },
        (64, 64),
    ),
    # cars64-fast with one residual block per level instead of two (6.1M parameters): 1.5x its
    # steps a second, and the better model after the tutorial's 2.4 minutes on Stanford Cars
    # (docs/benchmarks.md, issue 10's fourth round).
    "cars64-2min": ModelSpec(
        "unet",
        {
            "base_channels": 64,
            "channel_mults": (1, 2, 2, 2),
            "attention_levels": (2,),
            "num_res_blocks": 1,
            "dropout": 0.0,
        },
        (64, 64),
    ),
    # The reference tutorial's SimpleUnet: 62.4M parameters for RGB input.
    "tutorial": ModelSpec("tutorial", {}, (64, 64)),
    # Small enough to train on a 2-core CPU in minutes: the bundled digits at 16x16 (1.1M
    # parameters; attention only at 4x4, where it is cheap on a CPU).
    "small": ModelSpec(
        "unet",
        {
            "base_channels": 32,
            "channel_mults": (1, 2, 2),
            "attention_levels": (2,),
            "num_res_blocks": 1,
            "dropout": 0.0,
            "norm_groups": 8,
        },
        (16, 16),
    ),
    # Points and tabular rows (x_t: (B, D)): 4 residual blocks of width 128 (0.43M parameters
    # for D = 2), a few thousand steps a minute on a 2-core CPU.
    "mlp": ModelSpec("mlp", {"width": 128, "num_blocks": 4, "hidden_mult": 2}),
    # Sequences (x_t: (B, C, L)): the U-Net with 1-D convolutions, 3 levels, attention at L/4
    # (0.6M parameters for C = 1).
    "unet1d": ModelSpec(
        "unet1d",
        {
            "base_channels": 32,
            "channel_mults": (1, 2, 2),
            "attention_levels": (2,),
            "num_res_blocks": 2,
            "dropout": 0.0,
            "norm_groups": 8,
        },
    ),
}


# Which data each architecture takes, and the preset chosen for each kind of data when
# --preset is not given (images: (C, H, W); sequences: (C, L); points: (D,)).
ARCH_DATA: dict[str, tuple[str, ...]] = {
    "unet": ("images",),
    "tutorial": ("images",),
    "unet1d": ("sequences",),
    "mlp": ("points", "sequences"),  # sequences are flattened to C * L features
}
DEFAULT_PRESETS: dict[str, str] = {"images": "small", "sequences": "unet1d", "points": "mlp"}


def architectures() -> dict[str, tuple[type, type[nn.Module]]]:
    """arch name -> (config dataclass, network class), as stored in checkpoints.

    The point and sequence networks import their building blocks from this module, so they
    are looked up when a model is built rather than imported at the top (no import cycle).
    """
    from ddpm.models.mlp import MLPConfig, MLPDenoiser
    from ddpm.models.unet1d import UNet1D, UNet1DConfig

    return {
        "unet": (UNetConfig, UNet),
        "tutorial": (TutorialUNetConfig, TutorialUNet),
        "unet1d": (UNet1DConfig, UNet1D),
        "mlp": (MLPConfig, MLPDenoiser),
    }


def model_config(arch: str, config: dict[str, Any]) -> Any:
    """The config dataclass of architecture `arch` from plain data (unknown fields refused)."""
    archs = architectures()
    if arch not in archs:
        raise ConfigError(f"unknown architecture {arch!r}; expected one of {', '.join(archs)}")
    cls = archs[arch][0]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"unknown {arch} config field(s) {unknown}; known: {sorted(known)}")
    return cls(**config)


def build_model(arch: str, config: dict[str, Any]) -> nn.Module:
    """Instantiate a network from plain data (as stored in presets and checkpoints)."""
    return architectures()[arch][1](model_config(arch, config))


def preset(name: str, **overrides: Any) -> ModelSpec:
    """A named preset, with config fields overridden (e.g. in_channels=1)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    spec = PRESETS[name]
    return ModelSpec(spec.arch, {**spec.config, **overrides}, spec.image_size)


def _plain(cfg: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def config_dict(model: nn.Module) -> dict[str, Any]:
    """The plain-data config of a built model (for checkpoints)."""
    return _plain(model.config)


def full_config(arch: str, config: dict[str, Any]) -> dict[str, Any]:
    """A stored config with every field, the absent ones at their defaults: what a checkpoint
    written before a field existed means (compare these, not the stored dicts)."""
    return _plain(model_config(arch, config))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
