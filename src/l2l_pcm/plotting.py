"""Matplotlib without a screen, and figures written atomically as PNG."""

from __future__ import annotations

import io
import math
from pathlib import Path

from l2l_pcm._io import atomic_write_bytes

SLIDE_STYLE = {
    "font.size": 13,
    "axes.titlesize": 14,
    "axes.labelsize": 13,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 12,
    "legend.title_fontsize": 12,
    "figure.titlesize": 15,
    "lines.linewidth": 2.0,
    "lines.markersize": 7,
}
"""Font sizes (pt) every figure is drawn with: 12 pt at least at the saved size, readable on a slide."""
MIN_FONT_PT = 12
"""The smallest font size (pt) a figure of this project uses."""


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed), with :data:`SLIDE_STYLE`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(SLIDE_STYLE)
    return plt


def save_figure(fig, path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    pyplot().close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


HUMAN_TIMES_S = (
    (1.0, "1 s"),
    (60.0, "1 min"),
    (3600.0, "1 h"),
    (86400.0, "1 day"),
    (7 * 86400.0, "1 week"),
    (30 * 86400.0, "1 month"),
    (365 * 86400.0, "1 year"),
)


def short_time_label(seconds: float) -> str:
    """A duration in the largest unit it reaches: 1 s, 90 s, 1 min, 1 h, 1 d, 30 d, 1 y (y = 365 d)."""
    for unit, size in (("y", 365 * 86400.0), ("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size * 0.999:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def human_time_axis(ax, times_s, axis: str = "x", at_data: bool = False) -> None:
    """A log time axis ticked at 1 s, 1 min, 1 h, 1 day, 1 week, 1 month, 1 year (those in range).

    Seconds on a log axis (10^4, 10^5 …) make a reader compute what a day is; device ages are read
    in these units. ``at_data``: ticks at the given times only, labelled by :func:`short_time_label`
    (a sweep's axis: no tick where nothing was measured).
    """
    if at_data:
        ticks = sorted(set(float(t) for t in times_s))
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks, [short_time_label(t) for t in ticks])
        (ax.xaxis if axis == "x" else ax.yaxis).set_minor_locator(_no_ticks())
        return
    low, high = min(times_s), max(times_s)
    spacing = math.log10(max(high / low, 10.0)) / 10  # in decades: labels closer than this would overlap
    candidates = [(t, label) for t, label in HUMAN_TIMES_S if low / 1.5 <= t <= high * 1.5]
    at_data = [c for c in candidates if any(abs(math.log10(c[0] / t)) < 0.05 for t in times_s)]
    ticks = []
    for t, label in at_data + [c for c in candidates if c not in at_data]:  # ticks at data points first
        if all(abs(math.log10(t / kept)) >= spacing for kept, _ in ticks):
            ticks.append((t, label))
    ticks.sort()
    set_scale, set_ticks, set_labels = (
        (ax.set_xscale, ax.set_xticks, ax.set_xticklabels)
        if axis == "x"
        else (ax.set_yscale, ax.set_yticks, ax.set_yticklabels)
    )
    set_scale("log")
    if len(ticks) >= 2:
        set_ticks([t for t, _ in ticks])
        set_labels([label for _, label in ticks])
        (ax.xaxis if axis == "x" else ax.yaxis).set_minor_locator(_no_ticks())


def _no_ticks():
    from matplotlib.ticker import NullLocator

    return NullLocator()
