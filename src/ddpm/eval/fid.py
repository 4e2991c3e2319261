"""Fréchet Inception Distance: preprocessing, feature statistics and the distance itself.

FID (Heusel et al. 2017) fits a Gaussian to the 2048-d pool features of Inception-v3 for each
image set and reports the Fréchet (2-Wasserstein) distance between the two Gaussians,

    d² = |μ₁ - μ₂|² + tr(Σ₁ + Σ₂ - 2 (Σ₁ Σ₂)^½).

The network is a TorchScript module (see `ddpm.eval.evaluate.load_inception`). Features are
float32; statistics are accumulated and compared in float64. This module is pure math: no
files (`ddpm.eval.evaluate` reads and writes them).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor

from ddpm.errors import FIDError

FEATURE_DIM = 2048
INPUT_SIZE = (299, 299)
# Stored with every statistics file; a file made with other preprocessing is refused.
PREPROCESSING = "uint8-rgb,bilinear-299x299-align_corners=False,x/128-1"


FeatureNet = Callable[[Tensor], Tensor]


def preprocess(images: Tensor) -> Tensor:
    """uint8 (B, C, H, W), C = 1 or 3 -> float (B, 3, 299, 299) in [-1, 1), as the network
    expects: float, bilinear resize (align_corners=False, no antialias), then x / 128 - 1."""
    if images.dtype != torch.uint8:
        raise FIDError(f"FID expects uint8 images, got {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise FIDError(f"FID expects images (B, 1 or 3, H, W), got shape {tuple(images.shape)}")
    x = images.float()
    if x.shape[1] == 1:  # grayscale: the same plane in R, G and B
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=INPUT_SIZE, mode="bilinear", align_corners=False)
    return x / 128.0 - 1.0


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Turn off TF32 for convolutions and matmuls inside the block (CUDA only), so features
    are true float32 whatever the training code set; the previous flags are restored."""
    if not torch.cuda.is_available():
        yield
        return
    backends = (torch.backends.cudnn, torch.backends.cuda.matmul)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            old = [b.allow_tf32 for b in backends]
            for b in backends:
                b.allow_tf32 = False
    except (RuntimeError, AttributeError):  # a torch whose precision API refuses the old flags
        yield
        return
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for b, flag in zip(backends, old):
                b.allow_tf32 = flag


@torch.no_grad()
def features(
    net: FeatureNet, images: Tensor, device: torch.device | str = "cpu", tf32: bool = False
) -> Tensor:
    """Pool features float32 (B, 2048) on `device` of uint8 images (B, C, H, W) (one batch).

    TF32 is off unless `tf32` (only to measure what it changes)."""
    with contextlib.nullcontext() if tf32 else exact_float32():
        out = net(preprocess(images.to(device)))
    if out.ndim != 2 or out.shape[0] != images.shape[0]:
        raise FIDError(f"the feature network returned shape {tuple(out.shape)}, expected (B, D)")
    return out.float()


@dataclass
class FIDStats:
    """A Gaussian fitted to features: mu (D,) and sigma (D, D), float64 numpy arrays.

    `n` is the number of images (None for files that do not record it) and `preprocessing`
    the tag of the input pipeline (None when unknown).
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None = None
    preprocessing: str | None = PREPROCESSING

    def __post_init__(self) -> None:
        self.mu = np.asarray(self.mu, dtype=np.float64)
        self.sigma = np.asarray(self.sigma, dtype=np.float64)
        D = self.mu.shape[0] if self.mu.ndim == 1 else -1
        if D < 1 or self.sigma.shape != (D, D):
            raise FIDError(
                f"statistics need mu (D,) and sigma (D, D), got {self.mu.shape} and "
                f"{self.sigma.shape}"
            )
        if not (np.isfinite(self.mu).all() and np.isfinite(self.sigma).all()):
            raise FIDError("statistics contain NaN or infinite values")

    @property
    def dim(self) -> int:
        return self.mu.shape[0]


class StatsAccumulator:
    """Mean and covariance of feature batches, streamed in float64 on the features' device.

    Sums are taken about a shift K (the first batch's mean), which keeps the one-pass
    covariance Σ = (S₂ - S₁S₁ᵀ/N) / (N - 1) accurate (unbiased, as numpy.cov).
    """

    def __init__(self) -> None:
        self.n = 0
        self.shift: Tensor | None = None
        self.s1: Tensor | None = None
        self.s2: Tensor | None = None

    def update(self, feats: Tensor) -> None:
        """Add a batch of features (B, D)."""
        f = feats.detach().to(torch.float64)
        if self.shift is None:
            self.shift = f.mean(0)
            self.s1 = torch.zeros_like(self.shift)
            self.s2 = f.new_zeros(f.shape[1], f.shape[1])
        elif f.shape[1] != self.shift.shape[0]:
            raise FIDError(f"feature size changed from {self.shift.shape[0]} to {f.shape[1]}")
        d = f - self.shift
        self.s1 += d.sum(0)
        self.s2 += d.T @ d
        self.n += f.shape[0]

    def stats(self, preprocessing: str | None = PREPROCESSING) -> FIDStats:
        if self.n < 2 or self.shift is None:
            raise FIDError(f"FID needs at least 2 images to estimate a covariance, got {self.n}")
        assert self.s1 is not None and self.s2 is not None
        mean_d = self.s1 / self.n
        sigma = (self.s2 - self.n * torch.outer(mean_d, mean_d)) / (self.n - 1)
        mu = self.shift + mean_d
        return FIDStats(mu.cpu().numpy(), sigma.cpu().numpy(), self.n, preprocessing)


def stats_of_features(feats: Tensor | np.ndarray) -> FIDStats:
    """FIDStats of a feature matrix (N, D), N >= 2."""
    acc = StatsAccumulator()
    acc.update(torch.as_tensor(np.asarray(feats)))
    return acc.stats()


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
) -> float:
    """|μ₁ - μ₂|² + tr(Σ₁ + Σ₂ - 2 (Σ₁Σ₂)^½), in float64 with scipy.linalg.sqrtm.

    As pytorch-fid: if the square root is not finite (a near-singular product), retry with
    eps·I added to both covariances; a complex result whose diagonal is real to within 1e-3
    is replaced by its real part, otherwise it is an error.
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise FIDError(
            f"the two statistics differ in size: mu {mu1.shape} vs {mu2.shape}, "
            f"sigma {sigma1.shape} vs {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise FIDError(
                "the matrix square root in FID has a large imaginary part "
                f"({np.max(np.abs(covmean.imag)):.3g}); the covariances are likely degenerate "
                "(too few images for 2048 features?)"
            )
        covmean = covmean.real
    fd = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
    return max(fd, 0.0)  # a distance: identical statistics give -1e-4 or so in floating point


def _sqrtm(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on singular input; we check the result
        return scipy.linalg.sqrtm(a)


def fid_from_stats(a: FIDStats, b: FIDStats) -> float:
    """FID between two FIDStats; refuses different feature sizes or preprocessing tags."""
    if a.dim != b.dim:
        raise FIDError(f"the statistics have different feature sizes: {a.dim} and {b.dim}")
    if a.preprocessing and b.preprocessing and a.preprocessing != b.preprocessing:
        raise FIDError(
            f"the statistics were made with different preprocessing: {a.preprocessing!r} "
            f"and {b.preprocessing!r}"
        )
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
