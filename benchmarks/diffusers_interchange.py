"""The diffusers interchange at full size: does our U-Net, loaded from a diffusers folder,
compute diffusers' function? One table, any device.

For each case a `UNet2DModel` folder is loaded with `ddpm.generate.load_model` and both
networks run on the same (x_t, t): the table gives the largest absolute difference of the
outputs, the output's scale, and the schedule's largest ᾱ difference. Cases:

- `google`: the google/ddpm-cifar10-32 configuration (TF padding, GroupNorm eps 1e-6),
  random weights;
- `peer`: the configuration of the diffusers runs in docs/benchmarks.md (`PEER_CONFIGS`,
  diffusers' defaults: flip_sin_to_cos, freq_shift 0), random weights;
- `--folder DIR` (repeatable): a real folder, such as a diffusers training run's saved
  pipeline, to check before scoring it with `ddpm eval --checkpoint DIR`.

    PYTHONPATH=src python3 benchmarks/diffusers_interchange.py [--folder DIR] [--device cuda]

diffusers must be installed (it is a test dependency). Expect |diff| near 1e-6 in float32 on
the CPU; cuDNN/TF32 on a GPU gives ~1e-3 (`--no-tf32` turns TF32 off).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from common import PEER_CONFIGS, diffusers_or_none

from ddpm.generate import load_model

GOOGLE_CIFAR10 = dict(
    sample_size=32,
    block_out_channels=(128, 256, 256, 256),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=None,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    norm_eps=1e-6,
)


def random_folder(diffusers, config: dict, root: Path) -> Path:
    unet = diffusers.UNet2DModel(in_channels=3, out_channels=3, **config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in unet.parameters():  # no zero-initialised layer may hide a mismatch
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(root)
    return root


@torch.no_grad()
def compare(diffusers, folder: Path, device: torch.device, batch: int) -> dict:
    pipe = diffusers.DDPMPipeline.from_pretrained(folder)
    theirs = pipe.unet.to(device).eval()
    ours = load_model(folder, device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *ours.shape, generator=g).to(device)
    t = torch.linspace(0, ours.schedule.T - 1, batch).long().to(device)
    a, b = theirs(x, t).sample, ours.model(x, t)
    abar = pipe.scheduler.alphas_cumprod.double()
    return {
        "params": sum(p.numel() for p in ours.model.parameters()),
        "max_abs_diff": (a - b).abs().max().item(),
        "output_rms": a.pow(2).mean().sqrt().item(),
        "abar_diff": (abar - ours.schedule.alphas_cumprod.cpu()).abs().max().item(),
        "prediction": ours.prediction,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder", type=Path, action="append", default=[])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--no-tf32", action="store_true")
    args = p.parse_args()
    diffusers = diffusers_or_none()
    if diffusers is None:
        raise SystemExit("diffusers is not installed")
    diffusers.utils.logging.disable_progress_bar()
    if args.no_tf32:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    print(f"| case | params | max abs diff | output rms | max ᾱ diff | prediction |  ({device})")
    print("|---|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("google", random_folder(diffusers, GOOGLE_CIFAR10, Path(tmp) / "google")),
            ("peer", random_folder(diffusers, PEER_CONFIGS["ddpm-cifar10"], Path(tmp) / "peer")),
            *((str(f), f) for f in args.folder),
        ]
        for name, folder in cases:
            r = compare(diffusers, folder, device, args.batch)
            print(
                f"| {name} | {r['params']:,} | {r['max_abs_diff']:.2e} | {r['output_rms']:.3f} "
                f"| {r['abar_diff']:.1e} | {r['prediction']} |"
            )


if __name__ == "__main__":
    main()
