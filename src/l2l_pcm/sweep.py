"""Sweeps: one chip evaluation per point of a grid (time since programming × drift compensation × update
budget × readout scale × converter bits × device profile), JSON + CSV + plot.

Every point evaluates the same tasks (same seed: paired comparisons) in one process, so the jitted
functions compile once for the first point and are reused by the others (the shapes do not change). The
scenario supplies ``evaluate_point(point) -> result dict``; this module builds the grid, runs it with a
progress bar and writes the outputs.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from l2l_pcm._io import atomic_write_text
from l2l_pcm.errors import ConfigError
from l2l_pcm.plotting import human_time_axis, pyplot, save_figure

DEFAULT_TIMES_S = (1.0, 60.0, 3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0, 365 * 86400.0)
"""1 s, 1 min, 1 h, 1 day, 1 week, 1 month, 1 year: about log-spaced over the life of a deployed chip."""
TIME_AXIS = "time_since_programming_s"
SWEEP_AXES = (TIME_AXIS, "drift_compensation", "update_budget", "readout_scale", "dac_bits", "adc_bits", "device")
"""The axes a sweep may have, in grid order."""


def grid(axes: Mapping[str, Sequence]) -> list[dict]:
    """The Cartesian product of the axes, in order (the last axis varies fastest)."""
    for name, values in axes.items():
        if not values:
            raise ConfigError(f"sweep axis '{name}' has no values")
    names = list(axes)
    return [dict(zip(names, combination, strict=True)) for combination in itertools.product(*axes.values())]


def run(
    points: list[dict], evaluate_point: Callable[[dict], dict], metrics: Sequence[str], progress: bool
) -> list[dict]:
    """Evaluate every point; each row is the point plus the result's ``metrics`` (missing ones: None)."""
    from tqdm.auto import tqdm

    rows = []
    for point in tqdm(points, desc="sweep points", unit="point", disable=not progress):
        result = evaluate_point(point)
        rows.append({**point, **{metric: result.get(metric) for metric in metrics}})
    return rows


def write(rows: list[dict], out: Path, stem: str, provenance: dict) -> list[Path]:
    """``{stem}.json`` (one object: provenance and the points) and ``{stem}.csv`` (one row per point)."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"points": rows, "provenance": provenance}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return [
        atomic_write_text(out / f"{stem}.json", json.dumps(record, indent=1)),
        atomic_write_text(out / f"{stem}.csv", buffer.getvalue()),
    ]


def _label(row: dict, axes: Sequence[str]) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {row[name]}" for name in axes) or "chip"


def plot(
    rows: list[dict], metric: str, ci: str | None, path: Path, ylabel: str, title: str, log_y=False, y_scale=1.0
) -> Path:
    """``metric`` (× ``y_scale``) against time since programming, one line (± ``ci``) per combination of
    the other axes; with one time and several update budgets, against the fraction of devices
    re-programmed; with one time and several readout scales, against the readout scale."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    times = sorted({row[TIME_AXIS] for row in rows})
    against_devices = len(times) == 1 and len({row.get("update_budget") for row in rows}) > 1
    against_scale = len(times) == 1 and not against_devices and len({row.get("readout_scale") for row in rows}) > 1
    x_key = "devices_reprogrammed_fraction" if against_devices else "readout_scale" if against_scale else TIME_AXIS
    x_axes = (TIME_AXIS, "update_budget") if against_devices else (TIME_AXIS, x_key)
    others = [n for n in rows[0] if n in SWEEP_AXES and n not in x_axes and len({row[n] for row in rows}) > 1]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(_label(row, others), []).append(row)
    for label, group in groups.items():
        group = sorted(group, key=lambda r: r[x_key])
        xs = [r[x_key] * (100 if against_devices else 1) for r in group]
        ys = [r[metric] * y_scale for r in group]
        ax.plot(xs, ys, marker="o", label=label)
        if against_scale:  # where the devices' range bounds the weights, say how often
            for x, y, r in zip(xs, ys, group, strict=True):
                if (r.get("readout_updates_clipped_mean") or 0) >= 0.01:
                    ax.annotate(
                        f"{r['readout_updates_clipped_mean']:.2g} clipped/task",
                        (x, y),
                        fontsize=7,
                        textcoords="offset points",
                        xytext=(4, -12),
                        color="tab:red",
                    )
        if ci is not None and all(r.get(ci) is not None for r in group):
            low = [y - r[ci] * y_scale for y, r in zip(ys, group, strict=True)]
            high = [y + r[ci] * y_scale for y, r in zip(ys, group, strict=True)]
            ax.fill_between(xs, low, high, alpha=0.15)
    if against_devices:
        ax.set_xlabel("readout devices re-programmed per task (%)")
    elif against_scale:
        ax.set_xscale("log", base=2)
        scales = sorted({row["readout_scale"] for row in rows})
        ax.set_xticks(scales, [f"{x:g}" for x in scales])
        ax.minorticks_off()
        ax.set_xlabel("readout scale (readout weight per device weight unit; update step = scale / 16)")
    else:
        human_time_axis(ax, times)
        ax.set_xlabel("time since programming")
    if log_y:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(groups) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
