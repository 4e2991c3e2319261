"""The training state (model, EMA, optimizer, noise generator, step), how it is built from a
config, and how it is written to and restored from a checkpoint."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ddpm.data.arrays import ArrayDataset, ArrayInfo, is_array_spec, load_arrays
from ddpm.data.images import BUNDLED_SOURCE, Dataset, ImageDataset, load_dataset, parse_size
from ddpm.errors import ConfigError
from ddpm.io import checkpoint as ckpt_io
from ddpm.models.layers import fuse_norms
from ddpm.models.presets import (
    ARCH_DATA,
    DEFAULT_PRESETS,
    build_model,
    config_dict,
    full_config,
    preset,
)
from ddpm.speed import use_channels_last
from ddpm.train.config import TrainConfig, resolve_device
from ddpm.train.distill import Teacher, load_teacher


class EMA:
    """An exponential moving average of a model's parameters, updated with fused foreach ops.

    Parameters are matched by position, not by name, so compiling the model (which can
    rename parameters) never silently detaches the average. Buffers (BatchNorm statistics)
    are copied.
    """

    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, weight: Tensor | float) -> None:
        """ema += weight * (param - ema); `weight` = 1 - decay, 0 to skip (as a tensor: no sync)."""
        ema = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        diffs = torch._foreach_sub(params, ema)
        torch._foreach_mul_(diffs, weight)
        torch._foreach_add_(ema, diffs)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


@dataclass
class TrainState:
    """What changes as training runs; with the config, all that a checkpoint must hold."""

    model: nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    noise_gen: torch.Generator  # draws t and eps
    shape: tuple[int, ...]  # one sample: (C, H, W) images, (C, L) sequences, (D,) points
    step: int = 0
    nonfinite_total: int = 0
    best_metric: float | None = None
    extra_emas: dict[float, EMA] = field(default_factory=dict)  # σ_rel -> power-function EMA
    time_fraction: float = 0.0  # of the budget left after the warm-up, the share spent (lr)
    timesteps: Any = None  # how t is drawn (ddpm.diffusion.timesteps); None: uniform
    timesteps_saved: dict[str, Tensor] = field(default_factory=dict)  # its state when resumed
    class_names: list[str] | None = None  # of a class-conditional model, by label index
    class_counts: list[int] | None = None  # the training labels' histogram, for `ddpm eval`
    data_info: ArrayInfo | None = None  # points / sequences: scaler, classes (None: images)
    log_window: dict[str, Any] | None = None  # the loss log's open window (hooks.LossLog)
    teacher: Teacher | None = None  # of a distillation round (ddpm.train.distill)

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names is not None else None


def use_timesteps(state: TrainState, sampler: Any) -> None:
    """Make `sampler` the run's timestep sampler, with the state a resumed checkpoint saved for
    it (the importance sampler's loss history), so that resuming draws the same t."""
    state.timesteps = sampler
    saved, state.timesteps_saved = state.timesteps_saved, {}
    if saved and hasattr(sampler, "load_state_dict"):
        try:
            sampler.load_state_dict(saved)
        except (KeyError, ValueError) as e:
            raise ckpt_io.CheckpointError(f"the checkpoint's timestep sampler state: {e}") from None


def ema_key(sigma_rel: float) -> str:
    """How a power-function EMA is named in checkpoints and on the command line: `0.05`."""
    return f"{sigma_rel:g}"


def data_kind(data: Dataset | ArrayDataset) -> str:
    """images, points or sequences."""
    return data.kind if isinstance(data, ArrayDataset) else "images"


def preset_name(cfg: TrainConfig, data: Dataset | ArrayDataset) -> str:
    """--preset, or the one for the data's kind (`ddpm.models.presets.DEFAULT_PRESETS`)."""
    return cfg.preset or DEFAULT_PRESETS[data_kind(data)]


def data_classes(
    cfg: TrainConfig, data: Dataset | ArrayDataset
) -> tuple[list[str], list[int]] | None:
    """(class names, label counts) of the data for a class-conditional run, else None. By
    default the bundled digits' run is one: conditioned on the digit, 82% of its samples are
    legible against 52% without (docs/benchmarks.md)."""
    bundled = getattr(data, "source", None) == BUNDLED_SOURCE
    if not (cfg.class_cond if cfg.class_cond is not None else bundled):
        return None
    if data.labels is None or len(data.labels) == 0:
        raise ConfigError(
            f"--class-cond needs labelled data, and {data.source or 'this data'} has no labels: "
            "use a folder (or .zip) with one sub-folder per class (two or more), cifar10:PATH, "
            "mnist, stanford-cars:PATH with --split train (its test photos have no labels), or "
            "timeseries:PATH"
        )
    K = int(data.labels.max()) + 1
    names = list(data.class_names) if data.class_names else [str(k) for k in range(K)]
    counts = torch.bincount(data.labels.cpu(), minlength=len(names)).tolist()
    return names, counts


def make_model(
    cfg: TrainConfig, data: Dataset | ArrayDataset, num_classes: int | None = None
) -> tuple[str, dict[str, Any], nn.Module]:
    name, kind = preset_name(cfg, data), data_kind(data)
    spec = preset(name)
    if kind not in ARCH_DATA[spec.arch]:
        shape = "x".join(map(str, data.shape)) if isinstance(data, ArrayDataset) else ""
        raise ConfigError(
            f"preset {name} ({spec.arch}) is for {' or '.join(ARCH_DATA[spec.arch])}; the data "
            f"is {kind} {shape}: leave --preset out or use --preset {DEFAULT_PRESETS[kind]}"
        )
    if spec.arch == "mlp":
        assert isinstance(data, ArrayDataset)
        overrides: dict[str, Any] = {"in_features": math.prod(data.shape)}
    else:
        overrides = {"in_channels": data.channels}
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    overrides.update(cfg.model_overrides)
    if cfg.dropout is not None:
        if spec.arch in ("unet", "unet1d", "mlp"):
            overrides["dropout"] = cfg.dropout
        elif cfg.dropout > 0:  # 0 asks for what such a network already is (a recipe may say so)
            raise ConfigError(f"preset {name} has no dropout (--dropout {cfg.dropout})")
    if cfg.learn_sigma:
        overrides["learn_sigma"] = True
    spec = preset(name, **overrides)
    model = build_model(spec.arch, spec.config)
    if kind == "images":
        H, W = data.image_size  # type: ignore[union-attr]
        f = model.config.downsample_factor
        if H % f or W % f:
            raise ConfigError(
                f"image size {H}x{W} does not fit preset {name}: both sides must be "
                f"divisible by {f} (2 to the number of downsampling levels)"
            )
    return spec.arch, config_dict(model), model


def load_training_data(cfg: TrainConfig, progress: bool = False) -> Dataset | ArrayDataset:
    if is_array_spec(cfg.data):
        assert cfg.data is not None
        return load_arrays(cfg.data, cfg.split, cfg.pad_sequences)
    size = parse_size(cfg.image_size) if cfg.image_size else None
    if size is None:
        size = preset(cfg.preset or DEFAULT_PRESETS["images"]).image_size
    return load_dataset(
        cfg.data,
        size,
        cfg.channels,
        cfg.resize,
        cfg.strict_data,
        split=cfg.split,
        stream=cfg.stream,
        workers=cfg.data_workers,
        cache_limit_gb=cfg.cache_limit_gb,
        progress=progress,
    )


def make_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.AdamW:
    # fused=True honours `found_inf`, which lets a non-finite step be skipped on the device.
    return torch.optim.AdamW(
        model.parameters(),
        lr=cfg.lr,
        betas=(0.9, cfg.adam_beta2),
        weight_decay=cfg.weight_decay,
        fused=True,
    )


# --- checkpoints ------------------------------------------------------------------------------


def optimizer_state(opt: torch.optim.Optimizer) -> dict:
    """The optimizer's state_dict, its learning rates as numbers: a step graph's are device
    tensors that it refills every step (ddpm.train.step.StepGraph)."""
    sd = opt.state_dict()
    sd["param_groups"] = [
        {**g, "lr": float(g["lr"])} if isinstance(g["lr"], Tensor) else g
        for g in sd["param_groups"]
    ]
    return sd


def checkpoint_dict(state: TrainState, cfg: TrainConfig, arch: str, model_cfg: dict) -> dict:
    rng = {"torch": torch.get_rng_state(), "noise": state.noise_gen.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    ckpt = {
        "format": ckpt_io.FORMAT,
        "step": state.step,
        "shape": list(state.shape),
        "arch": arch,
        "model_config": model_cfg,
        "train_config": dataclasses.asdict(cfg),
        "model": state.model.state_dict(),
        "ema": state.ema.model.state_dict(),
        "emas": {ema_key(k): e.model.state_dict() for k, e in state.extra_emas.items()},
        "optimizer": optimizer_state(state.optimizer),
        "rng": rng,
        "nonfinite_total": state.nonfinite_total,
        "best_metric": state.best_metric,
        "log_window": state.log_window,
        "class_names": state.class_names,
        "class_counts": state.class_counts,
        "timesteps": (
            state.timesteps.state_dict() if hasattr(state.timesteps, "state_dict") else {}
        ),
    }
    if state.data_info is not None:  # points / sequences; absent: images (older checkpoints)
        ckpt["data"] = state.data_info.to_dict()
    return ckpt


def snapshot_dict(state: TrainState, cfg: TrainConfig, arch: str, model_cfg: dict) -> dict:
    """A checkpoint for sampling only, copied to host memory: the weights and every EMA, without
    the optimizer and RNG state (it cannot be resumed from; `load_model` reads it)."""
    d = checkpoint_dict(state, cfg, arch, model_cfg)
    del d["optimizer"], d["rng"]

    def cpu(v: Any) -> Any:
        if isinstance(v, Tensor):
            return v.detach().to("cpu", copy=True)
        return {k: cpu(x) for k, x in v.items()} if isinstance(v, dict) else v

    return cpu(d)


def checkpoint_path(cfg: TrainConfig, step: int) -> Path:
    return Path(cfg.out) / f"ckpt-{step:07d}.pt"


def save_checkpoint(state: TrainState, cfg: TrainConfig, arch: str, model_cfg: dict) -> Path:
    path = checkpoint_path(cfg, state.step)
    ckpt_io.atomic_save(checkpoint_dict(state, cfg, arch, model_cfg), path)
    ckpt_io.prune_checkpoints(path.parent, cfg.keep_checkpoints)
    return path


def restore(state: TrainState, ckpt: dict, arch: str, model_cfg: dict, path: Path) -> None:
    """Load a checkpoint's weights, optimizer, step and RNG states into `state`."""
    try:  # fields added since the checkpoint was written compare at their defaults
        theirs, ours = full_config(ckpt["arch"], ckpt["model_config"]), full_config(arch, model_cfg)
    except ConfigError as e:
        raise ckpt_io.CheckpointError(
            f"{path}: the checkpoint's model config is invalid ({e})"
        ) from None
    if ckpt["arch"] != arch or theirs != ours:
        keys = sorted(k for k in {*theirs, *ours} if theirs.get(k) != ours.get(k))
        diff = [f"arch {ckpt['arch']} vs {arch}"] if ckpt["arch"] != arch else []
        diff += [f"{k} {theirs.get(k)} vs {ours.get(k)}" for k in keys]
        raise ckpt_io.CheckpointError(
            f"{path}: the checkpoint's model differs from this run's ({'; '.join(diff)}); "
            "resume with the same preset, data shape and classes"
        )
    if tuple(ckpt["shape"]) != tuple(state.shape):
        raise ckpt_io.CheckpointError(
            f"{path}: the checkpoint was trained on data of shape {tuple(ckpt['shape'])} "
            f"(per sample), this run's data is {tuple(state.shape)}; use the same data (and "
            "for images the same --image-size and --channels) to resume"
        )
    if ckpt.get("class_names") != state.class_names:
        raise ckpt_io.CheckpointError(
            f"{path}: the checkpoint's classes ({_classes(ckpt.get('class_names'))}) differ "
            f"from this run's data ({_classes(state.class_names)}); resume on the same data"
        )
    state.model.load_state_dict(ckpt["model"])
    state.ema.model.load_state_dict(ckpt["ema"])
    saved = ckpt.get("emas", {})
    for sigma_rel, ema in state.extra_emas.items():  # an EMA new to this run starts here
        if ema_key(sigma_rel) in saved:
            ema.model.load_state_dict(saved[ema_key(sigma_rel)])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.step = int(ckpt["step"])
    state.nonfinite_total = int(ckpt.get("nonfinite_total", 0))
    state.best_metric = ckpt.get("best_metric")
    state.log_window = ckpt.get("log_window")
    state.timesteps_saved = ckpt.get("timesteps") or {}
    torch.set_rng_state(ckpt["rng"]["torch"])
    state.noise_gen.set_state(ckpt["rng"]["noise"])
    if "cuda" in ckpt["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])


def _classes(names: list[str] | None) -> str:
    if names is None:
        return "unconditional"
    return f"{len(names)} classes: " + ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def find_resume(resume: str, out: str) -> Path:
    """`--resume auto` (or a folder) means the newest checkpoint in the run's folder."""
    if resume == "auto" and not Path(out).is_dir():
        raise ckpt_io.CheckpointError(
            f"{out}: no run folder to resume: --resume alone continues the run in --out, "
            "which must hold its ckpt-<step>.pt files (or give --resume a checkpoint file)"
        )
    return ckpt_io.resolve_checkpoint(out if resume == "auto" else resume)


def read_resume(resume: str, out: str) -> tuple[Path, dict]:
    """The checkpoint `--resume` names (see find_resume), loaded: (path, checkpoint dict)."""
    path = find_resume(resume, out)
    return path, ckpt_io.load_checkpoint(path)


def setup(
    cfg: TrainConfig,
    data: ImageDataset | ArrayDataset | None = None,
    resume: str | None = None,
    device: torch.device | None = None,
    read: Callable[[str, str], tuple[Path, dict]] = read_resume,
    progress: bool = False,
):
    """Build data, model, EMA, optimizer and schedule; restore a checkpoint if resuming.

    `device` None means cfg.device; `read` loads the checkpoint to resume from (under DDP:
    on rank 0, handed to the others), before the data is read, so that a bad checkpoint stops
    the run at once; `progress` shows the decoding of the data."""
    device = resolve_device(cfg.device) if device is None else device
    ckpt = path = None
    if resume is not None:
        path, ckpt = read(resume, cfg.out)
    torch.manual_seed(cfg.seed)
    data = data if data is not None else load_training_data(cfg, progress)
    classes = data_classes(cfg, data)
    arch, model_cfg, model = make_model(cfg, data, len(classes[0]) if classes else None)
    model.to(device)
    if cfg.channels_last and device.type == "cuda":
        use_channels_last(model)  # before the EMA copy, so that both share one layout
    if cfg.fused_norm and device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            raise ConfigError("--fused-norm needs Triton: pip install triton, or --no-fused-norm")
        fuse_norms(model)  # the EMA copy too
    state = TrainState(
        model=model,
        ema=EMA(model),
        optimizer=make_optimizer(cfg, model, device),
        noise_gen=torch.Generator(device=device).manual_seed(cfg.seed),
        shape=data.shape if isinstance(data, ArrayDataset) else (data.channels, *data.image_size),
        extra_emas={s: EMA(model) for s in cfg.ema_extra},
        class_names=classes[0] if classes else None,
        class_counts=classes[1] if classes else None,
        data_info=data.info() if isinstance(data, ArrayDataset) else None,
    )
    if cfg.distill_from is not None:
        state.teacher = load_teacher(cfg, device, model if ckpt is None else None)
    if ckpt is not None and path is not None:
        restore(state, ckpt, arch, model_cfg, path)
    elif state.teacher is not None:  # the student starts as its teacher
        state.ema, state.extra_emas = EMA(model), {s: EMA(model) for s in cfg.ema_extra}
    return device, data, arch, model_cfg, state
