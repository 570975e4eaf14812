"""Evaluation on unseen target trajectories, software or chip, and the figures and the GIF.

Cartesian MSE = mean over time steps and the three coordinates of the squared end-effector error (m²),
the authors' definition; per task, then mean and 95 % CI over tasks. Test trajectories come from a
key that training and validation never use; both backends see the same ones for the same seed.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from l2l_pcm.chip import ChipConfig
from l2l_pcm.eprop import software_memory
from l2l_pcm.errors import ConfigError
from l2l_pcm.plotting import pyplot, save_figure
from l2l_pcm.robot.deploy import ChipTrainee
from l2l_pcm.robot.model import RobotConfig, default_memory, inner_loop
from l2l_pcm.robot.train import trajectories
from l2l_pcm.statistics import chip_and_task_spread, chip_instance_key, mean_ci95
from l2l_pcm.training import check_task_count

TEST_KEY = 2**31 - 101
TASK_BATCH = 25


def _per_task_mse(produced, targets) -> np.ndarray:
    return np.asarray(jnp.mean(jnp.square(produced.xyz - targets.xyz), axis=(1, 2)))


def _per_task_distance_cm(produced, targets) -> np.ndarray:
    return 100 * np.asarray(jnp.mean(jnp.linalg.norm(produced.xyz - targets.xyz, axis=-1), axis=1))


def _ratio_ci95(after: np.ndarray, before: np.ndarray) -> float:
    """95 % half-width of mean(after)/mean(before) over paired tasks (delta method: the ratio R of the
    means has variance var(after − R·before) / (n·mean(before)²))."""
    ratio = after.mean() / before.mean()
    residual = after - ratio * before
    return float(1.96 * residual.std(ddof=1) / (np.sqrt(len(after)) * before.mean()))


def test_trajectories(config: RobotConfig, tasks: int, seed: int = 0):
    return trajectories(config, jax.random.fold_in(jax.random.PRNGKey(TEST_KEY), seed), tasks)


def evaluate(
    params,
    config: RobotConfig,
    backend: str = "chip",
    tasks: int = 200,
    seed: int = 0,
    precision: str = "trained",
    chip_config: ChipConfig | None = None,
    keep_examples: bool = False,
    chips: int = 1,
    arm_sim=None,
) -> dict:
    """MSE before/after the single update over ``tasks`` unseen trajectories.

    ``backend="software"``: ``precision`` "fp32" (exact weights), "pcm" (the statistical PCM model of
    hardware-aware training) or "trained" (whichever of the two the checkpoint was meta-trained with: a
    network meta-trained with drift in the loop expects drifted weights). ``backend="chip"``: the
    trainee's weights on the emulated chip; ``chips`` instances, each programmed with its own noise and
    all run on the same trajectories, so the spread between chips is reported apart from the spread
    between tasks (chip 0 is the one a single-chip evaluation programs). ``chip_config``: the hardware
    tree to run with instead of the model's; on the software backend only what its model applies may
    differ (the device, update rule, training age, read noise:
    :meth:`~l2l_pcm.chip.ChipConfig.for_software_model`), and the fp32 model, which has no devices,
    takes none. ``result["per_task"]``: one row per (chip, task).

    ``arm_sim``: a :class:`~l2l_pcm.robot.sim.ScorbotMJX` (default: the shared one when ``config.dynamics`` is
    ``"mujoco"``, none for ``"kinematic"``); the network's commanded velocities (before and
    after the update) are then executed by the simulated arm's controllers and physics, and ``mse_before``,
    ``mse_after`` and the ratios score the *executed* paths; ``mse_floor`` is the arm's own error when it is
    commanded the target's exact velocities, and the closed-form kinematic results stay in the result as
    ``mse_before_kinematic`` / ``mse_after_kinematic``.

    The result gives the after/before ratio two ways, each with its 95 % interval: the ratio of the mean
    MSEs (``mse_ratio_after_to_before``, delta method) and the mean of per-task ratios
    (``mse_ratio_per_task_mean``), which weighs every task alike and is larger when easy tasks improve less.
    """
    if precision == "trained":
        precision = "pcm" if config.hardware_aware else "fp32"
    if backend == "software" and chip_config is not None:
        hardware = config.hardware.for_software_model(chip_config, has_devices=precision != "fp32")
        config = dataclasses.replace(config, hardware=hardware)
    check_task_count(tasks)
    if backend not in ("software", "chip"):
        raise ConfigError(f"backend must be 'software' or 'chip', got {backend!r}")
    if int(chips) != chips or chips < 1:
        raise ConfigError(f"chips must be a positive integer, got {chips!r}")
    if chips > 1 and backend != "chip":
        raise ConfigError("chips > 1 applies to the chip backend only (the software model has no chip instances)")
    if precision == "4bit":
        raise ConfigError("precision '4bit': the robot scenario has no 4-bit model; choose trained, fp32 or pcm")
    if precision not in ("fp32", "pcm"):
        raise ConfigError(f"precision must be 'trained', 'fp32' or 'pcm', got {precision!r}")
    if backend == "software" and config.hardware.clock.deployment_age_s is not None:
        raise ConfigError(
            "hardware.clock.deployment_age_s applies to the chip only: the software model reads at "
            "clock.training_age_s (evaluate with the chip, or leave the deployment age unset)"
        )
    if arm_sim is None and config.dynamics == "mujoco":
        from l2l_pcm.robot.sim import arm_simulation

        arm_sim = arm_simulation(config.arm_model, config.velocity_dt_s)
    targets_all = test_trajectories(config, tasks, seed)
    before, after, distance, distance_before, devices, energy, nonzero = [], [], [], [], [], [], []
    commands_after, commands_before = [], []  # for the simulated arm: every task's, and each batch's pass 1
    examples = None
    chip = None
    for c in range(chips):
        if backend == "chip":
            chip = ChipTrainee(params, config, chip_instance_key(jax.random.PRNGKey(20_000 + seed), c), chip_config)
        for start in range(0, tasks, TASK_BATCH):
            targets = jax.tree_util.tree_map(lambda a, s=start: a[s : s + TASK_BATCH], targets_all)
            key = jax.random.PRNGKey(seed * 1_000 + start)
            key = key if c == 0 else jax.random.fold_in(key, 1_000 + c)  # the reads of chip c (as measured)
            if chip is None:
                hardware = dataclasses.replace(config, hardware_aware=True)
                memory = software_memory(config.w_max) if precision == "fp32" else default_memory(hardware)
                read_key = None if precision == "fp32" else jax.random.fold_in(key, 1)
                result = inner_loop(params, targets, key, config, memory=memory, read_key=read_key)
            else:
                energy_before = chip.chip.energy_pJ()
                read_key = jax.random.fold_in(key, 1)
                result = inner_loop(params, targets, key, config, memory=chip.memory(), read_key=read_key)
                devices.extend(chip.record.devices_reprogrammed)
                # the chip's own report: programming, both passes' MVMs (trainee, and W_out on PCM), calibration
                # reads; per task: the batch's share
                batch = int(targets.xyz.shape[0])
                energy.extend([(chip.chip.energy_pJ() - energy_before) / batch] * batch)
            if arm_sim is not None:
                commands_after.append(result.after.angular_velocity)
                commands_before.append(result.before.angular_velocity[:1])  # pass 1: the same for the batch
            before.append(_per_task_mse(result.before, targets))
            after.append(_per_task_mse(result.after, targets))
            distance.append(_per_task_distance_cm(result.after, targets))
            distance_before.append(_per_task_distance_cm(result.before, targets))
            nonzero.append(np.asarray(result.eprop.update.n_nonzero))
            if keep_examples and examples is None:
                examples = (targets, result)
    before, after, distance, distance_before, nonzero = (
        np.concatenate(x) for x in (before, after, distance, distance_before, nonzero)
    )
    executed = {}
    if arm_sim is not None:
        executed = _execute_on_the_arm(arm_sim, targets_all, commands_after, commands_before, chips)
        executed["mse_before_kinematic"], executed["mse_after_kinematic"] = before, after
        before, after = executed.pop("before"), executed.pop("after")
        distance, distance_before = executed.pop("distance_after"), executed.pop("distance_before")
    plastic = config.trainee.n_in * config.trainee.n_rec + config.trainee.n_rec * (config.trainee.n_rec - 1)
    mse_before, ci_before = mean_ci95(before)
    mse_after, ci_after = mean_ci95(after)
    ratio, ci_ratio = mean_ci95(after / before)
    summary = {
        "backend": backend,
        "precision": precision if backend == "software" else "pcm-chip",
        "arm": config.arm,
        "tasks": int(tasks),
        "chips": int(chips) if backend == "chip" else None,
        "mse_before": mse_before,
        "mse_before_ci95": ci_before,
        "mse_after": mse_after,
        "mse_after_ci95": ci_after,
        "mse_ratio_after_to_before": mse_after / mse_before,
        "mse_ratio_ci95": _ratio_ci95(after, before),
        "mse_ratio_per_task_mean": ratio,
        "mse_ratio_per_task_ci95": ci_ratio,
        "distance_cm_before": float(distance_before.mean()),
        "distance_cm_after": float(distance.mean()),
        "distance_cm_after_ci95": mean_ci95(distance)[1],
        "nonzero_updates_fraction": float(np.mean(nonzero) / plastic),
        "devices_reprogrammed_mean": float(np.mean(devices)) if devices else None,
        "devices_reprogrammed_fraction": float(np.mean(devices) / chip.devices) if devices else None,
        "device_counts": DEVICE_COUNTS if devices else None,
        "energy_estimate_pJ_per_update": float(np.mean(energy)) if energy else None,
        "dynamics": "kinematic" if arm_sim is None else "mujoco",
    }
    if arm_sim is not None:
        floor, kinematic_before, kinematic_after = (
            executed[k] for k in ("mse_floor", "mse_before_kinematic", "mse_after_kinematic")
        )
        summary["mse_floor"], summary["mse_floor_ci95"] = mean_ci95(floor)
        summary["mse_before_kinematic"] = float(np.mean(kinematic_before))
        summary["mse_after_kinematic"], summary["mse_after_kinematic_ci95"] = mean_ci95(kinematic_after)
        summary["tasks_below_table"] = int(executed["tasks_below_table"])
    if chips > 1:
        summary.update(chip_and_task_spread(after.reshape(chips, tasks), "mse_after"))
        summary.update(chip_and_task_spread((after / before).reshape(chips, tasks), "mse_ratio_per_task"))
        summary["mse_after_ci95"] = summary["mse_after_ci95_chips_and_tasks"]
    summary["per_task"] = [
        {
            "chip": n // tasks if backend == "chip" else None,
            "task": n % tasks,
            "seed": seed,
            "mse_before": float(before[n]),
            "mse_after": float(after[n]),
            "mse_ratio": float(after[n] / before[n]),
            "distance_cm_before": float(distance_before[n]),
            "distance_cm_after": float(distance[n]),
            "nonzero_updates": int(nonzero[n]),
            "programming_operations": int(devices[n]) if devices else None,
            "energy_pJ_batch_share": float(energy[n]) if energy else None,
        }
        for n in range(len(before))
    ]
    if arm_sim is not None:
        for n, row in enumerate(summary["per_task"]):
            row["mse_floor"] = float(floor[n % tasks])
            row["mse_before_kinematic"] = float(kinematic_before[n])
            row["mse_after_kinematic"] = float(kinematic_after[n])
    if keep_examples:
        return summary, examples
    return summary


def _execute_on_the_arm(arm_sim, targets, commands_after, commands_before, chips: int) -> dict:
    """Executed paths of the target's own velocities (the floor), of every task's commands after the update
    and of each batch's commands before it (pass 1, shared by the batch), in one batched simulation."""
    from l2l_pcm.robot.sim import below_table

    after = jnp.concatenate(commands_after)  # [chips * tasks, T, 2]
    before = jnp.concatenate(commands_before)  # [chips * batches, T, 2]
    tasks = targets.xyz.shape[0]
    executed = arm_sim.execute(jnp.concatenate([targets.angular_velocity, after, before])).xyz
    floor_xyz, after_xyz = executed[:tasks], executed[tasks : tasks + after.shape[0]]
    before_xyz = executed[tasks + after.shape[0] :]
    batches = -(-tasks // TASK_BATCH)
    task_batch = np.arange(tasks) // TASK_BATCH  # which batch's pass 1 each task saw, chip by chip
    index = np.concatenate([c * batches + task_batch for c in range(chips)])
    before_xyz = before_xyz[index]
    target_xyz = jnp.concatenate([targets.xyz] * chips)

    def mse(xyz, target):
        return np.asarray(jnp.mean(jnp.square(xyz - target), axis=(1, 2)))

    def distance_cm(xyz, target):
        return 100 * np.asarray(jnp.mean(jnp.linalg.norm(xyz - target, axis=-1), axis=1))

    return {
        "mse_floor": mse(floor_xyz, targets.xyz),
        "before": mse(before_xyz, target_xyz),
        "after": mse(after_xyz, target_xyz),
        "distance_before": distance_cm(before_xyz, target_xyz),
        "distance_after": distance_cm(after_xyz, target_xyz),
        "tasks_below_table": int(np.sum(below_table(targets.xyz))),
    }


DEVICE_COUNTS = (
    "devices_reprogrammed_*: devices written by the one update (programming operations; each is a distinct "
    "device, as the update is written once), as a fraction of the trainee's devices"
)
"""What the device counts of a result count, carried in the result so a reader of the JSON need not guess."""


def software_reference(params, config: RobotConfig, tasks: int, seed: int = 0) -> dict:
    """MSE after / before in software, with the model the checkpoint was meta-trained with, on the trajectories
    a chip evaluation with these arguments sees, as a plot's reference line (``{"value", "ci", "label"}``;
    :func:`l2l_pcm.sweep.plot`). Software reads at the training age with no drift compensation, so the
    chip's age and compensation do not change it."""
    clock = dataclasses.replace(config.hardware.clock, deployment_age_s=None)  # the chip's age, not the model's
    config = dataclasses.replace(config, hardware=dataclasses.replace(config.hardware, clock=clock))
    result = evaluate(params, config, "software", tasks, seed, "trained")
    model = "PCM model it was meta-trained with" if result["precision"] == "pcm" else "32-bit"
    if result["dynamics"] == "mujoco":
        model += ", executed by the simulated arm"
    ratio, ci = result["mse_ratio_after_to_before"], result["mse_ratio_ci95"]
    return {"value": ratio, "ci": ci, "label": f"software, {model}, same trajectories: {ratio:.3f} ± {ci:.3f}"}


# ----------------------------------------------------------------------------------------------- plots
def plot_trajectories(targets, result, path, task: int = 0, *, backend: str) -> Path:
    """Target vs produced end-effector path before and after the update, in 3-D and per coordinate.
    ``backend``: where the update ran, for the title (e.g. "emulated PCM chip, 1 h after programming" or
    "software")."""
    plt = pyplot()
    target = np.asarray(targets.xyz[task])
    before = np.asarray(result.before.xyz[task])
    after = np.asarray(result.after.xyz[task])
    mse_before = float(np.mean((before - target) ** 2))
    mse_after = float(np.mean((after - target) ** 2))
    fig = plt.figure(figsize=(16.0, 6.4), dpi=100, layout="constrained")
    grid = fig.add_gridspec(3, 2, width_ratios=(0.9, 1))
    ax3d = fig.add_subplot(grid[:, 0], projection="3d")
    styles = (
        (target, "target path", {"color": "black", "linestyle": "-", "linewidth": 2.5}),
        (before, "before the update", {"color": "C1", "linestyle": "--", "linewidth": 2}),
        (after, "after one update", {"color": "C0", "linestyle": "-", "linewidth": 2}),
    )
    for xyz, label, style in styles:
        ax3d.plot(*xyz.T, label=label, **style)
    ax3d.set_xlabel("x (m)", labelpad=10)
    ax3d.set_ylabel("y (m)", labelpad=10)
    ax3d.set_zlabel("z (m)", labelpad=10)
    ax3d.set_title("end-effector path in 3-D")
    t = np.arange(target.shape[0])  # one step per ms
    for i, name in enumerate("xyz"):
        ax = fig.add_subplot(grid[i, 1])
        for xyz, label, style in styles:
            ax.plot(t, xyz[:, i], label=label, **style)
        ax.set_ylabel(f"{name} (m)")
        ax.grid(alpha=0.3)
        if i < 2:
            ax.tick_params(labelbottom=False)
    ax.set_xlabel("time (ms)")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(
        f"{backend}: one natural e-prop update\nCartesian MSE of this trajectory {mse_before:.4f} → {mse_after:.4f} m²"
    )
    return save_figure(fig, path)


def plot_spikes_and_signals(result, path, task: int = 0, neurons: int = 100, *, backend: str) -> Path:
    """Spike rasters of the trainee (before/after) and the LSG, and the learning signals; ``backend``:
    where the update ran, for the title."""
    plt = pyplot()
    eprop = result.eprop
    before = np.asarray(eprop.before.z[min(task, eprop.before.z.shape[0] - 1)])[:, :neurons]
    after = np.asarray(eprop.after.z[task])[:, :neurons]
    lsg = np.asarray(eprop.lsg_spikes[task])[:, :neurons]
    signals = np.asarray(eprop.learning_signals[task])[:, :neurons]
    fig, axes = plt.subplots(4, 1, figsize=(11, 12), dpi=100, sharex=True, layout="constrained")
    for ax, spikes, title in (
        (axes[0], before, "trainee before the update"),
        (axes[1], after, "trainee after the update"),
        (axes[2], lsg, "learning-signal generator"),
    ):
        t, n = np.nonzero(spikes)
        ax.scatter(t, n, s=3, c="black", marker="|")
        ax.set_ylabel("neuron")
        ax.set_title(f"{title} (first {neurons} neurons, {spikes.mean() * 1000:.0f} Hz mean)")
    limit = np.abs(signals).max() or 1.0
    image = axes[3].imshow(signals.T, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    axes[3].set_ylabel("trainee neuron")
    axes[3].set_xlabel("time (ms)")
    axes[3].set_title("learning signals L_j(t) from the LSG")
    fig.colorbar(image, ax=axes[3], fraction=0.03).set_label("learning signal (a.u.)")
    fig.suptitle(f"spikes and learning signals of one trajectory, {backend}")
    return save_figure(fig, path)


def animate_arm(arm, targets, result, path, task: int = 0, frames: int = 60, *, backend: str) -> Path:
    """Animated GIF (840 px square, 14-pt labels): the arm after the update following the target path
    (matplotlib + Pillow); ``backend``: where the update ran, for the title."""
    import io

    from matplotlib.ticker import MaxNLocator
    from PIL import Image

    from l2l_pcm._io import atomic_write_bytes

    plt = pyplot()
    target = np.asarray(targets.xyz[task])
    joints = np.asarray(arm.joint_positions(result.after.angles[task]))
    produced = np.asarray(result.after.xyz[task])
    before = np.asarray(result.before.xyz[task])
    steps = np.linspace(0, target.shape[0] - 1, frames).astype(int)
    images = []
    low = np.minimum(np.minimum(joints.min(axis=(0, 1)), target.min(axis=0)), before.min(axis=0)) - 0.05
    high = np.maximum(np.maximum(joints.max(axis=(0, 1)), target.max(axis=0)), before.max(axis=0)) + 0.05
    for step in steps:
        fig = plt.figure(figsize=(8.4, 8.4), dpi=100)
        ax = fig.add_axes((0.03, 0.06, 0.90, 0.74), projection="3d")
        ax.plot(*target.T, "k-", linewidth=2.5, label="target path")
        ax.plot(*before.T, "C1--", linewidth=2, label="path before the update")
        ax.plot(*produced[: step + 1].T, "C0-", linewidth=3, label="path after the update")
        ax.plot(*joints[step].T, "o-", color="C4", linewidth=6, markersize=8, label="arm (after the update)")
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
        ax.set_zlim(min(low[2], 0.0), high[2])
        ax.set_box_aspect((high[0] - low[0], high[1] - low[1], high[2] - min(low[2], 0.0)))  # equal aspect
        for set_label, name in ((ax.set_xlabel, "x"), (ax.set_ylabel, "y"), (ax.set_zlabel, "z")):
            set_label(f"{name} (m)", fontsize=14, labelpad=12)
        ax.tick_params(labelsize=12)
        for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
            axis.set_major_locator(MaxNLocator(4))
        heading = textwrap.fill(backend, 52)  # an 840 px frame holds about 52 characters at 16 pt
        fig.suptitle(f"{heading}\narm after one e-prop update, step {step}", fontsize=16, y=0.99)
        fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.89), ncol=2, fontsize=14, frameon=False)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        frame = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        images.append(frame.convert("P", palette=Image.ADAPTIVE, colors=128))
    gif = io.BytesIO()
    images[0].save(gif, format="GIF", save_all=True, append_images=images[1:], duration=80, loop=0, optimize=True)
    return atomic_write_bytes(path, gif.getvalue())
