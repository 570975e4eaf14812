"""Few-shot learning methods side by side on the clean protocol: same backbone, same unseen tasks, in
software and on the chip (``l2l-pcm fewshot baselines``).

Every method (:data:`l2l_pcm.fewshot.maml.METHODS`) is evaluated on the same evaluation-alphabet tasks
(same seed: a paired comparison), in 32-bit software and deployed on the emulated chip, where each
adaptation's programming is counted and costed by the chip core. The shipped learners were trained here
(``configs/baseline_*.json``; wall times in the README); other checkpoints can be given per method.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from l2l_pcm._io import file_sha256
from l2l_pcm.errors import ConfigError
from l2l_pcm.fewshot.evaluate import evaluate_chip, evaluate_software
from l2l_pcm.fewshot.maml import METHODS
from l2l_pcm.fewshot.omniglot import OmniglotImages
from l2l_pcm.fewshot.train import SHIPPED_CHECKPOINT, load_learner
from l2l_pcm.plotting import pyplot, save_figure, short_time_label

SHIPPED_LEARNERS = {
    "maml_head": SHIPPED_CHECKPOINT,
    **{method: SHIPPED_CHECKPOINT.with_name(f"fewshot_omniglot_{method}.safetensors") for method in METHODS[1:]},
}
"""The shipped checkpoint of each method (the paper's model is ``maml_head``)."""
BACKENDS = ("software", "chip")
ROW_FIELDS = (
    "accuracy_mean",
    "accuracy_ci95",
    "accuracy_per_step",
    "devices_reprogrammed_mean",
    "devices_reprogrammed_fraction",
    "energy_estimate_pJ_per_adaptation",
    "time_since_programming_s",
    "inner_steps",
    "update_budget",
    "warnings",
)


def learner_paths(overrides: dict[str, str | Path] | None = None, methods=METHODS) -> dict[str, Path]:
    """The checkpoint of each method in ``methods``: ``overrides`` where given, else the shipped one."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(METHODS)) + [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown}; methods are {list(METHODS)}")
    return {method: Path(overrides.get(method, SHIPPED_LEARNERS[method])) for method in methods}


def compare(
    paths: dict[str, Path],
    images: OmniglotImages,
    tasks: int,
    backends=BACKENDS,
    queries: int = 15,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """``{"rows": [...]}``, one row per method and backend: accuracy after adaptation (mean, 95 % CI, per
    step), and on the chip the devices re-programmed and energy per adaptation. Every checkpoint is
    loaded, and its method checked, before any evaluation starts."""
    bad = [backend for backend in backends if backend not in BACKENDS]
    if bad or not backends:
        raise ConfigError(f"backends must be some of {list(BACKENDS)}, got {list(backends)}")
    learners = {}
    for method, path in paths.items():
        params, config, _ = load_learner(path)
        if config.method != method:
            raise ConfigError(f"{path} is a {config.method!r} learner, given for method {method!r}")
        learners[method] = (params, config, path)
    rows = []
    for method, (params, config, path) in learners.items():
        for backend in backends:
            if backend == "chip":
                result = evaluate_chip(params, config, images, tasks, queries, seed, progress=progress)
            else:
                result = evaluate_software(params, config, images, tasks, "fp32", queries, seed)
            row = {"method": method, "backend": backend, "checkpoint": str(path)}
            row["checkpoint_sha256"] = file_sha256(path)
            rows.append({**row, **{name: result.get(name) for name in ROW_FIELDS}})
    return {"tasks": tasks, "queries": queries, "seed": seed, "rows": rows}


def plot_baselines(result: dict, path) -> Path:
    """Left: accuracy per method, software 32-bit and the emulated chip (95 % CI over the tasks). Right: chip
    accuracy against the programming operations each adaptation makes (``devices_reprogrammed_mean``: one
    per device written, so a device written at two steps counts twice; the chip's cost of learning a task)."""
    plt = pyplot()
    rows = result["rows"]
    tasks = result["tasks"]
    methods = list(dict.fromkeys(row["method"] for row in rows))
    ages = {row.get("time_since_programming_s") for row in rows if row["backend"] == "chip"} - {None}
    chip = "emulated PCM chip" + (f", {short_time_label(ages.pop())} after programming" if len(ages) == 1 else "")
    fig, (ax_acc, ax_dev) = plt.subplots(1, 2, figsize=(15.0, 6.4), dpi=110, layout="constrained")
    width = 0.38
    for offset, backend, label in ((-width / 2, "software", "software 32-bit"), (width / 2, "chip", chip)):
        chosen = [next((r for r in rows if r["method"] == m and r["backend"] == backend), None) for m in methods]
        x = [i + offset for i, r in enumerate(chosen) if r is not None]
        means = [100 * r["accuracy_mean"] for r in chosen if r is not None]
        cis = [100 * r["accuracy_ci95"] for r in chosen if r is not None]
        if x:
            ax_acc.bar(x, means, width, yerr=cis, capsize=4, label=label)
    ax_acc.set_xticks(range(len(methods)), methods)
    low = min(100 * r["accuracy_mean"] - 100 * r["accuracy_ci95"] for r in rows)
    ax_acc.set_ylim(max(0.0, np.floor(low - 2)), 100)
    ax_acc.set_ylabel("query accuracy after adaptation (%)")
    ax_acc.set_xlabel("few-shot learning method (same backbone)")
    ax_acc.set_title("software and chip")
    ax_acc.legend(loc="upper right", ncol=2, framealpha=0.95)
    ax_acc.grid(alpha=0.3, axis="y")
    for row in (r for r in rows if r["backend"] == "chip"):  # the chip's colour of the bars at left
        x, y, ci = row["devices_reprogrammed_mean"], 100 * row["accuracy_mean"], 100 * row["accuracy_ci95"]
        ax_dev.errorbar(x, y, yerr=ci, marker="o", capsize=4, color="C1")
        ax_dev.annotate(row["method"], (x, y - ci), textcoords="offset points", xytext=(0, -6), ha="center", va="top")
    ax_dev.set_xscale("log")
    counts = [r["devices_reprogrammed_mean"] for r in rows if r["backend"] == "chip"]
    if counts:  # plain numbers at 1, 2, 5 × 10^k instead of powers of ten
        ticks = [m * 10**k for k in range(6) for m in (1, 2, 5) if min(counts) / 1.6 <= m * 10**k <= max(counts) * 1.6]
        ax_dev.set_xticks(ticks, [f"{t:,}" for t in ticks])
        ax_dev.xaxis.set_minor_formatter("")
    ax_dev.set_xlabel("programming operations per adaptation, mean (log scale)")
    ax_dev.set_ylabel("chip query accuracy (%)")
    ax_dev.set_title(f"{chip}: accuracy against programming")
    ax_dev.grid(alpha=0.3, which="both")
    ax_dev.margins(x=0.2, y=0.1)
    fig.suptitle(
        f"5-way 5-shot Omniglot: n = {tasks} unseen tasks, the same for every bar; error bars: 95 % CI over tasks"
    )
    return save_figure(fig, path)
