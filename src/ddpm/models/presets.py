"""The networks as plain data: named presets (`PRESETS`), the architectures a checkpoint may
name (`architectures`), and their construction from stored configs (`build_model`).

A model is (arch, config dict); `build_model` turns it into a module, `config_dict` turns a
module back into its dict, so checkpoints and model files hold data, not code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from torch import nn

from ddpm.errors import ConfigError
from ddpm.models.mlp import MLPConfig, MLPDenoiser
from ddpm.models.tutorial_unet import TutorialUNet, TutorialUNetConfig
from ddpm.models.unet import UNet, UNetConfig
from ddpm.models.unet1d import UNet1D, UNet1DConfig


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
    # no dropout; 25.9M parameters (docs/benchmarks.md).
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
    # (docs/benchmarks.md).
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
    """arch name -> (config dataclass, network class), as stored in checkpoints."""
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
