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
from l2l_pcm.statistics import chip_and_task_spread, chip_instance_key, mean_ci95
from l2l_pcm.training import check_task_count

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
    per_task = _per_task_rows(per_step, seed, updates_clipped=clipped if stored_at_scale else None)
    return _summary(
        "software",
        config,
        per_step,
        queries,
        per_task=per_task,
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
    chips: int = 1,
) -> dict:
    """Accuracy per inner step with the network deployed on the emulated chip (see :mod:`.deploy`), used at
    the hardware's ``clock.deployment_age_s`` (None: its training age); ``chip_config``: another chip than
    the model's hardware (:func:`l2l_pcm.chip.chip_for_model`).

    ``chips``: how many chip instances to program (each its own programming noise and drift; chip 0 is the
    one a single-chip evaluation programs), every one evaluated on the same tasks, so that the spread
    between chips is reported apart from the spread between tasks (:func:`l2l_pcm.statistics.
    chip_and_task_spread`). The headline mean and interval are then over all chips × tasks, with both as
    random effects. ``result["per_task"]`` holds one row per (chip, task)."""
    from tqdm.auto import tqdm

    _check_request(params, config, tasks)
    if int(chips) != chips or chips < 1:
        raise ConfigError(f"chips must be a positive integer, got {chips!r}")
    base_key = jax.random.PRNGKey(10_000 + seed)
    first_batches = _task_batches(images, config, tasks, queries, seed)  # impossible requests fail here, early
    per_step, operations, distinct, energy, clipped = [], [], [], [], []
    with tqdm(total=tasks * chips, desc="chip tasks", unit="task", disable=not progress) as bar:
        for c in range(chips):
            learner = ChipFewShotLearner(params, config, chip_instance_key(base_key, c), chip_config)
            batches = first_batches if c == 0 else _task_batches(images, config, tasks, queries, seed)
            for start, (sx, sy, qx, qy) in batches:
                for i in range(sx.shape[0]):
                    key = jax.random.PRNGKey(seed * 100_003 + start + i)
                    result = learner.adapt(sx[i], sy[i], qx[i], qy[i], chip_instance_key(key, c))
                    per_step.append(result.accuracy_per_step)
                    operations.append(result.devices_reprogrammed)
                    distinct.append(result.unique_devices_reprogrammed)
                    energy.append(result.energy_pJ)
                    clipped.append(result.updates_clipped)
                    bar.update()
    operations = np.asarray(operations)
    per_step = np.stack(per_step)
    total = learner.adapted_devices
    chip = learner.chip
    saturation = {name: chip.saturation(name) for name in chip.placements}
    spread = {}
    if chips > 1:
        spread = chip_and_task_spread(per_step[:, -1].reshape(chips, tasks), "accuracy")
    summary = _summary(
        "chip",
        config,
        per_step,
        queries,
        chips=chips,
        time_since_programming_s=learner.chip.config.clock.age_in_use_s,  # the age every task starts at
        method=config.method,
        readout_devices=learner.readout_devices,
        adapted_devices=total,
        devices_reprogrammed_mean=float(operations.mean()),
        devices_reprogrammed_max=int(operations.max()),
        devices_reprogrammed_fraction=float(operations.mean() / total),
        unique_devices_reprogrammed_fraction=float(np.mean(distinct) / total),
        device_counts=DEVICE_COUNTS,
        energy_estimate_pJ_per_adaptation=float(np.mean(energy)),
        readout_scale=config.readout_scale,
        readout_updates_clipped_mean=float(np.mean(clipped)),
        converter_saturation=saturation if chip.config.forward.dac_bits or chip.config.forward.adc_bits else None,
        warnings=chip.saturation_warnings() + _clipping_warnings(np.asarray(clipped), config),
        per_task=_per_task_rows(
            per_step,
            seed,
            chips=chips,
            programming_operations=operations,
            distinct_devices=distinct,
            energy_pJ=energy,
            updates_clipped=clipped,
        ),
        **spread,
    )
    summary["tasks"] = tasks  # per chip: every chip ran the same tasks
    if chips > 1:  # the headline intervals count both sources of spread
        summary["accuracy_ci95"] = spread["accuracy_ci95_chips_and_tasks"]
        summary["accuracy_per_step_ci95"] = [
            chip_and_task_spread(per_step[:, k].reshape(chips, tasks), "a")["a_ci95_chips_and_tasks"]
            for k in range(per_step.shape[1])
        ]
    return summary


DEVICE_COUNTS = (
    "devices_reprogrammed_*: programming operations (a device written at two steps counts twice; a weight "
    "changing sign writes both devices of its pair); unique_devices_reprogrammed_fraction: distinct devices "
    "written at least once; fractions are of the adapted layers' devices (adapted_devices)"
)
"""What the device counts of a result count, carried in the result so a reader of the JSON need not guess."""


def _per_task_rows(per_step: np.ndarray, seed: int, chips: int = 1, **columns) -> list[dict]:
    """One dict per (chip, task): the accuracy after every inner step and the given per-task columns
    (None columns are left out)."""
    tasks = per_step.shape[0] // chips
    columns = {name: np.asarray(values).tolist() for name, values in columns.items() if values is not None}
    rows = []
    for n, accuracies in enumerate(per_step.tolist()):
        row = {"chip": n // tasks, "task": n % tasks, "seed": seed}
        row["accuracy_before"] = accuracies[0]
        row["accuracy_after"] = accuracies[-1]
        row["accuracy_per_step"] = accuracies
        row.update({name: values[n] for name, values in columns.items()})
        rows.append(row)
    return rows


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


def software_reference(
    params, config: MAMLConfig, images: OmniglotImages, tasks: int, queries: int = 15, seed: int = 0
) -> dict:
    """Software 32-bit accuracy on the same tasks a chip evaluation with these arguments sees, as a plot's
    reference line (``{"value", "ci", "label"}``; :func:`l2l_pcm.sweep.plot`). The fp32 model has no
    devices, so the chip's settings (age, compensation, converters, readout scale) do not change it; the
    update budget does, and the label names it."""
    clock = dataclasses.replace(config.hardware.clock, deployment_age_s=None)  # the chip's age, not the model's
    software = dataclasses.replace(config, hardware=dataclasses.replace(config.hardware, clock=clock))
    result = evaluate_software(params, software, images, tasks, "fp32", queries, seed)
    budget = f"update budget {config.update_budget}" if config.update_budget else "no update budget"
    mean, ci = result["accuracy_mean"], result["accuracy_ci95"]
    label = f"software 32-bit, same tasks ({budget}): {100 * mean:.2f} ± {100 * ci:.2f} %"
    return {"value": mean, "ci": ci, "label": label}


def stage_description(variant: str, update_budget: int | None) -> str:
    """What a meta-training stage of ``variant`` with ``update_budget`` validates, for a plot's label."""
    model = {"fp32": "software 32-bit", "4bit": "software 4-bit", "pcm": "PCM model"}.get(variant, variant)
    return f"{model}, {f'update budget {update_budget}' if update_budget else 'no update budget'}"


# ---------------------------------------------------------------------------------------------- plots
def plot_inner_step_curves(results: dict[str, dict], path) -> Path:
    """Query accuracy vs inner step for several backends (the paper's Fig. 2h): every step on a 0–100 %
    axis (left) and the last steps zoomed to the data (right), where the backends differ; 95 % CI error
    bars over the tasks, whose number is in the title."""
    from matplotlib.patches import Rectangle

    plt = pyplot()
    first = next(iter(results.values()))
    steps = np.arange(len(first["accuracy_per_step"]))
    zoom_from = max(1, min(2, len(steps) - 2))  # two steps at least where there are as many after step 0
    fig, (ax_all, ax_zoom) = plt.subplots(
        1, 2, figsize=(14.0, 6.2), dpi=110, layout="constrained", gridspec_kw={"width_ratios": (1, 1.15)}
    )
    dodge = 0.05 * (np.arange(len(results)) - (len(results) - 1) / 2)  # side by side, so no bar hides another
    low, high = 100.0, 0.0
    for index, (label, result) in enumerate(results.items()):
        mean = 100 * np.asarray(result["accuracy_per_step"])
        ci = 100 * np.asarray(result["accuracy_per_step_ci95"])
        style = {"marker": "o", "capsize": 4, "color": f"C{index}", "elinewidth": 1.5}
        ax_all.errorbar(steps, mean, yerr=ci, **style)
        ax_zoom.errorbar(
            steps[zoom_from:] + dodge[index],
            mean[zoom_from:],
            yerr=ci[zoom_from:],
            label=f"{label}: {mean[-1]:.2f} ± {ci[-1]:.2f} %",
            **style,
        )
        low = min(low, np.min(mean[zoom_from:] - ci[zoom_from:]))
        high = max(high, np.max(mean[zoom_from:] + ci[zoom_from:]))
    chance = 100 / first["ways"]
    ax_all.axhline(chance, color="gray", linestyle=":", label=f"chance: {chance:.0f} %")
    ax_all.set_ylim(0, 100)
    ax_all.set_title("every inner step")
    ax_all.legend(loc="lower right")
    pad = max(0.5, 0.1 * (high - low))
    ax_zoom.set_ylim(low - pad, min(100.0, high + pad))
    shown = f"steps {zoom_from}–{steps[-1]}" if steps[-1] > zoom_from else f"step {zoom_from}"
    ax_zoom.set_title(f"{shown} zoomed (same data)")
    ax_zoom.legend(loc="lower right", title="after the last step (mean ± 95 % CI)")
    for ax, shown in ((ax_all, steps), (ax_zoom, steps[zoom_from:])):
        ax.set_xticks(shown)
        ax.set_xlabel("inner-loop update (step)")
        ax.set_ylabel("query accuracy (%)")
        ax.grid(alpha=0.3)
    zoom_low, zoom_high = ax_zoom.get_ylim()
    ax_all.add_patch(
        Rectangle(
            (zoom_from - 0.25, zoom_low), steps[-1] - zoom_from + 0.5, zoom_high - zoom_low, fill=False, edgecolor="0.3"
        )
    )
    ax_all.annotate("zoomed at right", (steps[-1], zoom_low), textcoords="offset points", xytext=(0, -22), ha="right")
    fig.suptitle(
        f"{first['ways']}-way {first['shots']}-shot Omniglot: n = {first['tasks']} unseen tasks, the same for "
        f"every backend; error bars: 95 % CI over tasks"
    )
    return save_figure(fig, path)


def plot_training_curves(
    metrics: list[dict], path, stage_labels: dict[int, str] | None = None, validation_tasks: int | None = None
) -> Path:
    """Training loss and accuracy (smoothed) and validation accuracy against outer iterations.

    Where a later stage (``--init-from``) begins, a vertical line in both panels and a label say what
    validation measures from there on: ``stage_labels`` maps a stage to its settings (e.g. ``{2: "PCM
    model, budget 32"}``; :func:`stage_description`); a stage without one is said to have no record (a
    checkpoint stores its own stage's settings, not those of the stages it was started from).
    ``validation_tasks``: tasks per validation point (in the title)."""
    plt = pyplot()
    stage_labels = dict(stage_labels or {})
    it = np.asarray([row["iteration"] for row in metrics])
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(14.0, 6.0), dpi=110, layout="constrained")
    ax_loss.plot(it, [row["train_loss"] for row in metrics], marker=".", color="C0")
    ax_loss.set_xlabel("outer iteration (meta-training step)")
    ax_loss.set_ylabel("query loss on training tasks (cross-entropy, smoothed)")
    ax_loss.grid(alpha=0.3)
    train_accuracy = [100 * row["train_accuracy"] for row in metrics]
    ax_acc.plot(it, train_accuracy, marker=".", color="C0", label="training tasks (smoothed)")
    val = np.asarray([row["val_accuracy"] for row in metrics]) * 100
    ci = np.asarray([row["val_ci95"] for row in metrics]) * 100
    held_out = f"{validation_tasks} tasks of held-out alphabets" if validation_tasks else "held-out alphabets"
    ax_acc.errorbar(it, val, yerr=ci, marker="o", capsize=4, color="C1", label=f"validation, {held_out} (95 % CI)")
    stages = sorted({row.get("stage", 1) for row in metrics})
    settings = [f"stage {stage}: {stage_labels.get(stage, 'settings not recorded in the file')}" for stage in stages]
    for previous, stage in zip(stages, stages[1:], strict=False):  # where a later (--init-from) stage began
        began = max(row.get("stage_end", row["iteration"]) for row in metrics if row.get("stage", 1) == previous)
        for ax in (ax_loss, ax_acc):
            ax.axvline(began, color="black", linestyle="--", linewidth=2)
            ax.axvspan(began, it.max() + 0.03 * (it.max() - it.min()), color="C2", alpha=0.10, linewidth=0)
        text = f"stage {stage} from iteration {began}"
        text += f":\nvalidates the {stage_labels[stage]}" if stage in stage_labels else ""
        for ax, height in ((ax_loss, 0.72), (ax_acc, 0.42)):  # in each panel's empty part, an arrow to the line
            ax.annotate(
                text,
                (began, height),
                xycoords=("data", "axes fraction"),
                xytext=(0.88, height),
                textcoords="axes fraction",
                ha="right",
                va="center",
                arrowprops={"arrowstyle": "->", "color": "black", "linewidth": 1.5},
                bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.6"},
            )
    ax_loss.set_xlim(it.min() - 0.03 * (it.max() - it.min()), it.max() + 0.03 * (it.max() - it.min()))
    ax_acc.set_xlim(*ax_loss.get_xlim())
    ax_acc.set_xlabel("outer iteration (meta-training step)")
    ax_acc.set_ylabel("query accuracy after adaptation (%)")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(loc="lower right")
    if len(stages) > 1:
        fig.suptitle("training record, all stages; validation measures each stage's own model\n" + "; ".join(settings))
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
    fig, axes = plt.subplots(ways, columns, figsize=(0.9 * columns, 1.1 * ways + 1.0), dpi=110, squeeze=False)
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
                ax.set_title(f"→ {int(predictions[q])}", fontsize=12, color="tab:red", pad=2)
        axes[label, 0].set_ylabel(f"class {label}", fontsize=13)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[:, shots]:
        ax.set_axis_off()
    wrong = int(np.sum(predictions != query_y))
    accuracy = 100 * (1 - wrong / len(query_y))
    fig.suptitle(
        f"{ways}-way {shots}-shot task on the emulated PCM chip: support (left), all {len(query_y)} queries "
        f"(right)\n{accuracy:.1f} % correct, {wrong} wrong (red frame, → the class predicted)",
    )
    fig.tight_layout()
    return save_figure(fig, path)
