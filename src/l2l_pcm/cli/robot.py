"""``l2l-pcm robot``: meta-training, evaluation, sweeps and the demo."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from l2l_pcm.cli.common import (
    add_backend_arguments,
    add_hardware_arguments,
    add_sweep_arguments,
    add_train_arguments,
    checkpoint_path,
    command_hardware,
    command_precision,
    command_provenance,
    finish_sweep,
    join_cluster,
    point_hardware,
    positive_int,
    print_summary,
    refuse_chip_only_flags,
    seed_arg,
    starting_config,
    sweep_axes,
    write_per_task,
)
from l2l_pcm.vocabulary import ARM_DYNAMICS

ROBOT_SWEEP_METRICS = (
    "mse_before",
    "mse_before_ci95",
    "mse_after",
    "mse_after_ci95",
    "mse_ratio_after_to_before",
    "mse_ratio_ci95",
    "devices_reprogrammed_fraction",
)
DYNAMIC_SWEEP_METRICS = ("mse_floor", "mse_after_kinematic")
"""With ``--dynamics mujoco``: the controllers' own error and the closed-form result beside the executed one."""


def _robot_train(args: argparse.Namespace) -> None:
    import dataclasses

    join_cluster(args)
    from l2l_pcm.robot.train import CHECKPOINT_KIND, RobotTrainConfig, train

    config = starting_config(args, CHECKPOINT_KIND, RobotTrainConfig.from_json, RobotTrainConfig())
    model = {name: getattr(args, name) for name in ("batch", "arm") if getattr(args, name) is not None}
    if args.software_only:
        model["hardware_aware"] = False
    model["hardware"] = command_hardware(args, config.model.hardware)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, **model))
    run = {name: getattr(args, name) for name in ("iterations", "seed") if getattr(args, name) is not None}
    config = dataclasses.replace(config, **run)
    summary = train(
        config,
        args.out,
        resume=args.resume,
        progress=not args.no_progress,
        init_from=args.init_from,
        overwrite=args.overwrite,
        tensorboard=args.tensorboard,
    )
    print_summary(summary)


def _robot_eval(args: argparse.Namespace) -> None:
    from l2l_pcm.robot.evaluate import evaluate
    from l2l_pcm.robot.train import load_robot_checkpoint

    params, config, _ = load_robot_checkpoint(checkpoint_path(args))
    refuse_chip_only_flags(args)
    model = _robot_overrides(args, config.model)
    precision = command_precision(args, "trained")
    if args.backend == "software":  # it checks the tree it is given against the model's (for_software_model)
        software = dataclasses.replace(model, hardware=config.model.hardware)
        result = evaluate(params, software, "software", args.tasks, args.seed, precision, model.hardware)
    else:
        result = evaluate(params, model, "chip", args.tasks, args.seed, precision, chips=args.chips)
    result["provenance"] = command_provenance(
        args, model.hardware, backend=args.backend, precision=precision if args.backend == "software" else None
    )
    write_per_task(args, result, result["provenance"])
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['backend']} ({result['precision']}), {result['tasks']} unseen trajectories: Cartesian MSE "
        f"{result['mse_before']:.4f} ± {result['mse_before_ci95']:.4f} before → {result['mse_after']:.4f} ± "
        f"{result['mse_after_ci95']:.4f} m² after one update; mean distance {result['distance_cm_before']:.1f} → "
        f"{result['distance_cm_after']:.1f} cm"
    )
    print(
        f"after / before: ratio of means {result['mse_ratio_after_to_before']:.3f} ± {result['mse_ratio_ci95']:.3f}, "
        f"mean of per-task ratios {result['mse_ratio_per_task_mean']:.3f} ± {result['mse_ratio_per_task_ci95']:.3f}"
    )
    if result["dynamics"] == "mujoco":
        print(
            f"executed by the simulated arm (MuJoCo): the controllers' own error on the targets' velocities "
            f"{result['mse_floor']:.5f} ± {result['mse_floor_ci95']:.5f} m²; closed-form kinematics instead: "
            f"{result['mse_before_kinematic']:.4f} → {result['mse_after_kinematic']:.5f} m²; "
            f"{result['tasks_below_table']} of {result['tasks']} targets reach below the table top"
        )
    if (result.get("chips") or 1) > 1:
        print(
            f"{result['chips']} chips × {result['tasks']} trajectories: MSE after per chip "
            + ", ".join(f"{m:.5f}" for m in result["mse_after_per_chip"])
            + f"; spread between chips (std) {result['mse_after_between_chips_std']:.5f}, between tasks "
            f"{result['mse_after_between_tasks_std']:.5f} m²; the ± above counts both"
        )
    if result["devices_reprogrammed_mean"] is not None:
        print(
            f"devices re-programmed per update (distinct devices, one write each): "
            f"{result['devices_reprogrammed_mean']:.0f} "
            f"({100 * result['devices_reprogrammed_fraction']:.2f} % of the trainee's devices); energy estimate "
            f"{result['energy_estimate_pJ_per_update'] / 1e3:.1f} nJ per update"
        )


def _robot_overrides(args: argparse.Namespace, model):
    """The checkpoint's robot config with ``--hardware``, ``--device``, ``--angle-clipping`` and ``--dynamics``
    applied (the evaluation follows ``RobotConfig.dynamics``)."""
    changes = {"hardware": command_hardware(args, model.hardware)}
    if args.angle_clipping is not None:
        changes["clip_predicted_angles"] = args.angle_clipping == "on"
    if args.dynamics is not None:
        changes["dynamics"] = args.dynamics
    return dataclasses.replace(model, **changes)


def _robot_sweep(args: argparse.Namespace) -> None:
    from l2l_pcm import sweep
    from l2l_pcm.robot.evaluate import evaluate, software_reference
    from l2l_pcm.robot.train import load_robot_checkpoint

    params, config, _ = load_robot_checkpoint(checkpoint_path(args))
    model = _robot_overrides(args, config.model)
    points = sweep.grid(sweep_axes(args, model.hardware, readout_axes=False))
    hardware = [point_hardware(model.hardware, point) for point in points]  # every point checked first
    executed = model.dynamics == "mujoco"

    def evaluate_point(point: dict) -> dict:
        point_model = dataclasses.replace(model, hardware=hardware[points.index(point)])
        return evaluate(params, point_model, "chip", args.tasks, args.seed, "trained")

    per_task = args.per_task is not None
    metrics = ROBOT_SWEEP_METRICS + (DYNAMIC_SWEEP_METRICS if executed else ())
    rows = sweep.run(points, evaluate_point, metrics, progress=not args.json, per_task=per_task)
    plot = {"metric": "mse_ratio_after_to_before", "ci": "mse_ratio_ci95", "log_y": True, "tasks": args.tasks}
    plot["ylabel"] = "Cartesian MSE after / before the update (log)"
    plot["ci_label"] = "95 % interval of the ratio (paired delta method)"
    plot["title"] = f"robot arm ({model.arm}): one e-prop update on the emulated PCM chip"
    if executed:
        plot["title"] += ", path executed by the simulated arm"
    if not args.devices:  # the software model reads the device; with several swept there is no one reference
        plot["reference"] = software_reference(params, model, args.tasks, args.seed)
    finish_sweep(args, rows, "robot_sweep", model.hardware, plot)


def _robot_demo(args: argparse.Namespace) -> None:
    """Software vs chip on the same trajectories, with the figures and the GIF."""
    from l2l_pcm._io import atomic_write_text
    from l2l_pcm.robot.evaluate import animate_arm, evaluate, plot_spikes_and_signals, plot_trajectories
    from l2l_pcm.robot.train import load_robot_checkpoint

    params, config, _ = load_robot_checkpoint(checkpoint_path(args))
    model = _robot_overrides(args, config.model)
    out = Path(args.out)
    software = evaluate(params, model, "software", args.tasks, args.seed)
    chip, (targets, result) = evaluate(params, model, "chip", args.tasks, args.seed, keep_examples=True)
    for r in (software, chip):
        print(
            f"{r['backend']:>8}: MSE {r['mse_before']:.4f} → {r['mse_after']:.4f} ± {r['mse_after_ci95']:.4f} m² "
            f"(ratio {r['mse_ratio_after_to_before']:.2f}), distance {r['distance_cm_after']:.1f} cm"
        )
    print(
        f"chip: {chip['devices_reprogrammed_mean']:.0f} devices re-programmed per update "
        f"({100 * chip['devices_reprogrammed_fraction']:.2f} %)"
    )
    from l2l_pcm.plotting import short_time_label

    on_chip = f"emulated PCM chip, {short_time_label(model.hardware.clock.age_in_use_s)} after programming"
    if model.dynamics == "mujoco":  # the figures show what the simulated arm executed
        from l2l_pcm.robot.sim import arm_simulation, executed_trajectories

        arm_sim = arm_simulation(model.arm_model, model.velocity_dt_s)

        result = result._replace(
            before=executed_trajectories(arm_sim, result.before), after=executed_trajectories(arm_sim, result.after)
        )
        on_chip += ", executed by the simulated arm (MuJoCo)"
    paths = [
        plot_trajectories(targets, result, out / "robot_trajectory.png", backend=on_chip),
        plot_spikes_and_signals(result, out / "robot_spikes.png", backend=on_chip),
        animate_arm(config.model.arm_model, targets, result, out / "robot_arm.gif", backend=on_chip),
        atomic_write_text(
            out / "robot_results.json",
            json.dumps(
                {
                    "software": software,
                    "chip": chip,
                    "provenance": command_provenance(args, model.hardware, backend="both"),
                },
                indent=1,
            ),
        ),
    ]
    print("wrote: " + ", ".join(str(p) for p in paths))


def _robot_export_nir(args: argparse.Namespace) -> None:
    """The trainee network of a robot checkpoint (its meta-learned initial weights) as a NIR graph."""
    from l2l_pcm.nir_export import to_nir, write_nir
    from l2l_pcm.robot.model import PARAM_NAMES
    from l2l_pcm.robot.train import load_robot_checkpoint

    params, config, _ = load_robot_checkpoint(args.checkpoint)
    graph = to_nir(config.model.trainee, *(params[name] for name in PARAM_NAMES[:3]))
    path = write_nir(args.out, graph, overwrite=args.overwrite)
    trainee = config.model.trainee
    print(
        f"wrote {path}: trainee {trainee.n_in} inputs → {trainee.n_rec} LIF (recurrent) → {trainee.n_out} LI "
        f"readouts, dt {trainee.dt_ms} ms (refractory steps and subtractive reset in the LIF node's metadata)"
    )


def add_commands(commands) -> None:
    """The ``robot`` subcommands: train, eval, sweep and demo."""
    robot = commands.add_parser("robot", help="robot-arm motor learning with natural e-prop").add_subparsers(
        dest="robot_command", required=True
    )
    robot_train = robot.add_parser("train", help="meta-train trainee initial weights and the LSG (BPTT)")
    add_train_arguments(robot_train, "RobotTrainConfig")
    robot_train.add_argument("--batch", type=positive_int, help="trajectories per outer iteration")
    robot_train.add_argument(
        "--arm", choices=("scorbot", "two_link"), help="Scorbot ER-VII or the planar 2-link arm (default: config's)"
    )
    robot_train.add_argument("--software-only", action="store_true", help="meta-train without the PCM model")
    robot_train.set_defaults(run=_robot_train)

    def add_robot_eval_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--checkpoint", help="robot checkpoint (default: the shipped one)")
        sub.add_argument("--tasks", type=positive_int, default=200, help="unseen trajectories (default 200)")
        sub.add_argument("--seed", type=seed_arg, default=0, help="trajectory seed: same seed, same trajectories")
        add_hardware_arguments(sub, "the checkpoint's")
        sub.add_argument(
            "--dynamics",
            choices=ARM_DYNAMICS,
            help="score the path of the closed-form kinematics, or the path the simulated Scorbot executes when "
            "its PID controllers follow the commands (MuJoCo MJX; pip install 'l2l-pcm[sim]'); default: what "
            "the checkpoint was meta-trained with (kinematic for the shipped models)",
        )
        sub.add_argument(
            "--angle-clipping",
            choices=("on", "off"),
            help="clip the predicted joint angles to the safe space (default: the checkpoint's; the authors: off)",
        )

    robot_eval = robot.add_parser("eval", help="MSE before/after the single update, software or chip")
    add_robot_eval_arguments(robot_eval)
    add_backend_arguments(robot_eval, "trained")
    robot_eval.set_defaults(run=_robot_eval)
    robot_sweep = robot.add_parser(
        "sweep", help="chip MSE before/after over time since programming, compensation, bits, devices"
    )
    add_robot_eval_arguments(robot_sweep)
    add_sweep_arguments(robot_sweep, readout_axes=False)
    robot_sweep.set_defaults(run=_robot_sweep)
    robot_demo = robot.add_parser("demo", help="software vs chip, trajectory/spike figures and an arm GIF")
    add_robot_eval_arguments(robot_demo)
    robot_demo.add_argument("--out", default="outputs", help="folder for figures and results (default: outputs/)")
    robot_demo.set_defaults(run=_robot_demo)
    export_nir = robot.add_parser(
        "export-nir", help="write the trainee spiking network of a checkpoint as NIR (Norse, snnTorch, Lava...)"
    )
    export_nir.add_argument("checkpoint", help="robot checkpoint (e.g. the shipped one, see 'robot eval --help')")
    export_nir.add_argument("out", help="NIR file to write (HDF5, read with nir.read)")
    export_nir.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    export_nir.set_defaults(run=_robot_export_nir)
