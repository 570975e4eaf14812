"""Intervals for results over tasks and over chip instances, and per-task records on disk.

A chip evaluation has two sources of spread: the tasks (which images, which classes or trajectories) and
the chip (which programming noise and drift each device drew). One chip instance cannot tell them apart,
so :func:`chip_and_task_spread` takes a chips × tasks matrix of one metric, each chip evaluated on the same
tasks, and reports each source on its own (a two-way layout without replication; Montgomery, *Design and
Analysis of Experiments*, ch. 5 and 13: the row and column means carry the two effects).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from l2l_pcm._io import atomic_write_csv, atomic_write_text
from l2l_pcm.errors import ConfigError

_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
          2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
          2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip
"""Student's t 0.975 quantiles for 1..30 degrees of freedom (any statistics table, e.g. NIST/SEMATECH
e-Handbook of Statistical Methods, 1.3.6.7.2)."""


def t_quantile_975(degrees_of_freedom: int) -> float:
    """Two-sided 95 % quantile of Student's t: a mean over a few chips needs it, not 1.96 (beyond 30
    degrees of freedom the normal's 1.96 is within 4 %, the convention used for means over tasks)."""
    if degrees_of_freedom < 1:
        return float("nan")
    return _T_975[degrees_of_freedom - 1] if degrees_of_freedom <= len(_T_975) else 1.96


def mean_ci95(values) -> tuple[float, float]:
    """Mean and half-width of its normal-approximation 95 % confidence interval (nan for < 2 values)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / math.sqrt(values.size))


def chip_instance_key(key, instance: int):
    """The random key of chip instance ``instance`` (programming noise, or a task's reads on that chip):
    instance 0 keeps ``key`` itself, so a single-chip evaluation's numbers are chip 0's of a several-chip one."""
    import jax

    return key if instance == 0 else jax.random.fold_in(key, instance)


def chip_and_task_spread(matrix, prefix: str) -> dict:
    """Spread of a metric between chip instances apart from its spread between tasks.

    ``matrix[c, t]``: the metric of task ``t`` on chip ``c`` (every chip runs the same tasks). Returns
    ``{prefix}_per_chip`` (each chip's mean over the tasks), ``{prefix}_between_chips_std`` (standard
    deviation of those means: what a reader re-running on another chip would see move),
    ``{prefix}_between_chips_ci95`` (Student-t half-width of the mean over chips, chips as the unit),
    ``{prefix}_between_tasks_std`` (standard deviation over tasks of the chip-averaged metric),
    ``{prefix}_ci95_tasks_only`` (the usual interval over tasks, blind to the chip) and
    ``{prefix}_ci95_chips_and_tasks``, the half-width of the grand mean with both as random effects,
    t_(0.975, ν) · sqrt(s_chips²/C + s_tasks²/T), ν by Welch–Satterthwaite (Satterthwaite 1946,
    Biometrics Bulletin 2:110), rounded down.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    chips, tasks = matrix.shape
    chip_means, task_means = matrix.mean(axis=1), matrix.mean(axis=0)
    between_chips = float(chip_means.std(ddof=1)) if chips > 1 else float("nan")
    between_tasks = float(task_means.std(ddof=1)) if tasks > 1 else float("nan")
    both, dof = float("nan"), 0
    if chips > 1 and tasks > 1:
        a, b = between_chips**2 / chips, between_tasks**2 / tasks
        both = math.sqrt(a + b)
        dof = int((a + b) ** 2 / (a**2 / (chips - 1) + b**2 / (tasks - 1))) if a + b > 0 else chips + tasks - 2
    return {
        f"{prefix}_per_chip": chip_means.tolist(),
        f"{prefix}_between_chips_std": between_chips,
        f"{prefix}_between_chips_ci95": t_quantile_975(chips - 1) * between_chips / math.sqrt(chips),
        f"{prefix}_between_tasks_std": between_tasks,
        f"{prefix}_ci95_tasks_only": 1.96 * between_tasks / math.sqrt(tasks),
        f"{prefix}_ci95_chips_and_tasks": t_quantile_975(dof) * both,
    }


PER_TASK_SUFFIXES = (".csv", ".json")


def check_per_task_path(path: str | Path) -> Path:
    """Refuse a per-task file the writer could not produce, before any work starts."""
    path = Path(path)
    if path.suffix.lower() not in PER_TASK_SUFFIXES:
        raise ConfigError(f"per-task file {str(path)!r} must end in .csv or .json")
    if path.is_dir():
        raise ConfigError(f"per-task file {str(path)!r} is a folder")
    return path


def write_per_task(path: str | Path, rows: Sequence[dict], provenance: dict | None = None) -> Path:
    """One row per task, atomically: CSV (a list value becomes one column per entry, ``name_0``, ``name_1``
    …) or JSON (``{"rows": [...], "provenance": ...}``), chosen by the suffix."""
    path = check_per_task_path(path)
    if not rows:
        raise ConfigError("no per-task rows to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        return atomic_write_text(path, json.dumps({"rows": list(rows), "provenance": provenance}, indent=1))
    return atomic_write_csv(path, [_flatten(row) for row in rows])


def _flatten(row: dict) -> dict:
    flat = {}
    for name, value in row.items():
        if isinstance(value, (list, tuple)):
            flat.update({f"{name}_{i}": item for i, item in enumerate(value)})
        else:
            flat[name] = value
    return flat
