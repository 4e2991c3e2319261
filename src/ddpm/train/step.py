"""One optimisation step of Ho et al. 2020 Algorithm 1, with the non-finite guard."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ddpm.conditioning import drop_labels
from ddpm.losses import training_losses
from ddpm.schedule import NoiseSchedule
from ddpm.train.config import TrainConfig, ema_decay_at, lr_at, power_ema_beta
from ddpm.train.distributed import all_true, gather_equal_rows
from ddpm.train.state import TrainState


def train_step(
    state: TrainState,
    schedule: NoiseSchedule,
    cfg: TrainConfig,
    x_0: Tensor,
    y: Tensor | None,
    autocast: bool,
    ddp: nn.Module | None = None,
    rows: slice | None = None,
) -> tuple[Tensor, Tensor]:
    """One optimisation step of Algorithm 1. Returns (loss, ok) as device tensors, no sync.

    A step whose loss or gradient norm is not finite changes neither the weights, the
    optimizer moments nor the EMA (`ok` is False). A class-conditional model gets the labels
    y (B,), each replaced by the null class with probability cfg.cond_drop (Ho & Salimans
    2022, Algorithm 1); an unconditional one gets none.

    Under DDP, `ddp` is the wrapped model (whose backward averages the gradients over the
    processes) and x_0, y hold `rows` of the global batch of cfg.batch_size images; `loss` is
    this process's share, `ok` is agreed by every process (an all-reduce on the device).
    """
    model, opt = state.model, state.optimizer
    B = x_0.shape[0] if rows is None else cfg.batch_size
    t, eps, weights = draw_noise(state, schedule, x_0, B, rows)
    if state.num_classes is None or y is None:
        y = None  # an unconditional network takes no labels
    else:
        y = drop_labels(y, cfg.cond_drop, state.num_classes, state.noise_gen, B, rows)
    for group in opt.param_groups:
        group["lr"] = lr_at(cfg, state.step, state.time_fraction)
    call = model if ddp is None else ddp
    net = call if y is None else (lambda x, tt: call(x, tt, y))
    with torch.autocast(x_0.device.type, dtype=torch.bfloat16, enabled=autocast):
        per_sample = training_losses(
            net,
            schedule,
            x_0,
            t,
            eps,
            cfg.prediction,
            cfg.loss,
            cfg.min_snr_gamma,
            cfg.loss_weight,
            cfg.sigma_data,
            cfg.vlb_weight,
        )
    if state.timesteps is not None:  # the importance sampler's history: the global batch's
        seen, losses = t, per_sample.detach()
        if ddp is not None and hasattr(state.timesteps, "state_dict"):
            seen, losses = gather_equal_rows(seen), gather_equal_rows(losses.float())
        state.timesteps.update(seen, losses)
    loss = (per_sample if weights is None else per_sample * weights.to(per_sample.dtype)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf  # the norm feeds the guard
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm, foreach=True)
    ok = torch.isfinite(loss) & torch.isfinite(grad_norm)
    if ddp is not None:
        ok = all_true(ok)
    opt.found_inf = (~ok).float()  # read by the fused AdamW kernel: skip when 1
    opt.step()
    ok_f = ok.float()
    state.ema.update(model, ok_f * (1 - ema_decay_at(cfg, state.step)))
    for sigma_rel, ema in state.extra_emas.items():
        ema.update(model, ok_f * (1 - power_ema_beta(sigma_rel, state.step + 1)))
    state.step += 1
    return loss.detach(), ok


def draw_noise(
    state: TrainState,
    schedule: NoiseSchedule,
    x_0: Tensor,
    batch_size: int | None = None,
    rows: slice | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The step's randomness from the run's generator: t (B,) from the run's timestep sampler
    (uniform when it has none), eps shaped like x_0, and the sampler's importance weights.

    Under DDP x_0 holds `rows` of a global batch of `batch_size` images: every process draws
    the whole batch's t, eps and weights and keeps its rows, so image j of batch k gets the
    same noise at any number of processes."""
    g = state.noise_gen
    B = x_0.shape[0] if batch_size is None else batch_size
    if state.timesteps is None:
        t, weights = torch.randint(0, schedule.T, (B,), device=x_0.device, generator=g), None
    else:
        t, weights = state.timesteps.sample(B, g, x_0.device)
    eps = torch.randn((B, *x_0.shape[1:]), device=x_0.device, generator=g)
    if rows is not None:
        t, eps = t[rows], eps[rows]
        weights = None if weights is None else weights[rows]
    return t, eps, weights
