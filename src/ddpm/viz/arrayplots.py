"""Plots of points and sequences with Pillow alone: axes with ticks and labels, scatter plots
(samples over the data in grey), panels of curves, and animations of the denoising chain.

Each panel is drawn on its own image and pasted into the figure, so anything outside the
axis limits is clipped. Colours are the Tableau 10 palette (one per class).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
GREY = (150, 150, 150)
MARGIN = (62, 30, 16, 46)  # left (tick labels, y label), top (title), right, bottom (x label)


def font(size: int = 13) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 (FreeType)
    except TypeError:
        return ImageFont.load_default()


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values (1, 2 or 5 times a power of ten apart) within [lo, hi]."""
    if not hi > lo:
        return [lo]
    raw = 0.75 * (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + k * step, 12) for k in range(int((hi - first) / step + 1e-9) + 1)]


def fmt(v: float) -> str:
    return f"{v:.4g}" if v != 0 else "0"


def limits(*arrays: np.ndarray, q: float = 0.5, pad: float = 0.08) -> tuple[float, float]:
    """Axis limits: the q..(100 - q) percentiles of the values, widened by `pad` each side."""
    v = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays if a.size])
    lo, hi = (float(x) for x in np.percentile(v, [q, 100 - q]))
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    w = hi - lo
    return lo - pad * w, hi + pad * w


@dataclass
class Panel:
    """One plot: a box of `size` pixels (plot area) with data limits, title and axis labels."""

    xlim: tuple[float, float]
    ylim: tuple[float, float]
    size: tuple[int, int] = (360, 300)
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""

    def __post_init__(self) -> None:
        w, h = self.size
        self.area = Image.new("RGBA", (w, h), (255, 255, 255, 255))
        self.draw = ImageDraw.Draw(self.area, "RGBA")

    def px(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        w, h = self.size
        return (x - x0) / (x1 - x0) * (w - 1), (1 - (y - y0) / (y1 - y0)) * (h - 1)

    def scatter(self, pts: np.ndarray, color, radius: float = 1.6, alpha: int = 200) -> None:
        u, v = self.px(pts[:, 0], pts[:, 1])
        for a, b in zip(u.tolist(), v.tolist()):
            self.draw.ellipse((a - radius, b - radius, a + radius, b + radius), (*color, alpha))

    def line(self, xs: np.ndarray, ys: np.ndarray, color, width: int = 1, alpha: int = 170):
        u, v = self.px(xs, ys)
        self.draw.line(list(zip(u.tolist(), v.tolist())), (*color, alpha), width)

    def render(self) -> Image.Image:
        """The panel with its frame, ticks, tick labels, axis labels and title."""
        w, h = self.size
        left, top, right, bottom = MARGIN
        img = Image.new("RGB", (left + w + right, top + h + bottom), "white")
        img.paste(self.area.convert("RGB"), (left, top))
        d = ImageDraw.Draw(img)
        f, fs = font(13), font(11)
        d.rectangle((left - 1, top - 1, left + w, top + h), outline="black")
        for v in nice_ticks(*self.xlim):
            u = left + self.px(np.array([v]), np.array([0.0]))[0][0]
            d.line((u, top + h, u, top + h + 4), "black")
            d.text((u, top + h + 6), fmt(v), "black", fs, anchor="ma")
        for v in nice_ticks(*self.ylim):
            y = top + self.px(np.array([0.0]), np.array([v]))[1][0]
            d.line((left - 5, y, left - 1, y), "black")
            d.text((left - 7, y), fmt(v), "black", fs, anchor="rm")
        if self.title:
            d.text((left + w / 2, top / 2), self.title, "black", f, anchor="mm")
        if self.xlabel:
            d.text((left + w / 2, top + h + bottom - 4), self.xlabel, "black", f, anchor="md")
        if self.ylabel:  # drawn sideways on its own image, then pasted
            tw = int(d.textlength(self.ylabel, font=f)) + 4
            side = Image.new("RGB", (tw, 18), "white")
            ImageDraw.Draw(side).text((2, 9), self.ylabel, "black", f, anchor="lm")
            side = side.rotate(90, expand=True)
            img.paste(side, (2, top + h // 2 - side.height // 2))
        return img


def figure(panels: Sequence[Image.Image], cols: int, legend: Sequence[tuple[str, tuple]] = ()):
    """Panels in a grid of `cols` columns, with an optional legend row (name, colour) below."""
    w = max(p.width for p in panels)
    h = max(p.height for p in panels)
    rows = math.ceil(len(panels) / cols)
    extra = 26 if legend else 0
    img = Image.new("RGB", (cols * w, rows * h + extra), "white")
    for i, p in enumerate(panels):
        img.paste(p, ((i % cols) * w, (i // cols) * h))
    if legend:
        d = ImageDraw.Draw(img)
        x, y, f = MARGIN[0], rows * h + 6, font(13)
        for name, color in legend:
            d.rectangle((x, y + 3, x + 12, y + 13), fill=color)
            d.text((x + 17, y + 8), name, "black", f, anchor="lm")
            x += 17 + int(d.textlength(name, font=f)) + 22
    return img


def _save(img: Image.Image, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


# --- points ------------------------------------------------------------------------------------


def _pairs(D: int) -> list[tuple[int, int]]:
    """The column pairs shown: (0, 1) for 2-D data, otherwise every pair of the first 4."""
    k = min(D, 4)
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def scatter_figure(
    samples: np.ndarray,
    reference: np.ndarray | None = None,
    title: str = "samples",
    names: Sequence[str] | None = None,
) -> Image.Image:
    """Samples (n, D) beside the data (m, D): for D = 2 the data (grey) and the samples (blue)
    in two panels on the same axes, so that neither hides the other; for D > 2 one panel per
    pair of columns, the samples drawn light over the data; D = 1: a histogram of each."""
    D = samples.shape[1]
    names = list(names) if names is not None else [f"x{i + 1}" for i in range(D)]
    both = [samples] + ([reference] if reference is not None else [])
    legend = [("samples", PALETTE[0])] + ([("data", GREY)] if reference is not None else [])
    if D == 1:
        return figure([_histogram(both, names[0], title)], 1, legend)
    if D == 2 and reference is not None:
        xlim, ylim = limits(*[a[:, 0] for a in both]), limits(*[a[:, 1] for a in both])
        panels = []
        for pts, color, name in ((reference, GREY, "data"), (samples, PALETTE[0], title)):
            p = Panel(xlim, ylim, size=(360, 360), title=name, xlabel=names[0], ylabel=names[1])
            p.scatter(pts, color)
            panels.append(p.render())
        return figure(panels, 2, legend)
    panels = []
    for i, j in _pairs(D):
        p = Panel(
            limits(*[a[:, i] for a in both]),
            limits(*[a[:, j] for a in both]),
            size=(360, 360) if D == 2 else (260, 260),
            title=title if D == 2 else f"{names[j]} vs {names[i]}",
            xlabel=names[i],
            ylabel=names[j],
        )
        if reference is not None:
            p.scatter(reference[:, [i, j]], GREY, alpha=110)
        p.scatter(samples[:, [i, j]], PALETTE[0], alpha=200 if reference is None else 90)
        panels.append(p.render())
    return figure(panels, min(len(panels), 3), legend)


def _histogram(arrays: list[np.ndarray], name: str, title: str, bins: int = 40) -> Image.Image:
    lo, hi = limits(*arrays)
    edges = np.linspace(lo, hi, bins + 1)
    dens = [np.histogram(a[:, 0], edges, density=True)[0] for a in arrays]
    p = Panel((lo, hi), (0.0, max(float(d.max()) for d in dens) * 1.1), title=title, xlabel=name)
    p.ylabel = "density"
    mids = (edges[:-1] + edges[1:]) / 2
    for d, color in zip(dens[::-1], [GREY, PALETTE[0]][-len(dens) :]):
        p.line(mids, d, color, width=2, alpha=255)
    return p.render()


def _np(x) -> np.ndarray | None:
    return None if x is None else np.asarray(x)


def scatter_frames(
    frames: Sequence[np.ndarray], reference: np.ndarray | None, labels: Sequence[str]
) -> list[Image.Image]:
    """The cloud at each snapshot of the chain (first two columns), on fixed axes."""
    ref = [reference[:, :2]] if reference is not None else []
    xlim = limits(*[f[:, 0] for f in frames[-1:]], *[r[:, 0] for r in ref], pad=0.25)
    ylim = limits(*[f[:, 1] for f in frames[-1:]], *[r[:, 1] for r in ref], pad=0.25)
    out = []
    for f, label in zip(frames, labels):
        p = Panel(xlim, ylim, size=(300, 300), title=label, xlabel="x1", ylabel="x2")
        if reference is not None:
            p.scatter(reference[:, :2], GREY, alpha=60)
        p.scatter(f[:, :2], PALETTE[0], radius=1.4)
        out.append(p.render())
    return out


def save_animation(images: Sequence[Image.Image], path, ms: int = 90, hold_ms: int = 1500):
    """An animated GIF of the images; the last one is held."""
    durations = [ms] * (len(images) - 1) + [hold_ms]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    first, *rest = [im.convert("P", palette=Image.Palette.ADAPTIVE) for im in images]
    first.save(path, save_all=True, append_images=rest, duration=durations, loop=0)


# --- sequences ---------------------------------------------------------------------------------


def curves_figure(
    samples: np.ndarray,
    labels: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    per_panel: int = 4,
    max_channels: int = 6,
) -> Image.Image:
    """Sequences (n, C, L) as curves: one row of panels per channel (at most `max_channels`),
    one column per class (one column when unlabelled). Each panel shows up to `per_panel`
    samples of its class in colour over as many sequences of the data (m, C, L) in grey."""
    C, L = samples.shape[1], samples.shape[2]
    ts = np.arange(L)
    classes = np.unique(labels).tolist() if labels is not None else [None]
    rows = min(C, max_channels)
    arrays = [samples] + ([reference] if reference is not None else [])
    panel = (300, 150) if len(classes) > 1 else (460, 170)
    panels = []
    for c in range(rows):
        ylim = limits(*[a[:, c] for a in arrays], q=0.2)
        for k in classes:
            name = "samples" if k is None else (class_names or [])[k] if class_names else str(k)
            p = Panel((0, L - 1), ylim, size=panel, title=name if c == 0 else "")
            p.xlabel = "time step" if c == rows - 1 else ""
            p.ylabel = f"channel {c + 1}" if C > 1 else "value"
            color = PALETTE[0] if k is None else PALETTE[k % len(PALETTE)]
            if reference is not None:
                mine = (
                    reference
                    if k is None or reference_labels is None
                    else (reference[reference_labels == k])
                )
                for r in mine[:per_panel]:
                    p.line(ts, r[c], GREY, width=2, alpha=150)
            mine = samples if k is None else samples[labels == k]
            for s in mine[:per_panel]:
                p.line(ts, s[c], color, width=2, alpha=210)
            panels.append(p.render())
    legend = [("samples", PALETTE[0] if labels is None else (60, 60, 60))]
    if labels is not None:
        legend = [("samples: coloured by class", (60, 60, 60))]
    if reference is not None:
        legend.append(("data", GREY))
    return figure(panels, len(classes), legend)


def save_curves(samples, path, labels=None, reference=None, reference_labels=None, names=None):
    img = curves_figure(
        np.asarray(samples), _np(labels), _np(reference), _np(reference_labels), names
    )
    _save(img, path)


def curve_frames(frames: Sequence[np.ndarray], labels: Sequence[str]) -> list[Image.Image]:
    """The first channel of a few sequences at each snapshot of the chain, on fixed axes."""
    L = frames[0].shape[-1]
    ylim = limits(*[f[:, 0] for f in frames[-1:]], pad=0.3)
    out = []
    for f, label in zip(frames, labels):
        p = Panel((0, L - 1), ylim, size=(360, 200), title=label, xlabel="time step")
        for k in range(len(f)):
            p.line(np.arange(L), f[k, 0], PALETTE[k % len(PALETTE)], alpha=220)
        out.append(p.render())
    return out


def imputation_figure(filled: np.ndarray, known: np.ndarray, n: int = 4) -> Image.Image:
    """The first channel of up to n imputed sequences (n, C, L), a panel each: the filled
    curve in colour and the known steps (`known`, bool like `filled`) as black dots."""
    L = filled.shape[-1]
    ts = np.arange(L)
    panels = []
    for i in range(min(n, len(filled))):
        f, k = filled[i, 0], known[i, 0]
        p = Panel((0, L - 1), limits(f, q=0.0), size=(360, 170), title=f"sequence {i + 1}",
                  xlabel="time step", ylabel="value")  # fmt: skip
        p.line(ts, f, PALETTE[0], width=2, alpha=220)
        p.scatter(np.stack([ts[k], f[k]], 1), (0, 0, 0), radius=1.2, alpha=200)
        panels.append(p.render())
    legend = [("filled", PALETTE[0]), ("known steps", (0, 0, 0))]
    return figure(panels, 2 if len(panels) > 1 else 1, legend)


def save_imputation(filled, known, path) -> None:
    _save(imputation_figure(np.asarray(filled), np.asarray(known)), path)


# --- samples of a model ------------------------------------------------------------------------


def save_samples(samples, path, info, labels=None, title: str = "samples") -> None:
    """Samples (n, D) or (n, C, L) in the data's units as a picture beside the data that
    `info` (a checkpoint's `ddpm.data.arrays.ArrayInfo`) keeps: a scatter plot or curve panels."""
    ref = _np(info.reference)
    if info.kind == "points":
        _save(scatter_figure(np.asarray(samples), ref, title, info.columns), path)
    else:
        save_curves(samples, path, labels, ref, _np(info.reference_labels), info.class_names)
