"""One optimisation step of Ho et al. 2020 Algorithm 1, with the non-finite guard; and the
same step captured whole as one CUDA graph (`StepGraph`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ddpm.diffusion.losses import training_losses
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.sampling.guidance import drop_labels
from ddpm.train.config import TrainConfig, ema_decay_at, lr_at, power_ema_beta
from ddpm.train.distributed import all_true, gather_equal_rows
from ddpm.train.state import TrainState


@dataclass
class StepRates:
    """What a step takes from the step count: the learning rate and each EMA's weight
    (1 - decay). Python floats, or device tensors that a CUDA graph reads at each replay."""

    lr: float | Tensor
    ema: float | Tensor
    extra: dict[float, float | Tensor] = field(default_factory=dict)  # σ_rel -> weight


def step_rates(cfg: TrainConfig, state: TrainState) -> StepRates:
    """The rates of the step about to run (0-based state.step)."""
    k = state.step
    return StepRates(
        lr_at(cfg, k, state.time_fraction),
        1 - ema_decay_at(cfg, k),
        {sigma_rel: 1 - power_ema_beta(sigma_rel, k + 1) for sigma_rel in state.extra_emas},
    )


def train_step(
    state: TrainState,
    schedule: NoiseSchedule,
    cfg: TrainConfig,
    x_0: Tensor,
    y: Tensor | None,
    autocast: bool,
    ddp: nn.Module | None = None,
    rows: slice | None = None,
    rates: StepRates | None = None,
) -> tuple[Tensor, Tensor]:
    """One optimisation step of Algorithm 1. Returns (loss, ok) as device tensors, no sync.

    A step whose loss or gradient norm is not finite changes neither the weights, the
    optimizer moments nor the EMA (`ok` is False). A class-conditional model gets the labels
    y (B,), each replaced by the null class with probability cfg.cond_drop (Ho & Salimans
    2022, Algorithm 1); an unconditional one gets none.

    Under DDP, `ddp` is the wrapped model (whose backward averages the gradients over the
    processes) and x_0, y hold `rows` of the global batch of cfg.batch_size images; `loss` is
    this process's share, `ok` is agreed by every process (an all-reduce on the device).

    `rates` (default: `step_rates` of this step) may hold device tensors, as under a CUDA
    graph, where nothing read from Python on the host may change between replays.
    """
    rates = step_rates(cfg, state) if rates is None else rates
    model, opt = state.model, state.optimizer
    B = x_0.shape[0] if rows is None else cfg.batch_size
    t, eps, weights = draw_noise(state, schedule, x_0, B, rows)
    if state.num_classes is None or y is None:
        y = None  # an unconditional network takes no labels
    else:
        y = drop_labels(y, cfg.cond_drop, state.num_classes, state.noise_gen, B, rows)
    if state.teacher is not None:  # distillation: t is a student step, the targets its teacher's
        x_0, eps = state.teacher.targets(x_0, eps, t, y)
        t = state.teacher.timesteps(t)
    for group in opt.param_groups:
        group["lr"] = rates.lr
    call = model if ddp is None else ddp
    net = call if y is None else (lambda x, tt: call(x, tt, y))
    # no cast-weight cache: a CUDA graph cannot hold one (and each weight is cast once anyway)
    with torch.autocast(
        x_0.device.type, dtype=torch.bfloat16, enabled=autocast, cache_enabled=False
    ):
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
    state.ema.update(model, ok_f * rates.ema)
    for sigma_rel, ema in state.extra_emas.items():
        ema.update(model, ok_f * rates.extra[sigma_rel])
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
    if state.teacher is not None:  # the index of each image's student step (ddpm.train.distill)
        t, weights = state.teacher.draw_t(B, g, x_0.device), None
    elif state.timesteps is None:
        t, weights = torch.randint(0, schedule.T, (B,), device=x_0.device, generator=g), None
    else:
        t, weights = state.timesteps.sample(B, g, x_0.device)
    eps = torch.randn((B, *x_0.shape[1:]), device=x_0.device, generator=g)
    if rows is not None:
        t, eps = t[rows], eps[rows]
        weights = None if weights is None else weights[rows]
    return t, eps, weights


class StepGraph:
    """`train_step` captured whole as one CUDA graph, replayed once a step.

    With the model's own CUDA graphs (compile mode reduce-overhead) only the network's
    forward and backward replay; the loss weighting, gradient clipping, AdamW and the EMAs
    still launch their kernels one by one from Python, a few hundred per step. On an H100
    that host work, not the GPU, set the pace at batch 64 (about 30 steps a second
    whatever the batch: docs/benchmarks.md). Captured whole, a step costs the host one
    replay, a copy of the batch into the graph's input and the fill of its rates.

    The first `warmup` calls run eagerly on a side stream (they compile the model and let
    cuDNN and the allocator settle, as CUDA graphs require); the next call captures and
    replays. The noise comes from the run's generator, registered with the graph so that
    each replay draws fresh noise. With `capture=False` every call runs `train_step` on the
    same static inputs and rate tensors instead: the graph's bookkeeping without the graph
    (how the CPU tests check it).
    """

    def __init__(
        self,
        state: TrainState,
        schedule: NoiseSchedule,
        cfg: TrainConfig,
        autocast: bool,
        device: torch.device,
        warmup: int = 3,
        capture: bool = True,
    ):
        self.state, self.schedule, self.cfg, self.autocast = state, schedule, cfg, autocast
        self.warmup, self.capture, self.calls = warmup, capture, 0
        r = step_rates(cfg, state)
        as_tensor = lambda v: torch.tensor(float(v), device=device)  # noqa: E731
        self.rates = StepRates(
            as_tensor(r.lr), as_tensor(r.ema), {k: as_tensor(v) for k, v in r.extra.items()}
        )
        self.graph: torch.cuda.CUDAGraph | None = None
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.out: tuple[Tensor, Tensor] | None = None

    def _fill(self, x_0: Tensor, y: Tensor | None) -> None:
        assert self.x is not None
        self.x.copy_(x_0)
        if y is not None and self.y is not None:
            self.y.copy_(y)
        r = step_rates(self.cfg, self.state)
        self.rates.lr.fill_(r.lr)  # type: ignore[union-attr]
        self.rates.ema.fill_(r.ema)  # type: ignore[union-attr]
        for k, v in r.extra.items():
            self.rates.extra[k].fill_(v)  # type: ignore[union-attr]

    def _step(self) -> tuple[Tensor, Tensor]:
        return train_step(
            self.state, self.schedule, self.cfg, self.x, self.y, self.autocast, rates=self.rates
        )  # type: ignore[arg-type]

    def __call__(self, x_0: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        self.calls += 1
        if self.x is None:
            self.x, self.y = x_0.clone(), (None if y is None else y.clone())
        if self.graph is None and self.calls > self.warmup and self.capture:
            self._capture()
        self._fill(x_0, y)
        if self.graph is None:
            if not self.capture:
                return self._step()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss, ok = self._step()
            torch.cuda.current_stream().wait_stream(side)
            return loss, ok
        self.graph.replay()
        self.state.step += 1
        assert self.out is not None
        return self.out

    def _capture(self) -> None:
        state, opt = self.state, self.state.optimizer
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(state.noise_gen)
        step = state.step
        for group in opt.param_groups:  # AdamW refuses capture without it
            group["capturable"] = True
        try:  # torch.cuda.graph synchronises before it captures
            with torch.cuda.graph(graph):
                self.out = self._step()
        except RuntimeError as e:
            raise RuntimeError(
                f"capturing the training step as one CUDA graph (--step-graph) failed: {e}\n"
                "Train without --step-graph (the model's own graphs: --compile-mode "
                "reduce-overhead)."
            ) from e
        finally:
            for group in opt.param_groups:  # replays need it no more; checkpoints keep False
                group["capturable"] = False
        state.step = step  # capturing ran nothing: each replay is a step
        self.graph = graph


def step_graph_unavailable(cfg: TrainConfig, device: torch.device, world_size: int) -> str | None:
    """Why `StepGraph` cannot run this training, or None when it can."""
    if device.type != "cuda":
        return "it needs CUDA"
    if world_size > 1:
        return "several processes (DDP) replay their all-reduces outside a graph"
    if cfg.timestep_sampling == "importance":
        return "the importance sampler keeps its loss history on the host"
    if cfg.distill_from is not None:  # never run under a capture on a GPU: not offered
        return "a distillation round's teacher has not been captured in one yet"
    return None
