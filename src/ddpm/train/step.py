"""One optimisation step of Ho et al. 2020 Algorithm 1, with the non-finite guard."""

from __future__ import annotations

import torch
from torch import Tensor

from ddpm.diffusion import diffusion_loss
from ddpm.schedule import NoiseSchedule
from ddpm.train.config import TrainConfig, ema_decay_at, lr_at
from ddpm.train.state import TrainState


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
