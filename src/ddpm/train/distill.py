"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of
Diffusion Models", Algorithm 2): a student learns to take in one DDIM step (eta 0) what its
teacher takes in two, so that K student steps do the work of 2K teacher steps; the student
of one round is the teacher of the next, K halving each time.

A round is an ordinary training run (`ddpm.train.train`) whose step changes only its targets:
t is drawn from the student's K timesteps (every other one of the teacher's 2K on the
trailing grid), z_t = α_t x + σ_t ε as always, and the teacher's two steps from z_t to t''
(two timesteps down, or to the data after the last) give the x̃ from which one DDIM step
lands where they did (Algorithm 2):

    x̃ = (z_t'' - (σ_t''/σ_t) z_t) / (α_t'' - (σ_t''/σ_t) α_t),   ε̃ = (z_t - α_t x̃) / σ_t.

The pair (x̃, ε̃) makes the same z_t as (x, ε), so the run's own loss on it (its prediction
target, weighting and all) trains the student towards the teacher's two steps. The student
may predict another output than its teacher (`ddpm distill --prediction`, v by default for 1
or 2 steps from an eps teacher): the targets are the same, only its loss changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ddpm.diffusion.process import predict_x0_from_eps
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.errors import ConfigError
from ddpm.sampling.grids import timesteps_for
from ddpm.train.config import TrainConfig


@dataclass
class Teacher:
    """The frozen teacher of a round: eps(x_t, t, y) and the grid of its 2K steps."""

    eps: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    schedule: NoiseSchedule
    steps: int  # K, the student's
    clip: bool  # images: x̂_0 clipped to [-1, 1], as sampling does
    device: torch.device | str = "cpu"  # the student's: where the grid is kept

    def __post_init__(self) -> None:
        grid = timesteps_for(self.schedule, 2 * self.steps, "trailing")
        # t, t', t'' of each student step; t'' = -1 is the data (ᾱ = 1). On the student's
        # device from the start: a copy from the host in each step would wait for the GPU
        self.t = torch.tensor(grid[0::2], device=self.device)
        self.t_mid = torch.tensor(grid[1::2], device=self.device)
        self.t_end = torch.tensor([*grid[2::2], -1], device=self.device)

    def draw_t(self, batch_size: int, generator: torch.Generator, device) -> Tensor:
        """The student step of each image, uniform over the K (as indices into `t`)."""
        return torch.randint(0, self.steps, (batch_size,), device=device, generator=generator)

    def timesteps(self, i: Tensor) -> Tensor:
        return self.t.to(i.device)[i]

    @torch.no_grad()
    def targets(
        self, x_0: Tensor, eps: Tensor, i: Tensor, y: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """(x̃, ε̃) of Algorithm 2 for images x_0 at noise eps and student steps i."""
        t, t_mid, t_end = (v.to(i.device)[i] for v in (self.t, self.t_mid, self.t_end))
        alpha, sigma = self._alpha_sigma(t, x_0)
        z = alpha * x_0 + sigma * eps
        z_mid = self._ddim(z, t, t_mid, y)
        z_end = self._ddim(z_mid, t_mid, t_end, y)
        a_end, s_end = self._alpha_sigma(t_end, x_0)
        ratio = s_end / sigma
        x_tilde = (z_end - ratio * z) / (a_end - ratio * alpha)
        return x_tilde, (z - alpha * x_tilde) / sigma

    def _alpha_sigma(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """α_t, σ_t per image, broadcast like `like`; (1, 0) at t = -1 (the data)."""
        abar = self.schedule.alphas_cumprod.to(t.device)[t.clamp(min=0)].to(like.dtype)
        abar = torch.where(t < 0, torch.ones_like(abar), abar).view(-1, *[1] * (like.ndim - 1))
        return abar.sqrt(), (1 - abar).clamp(min=0).sqrt()

    def _ddim(self, z: Tensor, t: Tensor, t_next: Tensor, y: Tensor | None) -> Tensor:
        """One DDIM step (eta 0) of the teacher from z at t to t_next."""
        e = self.eps(z, t, y).to(z.dtype)
        x_0 = predict_x0_from_eps(self.schedule, z, t, e)
        if self.clip:
            x_0 = x_0.clamp(-1, 1)
            alpha, sigma = self._alpha_sigma(t, z)
            e = (z - alpha * x_0) / sigma
        a, s = self._alpha_sigma(t_next, z)
        return a * x_0 + s * e


def check_steps(steps: int, start: int, T: int) -> list[int]:
    """The students' steps of each round, from `start` (the first teacher's) halving down
    to `steps`: both powers of two, start > steps, 2 x start <= T."""
    for name, value in (("--steps", steps), ("--from-steps", start)):
        if value < 1 or value & (value - 1):
            raise ConfigError(f"{name} {value}: progressive distillation halves the steps, so "
                              "it must be a power of two (1, 2, 4, 8, ...)")  # fmt: skip
    if start <= steps:
        raise ConfigError(f"--from-steps {start} must exceed --steps {steps}")
    if start > T:
        raise ConfigError(f"--from-steps {start} exceeds the teacher's T = {T}")
    rounds = []
    k = start // 2
    while k >= steps:
        rounds.append(k)
        k //= 2
    return rounds


def load_teacher(cfg: TrainConfig, device: torch.device, student: nn.Module | None) -> Teacher:
    """The teacher of a round (cfg.distill_from, its EMA weights), frozen, classifier-free
    guided at w = cfg.distill_guidance; with `student`, its weights are copied there first:
    the student starts as its teacher. On CUDA with cfg.bf16 the teacher runs as sampling
    does: bf16 autocast, channels-last (`speed_up`); its targets stay float32."""
    from ddpm.sampling.loaded import load_model, speed_up

    if not cfg.distill_steps:
        raise ConfigError("a distillation round needs the student's steps (distill_steps)")
    loaded = load_model(cfg.distill_from, device)  # type: ignore[arg-type]
    loaded.model.requires_grad_(False)
    if student is not None:
        try:
            student.load_state_dict(loaded.model.state_dict())
        except RuntimeError:  # torch lists every tensor: the shapes say it in one line
            raise ConfigError(
                f"{cfg.distill_from}: the teacher's network does not fit the student's: the "
                f"teacher draws {tuple(loaded.shape)}, --data {cfg.data} gives other shapes"
            ) from None

    if cfg.bf16 and device.type == "cuda":
        loaded = speed_up(loaded, channels_last=cfg.channels_last)
    w = cfg.distill_guidance
    if w and loaded.num_classes is None:
        raise ConfigError(f"--guidance {w:g}: the teacher is not class-conditional")

    def eps(z: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        # guided (Meng et al. 2023's first stage, at one w): the student's one network call a
        # step learns the teacher's two; y = None (no labels) only for an unguided teacher
        return loaded.eps_given(y, w)(z, t)

    return Teacher(eps, loaded.schedule, cfg.distill_steps, loaded.data is None, device)
