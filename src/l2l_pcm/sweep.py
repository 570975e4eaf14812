"""Sweeps: one chip evaluation per point of a grid (time since programming × drift compensation × update
budget × readout scale × converter bits × device profile), JSON + CSV + plot.

Every point evaluates the same tasks (same seed: paired comparisons) in one process, so the jitted
functions compile once for the first point and are reused by the others (the shapes do not change). The
scenario supplies ``evaluate_point(point) -> result dict``; this module builds the grid, runs it with a
progress bar and writes the outputs.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from l2l_pcm._io import atomic_write_csv, atomic_write_text
from l2l_pcm.errors import ConfigError
from l2l_pcm.plotting import human_time_axis, pyplot, save_figure, short_time_label

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
    points: list[dict],
    evaluate_point: Callable[[dict], dict],
    metrics: Sequence[str],
    progress: bool,
    per_task: bool = False,
) -> list[dict]:
    """Evaluate every point; each row is the point plus the result's ``metrics`` (missing ones: None).
    ``per_task``: also keep the result's per-task rows, each with its point, as ``row["per_task"]``."""
    from tqdm.auto import tqdm

    rows = []
    for point in tqdm(points, desc="sweep points", unit="point", disable=not progress):
        result = evaluate_point(point)
        rows.append({**point, **{metric: result.get(metric) for metric in metrics}})
        if per_task:
            rows[-1]["per_task"] = [{**point, **task} for task in result.get("per_task", [])]
    return rows


def write(rows: list[dict], out: Path, stem: str, provenance: dict) -> list[Path]:
    """``{stem}.json`` (one object: provenance and the points) and ``{stem}.csv`` (one row per point)."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"points": rows, "provenance": provenance}
    return [
        atomic_write_text(out / f"{stem}.json", json.dumps(record, indent=1)),
        atomic_write_csv(out / f"{stem}.csv", rows),
    ]


COMPENSATION_LABELS = {
    "none": "no drift compensation",
    "array": "calibrated drift compensation, per array",
    "column": "calibrated drift compensation, per column",
    "global": "oracle global compensation (no chip can measure it)",
}
"""How a plot names each ``drift_compensation`` value."""


def _axis_value_label(name: str, value) -> str:
    if name == "drift_compensation":
        return COMPENSATION_LABELS.get(value, f"drift compensation {value}")
    if name == "update_budget":
        return "no update budget" if not value else f"update budget {value}"
    if name in ("dac_bits", "adc_bits"):
        converter = name[:3].upper()
        return f"{converter} {value} bits" if value else f"ideal {converter}"
    if name == TIME_AXIS:
        return f"{short_time_label(value)} after programming"
    if name == "device":
        return f"device {value}"
    return f"{name.replace('_', ' ')} {value}"


def _label(row: dict, axes: Sequence[str]) -> str:
    return "chip, " + ", ".join(_axis_value_label(name, row[name]) for name in axes) if axes else "emulated PCM chip"


def plot(
    rows: list[dict],
    metric: str,
    ci: str | None,
    path: Path,
    ylabel: str,
    title: str,
    log_y=False,
    y_scale=1.0,
    tasks: int | None = None,
    ci_label: str = "95 % CI of the mean",
    reference: Mapping | None = None,
) -> Path:
    """``metric`` (× ``y_scale``) against time since programming, one line (± ``ci``, shaded) per combination
    of the other axes; with one time and several update budgets, against the readout's programming
    operations per task (each point labelled with its budget); with one time and several readout scales,
    against the readout scale. Time ticks sit at the swept times only.

    ``tasks``: how many tasks every point was evaluated on (in the title and the band's legend entry);
    ``ci_label``: what the band is; ``reference``: ``{"value", "label", "ci" (optional)}`` in the metric's
    units, drawn as a dashed horizontal line (e.g. software on the same tasks)."""
    from matplotlib.patches import Patch

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9.0, 6.0), dpi=120, layout="constrained")
    times = sorted({row[TIME_AXIS] for row in rows})
    against_devices = len(times) == 1 and len({row.get("update_budget") for row in rows}) > 1
    against_scale = len(times) == 1 and not against_devices and len({row.get("readout_scale") for row in rows}) > 1
    x_key = "devices_reprogrammed_fraction" if against_devices else "readout_scale" if against_scale else TIME_AXIS
    x_axes = (TIME_AXIS, "update_budget") if against_devices else (TIME_AXIS, x_key)
    others = [n for n in rows[0] if n in SWEEP_AXES and n not in x_axes and len({row[n] for row in rows}) > 1]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(_label(row, others), []).append(row)
    handles = []
    banded = clipped_note = False
    for index, (label, group) in enumerate(groups.items()):
        color = f"C{index}"
        group = sorted(group, key=lambda r: r[x_key])
        xs = [r[x_key] * (100 if against_devices else 1) for r in group]
        ys = [r[metric] * y_scale for r in group]
        (line,) = ax.plot(xs, ys, marker="o", color=color, label=label)
        handles.append(line)
        if against_devices:  # which budget gave each point
            for x, y, r in zip(xs, ys, group, strict=True):
                budget = r.get("update_budget")
                last = x == max(xs)  # the rightmost label goes to the left of its point, inside the axes
                ax.annotate(
                    str(budget) if budget else "all",
                    (x, y),
                    textcoords="offset points",
                    xytext=(-10, 8) if last else (7, -24),
                    ha="right" if last else "left",
                    color=color,
                )
        if against_scale:  # where the devices' range bounds the weights, say how often
            for x, y, r in zip(xs, ys, group, strict=True):
                if (r.get("readout_updates_clipped_mean") or 0) >= 0.01:
                    ax.annotate(
                        f"{r['readout_updates_clipped_mean']:.2g}",
                        (x, y),
                        textcoords="offset points",
                        xytext=(0, -24),
                        ha="center",
                        color="tab:red",
                    )
                    clipped_note = True
        if ci is not None and all(r.get(ci) is not None for r in group):
            low = [y - r[ci] * y_scale for y, r in zip(ys, group, strict=True)]
            high = [y + r[ci] * y_scale for y, r in zip(ys, group, strict=True)]
            ax.fill_between(xs, low, high, color=color, alpha=0.18, linewidth=0)
            banded = True
    if reference is not None:
        value = reference["value"] * y_scale
        handles.append(ax.axhline(value, color="black", linestyle="--", linewidth=1.8, label=reference["label"]))
    if banded:
        over = f" over {tasks} tasks" if tasks else ""
        handles.append(Patch(color="0.6", alpha=0.4, label=f"shaded: {ci_label}{over}"))
    if against_devices:
        ax.set_xlabel("readout programming operations per task, all inner steps (% of the readout's devices)")
        ax.text(
            0.98, 0.04, "numbers: update budget per inner step", transform=ax.transAxes, ha="right", color="0.3"
        )  # fmt: skip
    elif against_scale:
        ax.set_xscale("log", base=2)
        scales = sorted({row["readout_scale"] for row in rows})
        ax.set_xticks(scales, [f"{x:g}" for x in scales])
        ax.minorticks_off()
        ax.set_xlabel("readout scale (weight units per device unit; update step = scale / 16)")
        if clipped_note:
            note = "red: readout updates clipped\nat the devices' range, per task"
            ax.text(0.02, 0.04, note, transform=ax.transAxes, color="tab:red")
    else:
        human_time_axis(ax, times, at_data=True)
        ax.set_xlabel("time since programming (log scale; ticks at the measured ages)")
    if log_y:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{tasks} unseen tasks, the same at every point" if tasks else title)
    ax.grid(alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", ncol=1, frameon=False)
    return save_figure(fig, path)
