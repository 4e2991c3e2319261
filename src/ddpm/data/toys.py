"""Two-dimensional toy distributions, drawn with an explicit generator, and for two of them
the exact density and the modes.

The five follow the conventions of the normalising-flow literature (FFJORD's `toy_data.py`,
Grathwohl et al. 2019), scaled as there:
  moons         two interleaved half circles (scikit-learn's make_moons, noise 0.1), x2, shifted
  swissroll     scikit-learn's make_swiss_roll (noise 1.0), the (x, z) plane, / 5
  circles       two concentric circles, radii 3 and 1.5 (make_circles, factor 0.5, noise 0.08), x3
  8gaussians    eight Gaussians, std 0.5, centred on a circle of radius 4, all / 1.414
  checkerboard  uniform on the 8 dark squares (side 2) of a 4x4 board over [-4, 4)²
Exact densities: `log_density` for 8gaussians (a mixture) and checkerboard (uniform on its
squares, optionally blurred by N(0, s² I) so that it is finite everywhere); `mode_of` assigns
each point to a mode (the nearest centre / the square it lies in).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TOYS = ("moons", "swissroll", "8gaussians", "checkerboard", "circles")
WITH_DENSITY = ("8gaussians", "checkerboard")

_SQ2 = 1.414  # FFJORD's divisor for 8gaussians (not exactly √2; kept for comparability)
GAUSS_STD = 0.5 / _SQ2
GAUSS_CENTRES = torch.tensor(
    [
        (1.0, 0.0),
        (-1.0, 0.0),
        (0.0, 1.0),
        (0.0, -1.0),
        (1 / math.sqrt(2), 1 / math.sqrt(2)),
        (1 / math.sqrt(2), -1 / math.sqrt(2)),
        (-1 / math.sqrt(2), 1 / math.sqrt(2)),
        (-1 / math.sqrt(2), -1 / math.sqrt(2)),
    ],
    dtype=torch.float64,
) * (4.0 / _SQ2)
CHECKER_SIDE = 2.0
# lower-left corners of the 8 dark squares: (col + row) even on the 4x4 board over [-4, 4)²
CHECKER_SQUARES = torch.tensor(
    [(c * 2.0, r * 2.0) for c in range(-2, 2) for r in range(-2, 2) if (c + r) % 2 == 0],
    dtype=torch.float64,
)


def check_name(name: str) -> None:
    if name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; expected one of {', '.join(TOYS)}")


def _rand(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _randn(*shape: int, g: torch.Generator) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def sample_toy(name: str, n: int, generator: torch.Generator) -> Tensor:
    """n points (n, 2), float32, drawn from `generator` alone."""
    check_name(name)
    g = generator
    if name == "moons":
        upper = _rand(n, g) < 0.5
        theta = math.pi * _rand(n, g)
        x = torch.where(upper, theta.cos(), 1 - theta.cos())
        y = torch.where(upper, theta.sin(), 0.5 - theta.sin())
        pts = torch.stack([x, y], 1) + 0.1 * _randn(n, 2, g=g)
        pts = pts * 2 + torch.tensor([-1.0, -0.2], dtype=torch.float64)
    elif name == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * _rand(n, g))
        pts = (torch.stack([t * t.cos(), t * t.sin()], 1) + _randn(n, 2, g=g)) / 5
    elif name == "circles":
        outer = _rand(n, g) < 0.5
        theta = 2 * math.pi * _rand(n, g)
        r = torch.where(outer, 1.0, 0.5)
        pts = (torch.stack([r * theta.cos(), r * theta.sin()], 1) + 0.08 * _randn(n, 2, g=g)) * 3
    elif name == "8gaussians":
        k = torch.randint(0, 8, (n,), generator=g)
        pts = GAUSS_CENTRES[k] + GAUSS_STD * _randn(n, 2, g=g)
    else:  # checkerboard
        k = torch.randint(0, len(CHECKER_SQUARES), (n,), generator=g)
        u = torch.stack([_rand(n, g), _rand(n, g)], 1)
        pts = CHECKER_SQUARES[k] + CHECKER_SIDE * u
    return pts.float()


def log_density(name: str, x: Tensor, blur: float = 0.0) -> Tensor:
    """log p(x) (n,) in nats, float64, for x (n, 2) in the toy's own units.

    8gaussians: log (1/8) Σ_k N(x; μ_k, σ² I), exact. checkerboard: with `blur` 0 the exact
    density, 1/32 on the 8 squares and 0 (log = -inf) elsewhere; with `blur` s > 0 that
    density convolved with N(0, s² I): (1/32) Σ_squares Π_axes [Φ((b - x)/s) - Φ((a - x)/s)].
    """
    x = x.double().cpu()
    if name == "8gaussians":
        d2 = (x[:, None, :] - GAUSS_CENTRES[None]).square().sum(-1)  # (n, 8)
        log_n = -d2 / (2 * GAUSS_STD**2) - math.log(2 * math.pi * GAUSS_STD**2)
        return torch.logsumexp(log_n, 1) - math.log(8)
    if name == "checkerboard":
        area = len(CHECKER_SQUARES) * CHECKER_SIDE**2
        lo = CHECKER_SQUARES[None]  # (1, 8, 2)
        hi = lo + CHECKER_SIDE
        if blur > 0:  # in logs, so that points far from every square stay finite
            log_mass = _log_interval((lo - x[:, None, :]) / blur, (hi - x[:, None, :]) / blur)
            return torch.logsumexp(log_mass.sum(-1), 1) - math.log(area)
        inside = ((x[:, None, :] >= lo) & (x[:, None, :] < hi)).all(-1).any(1)
        return (inside.double() / area).log()
    raise ValueError(f"no exact density for toy {name!r}; only for {', '.join(WITH_DENSITY)}")


def _log_interval(a: Tensor, b: Tensor) -> Tensor:
    """log(Φ(b) - Φ(a)) for a < b, accurate in both tails: on the right tail it is computed
    as log(Φ(-a) - Φ(-b)), so that neither difference cancels."""
    right = a > 0
    u = torch.where(right, -a, b)  # the larger of the two arguments after the reflection
    v = torch.where(right, -b, a)
    lu, lv = torch.special.log_ndtr(u), torch.special.log_ndtr(v)
    return lu + torch.log1p(-torch.exp(lv - lu))


def mode_of(name: str, x: Tensor) -> Tensor:
    """The mode each point belongs to, int64 (n,): 8gaussians the nearest of the 8 centres;
    checkerboard the square it lies in, or -1 outside every square."""
    x = x.double().cpu()
    if name == "8gaussians":
        return (x[:, None, :] - GAUSS_CENTRES[None]).square().sum(-1).argmin(1)
    if name == "checkerboard":
        lo = CHECKER_SQUARES[None]
        inside = ((x[:, None, :] >= lo) & (x[:, None, :] < lo + CHECKER_SIDE)).all(-1)  # (n, 8)
        return torch.where(inside.any(1), inside.int().argmax(1), -1)
    raise ValueError(f"no modes defined for toy {name!r}; only for {', '.join(WITH_DENSITY)}")


def num_modes(name: str) -> int:
    return len(GAUSS_CENTRES) if name == "8gaussians" else len(CHECKER_SQUARES)
