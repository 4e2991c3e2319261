"""A trained model as plain data, whichever file it came from, and the safetensors export.

Three kinds of file hold a model we can sample from:

- a training checkpoint `ckpt-<step>.pt` (`ddpm.io.checkpoint`: weights, EMA weights, optimizer,
  the run's config);
- a safetensors export (`ddpm export --format safetensors`): one set of weights and, in the
  file's header, a JSON description (architecture, config, image shape, schedule,
  parameterisation). It loads without pickle at all and is the artefact to share;
- a diffusers `UNet2DModel` folder (`ddpm.io.diffusers`).

Each is read into a `ModelFile`; `ddpm.sampling.loaded.load_model` builds the network from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from ddpm.diffusion.schedule import NoiseSchedule, make_schedule
from ddpm.errors import CheckpointError
from ddpm.io.checkpoint import FORMAT
from ddpm.io.paths import written_atomically

# The header key of a safetensors export that holds our JSON description.
HEADER_KEY = "ddpm"


@dataclass
class ModelFile:
    """What a sampler needs from a trained model, as plain data.

    `schedule` holds `make_schedule`'s arguments ({"schedule", "T", "beta_start", "beta_end"},
    the keys a checkpoint's train_config uses) or explicit {"betas": [...]}.
    """

    arch: str
    model_config: dict[str, Any]
    state_dict: dict[str, Tensor]
    shape: tuple[int, int, int]  # (C, H, W) of the training images
    schedule: dict[str, Any]
    prediction: str  # eps, x0 or v
    step: int | None  # training steps behind the weights; None when the file does not say
    origin: str  # "checkpoint", "safetensors" or "diffusers"
    class_names: list[str] | None = None  # a class-conditional model's classes, by label
    class_counts: list[int] | None = None  # its training labels' histogram
    data: dict[str, Any] | None = None  # points / sequences: `ddpm.data.arrays.ArrayInfo.to_dict()`
    # how the model samples where no flag says (SamplingSpec fields: eta, and a distilled
    # model's sampler, steps and spacing), and `distilled`: the fewest steps it was trained for
    sampling: dict[str, Any] = dataclasses.field(default_factory=dict)

    def noise_schedule(self) -> NoiseSchedule:
        if "betas" in self.schedule:
            return NoiseSchedule.from_betas(self.schedule["betas"])
        s = self.schedule
        return make_schedule(s["schedule"], s["T"], s.get("beta_start"), s.get("beta_end"))

    def description(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-able data."""
        return {
            "format": FORMAT,
            "arch": self.arch,
            "model_config": self.model_config,
            "shape": list(self.shape),
            "schedule": self.schedule,
            "prediction": self.prediction,
            "step": self.step,
            **({"class_names": self.class_names} if self.class_names is not None else {}),
            **({"class_counts": self.class_counts} if self.class_counts is not None else {}),
            **({"sampling": self.sampling} if self.sampling else {}),
        }


def from_checkpoint(
    ckpt: dict[str, Any], raw_weights: bool = False, ema: str | None = None
) -> ModelFile:
    """The EMA weights of a training checkpoint (the raw ones, or the extra EMA named `ema`);
    KeyError if a key is missing."""
    cfg = ckpt["train_config"]
    shape = tuple(ckpt["shape"]) if "shape" in ckpt else None
    weights = ckpt["emas"][ema] if ema is not None else ckpt["model" if raw_weights else "ema"]
    return ModelFile(
        arch=ckpt["arch"],
        model_config=ckpt["model_config"],
        state_dict=weights,
        shape=shape,  # type: ignore[arg-type]  # checked by the caller
        schedule={k: cfg[k] for k in ("schedule", "T", "beta_start", "beta_end")},
        prediction=cfg["prediction"],
        step=int(ckpt["step"]),
        origin="checkpoint",
        **classes(ckpt),
        data=ckpt.get("data"),
        sampling=sampling_defaults(cfg),
    )


def sampling_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's own sampling defaults, from its train_config: the eta its training
    pictures were drawn with; a distilled student's sampler, steps and grid (those it was
    trained to take: DDIM, eta 0, on the trailing grid)."""
    steps = cfg.get("distill_steps")
    if steps:
        return {"sampler": "ddim", "steps": steps, "spacing": "trailing", "eta": 0.0,
                "distilled": steps}  # fmt: skip
    return {"eta": float(cfg["sample_eta"])} if "sample_eta" in cfg else {}


def classes(d: dict[str, Any]) -> dict[str, Any]:
    """class_names and class_counts of a checkpoint or description (None for an
    unconditional model, and for files written before classes were recorded)."""
    names, counts = d.get("class_names"), d.get("class_counts")
    return {
        "class_names": [str(c) for c in names] if names is not None else None,
        "class_counts": [int(c) for c in counts] if counts is not None else None,
    }


def is_safetensors(path: str | os.PathLike) -> bool:
    """A file whose first 8 bytes give a plausible JSON header length followed by '{'."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 2**28


def save_safetensors(model: ModelFile, path: str | os.PathLike) -> None:
    """Write the weights and the JSON description (in the header) atomically to `path`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict.items()}
    header = {HEADER_KEY: json.dumps(model.description()), "format": "pt"}
    with written_atomically(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def load_safetensors(path: str | os.PathLike) -> ModelFile:
    """Read a safetensors export; CheckpointError naming the file on any problem."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        state_dict = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if HEADER_KEY not in header:
        raise CheckpointError(
            f"{path}: a safetensors file without a ddpm-from-scratch description in its header "
            "(write one with `ddpm export --format safetensors`; for diffusers weights, pass "
            "the folder that holds config.json)"
        )
    try:
        d = json.loads(header[HEADER_KEY])
        if d.get("format") != FORMAT:
            raise ValueError(f"format {d.get('format')!r}, expected {FORMAT}")
        return ModelFile(
            arch=d["arch"],
            model_config=d["model_config"],
            state_dict=state_dict,
            shape=tuple(d["shape"]),  # type: ignore[arg-type]
            schedule=d["schedule"],
            prediction=d["prediction"],
            step=d.get("step"),
            origin="safetensors",
            **classes(d),
            sampling=dict(d.get("sampling") or {}),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: the header's description is incomplete ({e})") from None
