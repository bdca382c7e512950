"""Line charts over simulated time as inline SVG, drawn in Python so the report page loads nothing.

Each line is reduced to the minimum and maximum of every pixel column before it is drawn: a spike of
one sample in 500,000 still shows, and the page stays small whatever the series' length.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulator.html_text import esc

SVG_NS = "http://www.w3.org/2000/svg"

# Okabe-Ito, ordered so the first lines have the most contrast on white; its yellow
# (#F0E442) is replaced by a mid grey: a yellow line on white is all but invisible
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8C8C8C")
# a dash pattern per line as well, so lines stay apart in greyscale and for any colour vision
DASHES = ("", "8 4", "2 3", "8 3 2 3", "12 4", "4 4", "12 3 2 3 2 3", "1 3")
# hour steps a reader counts in; past the last one the generic 1-2-2.5-5 steps take over
HOUR_STEPS = (1.0, 2.0, 3.0, 4.0, 6.0, 12.0, 24.0, 48.0, 72.0, 168.0, 336.0, 720.0)
MAX_X_TICKS = 8

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class LineStyle:
    colour: str
    dash: str


@dataclass(frozen=True)
class Line:
    label: str
    t_s: Floats
    values: Floats
    style: LineStyle


@dataclass(frozen=True)
class Frame:
    """Where the plot area lies in the SVG, and the data domain it shows."""

    width: int
    height: int
    left: int = 70
    right: int = 18
    top: int = 12
    bottom: int = 44
    x_max_s: float = 1.0
    y_lo: float = 0.0
    y_hi: float = 1.0

    @property
    def plot_width(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> int:
        return self.height - self.top - self.bottom

    def x(self, t_s: float) -> float:
        return self.left + t_s / self.x_max_s * self.plot_width

    def y(self, value: float) -> float:
        return self.top + (self.y_hi - value) / (self.y_hi - self.y_lo) * self.plot_height


def style_for(index: int) -> LineStyle:
    # past eight lines the colours repeat, shifted against the dashes so no two lines look the same
    return LineStyle(PALETTE[index % len(PALETTE)], DASHES[(index + index // len(PALETTE)) % len(DASHES)])


def bucket_edges(n: int, buckets: int) -> list[int]:
    """Index boundaries of ``buckets`` near-equal runs of ``n`` samples: edge i is floor(i * n / buckets)."""
    return [i * n // buckets for i in range(buckets + 1)]


def downsample_minmax(t_s: Floats, values: Floats, buckets: int) -> tuple[Floats, Floats]:
    """The samples holding each bucket's minimum and maximum, in time order; short series come back whole.

    Series are sampled at fixed steps, so buckets of equal sample counts are equal spans of time, one
    per pixel column when ``buckets`` is the plot's width.
    """
    n = len(values)
    if n <= 2 * buckets:
        return t_s, values
    keep: list[int] = []
    edges = bucket_edges(n, buckets)
    for start, stop in itertools.pairwise(edges):
        if stop == start:
            continue
        chunk = values[start:stop]
        low, high = start + int(np.argmin(chunk)), start + int(np.argmax(chunk))
        keep.extend(sorted({low, high}))
    index = np.asarray(keep, dtype=np.int64)
    return t_s[index], values[index]


def _step_decimals(step: float) -> int:
    """Fewest decimals that write ``step`` (and so every multiple of it) exactly enough for a tick label."""
    for decimals in range(7):
        if abs(round(step, decimals) - step) <= 1e-9 * step:
            return decimals
    return 6


def nice_ticks(lo: float, hi: float, target: int = 5, *, counts: bool = False) -> list[float]:
    """Ticks at a 1, 2, 2.5 or 5 times a power of ten step, from at or below ``lo`` to at or above ``hi``.

    ``counts``: the values are whole things (tasks, GPUs), so steps are whole numbers and never 2.5.
    """
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / target
    magnitude = 10.0 ** math.floor(math.log10(raw))
    multiples = (1.0, 2.0, 5.0, 10.0) if counts else (1.0, 2.0, 2.5, 5.0, 10.0)
    step = next(m * magnitude for m in multiples if m * magnitude >= raw * (1 - 1e-12))
    step = max(step, 1.0) if counts else step
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    # rounded so that 3 * 0.1 is written 0.3 and the page is the same on every run
    return [round(k * step, 10) for k in range(first, last + 1)]


def hour_ticks(x_max_s: float) -> list[float]:
    """Ticks in hours from the start that cover ``x_max_s`` seconds, at whole-hour steps where the span allows."""
    span_h = x_max_s / 3600.0
    if span_h <= 3.0:
        return nice_ticks(0.0, span_h)
    step = next((s for s in HOUR_STEPS if span_h / s <= MAX_X_TICKS), None)
    if step is None:
        return nice_ticks(0.0, span_h)
    return [k * step for k in range(math.ceil(span_h / step - 1e-9) + 1)]


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels with the decimals the step needs; thousands separated, large values in k or M."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    biggest = max(abs(t) for t in ticks)
    scale, suffix = (1e6, "M") if biggest >= 1e6 else (1e3, "k") if biggest >= 1e4 else (1.0, "")
    decimals = _step_decimals(step / scale)
    # + 0.0 turns a -0.0 into 0.0, so zero is never labelled "-0"
    return [f"{t / scale + 0.0:,.{decimals}f}{suffix}" for t in ticks]


def _num(value: float) -> str:
    # one decimal of a pixel is finer than any screen shows; a fixed format keeps the page byte-stable
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _grid_and_axes(frame: Frame, x_ticks_h: Sequence[float], y_ticks: Sequence[float], y_label: str) -> list[str]:
    parts: list[str] = []
    bottom, right = frame.top + frame.plot_height, frame.left + frame.plot_width
    for tick, label in zip(y_ticks, tick_labels(y_ticks), strict=True):
        y = _num(frame.y(tick))
        parts.append(f'<line class="grid" x1="{frame.left}" y1="{y}" x2="{right}" y2="{y}"/>')
        parts.append(f'<text x="{frame.left - 6}" y="{y}" text-anchor="end" dominant-baseline="middle">{label}</text>')
    for tick, label in zip(x_ticks_h, tick_labels(x_ticks_h), strict=True):
        x = _num(frame.x(tick * 3600.0))
        parts.append(f'<line class="grid" x1="{x}" y1="{frame.top}" x2="{x}" y2="{bottom}"/>')
        parts.append(f'<text x="{x}" y="{bottom + 16}" text-anchor="middle">{label}</text>')
    parts.append(f'<path class="axis" d="M{frame.left},{frame.top}V{bottom}H{right}"/>')
    parts.append(
        f'<text x="{frame.left + frame.plot_width / 2:.1f}" y="{frame.height - 6}" text-anchor="middle">'
        "hours from start</text>"
    )
    middle = frame.top + frame.plot_height / 2
    parts.append(
        f'<text x="14" y="{middle:.1f}" text-anchor="middle" transform="rotate(-90 14 {middle:.1f})">'
        f"{esc(y_label)}</text>"
    )
    return parts


def _polyline(frame: Frame, line: Line) -> str:
    t_s, values = downsample_minmax(line.t_s, line.values, frame.plot_width)
    points = " ".join(
        f"{_num(frame.x(t))},{_num(frame.y(v))}" for t, v in zip(t_s.tolist(), values.tolist(), strict=True)
    )
    dash = f' stroke-dasharray="{line.style.dash}"' if line.style.dash else ""
    return (
        f'<polyline fill="none" stroke="{line.style.colour}" stroke-width="1.8"{dash} points="{points}">'
        f"<title>{esc(line.label)}</title></polyline>"
    )


def _y_domain(lines: Sequence[Line], y_max: float | None) -> tuple[float, float]:
    lows = [float(line.values.min()) for line in lines if len(line.values)]
    highs = [float(line.values.max()) for line in lines if len(line.values)]
    lo, hi = min([0.0, *lows]), max([0.0, *highs, *([y_max] if y_max is not None else [])])
    return lo, hi if hi > lo else lo + 1.0


def line_chart_svg(
    lines: Sequence[Line],
    *,
    title: str,
    y_label: str,
    size: tuple[int, int],
    x_max_s: float,
    y_max: float | None = None,
    counts: bool = False,
) -> str:
    """One chart: a line per entry of ``lines`` over ``[0, x_max_s]``; ``y_max`` shares a scale between charts."""
    lo, hi = _y_domain(lines, y_max)
    y_ticks = nice_ticks(lo, hi, counts=counts)
    x_ticks_h = hour_ticks(max(x_max_s, 1.0))
    frame = Frame(size[0], size[1], x_max_s=x_ticks_h[-1] * 3600.0, y_lo=y_ticks[0], y_hi=y_ticks[-1])
    parts = [
        f'<svg xmlns="{SVG_NS}" class="chart" viewBox="0 0 {frame.width} {frame.height}" role="img" '
        f'aria-label="{esc(title)}">',
        *_grid_and_axes(frame, x_ticks_h, y_ticks, y_label),
        *(_polyline(frame, line) for line in lines),
    ]
    if not any(len(line.values) for line in lines):
        parts.append(f'<text x="{frame.left + 12}" y="{frame.top + 20}">no samples</text>')
    parts.append("</svg>")
    return "".join(parts)


def swatch_svg(style: LineStyle) -> str:
    """A short sample of a line's colour and dash, for legends and table rows."""
    dash = f' stroke-dasharray="{style.dash}"' if style.dash else ""
    return (
        f'<svg xmlns="{SVG_NS}" class="swatch" width="40" height="12" viewBox="0 0 40 12" aria-hidden="true">'
        f'<line x1="1" y1="6" x2="39" y2="6" stroke="{style.colour}" stroke-width="2.4"{dash}/></svg>'
    )


def legend_html(entries: Sequence[tuple[str, LineStyle]]) -> str:
    """An HTML legend: each line's sample, then its label."""
    items = "".join(f"<li>{swatch_svg(style)}{esc(label)}</li>" for label, style in entries)
    return f'<ul class="legend">{items}</ul>'
