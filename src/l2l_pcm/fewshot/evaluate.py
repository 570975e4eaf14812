"""Meta-test evaluation on unseen Omniglot tasks (evaluation alphabets), in software or on the chip, and plots.

Both backends draw the same tasks for the same seed, so their accuracies are a paired comparison.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from l2l_pcm.chip import ChipConfig
from l2l_pcm.errors import ConfigError
from l2l_pcm.fewshot.data import TaskSampler
from l2l_pcm.fewshot.deploy import ChipFewShotLearner
from l2l_pcm.fewshot.maml import VARIANTS, MAMLConfig, evaluate_batch
from l2l_pcm.fewshot.omniglot import OmniglotImages
from l2l_pcm.plotting import pyplot, save_figure
from l2l_pcm.training import check_task_count, mean_ci95

TASK_BATCH = 50


def validate(params, sampler: TaskSampler, config: MAMLConfig, tasks: int, seed: int):
    """Final-step query accuracy over ``tasks`` validation tasks (mean, 95 % CI)."""
    finals = []
    batch_size = config.meta_batch
    for start in range(0, tasks, batch_size):
        n = min(batch_size, tasks - start)
        batch = sampler.sample(seed * 1_000_003 + start, n)
        accuracies = evaluate_batch(params, batch, jax.random.PRNGKey(seed + start), config).accuracies
        finals.extend(np.asarray(accuracies[:, -1]).tolist())
    return mean_ci95(finals)


def _check_request(params, config: MAMLConfig, tasks: int) -> None:
    """Refuse what would give a wrong number: a task shape the readout cannot score, or no interval."""
    readout_ways = int(params["readout"].shape[-1])
    if config.ways != readout_ways:
        raise ConfigError(
            f"ways={config.ways} but the checkpoint's readout has {readout_ways} outputs ({readout_ways}-way)"
        )
    check_task_count(tasks)


def _task_batches(images: OmniglotImages, config: MAMLConfig, tasks: int, queries: int, seed: int):
    """(start, batch) pairs, drawn lazily; impossible requests fail here, before any work starts."""
    sampler = TaskSampler(images, config.ways, config.shots, queries, augment_rotations=False)
    return (
        (start, sampler.sample(seed * 7_919 + start, min(TASK_BATCH, tasks - start)))
        for start in range(0, tasks, TASK_BATCH)
    )


def _summary(backend: str, config: MAMLConfig, per_step: np.ndarray, queries: int, **extra) -> dict:
    final_mean, final_ci = mean_ci95(per_step[:, -1])
    return {
        "backend": backend,
        "ways": config.ways,
        "shots": config.shots,
        "queries": queries,
        "tasks": int(per_step.shape[0]),
        "inner_steps": config.inner_steps,
        "update_budget": config.update_budget,
        "accuracy_mean": final_mean,
        "accuracy_ci95": final_ci,
        "accuracy_per_step": per_step.mean(axis=0).tolist(),
        "accuracy_per_step_ci95": [mean_ci95(per_step[:, k])[1] for k in range(per_step.shape[1])],
        **extra,
    }


def evaluate_software(
    params,
    config: MAMLConfig,
    images: OmniglotImages,
    tasks: int,
    precision: str = "fp32",
    queries: int = 15,
    seed: int = 0,
    hardware: ChipConfig | None = None,
) -> dict:
    """Accuracy per inner step in software; ``precision`` is "fp32", "4bit", "pcm" (software PCM model) or
    "trained" (the variant the checkpoint was meta-trained with). The device is the config's hardware's,
    read at its training age; a deployment age (``hardware.clock.deployment_age_s``) is the chip's and is
    refused here rather than ignored. ``hardware``: another tree to evaluate the model with (e.g. another
    device); what only a chip applies (converters, compensation, read-noise mode…) may not differ from
    the model's (:meth:`~l2l_pcm.chip.ChipConfig.for_software_model`), and the fp32 model, which has no
    devices, takes none."""
    if precision == "trained":
        precision = config.variant
    if hardware is not None:
        hardware = config.hardware.for_software_model(hardware, False, has_devices=precision != "fp32")
        config = dataclasses.replace(config, hardware=hardware)
    if config.hardware.clock.deployment_age_s is not None:
        raise ConfigError(
            "hardware.clock.deployment_age_s applies to the chip only: the software model reads at "
            "clock.training_age_s (evaluate with the chip, or leave the deployment age unset)"
        )
    if precision not in VARIANTS:
        raise ConfigError(f"precision must be 'trained' or one of {VARIANTS}, got {precision!r}")
    _check_request(params, config, tasks)
    config = dataclasses.replace(config, variant=precision)
    per_step, clipped = [], []
    for start, batch in _task_batches(images, config, tasks, queries, seed):
        outputs = evaluate_batch(params, batch, jax.random.PRNGKey(seed + start), config)
        per_step.append(np.asarray(outputs.accuracies))
        clipped.append(np.asarray(outputs.updates_clipped))
    per_step, clipped = np.concatenate(per_step), np.concatenate(clipped)
    stored_at_scale = precision in ("pcm", "4bit")  # fp32 keeps the readout as it is: no range, no clipping
    return _summary(
        "software",
        config,
        per_step,
        queries,
        precision=precision,
        method=config.method,
        devices_reprogrammed_mean=None,
        devices_reprogrammed_max=None,
        devices_reprogrammed_fraction=None,
        readout_scale=config.readout_scale if stored_at_scale else None,
        readout_updates_clipped_mean=float(np.mean(clipped)) if stored_at_scale else None,
        warnings=_clipping_warnings(clipped, config) if stored_at_scale else [],
    )


def evaluate_chip(
    params,
    config: MAMLConfig,
    images: OmniglotImages,
    tasks: int,
    queries: int = 15,
    seed: int = 0,
    chip_config: ChipConfig | None = None,
    progress: bool = False,
) -> dict:
    """Accuracy per inner step with the network deployed on the emulated chip (see :mod:`.deploy`), used at
    the hardware's ``clock.deployment_age_s`` (None: its training age); ``chip_config``: another chip than
    the model's hardware (:func:`l2l_pcm.chip.chip_for_model`)."""
    from tqdm.auto import tqdm

    _check_request(params, config, tasks)
    batches = _task_batches(images, config, tasks, queries, seed)
    learner = ChipFewShotLearner(params, config, jax.random.PRNGKey(10_000 + seed), chip_config)
    per_step, devices, unique, energy, clipped = [], [], [], [], []
    with tqdm(total=tasks, desc="chip tasks", unit="task", disable=not progress) as bar:
        for start, (sx, sy, qx, qy) in batches:
            for i in range(sx.shape[0]):
                result = learner.adapt(sx[i], sy[i], qx[i], qy[i], jax.random.PRNGKey(seed * 100_003 + start + i))
                per_step.append(result.accuracy_per_step)
                devices.append(result.devices_reprogrammed)
                unique.append(result.unique_devices_reprogrammed)
                energy.append(result.energy_pJ)
                clipped.append(result.updates_clipped)
                bar.update()
    devices = np.asarray(devices)
    total = learner.adapted_devices
    chip = learner.chip
    saturation = {name: chip.saturation(name) for name in chip.placements}
    return _summary(
        "chip",
        config,
        np.stack(per_step),
        queries,
        time_since_programming_s=learner.chip.config.clock.age_in_use_s,  # the age every task starts at
        method=config.method,
        readout_devices=learner.readout_devices,
        adapted_devices=total,
        devices_reprogrammed_mean=float(devices.mean()),
        devices_reprogrammed_max=int(devices.max()),
        devices_reprogrammed_fraction=float(devices.mean() / total),
        unique_devices_reprogrammed_fraction=float(np.mean(unique) / total),
        energy_estimate_pJ_per_adaptation=float(np.mean(energy)),
        readout_scale=config.readout_scale,
        readout_updates_clipped_mean=float(np.mean(clipped)),
        converter_saturation=saturation if chip.config.forward.dac_bits or chip.config.forward.adc_bits else None,
        warnings=chip.saturation_warnings() + _clipping_warnings(np.asarray(clipped), config),
    )


def _clipping_warnings(clipped: np.ndarray, config: MAMLConfig, threshold: float = 0.01) -> list[str]:
    """A readout whose updates often hit the devices' range learns less than its scale promises (above
    ``threshold`` of tasks, as for converter saturation; the count is in the result either way)."""
    tasks_clipped = float(np.mean(clipped > 0))
    if tasks_clipped <= threshold:
        return []
    return [
        f"readout updates were clipped at ±{config.readout_scale:g}·w_max in {100 * tasks_clipped:.1f} % of tasks "
        f"({int(clipped.sum())} updates): readout_scale {config.readout_scale:g} is small for these updates"
    ]


# ---------------------------------------------------------------------------------------------- plots
def plot_inner_step_curves(results: dict[str, dict], path) -> Path:
    """Query accuracy vs inner step for several backends on one figure (the paper's Fig. 2h)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=120)
    for label, result in results.items():
        mean = 100 * np.asarray(result["accuracy_per_step"])
        ci = 100 * np.asarray(result["accuracy_per_step_ci95"])
        steps = np.arange(len(mean))
        ax.errorbar(steps, mean, yerr=ci, marker="o", capsize=3, label=f"{label}: {mean[-1]:.1f} %")
    first = next(iter(results.values()))
    ax.axhline(100 / first["ways"], color="gray", linestyle=":", label=f"chance: {100 / first['ways']:.0f} %")
    ax.set_xlabel("inner-loop update")
    ax.set_ylabel("query accuracy (%)")
    ax.set_title(f"{first['ways']}-way {first['shots']}-shot Omniglot, {first['tasks']} unseen tasks (95 % CI)")
    ax.set_xticks(np.arange(len(first["accuracy_per_step"])))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_training_curves(metrics: list[dict], path) -> Path:
    """Training loss and accuracy (smoothed) and validation accuracy against outer iterations."""
    plt = pyplot()
    it = np.asarray([row["iteration"] for row in metrics])
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9.0, 3.6), dpi=120)
    ax_loss.plot(it, [row["train_loss"] for row in metrics], marker=".")
    ax_loss.set_xlabel("outer iteration")
    ax_loss.set_ylabel("query loss (training, smoothed)")
    ax_loss.grid(alpha=0.3)
    ax_acc.plot(it, [100 * row["train_accuracy"] for row in metrics], marker=".", label="training tasks")
    val = np.asarray([row["val_accuracy"] for row in metrics]) * 100
    ci = np.asarray([row["val_ci95"] for row in metrics]) * 100
    ax_acc.errorbar(it, val, yerr=ci, marker="o", capsize=3, label="validation alphabets")
    stages = sorted({row.get("stage", 1) for row in metrics})
    for previous, stage in zip(stages, stages[1:], strict=False):  # where a later (--init-from) stage began
        began = max(row.get("stage_end", row["iteration"]) for row in metrics if row.get("stage", 1) == previous)
        for ax in (ax_loss, ax_acc):
            ax.axvline(began, color="gray", linestyle=":", linewidth=1)
        ax_loss.text(began, ax_loss.get_ylim()[1], f" stage {stage}", color="gray", fontsize=8, va="top")
    ax_acc.set_xlabel("outer iteration")
    ax_acc.set_ylabel("query accuracy after adaptation (%)")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_example_task(support_x, support_y, query_x, query_y, predictions, path, ways: int) -> Path:
    """Support images by class (one row each), then every query image of the class, framed green (right)
    or red (wrong, with the predicted class); the title gives the task's accuracy."""
    plt = pyplot()
    support_x, query_x = np.asarray(support_x)[..., 0], np.asarray(query_x)[..., 0]
    query_y, predictions = np.asarray(query_y), np.asarray(predictions)
    shots = len(support_y) // ways
    queries = len(query_y) // ways
    columns = shots + 1 + queries  # one blank column between support and queries
    fig, axes = plt.subplots(ways, columns, figsize=(0.9 * columns, 1.0 * ways + 0.6), dpi=110, squeeze=False)
    for label in range(ways):
        support = support_x[np.asarray(support_y) == label]
        for j in range(shots):
            axes[label, j].imshow(1 - support[j], cmap="gray", vmin=0, vmax=1)
        for j, q in enumerate(np.flatnonzero(query_y == label)):
            ax = axes[label, shots + 1 + j]
            ax.imshow(1 - query_x[q], cmap="gray", vmin=0, vmax=1)
            right = int(predictions[q]) == label
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:green" if right else "tab:red")
                spine.set_linewidth(2.5 if right else 4)
            if not right:
                ax.set_title(f"→ {int(predictions[q])}", fontsize=7, color="tab:red", pad=2)
        axes[label, 0].set_ylabel(f"class {label}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[:, shots]:
        ax.set_axis_off()
    wrong = int(np.sum(predictions != query_y))
    accuracy = 100 * (1 - wrong / len(query_y))
    fig.suptitle(
        f"{ways}-way {shots}-shot task on the chip: support (left), all {len(query_y)} queries (right); "
        f"{accuracy:.1f} % correct, {wrong} wrong (red, → predicted class)",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, path)
