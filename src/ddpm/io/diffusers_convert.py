"""Translation between diffusers' `UNet2DModel` / `DDPMScheduler` and our U-Net and schedule, as
plain data (no files are read or written here; `ddpm.io.diffusers` does that).

Our `UNet` is diffusers' `UNet2DModel` restricted to the options Ho et al. used (diffusers
ported their weights: google/ddpm-cifar10-32 is our `ddpm-cifar10` preset, 35,746,307
parameters). Three small tables translate:

- the configs: `unet_config_from_diffusers` / `diffusers_unet_config` (UNet2DModel's
  config.json <-> `UNetConfig`), refusing what our network cannot compute;
- the weights: `BLOCKS` and `LEAVES` (module names, ours <-> theirs), plus one reshape: our
  attention holds q, k, v as one 1x1 conv `qkv`, theirs as three Linear layers;
- the schedule: `BETA_SCHEDULES` and `PREDICTIONS` (DDPMScheduler's names <-> ours).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from ddpm.diffusion.schedule import beta_range
from ddpm.errors import CheckpointError, ConfigError
from ddpm.models.presets import full_config, model_config
from ddpm.models.unet import UNetConfig

# --- the weights ---------------------------------------------------------------------------

# Module paths, ours <-> diffusers'; {i} is a level, {j} a block in it. The kind says which
# table of LEAVES renames the parameters inside.
BLOCKS: tuple[tuple[str, str, str | None], ...] = (
    ("time_mlp.0", "time_embedding.linear_1", None),
    ("time_mlp.2", "time_embedding.linear_2", None),
    ("conv_in", "conv_in", None),
    ("down.{i}.blocks.{j}", "down_blocks.{i}.resnets.{j}", "resnet"),
    ("down.{i}.attns.{j}", "down_blocks.{i}.attentions.{j}", "attention"),
    ("downsamplers.{i}.conv", "down_blocks.{i}.downsamplers.0.conv", None),
    ("mid_block1", "mid_block.resnets.0", "resnet"),
    ("mid_attn", "mid_block.attentions.0", "attention"),
    ("mid_block2", "mid_block.resnets.1", "resnet"),
    ("up.{i}.blocks.{j}", "up_blocks.{i}.resnets.{j}", "resnet"),
    ("up.{i}.attns.{j}", "up_blocks.{i}.attentions.{j}", "attention"),
    ("upsamplers.{i}.conv", "up_blocks.{i}.upsamplers.0.conv", None),
    ("norm_out", "conv_norm_out", None),
    ("conv_out", "conv_out", None),
)
LEAVES: dict[str, tuple[tuple[str, str], ...]] = {
    "resnet": (
        ("norm1", "norm1"),
        ("conv1", "conv1"),
        ("time_proj", "time_emb_proj"),
        ("norm2", "norm2"),
        ("conv2", "conv2"),
        ("skip", "conv_shortcut"),
    ),
    # qkv <-> to_q, to_k, to_v is the one reshape (see `to_diffusers_state_dict`)
    "attention": (("norm", "group_norm"), ("proj", "to_out.0")),
}
# Attention names of diffusers before 0.14 (google/ddpm-* as first published), and today's.
OLD_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{i\}", r"(\d+)").replace(r"\{j\}", r"(\d+)"))


def _fill(template: str, numbers: tuple[str, ...]) -> str:
    for n in numbers:
        template = re.sub(r"\{[ij]\}", n, template, count=1)
    return template


def _split(name: str, ours: bool) -> tuple[str, str, str | None]:
    """A parameter name -> (the other side's module path, the leaf inside it, the kind)."""
    for a, b, kind in BLOCKS:
        src, dst = (a, b) if ours else (b, a)
        m = re.fullmatch(_pattern(src).pattern + r"\.(.+)", name)
        if m:
            *numbers, leaf = m.groups()
            return _fill(dst, tuple(numbers)), leaf, kind
    raise KeyError(name)


def _rename_leaf(leaf: str, kind: str | None, ours: bool) -> str:
    """`leaf` is 'weight', 'bias' or '<module>.weight' inside a block of `kind`."""
    if kind is None:
        return leaf
    module, param = leaf.rsplit(".", 1)
    for a, b in LEAVES[kind]:
        if module == (a if ours else b):
            return f"{b if ours else a}.{param}"
    raise KeyError(leaf)


def to_diffusers_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our U-Net's parameters under diffusers' UNet2DModel names (new tensors, same values)."""
    out: dict[str, Tensor] = {}
    for name, value in state_dict.items():
        path, leaf, kind = _split(name, ours=True)
        if kind == "attention" and leaf.startswith("qkv."):
            param = leaf.split(".")[1]
            C = value.shape[0] // 3
            for part, chunk in zip(("to_q", "to_k", "to_v"), value.reshape(3, C, -1)):
                out[f"{path}.{part}.{param}"] = chunk.reshape(C, -1).squeeze(-1).clone()
        elif kind == "attention" and leaf == "proj.weight":
            out[f"{path}.to_out.0.weight"] = value.reshape(value.shape[:2]).clone()
        else:
            out[f"{path}.{_rename_leaf(leaf, kind, ours=True)}"] = value.clone()
    return out


def from_diffusers_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """diffusers' UNet2DModel parameters (today's or the pre-0.14 attention names) under ours.

    KeyError names the first parameter that has no place in our U-Net.
    """
    renamed: dict[str, Tensor] = {}
    for name, value in state_dict.items():
        module, param = name.rsplit(".", 1)
        head, _, last = module.rpartition(".")
        if last in OLD_ATTENTION and ".attentions." in module:
            name = f"{head}.{OLD_ATTENTION[last]}.{param}"
        renamed[name] = value
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for name, value in renamed.items():
        path, leaf, kind = _split(name, ours=False)
        module, _, param = leaf.rpartition(".")
        if kind == "attention" and module in ("to_q", "to_k", "to_v"):
            qkv.setdefault(f"{path}.qkv.{param}", {})[module] = value
        elif kind == "attention" and leaf == "to_out.0.weight":
            out[f"{path}.proj.weight"] = value.reshape(*value.shape, 1, 1).clone()
        else:
            out[f"{path}.{_rename_leaf(leaf, kind, ours=False)}"] = value.clone()
    for name, parts in qkv.items():
        if set(parts) != {"to_q", "to_k", "to_v"}:
            raise KeyError(f"{name}: needs to_q, to_k and to_v, found {sorted(parts)}")
        w = torch.cat([parts["to_q"], parts["to_k"], parts["to_v"]])
        out[name] = w.reshape(*w.shape, 1, 1) if w.dim() == 2 else w
    return out


def flip_time_embedding(state_dict: dict[str, Tensor], base_channels: int) -> None:
    """diffusers' `flip_sin_to_cos=True` embeds t as [cos, sin], ours as [sin, cos]: the same
    network once the first time-MLP layer's input columns swap halves (in place, our names)."""
    w = state_dict["time_mlp.0.weight"]
    half = base_channels // 2
    state_dict["time_mlp.0.weight"] = torch.cat(
        [w[:, half : 2 * half], w[:, :half], w[:, 2 * half :]], dim=1
    )


# --- the configs ----------------------------------------------------------------------------

# UNet2DModel's defaults for the keys we read (an older config.json may lack newer keys).
UNET2D_DEFAULTS: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896],
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "dropout": 0.0,
    "act_fn": "silu",
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "attn_norm_num_groups": None,
    "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
}
# Options we have no counterpart for, at the only value we can compute.
FIXED = {
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "mid_block_type": "UNetMidBlock2D",
    "mid_block_scale_factor": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "act_fn": "silu",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
}
SCALE_SHIFT = {"default": False, "scale_shift": True}  # resnet_time_scale_shift -> ours


def unet_config_from_diffusers(cfg: dict[str, Any], where: str) -> tuple[dict[str, Any], bool]:
    """UNet2DModel's config.json -> (our UNetConfig fields, whether the time embedding must be
    flipped: see `flip_time_embedding`). CheckpointError names what we cannot express."""

    def refuse(what: str) -> CheckpointError:
        return CheckpointError(f"{where}: {what}, which this project's U-Net cannot express")

    if cfg.get("_class_name") != "UNet2DModel":
        raise CheckpointError(
            f"{where}: not a UNet2DModel config (_class_name {cfg.get('_class_name')!r})"
        )
    c = {**UNET2D_DEFAULTS, **cfg}
    for key, value in FIXED.items():
        if c[key] != value:
            raise refuse(f"{key} = {c[key]!r} (we can only do {value!r})")
    widths = list(c["block_out_channels"])
    down, up = list(c["down_block_types"]), list(c["up_block_types"])
    if len(down) != len(widths) or len(up) != len(widths):
        raise CheckpointError(f"{where}: block_out_channels and the block types differ in length")
    attention = []
    for level, (d, u) in enumerate(zip(down, reversed(up))):
        if (d, u) not in (("DownBlock2D", "UpBlock2D"), ("AttnDownBlock2D", "AttnUpBlock2D")):
            raise refuse(f"down block {d!r} paired with up block {u!r} at level {level}")
        if d == "AttnDownBlock2D":
            attention.append(level)
    base = widths[0]
    if any(w % base for w in widths):
        raise refuse(f"block_out_channels {widths} (each must be a multiple of the first)")
    if c["time_embedding_dim"] not in (None, 4 * base):
        raise refuse(f"time_embedding_dim = {c['time_embedding_dim']} (ours is 4 x {base})")
    if c["out_channels"] != c["in_channels"]:
        raise refuse(
            f"out_channels = {c['out_channels']} for in_channels = {c['in_channels']} "
            "(a learned variance or another output)"
        )
    if c["attn_norm_num_groups"] not in (None, c["norm_num_groups"]):
        raise refuse("attn_norm_num_groups differing from norm_num_groups")
    # one head of the full width when attention_head_dim is None; else width // head_dim heads
    # at every attention level and in the middle block: ours has one number of heads for all
    attention_widths = {widths[lv] for lv in attention} | {widths[-1]}
    head_dim = c["attention_head_dim"]
    heads = {1} if head_dim is None else {w // head_dim for w in attention_widths}
    if len(heads) != 1 or (head_dim is not None and any(w % head_dim for w in attention_widths)):
        raise refuse(f"attention_head_dim = {head_dim} over attention widths {attention_widths}")
    if c["resnet_time_scale_shift"] not in SCALE_SHIFT:
        raise refuse(f"resnet_time_scale_shift = {c['resnet_time_scale_shift']!r}")
    if c["resnet_time_scale_shift"] == "scale_shift" and c["attn_norm_num_groups"] is None:
        # diffusers' middle block then leaves its attention unnormalised
        raise refuse("resnet_time_scale_shift 'scale_shift' with attn_norm_num_groups None")
    if c["freq_shift"] not in (0, 1) or c["downsample_padding"] not in (0, 1):
        raise refuse(
            f"freq_shift = {c['freq_shift']}, downsample_padding = {c['downsample_padding']}"
        )
    fields = {
        "in_channels": c["in_channels"],
        "base_channels": base,
        "channel_mults": [w // base for w in widths],
        "num_res_blocks": c["layers_per_block"],
        "attention_levels": attention,
        "dropout": float(c["dropout"]),
        "num_heads": heads.pop(),
        "norm_groups": c["norm_num_groups"],
        "norm_eps": float(c["norm_eps"]),
        "downsample_padding": c["downsample_padding"],
        "freq_shift": c["freq_shift"],
        "scale_shift": SCALE_SHIFT[c["resnet_time_scale_shift"]],
    }
    try:
        return full_config("unet", fields), bool(c["flip_sin_to_cos"])
    except ConfigError as e:
        raise CheckpointError(f"{where}: {e}") from None


def diffusers_unet_config(arch: str, config: dict[str, Any], shape: tuple[int, ...]) -> dict:
    """Our model config -> UNet2DModel's config.json; ConfigError for what diffusers cannot
    express (the tutorial's SimpleUnet, learned variance, class labels, non-image networks)."""
    if arch != "unet":
        what = "the tutorial's SimpleUnet" if arch == "tutorial" else f"architecture {arch!r}"
        raise ConfigError(
            f"diffusers has no counterpart of {what}: only the U-Net presets (ddpm-cifar10, "
            "cars64, small) export to diffusers; use --format safetensors"
        )
    cfg = model_config("unet", config)
    assert isinstance(cfg, UNetConfig)
    if cfg.learn_sigma:
        raise ConfigError(
            "a learned-variance model does not export to diffusers' DDPMPipeline here "
            "(its 'learned_range' variance differs in detail); use --format safetensors"
        )
    if cfg.num_classes is not None:
        raise ConfigError(
            "a class-conditional model does not export to diffusers: DDPMPipeline samples "
            "without labels; use --format safetensors"
        )
    if cfg.channel_mults[0] != 1:
        raise ConfigError(
            f"channel_mults {list(cfg.channel_mults)}: diffusers' first level has conv_in's "
            "width, so the first multiplier must be 1"
        )
    widths = [cfg.base_channels * m for m in cfg.channel_mults]
    attention_widths = {widths[lv] for lv in cfg.attention_levels} | {widths[-1]}
    if cfg.num_heads == 1:  # diffusers' None: one head as wide as each block
        head_dim = None
    elif len(attention_widths) == 1:
        head_dim = widths[-1] // cfg.num_heads
    else:
        raise ConfigError(
            f"{cfg.num_heads} heads at widths {sorted(attention_widths)}: diffusers fixes the "
            "head width instead of the number of heads, so the attention would differ"
        )
    levels = range(len(widths))
    down = ["AttnDownBlock2D" if lv in cfg.attention_levels else "DownBlock2D" for lv in levels]
    H, W = shape[-2:]
    return {
        "_class_name": "UNet2DModel",
        **UNET2D_DEFAULTS,
        "sample_size": H if H == W else [H, W],
        "in_channels": cfg.in_channels,
        "out_channels": cfg.in_channels,
        "freq_shift": cfg.freq_shift,
        "flip_sin_to_cos": False,
        "down_block_types": down,
        "up_block_types": [d.replace("Down", "Up") for d in reversed(down)],
        "block_out_channels": widths,
        "layers_per_block": cfg.num_res_blocks,
        "downsample_padding": cfg.downsample_padding,
        "dropout": cfg.dropout,
        "attention_head_dim": head_dim,
        "norm_num_groups": cfg.norm_groups,
        "norm_eps": cfg.norm_eps,
        "resnet_time_scale_shift": "scale_shift" if cfg.scale_shift else "default",
        # with scale_shift, diffusers' middle attention is unnormalised unless this is set
        "attn_norm_num_groups": cfg.norm_groups if cfg.scale_shift else None,
    }


# --- the schedule ---------------------------------------------------------------------------

BETA_SCHEDULES = {  # diffusers' beta_schedule -> ours
    "linear": "linear",
    "scaled_linear": "quadratic",  # linspace(√β_start, √β_end)²
    "squaredcos_cap_v2": "cosine",  # Nichol & Dhariwal's, betas capped at 0.999
    "sigmoid": "sigmoid",
}
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}


def schedule_from_diffusers(cfg: dict[str, Any], where: str) -> tuple[dict[str, Any], str]:
    """A scheduler_config.json -> (our schedule description, prediction)."""
    c = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, **cfg}
    c.setdefault("beta_schedule", "linear")
    if c.get("rescale_betas_zero_snr"):
        raise CheckpointError(f"{where}: rescale_betas_zero_snr (ᾱ_T = 0) is not supported")
    if str(c.get("variance_type", "fixed_small")).startswith("learned"):
        raise CheckpointError(f"{where}: a learned variance is not supported")
    prediction = PREDICTIONS.get(c.get("prediction_type", "epsilon"))
    if prediction is None:
        raise CheckpointError(
            f"{where}: prediction_type {c['prediction_type']!r}; expected one of "
            f"{', '.join(PREDICTIONS)}"
        )
    if c.get("trained_betas") is not None:
        return {"betas": [float(b) for b in c["trained_betas"]]}, prediction
    name = BETA_SCHEDULES.get(c["beta_schedule"])
    if name is None:
        raise CheckpointError(
            f"{where}: beta_schedule {c['beta_schedule']!r}; expected one of "
            f"{', '.join(BETA_SCHEDULES)}"
        )
    T = int(c["num_train_timesteps"])
    if name == "cosine":
        return {"schedule": name, "T": T, "beta_start": None, "beta_end": None}, prediction
    start, end = float(c["beta_start"]), float(c["beta_end"])
    return {"schedule": name, "T": T, "beta_start": start, "beta_end": end}, prediction


def diffusers_scheduler_config(schedule: dict[str, Any], prediction: str) -> dict[str, Any]:
    """Our schedule description -> a DDPMScheduler config (fixed small variance, clipping on,
    as `ddpm sample`'s defaults)."""
    base: dict[str, Any] = {
        "_class_name": "DDPMScheduler",
        "prediction_type": {v: k for k, v in PREDICTIONS.items()}[prediction],
        "variance_type": "fixed_small",
        "clip_sample": True,
        "clip_sample_range": 1.0,
    }
    if "betas" in schedule:
        betas = schedule["betas"]
        return {**base, "num_train_timesteps": len(betas), "trained_betas": list(betas)}
    name, T = schedule["schedule"], schedule["T"]
    ours = {v: k for k, v in BETA_SCHEDULES.items()}
    start, end = beta_range(T, schedule.get("beta_start"), schedule.get("beta_end"))
    return {
        **base,
        "num_train_timesteps": T,
        "beta_schedule": ours[name],
        "beta_start": start,
        "beta_end": end,
        "trained_betas": None,
    }
