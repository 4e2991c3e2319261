"""Line plots people can read: axes, ticks, labels, a legend. With matplotlib when it is
installed (the `plots` extra), else drawn with Pillow to the same layout.

A figure is a row of `Panel`s, each holding `Series`. `plot(panels, path)` writes a PNG and
returns the backend it used ("matplotlib" or "pillow"; `backend=` forces one).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# matplotlib's default colour cycle ("tab10"), so both backends colour series alike
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
BACKENDS = ("auto", "matplotlib", "pillow")
MARKED = 12  # series of at most this many points get a dot at each


@dataclass
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    dashed: bool = False


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    logy: bool = False
    logx: bool = False


def plot(
    panels: Sequence[Panel], path: str | os.PathLike, backend: str = "auto", dpi: int = 110
) -> str:
    """Draw the panels side by side into a PNG at `path`; returns the backend used."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown plot backend {backend!r}; expected one of {BACKENDS}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if backend in ("auto", "matplotlib"):
        try:
            _plot_matplotlib(panels, path, dpi)
            return "matplotlib"
        except ImportError:
            if backend == "matplotlib":
                raise
    _plot_pillow(panels, path)
    return "pillow"


def training_curve(rows: Sequence[dict], key: str) -> Panel | None:
    """The "loss" (log scale) or "fid" column of log.csv rows against the step, or None when
    the column holds no value."""
    pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in ("", None)]
    if not pts:
        return None
    steps, values = [s for s, _ in pts], [v for _, v in pts]
    if key == "loss":
        return Panel(
            "training loss (mean over each logging interval)",
            "step",
            "loss",
            [Series("loss", steps, values)],
            logy=True,
        )
    return Panel("FID of the EMA weights", "step", "FID", [Series("FID", steps, values)])


def _finite(s: Series, logy: bool, logx: bool = False) -> list[tuple[float, float]]:
    return [
        (float(x), float(y))
        for x, y in zip(s.x, s.y)
        if math.isfinite(x) and math.isfinite(y) and (y > 0 or not logy) and (x > 0 or not logx)
    ]


# --- matplotlib -----------------------------------------------------------------------------


def _plot_matplotlib(panels: Sequence[Panel], path: str | os.PathLike, dpi: int) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * len(panels), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        for i, s in enumerate(panel.series):
            pts = _finite(s, panel.logy, panel.logx)
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                label=s.label,
                color=COLORS[i % len(COLORS)],
                linestyle="--" if s.dashed else "-",
                linewidth=1.6,
                marker="o" if len(pts) <= MARKED else None,  # a few measured points: show them
                markersize=4,
            )
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        for axis, log in ((ax.yaxis, panel.logy), (ax.xaxis, panel.logx)):
            if log:
                (ax.set_yscale if axis is ax.yaxis else ax.set_xscale)("log")
                axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                axis.set_major_formatter(FuncFormatter(lambda v, _: _label(v)))
                axis.set_minor_formatter(NullFormatter())
        ax.set(title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel)
        ax.grid(alpha=0.3)
        if len(panel.series) > 1:
            ax.legend(fontsize="small")
    fig.savefig(path, dpi=dpi)


# --- Pillow ---------------------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart, about n steps) covering [lo, hi]."""
    span, mid = hi - lo, (lo + hi) / 2
    if not span > 1e-9 * max(abs(lo), abs(hi)) or span < 1e-300:  # (nearly) constant
        half = max(0.1 * abs(mid), span)
        half = half if half > 1e-300 else 1.0
        lo, hi = mid - half, mid + half
    e = math.floor(math.log10((hi - lo) / n))
    steps = [m * 10.0**k for k in (e - 1, e, e + 1) for m in (1, 2, 5)]
    step = min(steps, key=lambda st: abs((hi - lo) / st - n))  # the count nearest n
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [k * step for k in range(first, last + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a log axis over [lo, hi] (lo > 0): powers of ten, with 2x and 5x
    between them when the range spans few decades."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1,) if b - a > 3 else (1, 2, 5)
    ticks = [m * 10.0**k for k in range(a, b + 1) for m in mults]
    inside = [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
    below = [t for t in ticks if t < lo]
    above = [t for t in ticks if t > hi]
    # one tick beyond each end so the curve sits inside labelled values
    return ([below[-1]] if below else []) + inside + ([above[0]] if above else [])


def _label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{v:.6g}"


def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans when the system has it (it has ᾱ, β, ε); else Pillow's own font."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        pass
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()


# what a font without Greek letters writes instead
ASCII = {"ᾱ": "alpha_bar", "α": "alpha", "β": "beta", "ε": "eps", "√": "sqrt", "…": "..."}


def readable(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    if "DejaVu" in str(getattr(font, "path", "")):
        return text
    for greek, latin in ASCII.items():
        text = text.replace(greek, latin)
    return text


def _plot_pillow(panels: Sequence[Panel], path: str | os.PathLike, S: int = 2) -> None:
    """Drawn at S times the size, then scaled down: smooth lines and text without
    anti-aliasing in ImageDraw."""
    W, H = 600, 440
    img = Image.new("RGB", (W * len(panels) * S, H * S), "white")
    for k, panel in enumerate(panels):
        _draw_panel(img, panel, k * W * S, W * S, H * S, S)
    img.resize((W * len(panels), H), Image.Resampling.LANCZOS).save(path)


def _axis(lo: float, hi: float, pad: float) -> tuple[float, float]:
    """The data range widened by `pad` of its span on each side (as matplotlib's margins)."""
    if not hi > lo:
        half = 0.1 * abs(lo) or 1.0
        return lo - half, hi + half
    return lo - pad * (hi - lo), hi + pad * (hi - lo)


def _draw_panel(img: Image.Image, panel: Panel, x0: int, W: int, H: int, S: int) -> None:
    d = ImageDraw.Draw(img)
    big, small = font(16 * S), font(13 * S)
    left, right, top, bottom = x0 + 84 * S, x0 + W - 20 * S, 40 * S, H - 64 * S
    series = [(s, _finite(s, panel.logy, panel.logx)) for s in panel.series]
    xs = [p[0] for _, pts in series for p in pts] or ([1.0, 10.0] if panel.logx else [0.0, 1.0])
    ys = [p[1] for _, pts in series for p in pts] or ([1.0, 10.0] if panel.logy else [0.0, 1.0])
    fx = math.log10 if panel.logx else float
    xlo, xhi = _axis(fx(min(xs)), fx(max(xs)), 0.03)
    if panel.logy:
        fy = math.log10
        ylo, yhi = _axis(fy(min(ys)), fy(max(ys)), 0.05)
        yt = log_ticks(10**ylo, 10**yhi)
        if sum(ylo <= fy(t) <= yhi for t in yt) < 2:  # less than a factor 2: round values
            yt = nice_ticks(10**ylo, 10**yhi)
    else:
        fy = float
        ylo, yhi = _axis(min(ys), max(ys), 0.05)
        yt = nice_ticks(ylo, yhi)
    xt = log_ticks(10**xlo, 10**xhi) if panel.logx else nice_ticks(xlo, xhi)
    xt = [t for t in xt if xlo - 1e-9 <= fx(t) <= xhi + 1e-9]
    yt = [t for t in yt if t > 0 or not panel.logy]
    yt = [t for t in yt if ylo - 1e-9 <= fy(t) <= yhi + 1e-9]

    def px(x: float, y: float) -> tuple[float, float]:
        u = left + (fx(x) - xlo) / (xhi - xlo) * (right - left)
        v = bottom - (fy(y) - ylo) / (yhi - ylo) * (bottom - top)
        return u, v

    grid = (225, 225, 225)
    for t in xt:
        u = px(t, 10**ylo if panel.logy else ylo)[0]
        d.line([(u, top), (u, bottom)], fill=grid, width=S)
        d.line([(u, bottom), (u, bottom + 5 * S)], fill="black", width=S)
        _text(d, (u, bottom + 8 * S), _label(t), small, "mt")
    for t in yt:
        v = px(10**xlo if panel.logx else xlo, t)[1]
        d.line([(left, v), (right, v)], fill=grid, width=S)
        d.line([(left - 5 * S, v), (left, v)], fill="black", width=S)
        _text(d, (left - 8 * S, v), _label(t), small, "rm")
    for i, (s, pts) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        line = [px(x, y) for x, y in pts]
        if s.dashed:
            _dashed(d, line, color, S)
        elif len(line) > 1:
            d.line(line, fill=color, width=2 * S, joint="curve")
        if len(line) <= MARKED:
            for u, v in line:
                d.ellipse((u - 3 * S, v - 3 * S, u + 3 * S, v + 3 * S), fill=color)
    d.rectangle((left, top, right, bottom), outline="black", width=S)
    _text(d, ((left + right) / 2, 12 * S), panel.title, big, "mt")
    _text(d, ((left + right) / 2, H - 24 * S), panel.xlabel, big, "mm")
    # the y label, written sideways
    ylabel = readable(panel.ylabel, big)
    box = d.textbbox((0, 0), ylabel, font=big)
    label = Image.new("RGB", (box[2] - box[0] + 4 * S, box[3] - box[1] + 6 * S), "white")
    ImageDraw.Draw(label).text((2 * S - box[0], 3 * S - box[1]), ylabel, fill="black", font=big)
    label = label.rotate(90, expand=True)
    img.paste(label, (x0 + 6 * S, int((top + bottom) / 2 - label.height / 2)))
    if len(series) > 1:
        _legend(d, [s for s, _ in series], right - 10 * S, top + 10 * S, small, S)


def _text(d: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font, anchor: str) -> None:
    """Text placed by its box: anchor "mt" is middle-top, "rm" right-middle, "lm", "mm"
    (computed here, so bitmap fonts of older Pillow versions place it alike)."""
    text = readable(text, font)
    x0, y0, x1, y1 = d.textbbox((0, 0), text, font=font)
    w, h = x1 - x0, y1 - y0
    x = xy[0] - {"l": 0, "m": w / 2, "r": w}[anchor[0]] - x0
    y = xy[1] - {"t": 0, "m": h / 2, "b": h}[anchor[1]] - y0
    d.text((x, y), text, fill="black", font=font)


def _dashed(d: ImageDraw.ImageDraw, line: list[tuple[float, float]], color: str, S: int) -> None:
    """A polyline drawn 8 pixels on, 5 off (times S), measured along its length."""
    on, period, walked = 8.0 * S, 13.0 * S, 0.0
    for (xa, ya), (xb, yb) in zip(line, line[1:]):
        length = math.hypot(xb - xa, yb - ya)
        pos = 0.0
        while pos < length:
            phase = (walked + pos) % period
            end = min(pos + ((on - phase) if phase < on else (period - phase)), length)
            if phase < on:
                f0, f1 = pos / length, end / length
                a = (xa + f0 * (xb - xa), ya + f0 * (yb - ya))
                b = (xa + f1 * (xb - xa), ya + f1 * (yb - ya))
                d.line([a, b], fill=color, width=2 * S)
            pos = end
        walked += length


def _legend(
    d: ImageDraw.ImageDraw, series: Sequence[Series], x1: int, y0: int, font, S: int
) -> None:
    widths = [d.textbbox((0, 0), readable(s.label, font), font=font)[2] for s in series]
    w, row = max(widths) + 40 * S, 18 * S
    x0 = x1 - w
    d.rectangle(
        (x0, y0, x1, y0 + row * len(series) + 6 * S), fill="white", outline=(180, 180, 180), width=S
    )
    for i, s in enumerate(series):
        y = y0 + 4 * S + row * i + row / 2
        color = COLORS[i % len(COLORS)]
        if s.dashed:
            _dashed(d, [(x0 + 6 * S, y), (x0 + 30 * S, y)], color, S)
        else:
            d.line([(x0 + 6 * S, y), (x0 + 28 * S, y)], fill=color, width=2 * S)
        _text(d, (x0 + 34 * S, y), s.label, font, "lm")
