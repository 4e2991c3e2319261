"""A trained model ready to sample (`Loaded`): the network, its schedule, what it predicts,
and what it was trained on; `load_model` builds it from a checkpoint, a safetensors export or
a diffusers folder, `with_guidance` gives it a guide model or a guidance interval, and
`speed_up` the GPU speed features. Sampling from it is `ddpm.sampling.generate`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ddpm.data.arrays import ArrayInfo
from ddpm.diffusion.process import eps_model
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import CheckpointError, ConfigError, ScheduleError
from ddpm.io.interchange import model_path, read_model
from ddpm.io.tuned import read_tuned
from ddpm.models.presets import build_model
from ddpm.sampling.guidance import (
    autoguided,
    class_weights,
    draw_classes,
    guided,
    interval_timesteps,
    limited,
)
from ddpm.speed import autocast_call, compile_model, use_channels_last

UNCONDITIONAL = (
    "class labels and classifier-free guidance need a class-conditional model (trained with "
    "--class-cond); this one is unconditional (autoguidance by a weaker model guides any: "
    "--guide-model)"
)


@dataclass
class Loaded:
    """A trained model ready to sample: the network, its schedule and what it predicts."""

    model: nn.Module
    schedule: NoiseSchedule
    prediction: str
    shape: tuple[int, ...]  # one training sample: (C, H, W), (C, L) or (D,)
    step: int
    bf16: bool = False  # run the network under bf16 autocast (CUDA only; see `speed_up`)
    fixed_batch: bool = False  # compiled for one batch size: pad a short last batch to it
    origin: str = "checkpoint"  # or "safetensors", "diffusers" (`ddpm.io.interchange.read_model`)
    class_names: list[str] | None = None  # of a class-conditional model, by label index
    class_counts: list[int] | None = None  # its training labels' histogram (K,)

    def to(self, device: torch.device | str) -> Loaded:
        """The model, its schedule and its guide on `device`."""
        guide = self.guide.to(device) if self.guide is not None else None
        return dataclasses.replace(
            self, model=self.model.to(device), schedule=self.schedule.to(device), guide=guide
        )

    @property
    def num_classes(self) -> int | None:
        """K for a class-conditional network (labels 0..K-1, K the null class), else None."""
        return getattr(getattr(self.model, "config", None), "num_classes", None)

    @property
    def names(self) -> list[str]:
        """The class names (the label indices as text where the checkpoint has none)."""
        K = self.num_classes or 0
        names = self.class_names or []
        return list(names) if len(names) == K else [str(k) for k in range(K)]

    @property
    def eps(self) -> Callable[[Tensor, Tensor], Tensor]:
        """The network as the samplers call it: eps (and v, with learned variances); for a
        class-conditional network the unconditional (null class) one."""
        return self.eps_given()

    def eps_given(
        self, class_labels: Tensor | None = None, guidance: float = 0.0
    ) -> Callable[[Tensor, Tensor], Tensor]:
        """eps(x_t, t) for labels (B,) at guidance w (`ddpm.sampling.guidance`): classifier-free,
        (1 + w) eps(x_t, t, y) - w eps(x_t, t, null), or with a `guide` model autoguidance,
        (1 + w) eps(x_t, t[, y]) - w eps_guide(x_t, t[, y]); w = 0 is the model alone. With a
        `guidance_interval`, guided only at those timesteps. With learned variances the v
        channels follow, taken from the conditional branch (the main model)."""
        plain = self._eps_given(class_labels)
        if guidance == 0:
            return plain
        if self.guide is not None:
            strong = autoguided(plain, self.guide._eps_given(class_labels), guidance, self.shape[0])
        else:
            strong = self._eps_given(class_labels, guidance)
        if self.guidance_interval is None:
            return strong
        return limited(strong, plain, self.guidance_interval)

    def _eps_given(
        self, class_labels: Tensor | None = None, guidance: float = 0.0
    ) -> Callable[[Tensor, Tensor], Tensor]:
        """This network's eps(x_t, t), classifier-free guided at w = `guidance`."""
        device = next(self.model.parameters()).device
        net = autocast_call(self.model, device, self.bf16)
        if class_labels is None:
            if guidance != 0:
                raise ConfigError("guidance needs class labels to guide towards")
        elif self.num_classes is None:
            raise ConfigError(UNCONDITIONAL)
        else:
            net = guided(net, class_labels.to(device), guidance, self.num_classes)
        return eps_model(net, self.schedule, self.prediction)  # type: ignore[arg-type]

    def draw_classes(
        self, seed: int, indices: range | list[int], distribution: str = "uniform"
    ) -> Tensor:
        """Labels (len(indices),) of a conditional model, image i's drawn from (seed, i):
        uniformly, or as often as in the training data ("data")."""
        K = self.num_classes
        if K is None:
            raise ConfigError("only a class-conditional model has classes to draw")
        return draw_classes(seed, indices, class_weights(distribution, K, self.class_counts))

    def check_labels(self, class_labels: Tensor, n: int) -> Tensor:
        """Labels as int64 (n,) in 0..K (K: the null class), or a ConfigError saying why not."""
        K = self.num_classes
        if K is None:
            raise ConfigError(UNCONDITIONAL)
        y = torch.as_tensor(class_labels).to("cpu", torch.int64).reshape(-1)
        if y.numel() != n:
            raise ConfigError(f"got {y.numel()} class labels for {n} images")
        if n and not (int(y.min()) >= 0 and int(y.max()) <= K):
            raise ConfigError(f"class labels must lie in 0..{K} ({K}: the null class)")
        return y

    @property
    def learn_sigma(self) -> bool:
        """Whether the network outputs the variance v too (Nichol & Dhariwal §3.1)."""
        return bool(getattr(getattr(self.model, "config", None), "learn_sigma", False))

    def variance(self, variance: str | None = None) -> str:
        """The reverse variance to use: `variance`, or by default the learned one when the
        model has it and β̃_t ("small") otherwise. "learned" on a model without it is refused."""
        if variance is None:
            return "learned" if self.learn_sigma else "small"
        if variance == "learned" and not self.learn_sigma:
            raise ConfigError(
                "--variance learned needs a model trained with --learn-sigma; this one has "
                "fixed variances: use --variance small or large"
            )
        return variance

    data: ArrayInfo | None = None  # points / sequences: the scaler, classes (None: images)
    guide: Loaded | None = None  # autoguidance's weaker model (`with_guidance`)
    guidance_interval: range | None = None  # the timesteps guided (None: all)
    # time grids tuned for this model (`ddpm tune-steps`), by number of steps
    tuned: dict[int, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    # its own sampling defaults (`ddpm.io.modelfile.sampling_defaults`)
    sampling: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "images" if self.data is None else self.data.kind

    def to_data(self, x: Tensor) -> Tensor:
        """Samples in the data's units: de-standardised points / sequences; images as they
        are (in [-1, 1])."""
        return x if self.data is None else self.data.scaler.invert(x.cpu())


def speed_up(
    loaded: Loaded,
    bf16: bool = True,
    channels_last: bool = True,
    compile: bool = False,
    compile_mode: str = "default",
) -> Loaded:
    """The GPU speed features for sampling (`ddpm.speed`); bf16 and channels-last apply on CUDA
    only. The model is changed in place; the returned Loaded runs it under autocast if bf16.

    The sampler state x_t stays float32: only the network runs in bf16.
    """
    device = next(loaded.model.parameters()).device
    if channels_last and device.type == "cuda":
        use_channels_last(loaded.model)
    compiled = compile and compile_model(loaded.model, device, compile_mode)
    guide = loaded.guide
    if guide is not None:
        guide = speed_up(guide, bf16, channels_last, compile, compile_mode)
        compiled = compiled or guide.fixed_batch
    return dataclasses.replace(
        loaded, bf16=bf16 and device.type == "cuda", fixed_batch=compiled, guide=guide
    )


def with_guidance(
    loaded: Loaded,
    guide: Loaded | None = None,
    interval: tuple[float, float] | None = None,
) -> Loaded:
    """`loaded` with autoguidance by `guide` (a weaker model of the same data: an earlier
    snapshot, a shorter EMA; `ddpm.sampling.guidance.autoguided`) and/or its guidance limited to
    the noise levels sigma in `interval` = (low, high] (sigma = sqrt((1 - ᾱ_t) / ᾱ_t); with
    images in [-1, 1], Kynkäänniemi et al.'s EDM values carry over). The guidance weight
    itself is sampling's `guidance`. A guide that does not fit is a ConfigError saying why."""
    if guide is not None:
        a = loaded.schedule.alphas_cumprod
        b = guide.schedule.alphas_cumprod.to(a.device)
        problem = None
        if guide.shape != loaded.shape:
            problem = f"its samples are {guide.shape}, the model's {loaded.shape}"
        elif a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-7):
            problem = "its noise schedule differs (T or the betas)"
        elif guide.num_classes != loaded.num_classes:
            problem = f"it has {guide.num_classes} classes, the model {loaded.num_classes}"
        elif guide.kind != loaded.kind:
            problem = f"it is a model of {guide.kind}, not of {loaded.kind}"
        if problem:
            raise ConfigError(f"the guide model does not fit the model: {problem}")
    timesteps = None
    if interval is not None:
        timesteps = interval_timesteps(loaded.schedule.alphas_cumprod, *interval)
    return dataclasses.replace(loaded, guide=guide, guidance_interval=timesteps)


def load_model(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    raw_weights: bool = False,
    ema: str | None = None,
) -> Loaded:
    """Load a model into a fresh network, in eval mode: a checkpoint's EMA weights (or the raw
    weights, or the extra power-function EMA named `ema`, such as "0.05"), a safetensors
    export or a diffusers UNet2DModel folder (`ddpm.io.interchange.read_model`)."""
    mf = read_model(path, raw_weights, ema)
    try:
        model = build_model(mf.arch, mf.model_config)
        model.load_state_dict(mf.state_dict)
        schedule = mf.noise_schedule()
        data = ArrayInfo.from_dict(mf.data) if mf.data is not None else None
    except (KeyError, RuntimeError, ConfigError, TypeError, ValueError, ScheduleError) as e:
        raise CheckpointError(f"{path}: checkpoint is incomplete or inconsistent ({e})") from None
    if mf.shape is None:
        raise CheckpointError(f"{path}: checkpoint does not record the image shape")
    device = torch.device(device)
    return Loaded(
        model.to(device).eval(),
        schedule.to(device),
        mf.prediction,
        mf.shape,
        mf.step or 0,
        origin=mf.origin,
        class_names=mf.class_names,
        class_counts=mf.class_counts,
        data=data,
        tuned=read_tuned(model_path(path)),
        sampling=mf.sampling,
    )
