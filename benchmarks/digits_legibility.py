"""How legible are a digits model's samples? A small classifier trained on the bundled digits
scores them: the share of samples it classifies with confidence >= 0.9, beside the same share
for real held-out digits (the ceiling). Runs on the CPU in well under a minute.

    ddpm train                                  # the default run: runs/default
    python benchmarks/digits_legibility.py --checkpoint runs/default

prints a table such as

    set                              n   confident (>= 0.9)   mean confidence
    real held-out digits          1000                91.4%             0.95
    samples (ddim, 50 steps, ...)  128                55.5%             0.78

The samples are drawn as `ddpm sample` draws them (its defaults unless flags say otherwise),
so the row scores what a user sees. The classifier sees the digits at the model's size
(16x16 for the default run); its own seed and training are fixed, so two checkpoints are
scored by the same judge.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import run_script
from torch import Tensor, nn

from ddpm.data.images import load_dataset
from ddpm.sampling.generate import generate, resolve
from ddpm.sampling.loaded import load_model
from ddpm.sampling.samplers import SAMPLERS
from ddpm.sampling.spec import SamplingSpec

HELD_OUT = 1000  # digits of the bundled 5,000 kept out of the classifier's training
CONFIDENT = 0.9


def classifier() -> nn.Module:
    """A small CNN for (B, 1, H, W) digits in [-1, 1]."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(64 * 16, 128),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(128, 10),
    )


def train_classifier(x: Tensor, y: Tensor, epochs: int = 8, seed: int = 0) -> nn.Module:
    """Adam on random mini-batches of (x, y), with small random shifts as augmentation."""
    torch.manual_seed(seed)
    net = classifier()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            xb = torch.roll(x[idx], tuple(torch.randint(-1, 2, (2,), generator=g)), (2, 3))
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def confidence(net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The classifier's top probability and class for each image (B,)."""
    p = torch.cat([F.softmax(net(b), 1) for b in x.split(256)])
    return p.max(1)


def row(name: str, conf: Tensor) -> str:
    share = 100 * float((conf >= CONFIDENT).double().mean())
    return f"{name:<40} {len(conf):>5} {share:>19.1f}% {float(conf.mean()):>17.2f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a digits run folder or checkpoint")
    p.add_argument("--n", type=int, default=128, help="samples to score")
    p.add_argument("--sampler", choices=SAMPLERS, help="default: ddpm sample's")
    p.add_argument("--steps", type=int, help="default: ddpm sample's")
    p.add_argument("--eta", type=float, help="default: ddpm sample's")
    p.add_argument("--guidance", type=float, help="default: ddpm sample's")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    loaded = load_model(args.checkpoint)
    C, H, W = loaded.shape
    data = load_dataset("mnist", (H, W), C, stream=False, progress=False)
    assert data.labels is not None
    order = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(0))
    x, y = data.images[order].float() / 127.5 - 1, data.labels[order]  # stored sorted by class
    net = train_classifier(x[:-HELD_OUT], y[:-HELD_OUT])
    real, guess = confidence(net, x[-HELD_OUT:])
    accuracy = 100 * float((guess == y[-HELD_OUT:]).double().mean())

    given = {
        k: getattr(args, k)
        for k in ("sampler", "steps", "eta", "guidance")
        if getattr(args, k) is not None
    }
    spec = SamplingSpec(seed=args.seed).replace(**given)
    samples = generate(loaded, args.n, spec)
    spec = resolve(loaded, spec)  # as generate resolved it: with the model's own defaults
    fake, _ = confidence(net, samples)
    print(f"{'set':<40} {'n':>5} {'confident (>= 0.9)':>20} {'mean confidence':>17}")
    print(row(f"real held-out digits ({accuracy:.1f}% right)", real))
    print(row(f"samples ({spec.short()})", fake))


if __name__ == "__main__":
    run_script(main)
