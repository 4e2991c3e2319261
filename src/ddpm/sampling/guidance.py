"""Class conditioning and classifier-free guidance (Ho & Salimans 2022); autoguidance
(Karras et al. 2024) and limited guidance intervals (Kynkäänniemi et al. 2024).

One network learns both the conditional eps(x_t, t, y) and the unconditional eps(x_t, t, ∅):
in training, `drop_labels` replaces each label by the null class ∅ (label index
`num_classes`, the last row of `ddpm.models.layers.ClassEmbedding`) with probability p_uncond. In
sampling, `guided` turns the network into a plain `model(x_t, t)` for any sampler of
`ddpm.sampling.samplers`, with the guided prediction (Ho & Salimans eq. 6)

    eps~ = eps(x_t, t, y) + w (eps(x_t, t, y) - eps(x_t, t, ∅)) = (1 + w) eps_c - w eps_u,

so w = 0 is the plain conditional model and larger w trades diversity for fidelity to the
class (diffusers' `guidance_scale` is 1 + w).

Shapes: labels y are int64 (B,); network outputs (B, C, ...) or, for a network that learns
its variance, (B, 2C, ...), whose last C channels (the variance output, `var_values` in
`ddpm.diffusion.process`) are taken from the conditional branch unchanged (as GLIDE).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ddpm.diffusion.process import EpsModel
from ddpm.diffusion.schedule import noise_levels
from ddpm.errors import ConfigError

Network = Callable[..., Tensor]  # model(x_t, t, y) -> (B, C or 2C, ...)
CLASS_DISTRIBUTIONS = ("uniform", "data")


# --- training ---------------------------------------------------------------------------------


def drop_labels(
    y: Tensor,
    p: float,
    num_classes: int,
    generator: torch.Generator,
    batch_size: int | None = None,
    rows: slice | None = None,
) -> Tensor:
    """y (B,) with each label replaced by the null class `num_classes` with probability p.

    The coin flips are drawn for the whole batch from `generator` (the run's noise
    generator), never the global RNG; p = 0 draws nothing and returns y itself. Under DDP, y
    holds `rows` of a global batch of `batch_size` labels: the flips are drawn for the whole
    global batch and sliced, so they do not depend on the number of processes.
    """
    if p <= 0:
        return y
    B = y.shape[0] if batch_size is None else batch_size
    drop = torch.rand((B,), generator=generator, device=generator.device) < p
    if rows is not None:
        drop = drop[rows]
    return torch.where(drop.to(y.device), num_classes, y)


# --- guidance ---------------------------------------------------------------------------------


def combine(cond: Tensor, uncond: Tensor, w: float, channels: int) -> Tensor:
    """(1 + w) cond - w uncond on the first `channels` channels (the prediction); any further
    channels (a learned variance's output) come from `cond` unchanged."""
    guided = cond[:, :channels] + w * (cond[:, :channels] - uncond[:, :channels])
    if cond.shape[1] == channels:
        return guided
    return torch.cat([guided, cond[:, channels:]], dim=1)


def guided(network: Network, y: Tensor, w: float = 0.0, null: int | None = None) -> EpsModel:
    """`network(x_t, t, y)` with fixed labels y (B,) as a plain model(x_t, t); with w != 0,
    the classifier-free guided prediction (1 + w) out(y) - w out(null) of Ho & Salimans eq. 6.

    The conditional and unconditional halves run as one forward pass of 2B. The combination
    is applied to the network's raw output, whatever it predicts (eps, x_0 or v): the
    conversions between them are affine in the output with the same (x_t, t), and the two
    weights sum to 1, so guiding x_0 or v predictions equals guiding the eps they imply.
    """
    if w == 0:
        return lambda x_t, t: network(x_t, t, y)
    if null is None:
        raise ValueError("guidance needs the null class index (the network's num_classes)")
    y2 = torch.cat([y, torch.full_like(y, null)])

    def model(x_t: Tensor, t: Tensor) -> Tensor:
        out = network(torch.cat([x_t, x_t]), torch.cat([t, t]), y2)
        cond, uncond = out.to(x_t.dtype).chunk(2)  # combined in x_t's precision, not bf16
        return combine(cond, uncond, w, x_t.shape[1])

    return model


def autoguided(main: EpsModel, guide: EpsModel, w: float, channels: int) -> EpsModel:
    """Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of
    itself"): (1 + w) main(x_t, t) - w guide(x_t, t), the guide a weaker model of the same
    data (an earlier snapshot of the same run, a shorter EMA). Where the two models differ,
    the step moves further in the direction the better one improves on the worse: the
    under-trained model's errors, extrapolated away. It needs no labels, so it guides
    unconditional models too; the paper's w is our 1 + w, as in classifier-free guidance.

    Both models must predict the same quantity (the callers pass eps); any variance channels
    come from `main`. Each call runs both networks: twice the network evaluations.
    """

    def model(x_t: Tensor, t: Tensor) -> Tensor:
        return combine(main(x_t, t).to(x_t.dtype), guide(x_t, t).to(x_t.dtype), w, channels)

    return model


def interval_timesteps(alphas_cumprod: Tensor, sigma_lo: float, sigma_hi: float) -> range:
    """The timesteps t whose noise level σ_t = √((1 - ᾱ_t)/ᾱ_t) (`noise_levels`) lies in
    (sigma_lo, sigma_hi]: where a limited guidance interval (Kynkäänniemi et al. 2024) guides.
    sigma_t grows with t, so they are one range (maybe empty)."""
    if not 0 <= sigma_lo < sigma_hi:
        raise ConfigError(f"a guidance interval needs 0 <= low < high, got {sigma_lo}, {sigma_hi}")
    sigma = noise_levels(alphas_cumprod.detach().double().cpu())
    inside = ((sigma > sigma_lo) & (sigma <= sigma_hi)).nonzero().flatten().tolist()
    return range(inside[0], inside[-1] + 1) if inside else range(0)


def limited(guided_model: EpsModel, plain: EpsModel, timesteps: range) -> EpsModel:
    """`guided_model` at the timesteps in `timesteps`, `plain` (one network evaluation, not
    two) elsewhere: guidance in a limited interval of noise levels (Kynkäänniemi et al.
    2024, "Applying guidance in a limited interval improves sample and distribution
    quality"). The samplers step every image of a batch at one timestep, so t[0] decides
    for the batch (one host read per step)."""

    def model(x_t: Tensor, t: Tensor) -> Tensor:
        return (guided_model if int(t[0]) in timesteps else plain)(x_t, t)

    return model


# --- which classes to sample ------------------------------------------------------------------


def class_index(name: str, class_names: Sequence[str]) -> int:
    """The index of a class given by name (exact, else ignoring case) or by its index.

    An unknown name raises ConfigError naming the closest class names (difflib, and the
    names that contain it), so that a typo is one clear line.
    """
    if name in class_names:
        return list(class_names).index(name)
    folded = [c.casefold() for c in class_names]
    if name.casefold() in folded:
        return folded.index(name.casefold())
    if name.strip().isdigit() and int(name) < len(class_names):
        return int(name)
    close = difflib.get_close_matches(name, class_names, n=5, cutoff=0.6)
    close += [c for c in class_names if name.casefold() in c.casefold() and c not in close]
    if not close:  # try the words: "Hummer" -> "AM General Hummer SUV 2000"
        by_word = {c.casefold(): c for c in class_names}
        close = [by_word[c] for c in difflib.get_close_matches(name.casefold(), by_word, n=5)]
    K = len(class_names)
    if close:
        hint = "close names: " + ", ".join(repr(c) for c in close[:5])
    else:
        shown = ", ".join(repr(c) for c in class_names[:5]) + (", ..." if K > 5 else "")
        hint = f"the classes are {shown}"
    raise ConfigError(f"unknown class {name!r} ({K} classes, or an index 0..{K - 1}); {hint}")


def class_weights(distribution: str, num_classes: int, counts: Sequence[int] | None) -> Tensor:
    """Sampling weights (K,) of the classes: equal ("uniform"), or the training data's
    label frequencies ("data", from the counts stored in the checkpoint)."""
    if distribution == "uniform":
        return torch.ones(num_classes, dtype=torch.float64)
    if distribution != "data":
        raise ConfigError(
            f"class distribution must be one of {', '.join(CLASS_DISTRIBUTIONS)}, "
            f"got {distribution!r}"
        )
    if counts is None:
        raise ConfigError(
            "class distribution 'data' needs the training label counts, which this checkpoint "
            "does not record; use 'uniform'"
        )
    if len(counts) != num_classes or sum(counts) <= 0:
        raise ConfigError(f"the checkpoint's class counts do not fit {num_classes} classes")
    return torch.tensor(list(counts), dtype=torch.float64)


def draw_classes(seed: int, indices: Sequence[int], weights: Tensor) -> Tensor:
    """int64 (len(indices),): the class of image i drawn from `weights` (K,) by a generator
    seeded from (seed, i) alone, so it does not depend on the batch or on how many images
    are drawn (the noise of image i uses another stream,
    `ddpm.sampling.samplers.sample_generators`)."""
    probs = (weights / weights.sum()).cumsum(0)
    out = torch.empty(len(indices), dtype=torch.int64)
    for k, i in enumerate(indices):
        g = torch.Generator().manual_seed((seed * 1_000_033 + i + 7_919) % (2**63))
        u = torch.rand((), generator=g, dtype=torch.float64)
        out[k] = torch.searchsorted(probs, u, right=True).clamp(max=len(weights) - 1)
    return out
