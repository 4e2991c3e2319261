"""Any model file in, any shareable format out: what `ddpm sample --checkpoint` and
`ddpm export` accept and write.

In: a training checkpoint (.pt), a safetensors export, or a diffusers UNet2DModel folder.
Out: `--format safetensors` (one set of weights and a JSON description in the header) or
`--format diffusers` (a DDPMPipeline folder). Training checkpoints stay as they are: they hold
the optimizer and RNG states that resuming needs, which an export leaves out.
"""

from __future__ import annotations

import os
from pathlib import Path

from ddpm.errors import CheckpointError, ConfigError
from ddpm.io.checkpoint import load_checkpoint, resolve_checkpoint
from ddpm.io.diffusers import is_diffusers_folder, load_diffusers, save_diffusers
from ddpm.io.modelfile import ModelFile, from_checkpoint, is_safetensors, load_safetensors
from ddpm.io.modelfile import save_safetensors as save_safetensors
from ddpm.models.presets import build_model

FORMATS = ("safetensors", "diffusers")


def model_path(path: str | os.PathLike) -> Path:
    """The file (or diffusers folder) that `path` names: a training run's folder stands for
    its newest ckpt-<step>.pt (or a message says what it looked for: ckpt-<step>.pt files, or a
    diffusers folder's config.json)."""
    path = Path(path)
    if path.is_dir() and not is_diffusers_folder(path):
        return resolve_checkpoint(path, also="or a diffusers folder's config.json")
    return path


def read_model(
    path: str | os.PathLike, raw_weights: bool = False, ema: str | None = None
) -> ModelFile:
    """The model in `path`: a checkpoint's EMA weights (the raw ones with `raw_weights`, or its
    extra EMA named `ema`), a safetensors export, or a diffusers folder. CheckpointError names
    the file on any problem."""
    if raw_weights and ema is not None:
        raise ConfigError("choose the raw weights or an EMA, not both")
    path = model_path(path)
    if path.is_dir():
        model = load_diffusers(path)
    elif path.is_file() and is_safetensors(path):
        model = load_safetensors(path)
    else:
        ckpt = load_checkpoint(path)
        if ema is not None and ema not in ckpt.get("emas", {}):
            have = ", ".join(ckpt.get("emas", {})) or "none"
            raise CheckpointError(f"{path}: no EMA {ema!r} (its extra EMAs: {have})")
        try:
            return from_checkpoint(ckpt, raw_weights, ema)
        except KeyError as e:
            raise CheckpointError(f"{path}: checkpoint is incomplete (no {e})") from None
    if raw_weights or ema is not None:
        flag = "--raw-weights" if raw_weights else "--ema"
        raise ConfigError(
            f"{path} holds one set of weights (an export or a diffusers folder): "
            f"{flag} applies to training checkpoints only"
        )
    return model


def export_model(
    src: str | os.PathLike, fmt: str, out: str | os.PathLike, raw_weights: bool = False
) -> ModelFile:
    """Write the model in `src` (EMA weights unless `raw_weights`) as `fmt` to `out`.

    The weights are loaded into a freshly built network first, so a file that would not
    sample is refused here rather than by whoever receives the export.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    model = read_model(src, raw_weights)
    if model.data is not None:  # the scaler and reference rows have no place in these formats
        raise ConfigError(
            f"{src} is a model of {model.data.get('kind', 'points or sequences')}: export "
            "writes image models only; use the checkpoint itself"
        )
    try:
        net = build_model(model.arch, model.model_config)
        net.load_state_dict(model.state_dict)
    except (RuntimeError, ConfigError, TypeError) as e:
        raise CheckpointError(f"{src}: the weights do not fit their config ({e})") from None
    model.state_dict = net.state_dict()
    if fmt == "safetensors":
        save_safetensors(model, out)
    else:
        save_diffusers(model, out)
    return model
