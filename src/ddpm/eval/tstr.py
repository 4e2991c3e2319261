"""Train on synthetic, test on real (Esteban et al. 2017, §4.1): a small classifier trained on
generated labelled sequences, scored on the real test split, beside the same classifier
trained on the real training split ("train on real").

The classifier is a narrow version of the fully convolutional network that Wang et al. 2017
proposed as the baseline for the UCR archive: three Conv1d-BatchNorm-ReLU blocks (32, 64, 32
channels where they have 128, 256, 128; kernels 7, 5, 3 where they have 8, 5, 3, so that
"same" padding is symmetric), global average pooling over time, a linear layer. Both runs
use the same architecture, steps, learning rate and seeds; accuracies are averaged over the
seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SeriesClassifier(nn.Module):
    """(B, C, L) -> class logits (B, K)."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = (32, 64, 32)):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w, k in zip(widths, (7, 5, 3)):
            layers += [nn.Conv1d(c, w, k, padding="same"), nn.BatchNorm1d(w), nn.ReLU()]
            c = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).mean(-1))


def train_classifier(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    seed: int = 0,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
) -> SeriesClassifier:
    """Fit a SeriesClassifier to (x (N, C, L), y (N,)) with Adam; batches drawn from `seed`."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the layers' initialisation, from `seed` alone
        torch.manual_seed(seed)
        model = SeriesClassifier(x.shape[1], num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return float((model(x).argmax(1) == y).double().mean())


@dataclass
class TSTRResult:
    synthetic: float  # test accuracy when trained on generated sequences (mean over seeds)
    real: float  # ... when trained on the real training split
    synthetic_each: list[float]
    real_each: list[float]
    n_synthetic: int
    n_real: int
    n_test: int

    def as_dict(self) -> dict:
        return asdict(self)


def tstr(
    synthetic: tuple[Tensor, Tensor],
    real: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 300,
) -> TSTRResult:
    """Accuracy on `test` of the classifier trained on `synthetic` vs trained on `real`; each
    a pair (x (N, C, L) standardised, y (N,))."""
    syn = [accuracy(train_classifier(*synthetic, num_classes, s, steps), *test) for s in seeds]
    rea = [accuracy(train_classifier(*real, num_classes, s, steps), *test) for s in seeds]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    return TSTRResult(mean(syn), mean(rea), syn, rea, len(synthetic[0]), len(real[0]), len(test[0]))
