"""Evaluating a model of points or sequences: its samples against held-out data, each number
beside the same number for two references (the maths is in `ddpm.eval.distances`).

Rows, all of the same sizes (sets of n rows against the same m held-out rows, standardised):
  model      n samples; the mean over REPEATS independent sets of n, to steady the estimate
  floor      n rows of the training data (the mean over as many disjoint sets of n as the
             training data holds, up to REPEATS): about what a perfect model would score
  Gaussian   n draws of a Gaussian with the training rows' mean and covariance (REPEATS sets)
For the toys with a known density (8gaussians, checkerboard) also the mean log-density of each
set under the true distribution and the share of each set in each mode; for labelled sequences
from a class-conditional model, train-on-synthetic / test-on-real accuracy (`ddpm.eval.tstr`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from ddpm.data import toys
from ddpm.data.arrays import ArrayDataset
from ddpm.eval import distances as metrics
from ddpm.eval.tstr import TSTRResult, tstr
from ddpm.sampling.generate import generate
from ddpm.sampling.loaded import Loaded
from ddpm.sampling.spec import SamplingSpec

DEFAULT_N = 2000  # rows per compared set (at most the data's)
REPEATS = 5  # sets of n samples (and of training rows, where there are enough) per row
CHECKER_BLUR = 0.05  # checkerboard log-density: the density blurred by N(0, s²) (side 2)
TSTR_STEPS = 300  # optimisation steps of each TSTR classifier


@dataclass
class Row:
    name: str
    mmd2: float
    energy: float
    log_density: float | None = None  # mean log p(x) under the toy's true density (nats)
    modes: list[float] | None = None  # share of the set in each mode
    outside: float | None = None  # share in no mode (checkerboard: outside the squares)


@dataclass
class ArrayReport:
    n: int
    m: int
    repeats: int
    floor_sets: int
    bandwidth: float
    rows: list[Row]
    kind: str
    toy: str | None = None
    heldout: str = ""
    tstr: TSTRResult | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["tstr"] = self.tstr.as_dict() if self.tstr is not None else None
        return d

    def lines(self, sampling: str = "") -> list[str]:
        what = "points" if self.kind == "points" else "sequences"
        rep = f" (means of {self.repeats} sets; the floor's of {self.floor_sets})"
        out = [
            f"{self.n} {what} per set{rep} vs {self.m} held-out of {self.heldout}; standardised "
            f"units; MMD² with an RBF kernel of bandwidth {self.bandwidth:.3g} (median "
            "heuristic on the held-out set); energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'|",
        ]
        dens = self.rows[0].log_density is not None
        head = f"{'':<28}{'MMD²':>11}{'energy':>11}"
        if dens:
            head += f"{'log p':>11}   modes (% of the set in each; then outside)"
        out.append(head)
        for r in self.rows:
            line = f"{r.name:<28} {r.mmd2:>10.5f} {r.energy:>10.5f}"
            if r.log_density is not None:
                line += f" {r.log_density:>10.3f}   " + " ".join(
                    f"{100 * s:4.1f}" for s in (r.modes or [])
                )
                if r.outside is not None:
                    line += f" | {100 * r.outside:4.1f}"
            out.append(line)
        if self.tstr is not None:
            t = self.tstr
            out.append(
                f"TSTR accuracy on the {t.n_test} real test sequences: trained on {t.n_synthetic} "
                f"generated {100 * t.synthetic:.1f}% vs trained on the {t.n_real} real "
                f"{100 * t.real:.1f}% (mean of {len(t.real_each)} classifier seeds)"
            )
        out.extend(self.notes)
        if sampling:
            out[0] = f"{sampling}; " + out[0]
        return out


def pick(n: int, k: int, seed: int) -> Tensor:
    """k of the indices 0..n-1, a seeded random choice."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]


def short(s: SamplingSpec) -> str:
    steps = f" {s.steps} steps" if s.steps is not None else " all T steps"
    return s.sampler + steps + (f", guidance w={s.guidance:g}" if s.guidance else "")


def set_row(
    name: str,
    sets: list[Tensor],
    heldout: Tensor,
    bandwidth: float,
    toy: str | None,
    to_data,
) -> Row:
    """The statistics of one row: the mean over `sets` (each (n, ...)) against `heldout`."""
    mmd = sum(metrics.mmd2(s, heldout, bandwidth) for s in sets) / len(sets)
    energy = sum(metrics.energy_distance(s, heldout) for s in sets) / len(sets)
    row = Row(name, mmd, energy)
    if toy in toys.WITH_DENSITY:
        pts = to_data(torch.cat(sets))
        blur = CHECKER_BLUR if toy == "checkerboard" else 0.0
        row.log_density = float(toys.log_density(toy, pts, blur).mean())
        modes = toys.mode_of(toy, pts)
        row.modes = metrics.mode_shares(modes, toys.num_modes(toy))
        row.outside = float((modes < 0).double().mean()) if toy == "checkerboard" else None
    return row


def evaluate_model(
    loaded: Loaded,
    heldout: ArrayDataset,
    train: ArrayDataset,
    settings: SamplingSpec,
    n: int | None = None,
) -> ArrayReport:
    """Sample from `loaded` and compare with `heldout`; `train` gives the two references.

    Both datasets must be standardised with the model's scaler (`load_arrays(scaler=...)`).
    """
    assert loaded.data is not None
    N = n or DEFAULT_N
    k, m = min(N, len(train)), min(N, len(heldout))
    if k < 2 or m < 2:
        raise ValueError(f"need at least 2 training and 2 held-out rows, got {k} and {m}")
    repeats = REPEATS
    seed = settings.seed
    order = pick(len(train), len(train), seed + 1)
    n_floor = min(repeats, len(train) // k)
    floor_sets = [train.x[order[j * k : (j + 1) * k]] for j in range(n_floor)]
    i = order[:k]
    tr = train.x[i]
    tr_labels = train.labels[i] if train.labels is not None else None
    ho = heldout.x[pick(len(heldout), m, seed + 2)]
    bandwidth = metrics.median_bandwidth(ho)

    conditional = loaded.num_classes is not None
    labels = None
    notes = []
    if conditional:
        if tr_labels is None:
            raise ValueError("the model is class-conditional but the training data has no labels")
        labels = tr_labels.repeat(repeats)  # each set has the training subset's classes
    x = generate(loaded, k * repeats, settings, class_labels=labels)
    samples = list(x.split(k))
    g = torch.Generator().manual_seed(seed + 3)
    gauss = list(metrics.gaussian_fit_sample(tr, k * repeats, g).split(k))
    to_data = loaded.to_data
    toy = train.toy
    rows = [
        set_row(f"model ({short(settings)})", samples, ho, bandwidth, toy, to_data),
        set_row("floor: train vs held-out", floor_sets, ho, bandwidth, toy, to_data),
        set_row("Gaussian fit to train", gauss, ho, bandwidth, toy, to_data),
    ]
    result = None
    if heldout.labels is not None and train.labels is not None:
        if conditional:
            assert tr_labels is not None and train.class_names is not None
            result = tstr(
                (samples[0], tr_labels),
                (tr, tr_labels),
                (heldout.x, heldout.labels),
                len(train.class_names),
                steps=TSTR_STEPS,
            )
        else:
            notes.append("TSTR: skipped, the model is not class-conditional (--class-cond)")
    source = heldout.source
    return ArrayReport(
        k, m, repeats, n_floor, bandwidth, rows, heldout.kind, toy, source, result, notes
    )
