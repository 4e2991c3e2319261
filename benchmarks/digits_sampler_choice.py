"""Which sampler should draw the end-of-training pictures? Measured on the bundled digits.

Issue 16, item 7. MNIST-like digits have no Inception reference worth the name, so samples
are judged by a small digit classifier trained here on the bundled digits (4,000 for
training, 1,000 held out to report its accuracy and to serve as the real set):

- confident: the share of samples the classifier gives one class with probability > 0.9
  (a legible digit), and the mean of that top probability;
- classes: the entropy of the predicted-class histogram in bits (log2 10 = 3.32 when every
  digit is equally common; low when the sampler collapses onto a few shapes);
- FD: the Fréchet distance between the classifier's penultimate features (128-d) of the
  samples and of the 1,000 held-out real digits (FID's formula, `ddpm.fid`, with the
  classifier in place of Inception; lower is better; same n for every row).

Every sampler draws the same n images (image i from seed (0, i)) from the checkpoint's EMA
weights with x_0 clipping, as `ddpm sample` does.

    python benchmarks/digits_sampler_choice.py --checkpoint runs/default --n 500

Prints a Markdown table. Seconds are wall-clock on this machine (shared: see the load).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch
import torch.nn.functional as F
from torch import nn

# (label, sampler, steps, eta, variance)
CONFIGS = [
    ("ddpm (1000 steps, small variance)", "ddpm", None, 0.0, "small"),
    ("ddpm (1000 steps, large variance)", "ddpm", None, 0.0, "large"),
    ("ddim 50, eta 0", "ddim", 50, 0.0, "small"),
    ("ddim 100, eta 0", "ddim", 100, 0.0, "small"),
    ("ddim 250, eta 0", "ddim", 250, 0.0, "small"),
    ("ddim 50, eta 1", "ddim", 50, 1.0, "small"),
    ("ddim 100, eta 1", "ddim", 100, 1.0, "small"),
    ("ddim 250, eta 1", "ddim", 250, 1.0, "small"),
    ("dpm-solver 20", "dpm-solver", 20, 0.0, "small"),
]


class DigitNet(nn.Module):
    """A small CNN: 1x16x16 in [-1, 1] -> 128 features -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, 128),
            nn.ReLU(),
        )
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return f, self.head(f)


def digits(size: tuple[int, int]):
    from ddpm.data import load_dataset

    data = load_dataset(None, size, 1, stream=False)
    x = data.images.float() / 127.5 - 1
    y = data.labels
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    return x[perm[:4000]], y[perm[:4000]], x[perm[4000:]], y[perm[4000:]]


def train_classifier(x, y, x_test, y_test, epochs: int = 15) -> tuple[DigitNet, float]:
    torch.manual_seed(0)
    net = DigitNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            xb = x[idx]
            shift = torch.randint(-1, 2, (2,), generator=g).tolist()  # small translations
            xb = torch.roll(xb, shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(net(xb)[1], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(x_test)[1].argmax(1) == y_test).float().mean().item()
    return net, acc


@torch.no_grad()
def judge(net: DigitNet, x: torch.Tensor, real_stats) -> dict[str, float]:
    from ddpm.fid import FIDStats, fid_from_stats

    feats, logits = net(x)
    p = logits.softmax(1)
    top = p.max(1).values
    hist = torch.bincount(p.argmax(1), minlength=10).double() / len(x)
    entropy = -(hist[hist > 0] * hist[hist > 0].log2()).sum().item()
    f = feats.double().numpy()
    stats = FIDStats(f.mean(0), _cov(f), len(f))
    return {
        "confident": (top > 0.9).float().mean().item(),
        "top_p": top.mean().item(),
        "entropy": entropy,
        "fd": fid_from_stats(stats, real_stats),
    }


def _cov(f):
    import numpy as np

    return np.cov(f, rowvar=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="runs/default", help="checkpoint or run folder")
    ap.add_argument("--n", type=int, default=500, help="samples per sampler")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--only", nargs="*", help="labels (prefixes) of the rows to run")
    args = ap.parse_args()

    from ddpm.checkpoint import resolve_checkpoint
    from ddpm.fid import FIDStats
    from ddpm.generate import generate, load_model

    path = resolve_checkpoint(args.checkpoint)
    loaded = load_model(path)
    C, H, W = loaded.shape
    x, y, x_test, y_test = digits((H, W))
    t0 = time.perf_counter()
    net, acc = train_classifier(x, y, x_test, y_test)
    with torch.no_grad():
        f = net(x_test)[0].double().numpy()
    real = FIDStats(f.mean(0), _cov(f), len(f))
    print(
        f"checkpoint {path} (step {loaded.step}), {args.n} samples per row, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}; "
        f"classifier: {acc:.1%} accuracy on 1,000 held-out digits "
        f"({time.perf_counter() - t0:.0f} s to train)"
    )
    ref = judge(net, x[: args.n], real)  # real digits outside the reference set
    print(
        "\n| sampler | network evals | confident (p > 0.9) | mean top p | classes (bits) "
        "| FD to held-out | seconds |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| real digits (not the reference ones) | - | {ref['confident']:.1%} | {ref['top_p']:.3f} "
        f"| {ref['entropy']:.2f} | {ref['fd']:.2f} | - |",
        flush=True,
    )
    for label, sampler, steps, eta, variance in CONFIGS:
        if args.only and not any(label.startswith(o) for o in args.only):
            continue
        t0 = time.perf_counter()
        samples = generate(loaded, args.n, 0, sampler, steps, eta, variance, True, args.batch_size)
        dt = time.perf_counter() - t0
        r = judge(net, samples, real)
        nfe = loaded.schedule.T if sampler == "ddpm" else steps
        print(
            f"| {label} | {nfe} | {r['confident']:.1%} | {r['top_p']:.3f} | {r['entropy']:.2f} "
            f"| {r['fd']:.2f} | {dt:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
