"""Denoising diffusion probabilistic models from first principles.

Modules, in the order data flows: `schedule` (betas and derived terms), `diffusion` (forward
process, posterior, parameterisations, loss), `unet` (the networks), `data` (datasets and the
training stream), `train` (a package: config, state and checkpoints, step, log, loop, and
several processes under torchrun), `samplers` (DDPM, DDIM, DPM-Solver++), `generate`
(checkpoint -> pictures), `fid` and `likelihood` (the math of FID and bits/dim), `evaluate`
(Inception, statistics files, a model's FID and bits/dim), `cli` (the `ddpm` command: a thin
parser over one module per command; `python -m ddpm` runs it too).

The shortest way to pictures is exported here (`ddpm.api`):

    model = ddpm.load("runs/default")
    ddpm.save_grid(ddpm.sample(model, n=16), "samples.png")
"""

from ddpm.api import SamplingSpec, load, sample, save_grid

__all__ = ["SamplingSpec", "load", "sample", "save_grid"]
__version__ = "0.1.0"
