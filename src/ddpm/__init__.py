"""Denoising diffusion probabilistic models from first principles.

The package's folders are its layers, each using only those before it:
`diffusion` (schedule, forward process and posterior, losses, timestep sampling, the bound),
`models` (the U-Nets and the MLP, and their presets), `data` (images, points, sequences and
the training stream), `io` (checkpoints and model files, safetensors and diffusers), `viz`
(grids, curves, pictures of the process), `sampling` (samplers, the sampling spec, guidance,
generation), `eval` (FID, bits/dim, distances), `train` (the loop and its parts) and `cli`
(the `ddpm` command: a thin parser over one module per command; `python -m ddpm` runs it
too). `errors` holds the error types a user can meet.

The shortest way to pictures is exported here (`ddpm.api`):

    model = ddpm.load("runs/default")
    ddpm.save_grid(ddpm.sample(model, n=16), "samples.png")
"""

from ddpm.api import SamplingSpec, load, sample, save_grid

__all__ = ["SamplingSpec", "load", "sample", "save_grid"]
__version__ = "0.1.0"
