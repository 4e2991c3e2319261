"""The deterministic DDIM map between x_0 and its noise x_T, run both ways (Song et al. 2021,
eq. 12-13): `ddim_invert` finds the noise behind an input, `decode` draws x_0 back from it,
and `interpolate` walks between two inputs along the slerp of their noises (DDIM §5.3).

Shapes as in `ddpm.sampling.editing`: inputs (N, *shape) in the model's units.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ddpm.diffusion.process import split_output
from ddpm.errors import ConfigError
from ddpm.sampling.editing import check_inputs
from ddpm.sampling.generate import resolve, run_sampler
from ddpm.sampling.loaded import Loaded
from ddpm.sampling.samplers import DEFAULT_SPACING, timesteps_for
from ddpm.sampling.spec import SamplingSpec


@torch.no_grad()
def ddim_invert(
    loaded: Loaded,
    x_0: Tensor,
    steps: int | None = None,
    *,
    spacing: str | None = None,
    class_labels: Tensor | None = None,
    guidance: float = 0.0,
    batch_size: int = 256,
) -> Tensor:
    """The noise z (N, *shape) that `decode` maps back to x_0: DDIM with eta 0 run backwards
    (Song et al. 2021, eq. 13, the ODE integrated from x_0 to x_T) on the same `steps`
    timesteps. Each step from ᾱ to the next timestep t' takes eps = eps_θ(x, t') at the
    current x (as Mokady et al.'s null-text inversion and diffusers' DDIMInverseScheduler):
    x' = √ᾱ_{t'} x̂_0 + √(1 - ᾱ_{t'}) eps with x̂_0 = (x - √(1 - ᾱ) eps)/√ᾱ, the exact mirror
    of a decoding step but for where eps is taken; the error falls as steps grow. No clipping
    (it would make the map not invertible). `steps` and `spacing` as `decode_spec`'s."""
    spec = decode_spec(loaded, steps, spacing)
    x_0 = check_inputs(loaded, x_0)
    ts = timesteps_for(loaded.schedule, spec.steps, spec.spacing)[::-1]  # increasing
    abar = loaded.schedule.alphas_cumprod.tolist()
    out = []
    for start in range(0, x_0.shape[0], batch_size):
        x = x_0[start : start + batch_size].to(loaded.schedule.betas.device, torch.float32)
        y = None if class_labels is None else class_labels[start : start + batch_size]
        model = loaded.eps_given(y, guidance)
        a = 1.0
        for t in ts:
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            eps, _ = split_output(model(x, tt).to(x.dtype), x.shape[1])
            x0_hat = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
            a = abar[t]
            x = math.sqrt(a) * x0_hat + math.sqrt(1 - a) * eps
        out.append(x.cpu())
    return torch.cat(out)


def decode_spec(loaded: Loaded, steps: int | None, spacing: str | None) -> SamplingSpec:
    """DDIM with eta 0 and no clipping, on `steps` timesteps of `spacing`: by default the model's
    own (a distilled model's, which refuses more), else 50 on DDIM's leading grid."""
    spec = SamplingSpec(sampler="ddim", steps=steps, eta=0.0, clip=False, spacing=spacing)
    spec = resolve(loaded, spec)
    return spec.replace(spacing=spec.spacing or DEFAULT_SPACING["ddim"])


@torch.no_grad()
def decode(
    loaded: Loaded,
    z: Tensor,
    steps: int | None = None,
    *,
    spacing: str | None = None,
    class_labels: Tensor | None = None,
    guidance: float = 0.0,
    batch_size: int = 256,
) -> Tensor:
    """x_0 (N, *shape) from noise z: DDIM with eta 0, no clipping, on `steps` timesteps
    (`ddpm.sampling.samplers.ddim_sample`): the inverse of `ddim_invert`."""
    spec = decode_spec(loaded, steps, spacing)
    z = check_inputs(loaded, z, "the noise")
    out = []
    for start in range(0, z.shape[0], batch_size):
        x_T = z[start : start + batch_size].to(loaded.schedule.betas.device, torch.float32)
        y = None if class_labels is None else class_labels[start : start + batch_size]
        out.append(run_sampler(loaded, spec, loaded.eps_given(y, guidance), x_T, []).cpu())
    return torch.cat(out)


def slerp(z_0: Tensor, z_1: Tensor, alpha: float) -> Tensor:
    """Spherical interpolation of each pair of rows (B, ...) at alpha in [0, 1] (Shoemake 1985;
    as DDIM §5.3 interpolates noise): sin((1-α)θ)/sin θ z_0 + sin(αθ)/sin θ z_1, θ the angle
    between them; a linear one where they are (anti)parallel. alpha 0 and 1 give z_0 and z_1."""
    if alpha == 0:
        return z_0.clone()
    if alpha == 1:
        return z_1.clone()
    a, b = z_0.flatten(1).double(), z_1.flatten(1).double()
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-30)
    theta = cos.clamp(-1, 1).acos()[:, None]
    sin = theta.sin()
    near = sin.abs() < 1e-6
    w0 = torch.where(near, 1 - alpha, ((1 - alpha) * theta).sin() / sin.where(~near, 1.0))
    w1 = torch.where(near, alpha, (alpha * theta).sin() / sin.where(~near, 1.0))
    return (w0 * a + w1 * b).to(z_0.dtype).view_as(z_0)


def interpolate(
    loaded: Loaded,
    x_a: Tensor,
    x_b: Tensor,
    frames: int,
    steps: int | None = None,
    *,
    class_labels: Tensor | None = None,
    guidance: float = 0.0,
) -> Tensor:
    """`frames` inputs (frames, *shape) on the path from x_a to x_b (each (*shape) or (1, *shape)):
    both inverted (`ddim_invert`), their noise slerped at alpha = k/(frames-1), each decoded."""
    check_frames(frames)
    x = torch.cat(
        [
            check_inputs(loaded, x_a, "the first input"),
            check_inputs(loaded, x_b, "the second input"),
        ]
    )
    y = None if class_labels is None else class_labels.reshape(-1)[:1].expand(2)
    z = ddim_invert(loaded, x[:2], steps, class_labels=y, guidance=guidance)
    path = torch.cat([slerp(z[:1], z[1:2], k / (frames - 1)) for k in range(frames)])
    labels = None if y is None else y[:1].expand(frames)
    return decode(loaded, path, steps, class_labels=labels, guidance=guidance)


def check_frames(frames: int) -> None:
    if frames < 2:
        raise ConfigError(f"--frames must be at least 2 (the two ends), got {frames}")


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """PSNR in dB (N,) of images in [-1, 1] (peak-to-peak 2): 10 log10(4 / MSE)."""
    mse = (x.double() - y.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(4 / mse.clamp(min=1e-20))
