"""Hugging Face diffusers folders: a `UNet2DModel` and its scheduler, read into our U-Net and
written from it. The configs, weight names and schedules are translated by
`ddpm.io.diffusers_convert`; this module reads and writes the files.

A folder is the layout `DDPMPipeline.save_pretrained` writes (model_index.json, unet/,
scheduler/), or a bare UNet folder (config.json + diffusion_pytorch_model.safetensors) with
scheduler_config.json beside it or in ../scheduler/. diffusers itself is never imported: it
is a test dependency, not a runtime one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ddpm.errors import CheckpointError, ConfigError
from ddpm.io.diffusers_convert import (
    diffusers_scheduler_config,
    diffusers_unet_config,
    flip_time_embedding,
    from_diffusers_state_dict,
    schedule_from_diffusers,
    to_diffusers_state_dict,
    unet_config_from_diffusers,
)
from ddpm.io.modelfile import ModelFile
from ddpm.io.paths import shareable

WEIGHTS = "diffusion_pytorch_model.safetensors"
WEIGHTS_BIN = "diffusion_pytorch_model.bin"  # older folders (read with weights_only=True)


# --- folders --------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _unet_folder(folder: Path) -> Path:
    index = folder / "model_index.json"
    if index.is_file():
        entry = _read_json(index).get("unet")
        if entry is None or list(entry)[-1] != "UNet2DModel":
            raise CheckpointError(
                f"{index}: the pipeline's unet is {entry!r}, not a diffusers UNet2DModel"
            )
        if (folder / "unet" / "config.json").is_file():
            return folder / "unet"
    if (folder / "config.json").is_file():
        return folder
    raise CheckpointError(
        f"{folder}: a folder, but not a diffusers UNet2DModel folder (no config.json or "
        "unet/config.json); to sample from a training run, name a checkpoint in it "
        "(ckpt-<step>.pt)"
    )


def _scheduler_config(folder: Path, unet: Path) -> Path:
    candidates = [
        folder / "scheduler" / "scheduler_config.json",
        folder / "scheduler_config.json",
        unet.parent / "scheduler" / "scheduler_config.json",
    ]
    for p in candidates:
        if p.is_file():
            return p
    raise CheckpointError(
        f"{folder}: no scheduler config (looked for {', '.join(str(p) for p in candidates)}); "
        "it gives the noise schedule the model was trained with"
    )


def _read_weights(unet: Path) -> dict[str, Tensor]:
    if (unet / WEIGHTS).is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(unet / WEIGHTS))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(
                f"{unet / WEIGHTS}: not a readable safetensors file ({e})"
            ) from None
    if (unet / WEIGHTS_BIN).is_file():
        try:
            return torch.load(unet / WEIGHTS_BIN, map_location="cpu", weights_only=True)
        except Exception as e:  # a crafted or corrupt pickle fails anywhere in the unpickler
            raise CheckpointError(
                f"{unet / WEIGHTS_BIN}: refused or unreadable ({type(e).__name__})"
            ) from None
    raise CheckpointError(f"{unet}: no {WEIGHTS} (or {WEIGHTS_BIN})")


def is_diffusers_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and any(
        (p / f).is_file() for f in ("model_index.json", "config.json", "unet/config.json")
    )


def load_diffusers(folder: str | os.PathLike) -> ModelFile:
    """A diffusers UNet2DModel folder (and its scheduler config) as a ModelFile of our U-Net."""
    folder = Path(folder)
    unet = _unet_folder(folder)
    cfg = _read_json(unet / "config.json")
    model_config, flip = unet_config_from_diffusers(cfg, str(unet / "config.json"))
    sched_path = _scheduler_config(folder, unet)
    schedule, prediction = schedule_from_diffusers(_read_json(sched_path), str(sched_path))
    size = cfg.get("sample_size")
    if size is None:
        raise CheckpointError(f"{unet / 'config.json'}: no sample_size (the image size)")
    H, W = (size, size) if isinstance(size, int) else size
    try:
        state_dict = from_diffusers_state_dict(_read_weights(unet))
    except KeyError as e:
        raise CheckpointError(f"{unet}: parameter {e} has no place in our U-Net") from None
    if flip:
        flip_time_embedding(state_dict, model_config["base_channels"])
    return ModelFile(
        arch="unet",
        model_config=model_config,
        state_dict=state_dict,
        shape=(model_config["in_channels"], H, W),
        schedule=schedule,
        prediction=prediction,
        step=None,
        origin="diffusers",
    )


def save_diffusers(model: ModelFile, folder: str | os.PathLike) -> None:
    """Write a DDPMPipeline folder (model_index.json, unet/, scheduler/) that
    `diffusers.DDPMPipeline.from_pretrained(folder)` loads. The folder must not exist or be
    empty; it is assembled beside it and renamed into place."""
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"--out {folder}: exists and is not an empty folder; name a new one")
    unet_cfg = diffusers_unet_config(model.arch, model.model_config, model.shape)
    scheduler_cfg = diffusers_scheduler_config(model.schedule, model.prediction)
    tensors = to_diffusers_state_dict(model.state_dict)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        index = {
            "_class_name": "DDPMPipeline",
            "scheduler": ["diffusers", "DDPMScheduler"],
            "unet": ["diffusers", "UNet2DModel"],
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        (tmp / "unet").mkdir()
        (tmp / "unet" / "config.json").write_text(json.dumps(unet_cfg, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "unet" / WEIGHTS))
        (tmp / "scheduler").mkdir()
        sched_json = json.dumps(scheduler_cfg, indent=2) + "\n"
        (tmp / "scheduler" / "scheduler_config.json").write_text(sched_json)
        for path in (tmp, *tmp.rglob("*")):  # mkdtemp and safetensors write owner-only
            shareable(path)
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
