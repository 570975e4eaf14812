"""Command-line interface: a thin layer over the library (l2l-pcm --help)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from pathlib import Path

from l2l_pcm.errors import SEED_MAX, L2LPCMError, check_seed

PROFILE_LIST = "ibm, authors, hermes, aihwkit"
"""The names of l2l_pcm.pcm.DEVICE_PROFILES, for --help without importing JAX (a test keeps them equal)."""


def _chip_stats(args: argparse.Namespace) -> None:
    import jax

    from l2l_pcm.chip.diagnostics import device_statistics
    from l2l_pcm.pcm import profile_name

    device = _device(args.device or "ibm")
    rows = device_statistics(device, jax.random.PRNGKey(args.seed), samples=args.samples)
    if args.json:
        print(json.dumps({"profile": profile_name(device), "rows": rows, "device": dataclasses.asdict(device)}))
        return
    print(f"device profile: {profile_name(device)}")
    print(", ".join(f"{k}={v}" for k, v in dataclasses.asdict(device).items()))
    print(
        f"{'g_T µS':>7} | {'σ_prog target':>13} {'measured':>9} | {'ν mean':>7} {'meas':>7} | "
        f"{'ν std':>7} {'meas':>7} | {'σ_read target':>13} {'measured':>9}"
    )
    for r in rows:
        print(
            f"{r['g_target_uS']:7.2f} | {r['prog_std_target_uS']:13.4f} {r['prog_std_measured_uS']:9.4f} | "
            f"{r['nu_mean_target']:7.4f} {r['nu_mean_measured']:7.4f} | {r['nu_std_target']:7.4f} "
            f"{r['nu_std_measured']:7.4f} | {r['read_std_target_uS']:13.4f} {r['read_std_measured_uS']:9.4f}"
        )
    print(f"({rows[0]['samples']} samples per row; read noise at t = {rows[0]['read_time_s']:.0f} s)")


def _chip_demo(args: argparse.Namespace) -> None:
    import jax

    from l2l_pcm.chip.diagnostics import drift_demo, plot_drift_demo

    result = drift_demo(jax.random.PRNGKey(args.seed))
    print("Weight error of a 256x128 layer (weights ~ N(0, 0.3²)) vs time since programming")
    print("error = (read − target)·sign(target); negative = drift towards zero")
    print(f"{'time':>9} | {'mean':>8} {'std':>7} | {'mean (drift comp.)':>18} {'std':>7}")
    for i, t in enumerate(result.times_s):
        print(
            f"{_human_time(t):>9} | {result.error_mean[i]:8.4f} {result.error_std[i]:7.4f} | "
            f"{result.error_mean_compensated[i]:18.4f} {result.error_std_compensated[i]:7.4f}"
        )
    print("\nDevices touched by a small update (quantized to 1/16, nearest rounding)")
    print(f"{'update std':>10} | {'non-zero Δw_q':>13} {'pairs':>7} {'devices':>8} {'fraction':>9} {'energy est.':>12}")
    for r in result.update_rows:
        print(
            f"{r['update_std']:10.3g} | {r['nonzero_quantized_updates']:13d} {r['pairs_touched']:7d} "
            f"{r['devices_touched']:8d} {r['fraction_devices_touched']:9.4f} {r['energy_estimate_pJ'] / 1e3:9.1f} nJ"
        )
    path = plot_drift_demo(result, Path(args.out) / "chip_drift.png")
    print(f"\nplot: {path}")


def _device(spec: str):
    """``--device NAME|FILE.json``: a named profile or a JSON object of PCMDevice fields."""
    from l2l_pcm.pcm import DEVICE_PROFILES, device_from_json

    if spec in DEVICE_PROFILES:
        return DEVICE_PROFILES[spec]
    if spec.endswith(".json") or Path(spec).exists():
        return device_from_json(_read_json(spec))
    raise L2LPCMError(f"--device: {spec!r} is neither a profile ({', '.join(DEVICE_PROFILES)}) nor a JSON file")


def _hardware(args: argparse.Namespace, current):
    """The hardware a command uses: the checkpoint's/config's ``current`` tree, with ``--hardware
    FILE.json`` laid over it (a partial tree; settings it leaves out keep the current ones), then
    ``--device``, ``--drift-compensation`` and ``--time-since-programming`` (the deployment age) set in
    it. The library checks the result (e.g. a fixed-age device refuses a deployment age)."""
    hardware = current
    if getattr(args, "hardware", None) is not None:
        hardware = hardware.updated(_read_json(args.hardware), f"--hardware {args.hardware}")
    settings = {}
    if getattr(args, "device", None) is not None:
        settings["device"] = _device(args.device)
    if getattr(args, "drift_compensation", None):
        settings["drift_compensation"] = args.drift_compensation
    if getattr(args, "time_since_programming", None) is not None and args.backend == "chip":
        settings["clock.deployment_age_s"] = args.time_since_programming
    return hardware.with_settings(settings) if settings else hardware


def _refuse_chip_only_flags(args: argparse.Namespace, hardware, software_mvms: bool = True) -> None:
    """Flags and hardware settings that change only the chip are errors with the software backend (they
    could not take effect): the software models have no converters and no drift compensation, and the
    few-shot one (``software_mvms=False``) reads its conv body once per meta-batch and its readout per
    vector whatever the read-noise mode says, so the mode does not apply to it either (its generator does).
    (A checkpoint's own chip settings are its deployment's; only what the user asks for is refused.)"""
    if args.backend == "chip":
        return
    asked = getattr(args, "hardware", None) is not None
    default = type(hardware.forward)()
    mvm_fields = () if software_mvms else ("read_noise_mode",)
    for field, value in (
        ("dac_bits", asked and hardware.forward.dac_bits),
        ("adc_bits", asked and hardware.forward.adc_bits),
        ("drift_compensation", asked and hardware.drift_compensation != "none" and not args.drift_compensation),
        *((name, asked and getattr(hardware.forward, name) != getattr(default, name)) for name in mvm_fields),
    ):
        if value:
            raise L2LPCMError(
                f"the hardware's {field} applies to the chip only (the software model has no converters, "
                "drift compensation or MVM read noise); add --backend chip or leave it out"
            )
    for flag, given in (
        ("--time-since-programming", args.time_since_programming is not None),
        ("--drift-compensation", args.drift_compensation),
    ):
        if given:
            raise L2LPCMError(f"{flag} applies to the chip only; add --backend chip or leave it out")


def _precision(args: argparse.Namespace, software_default: str) -> str:
    """``--precision`` is a software setting: refused with the chip (which has its own device physics)."""
    if args.backend == "chip" and args.precision is not None:
        raise L2LPCMError("--precision applies to the software backend only; the chip runs its own device model")
    return args.precision or software_default


def _provenance(args: argparse.Namespace, hardware, **settings) -> dict:
    from l2l_pcm.provenance import provenance

    shipped = {"fewshot": "fewshot_omniglot_5way5shot.safetensors", "robot": "robot_scorbot.safetensors"}
    checkpoint = args.checkpoint or Path(__file__).parent / "checkpoints" / shipped[args.command]
    asked = {
        "seed": args.seed,
        "tasks": args.tasks,
        "time_since_programming_s_asked": getattr(args, "time_since_programming", None),
        "drift_compensation": getattr(args, "drift_compensation", None),
    }
    if getattr(args, "alphabets", None):
        asked["alphabets"] = args.alphabets
    return provenance(checkpoint, hardware, **asked, **settings)


def _import_authors(args: argparse.Namespace) -> None:
    from l2l_pcm.import_authors import import_authors

    print(import_authors(args.scenario, args.source, args.destination))


def _join_cluster(args: argparse.Namespace) -> None:
    """Join a multi-process run (flags, or a SLURM job step) before any JAX computation."""
    from l2l_pcm import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def _print_summary(summary: dict) -> None:
    from l2l_pcm import distributed

    if distributed.is_main():
        print(json.dumps(summary))


def _fewshot_train(args: argparse.Namespace) -> None:
    import dataclasses

    _join_cluster(args)
    from l2l_pcm.fewshot.maml import MAMLConfig
    from l2l_pcm.fewshot.train import train

    config = MAMLConfig()
    if args.config:
        config = MAMLConfig.from_json(_read_json(args.config))
    overrides = {name: getattr(args, name) for name in ("variant", "iterations", "meta_batch", "seed")}
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    config = dataclasses.replace(config, hardware=_hardware(args, config.hardware))
    summary = train(
        config,
        args.out,
        data_dir=args.data_dir,
        resume=args.resume,
        progress=not args.no_progress,
        init_from=args.init_from,
        overwrite=args.overwrite,
    )
    _print_summary(summary)


def _fewshot_pretrain(args: argparse.Namespace) -> None:
    import dataclasses

    _join_cluster(args)
    from l2l_pcm.fewshot.pretrain import PretrainConfig, pretrain

    config = PretrainConfig.from_json(_read_json(args.config)) if args.config else PretrainConfig()
    overrides = {name: getattr(args, name) for name in ("iterations", "seed")}
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    fewshot = dataclasses.replace(config.fewshot, hardware=_hardware(args, config.fewshot.hardware))
    summary = pretrain(
        dataclasses.replace(config, fewshot=fewshot),
        args.out,
        data_dir=args.data_dir,
        resume=args.resume,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    _print_summary(summary)


def _load_fewshot(args: argparse.Namespace):
    from l2l_pcm.fewshot.data import load_omniglot, split_background
    from l2l_pcm.fewshot.train import SHIPPED_CHECKPOINT, load_fewshot_checkpoint

    path = Path(args.checkpoint) if args.checkpoint else SHIPPED_CHECKPOINT
    params, config, metadata = load_fewshot_checkpoint(path)
    overrides = {
        "update_budget": args.update_budget,
        "readout_scale": args.readout_scale,
        "normalisation": args.normalisation,
        "shots": args.shots,
        "ways": args.ways,
    }
    if args.shots is not None and args.shots + args.queries > 20:
        raise L2LPCMError(
            f"--shots {args.shots} with --queries {args.queries}: an Omniglot class has 20 drawings, "
            f"so shots + queries must be <= 20"
        )
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    config = dataclasses.replace(config, hardware=_hardware(args, config.hardware))
    if args.alphabets == "validation":  # the meta-training run's held-out background alphabets
        images = split_background(load_omniglot("background", args.data_dir))[1]
    else:
        images = load_omniglot("evaluation", args.data_dir)
    return params, config, metadata, images


def _fewshot_eval(args: argparse.Namespace) -> None:
    from l2l_pcm.fewshot.evaluate import evaluate_chip, evaluate_software

    params, config, _, images = _load_fewshot(args)
    _refuse_chip_only_flags(args, config.hardware, software_mvms=False)
    precision = _precision(args, "fp32")
    if args.backend == "chip":
        result = evaluate_chip(
            params,
            config,
            images,
            args.tasks,
            args.queries,
            args.seed,
            progress=not args.json,
        )
    else:
        result = evaluate_software(params, config, images, args.tasks, precision, args.queries, args.seed)
    result["provenance"] = _provenance(
        args, config.hardware, backend=args.backend, precision=precision if args.backend == "software" else None
    )
    for line in result.get("warnings", []):  # on stderr, so --json output stays one object
        print(f"warning: {line}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
        return
    steps = " → ".join(f"{100 * a:.1f}" for a in result["accuracy_per_step"])
    print(
        f"{result['backend']}: {100 * result['accuracy_mean']:.2f} ± {100 * result['accuracy_ci95']:.2f} % "
        f"over {result['tasks']} tasks (per inner step: {steps})"
    )
    if result.get("devices_reprogrammed_mean") is not None:
        print(
            f"devices re-programmed per task: mean {result['devices_reprogrammed_mean']:.1f}, max "
            f"{result['devices_reprogrammed_max']} ({100 * result['devices_reprogrammed_fraction']:.1f} % of "
            f"{result['readout_devices']} readout devices); energy estimate "
            f"{result['energy_estimate_pJ_per_adaptation'] / 1e3:.1f} nJ per adaptation"
        )


FEWSHOT_SWEEP_METRICS = (
    "accuracy_mean",
    "accuracy_ci95",
    "devices_reprogrammed_fraction",
    "devices_reprogrammed_max",
    "energy_estimate_pJ_per_adaptation",
    "readout_updates_clipped_mean",
)
ROBOT_SWEEP_METRICS = (
    "mse_before",
    "mse_before_ci95",
    "mse_after",
    "mse_after_ci95",
    "mse_ratio_after_to_before",
    "mse_ratio_ci95",
    "devices_reprogrammed_fraction",
)


def _sweep_axes(args: argparse.Namespace, hardware, readout_axes: bool) -> dict:
    """The grid a ``sweep`` command runs: times, then compensation, budgets, readout scales, converter bits,
    devices."""
    from l2l_pcm.sweep import DEFAULT_TIMES_S

    axes = {"time_since_programming_s": args.times or list(DEFAULT_TIMES_S)}
    axes["drift_compensation"] = args.compensation or [hardware.drift_compensation]
    if readout_axes and args.budgets:
        axes["update_budget"] = args.budgets
    if readout_axes and args.readout_scales:
        axes["readout_scale"] = args.readout_scales
    for name in ("dac_bits", "adc_bits"):
        if getattr(args, name):
            axes[name] = getattr(args, name)
    if args.devices:
        axes["device"] = args.devices
    for device in args.devices or [None]:
        fixed = (_device(device) if device else hardware.device).fixed_age_s
        if fixed is not None and len(axes["time_since_programming_s"]) > 1:
            raise L2LPCMError(
                f"device {device or 'of the hardware'} reads every device at a fixed age of {fixed:g} s (the "
                "authors' convention): a sweep over time since programming cannot apply to it"
            )
    return axes


SWEEP_HARDWARE_AXES = {
    "time_since_programming_s": "clock.deployment_age_s",
    "drift_compensation": "drift_compensation",
    "dac_bits": "forward.dac_bits",
    "adc_bits": "forward.adc_bits",
}
"""Sweep axes that are hardware settings, and their home in the tree."""


def _point_hardware(hardware, point: dict):
    """The hardware of one sweep point: the base with the point's age, compensation, bits and device."""
    settings = {home: point[axis] for axis, home in SWEEP_HARDWARE_AXES.items() if axis in point}
    if "device" in point:
        settings["device"] = _device(point["device"])
    return hardware.with_settings(settings)


def _finish_sweep(args, rows: list[dict], stem: str, hardware, plot_args: dict) -> None:
    from l2l_pcm import sweep

    record_provenance = _provenance(args, hardware, backend="chip", sweep_axes=sorted({k for r in rows for k in r}))
    out = Path(args.out)
    paths = sweep.write(rows, out, stem, record_provenance)
    paths.append(sweep.plot(rows, path=out / f"{stem}.png", **plot_args))
    if args.json:
        print(json.dumps({"points": rows, "provenance": record_provenance}))
        return
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    for path in paths:
        print(f"wrote {path}")


def _fewshot_sweep(args: argparse.Namespace) -> None:
    from l2l_pcm import sweep
    from l2l_pcm.fewshot.evaluate import evaluate_chip

    params, config, _, images = _load_fewshot(args)
    points = sweep.grid(_sweep_axes(args, config.hardware, readout_axes=True))
    hardware = [_point_hardware(config.hardware, point) for point in points]  # every point checked first

    def evaluate_point(point: dict) -> dict:
        changes = {"hardware": hardware[points.index(point)]}
        changes.update({name: point[name] for name in ("update_budget", "readout_scale") if name in point})
        point_config = dataclasses.replace(config, **changes)
        return evaluate_chip(params, point_config, images, args.tasks, args.queries, args.seed)

    rows = sweep.run(points, evaluate_point, FEWSHOT_SWEEP_METRICS, progress=not args.json)
    plot = {"metric": "accuracy_mean", "ci": "accuracy_ci95", "ylabel": "query accuracy after the inner loop (%)"}
    plot["y_scale"] = 100.0
    _finish_sweep(args, rows, "fewshot_sweep", config.hardware, {**plot, "title": "few-shot on the chip"})


def _robot_sweep(args: argparse.Namespace) -> None:
    from l2l_pcm import sweep
    from l2l_pcm.robot.evaluate import evaluate
    from l2l_pcm.robot.train import SHIPPED_CHECKPOINT, load_robot_checkpoint

    params, config, _ = load_robot_checkpoint(Path(args.checkpoint) if args.checkpoint else SHIPPED_CHECKPOINT)
    model = _robot_overrides(args, config.model)
    points = sweep.grid(_sweep_axes(args, model.hardware, readout_axes=False))
    hardware = [_point_hardware(model.hardware, point) for point in points]  # every point checked first

    def evaluate_point(point: dict) -> dict:
        point_model = dataclasses.replace(model, hardware=hardware[points.index(point)])
        return evaluate(params, point_model, "chip", args.tasks, args.seed, "trained")

    rows = sweep.run(points, evaluate_point, ROBOT_SWEEP_METRICS, progress=not args.json)
    plot = {"metric": "mse_ratio_after_to_before", "ci": "mse_ratio_ci95", "ylabel": "MSE after / before the update"}
    _finish_sweep(args, rows, "robot_sweep", model.hardware, {**plot, "title": "robot arm on the chip", "log_y": True})


def _fewshot_demo(args: argparse.Namespace) -> None:
    """Software 32-bit, 4-bit and chip on the same unseen tasks, with plots."""
    import jax
    import numpy as np

    from l2l_pcm.fewshot.data import TaskSampler
    from l2l_pcm.fewshot.deploy import ChipFewShotLearner
    from l2l_pcm.fewshot.evaluate import (
        evaluate_chip,
        evaluate_software,
        plot_example_task,
        plot_inner_step_curves,
        plot_training_curves,
    )
    from l2l_pcm.training import training_record

    params, config, metadata, images = _load_fewshot(args)
    out = Path(args.out)
    results = {
        "software 32-bit": evaluate_software(params, config, images, args.tasks, "fp32", args.queries, args.seed),
        "software 4-bit": evaluate_software(params, config, images, args.tasks, "4bit", args.queries, args.seed),
        "software PCM model": evaluate_software(params, config, images, args.tasks, "pcm", args.queries, args.seed),
        "emulated PCM chip": evaluate_chip(params, config, images, args.tasks, args.queries, args.seed, progress=True),
    }
    for label, result in results.items():
        print(
            f"{label:>18}: {100 * result['accuracy_mean']:.2f} ± {100 * result['accuracy_ci95']:.2f} % "
            f"(per step: {' → '.join(f'{100 * a:.1f}' for a in result['accuracy_per_step'])})"
        )
    chip = results["emulated PCM chip"]
    print(
        f"chip: {chip['devices_reprogrammed_mean']:.1f} devices re-programmed per task "
        f"({100 * chip['devices_reprogrammed_fraction']:.1f} % of the readout's {chip['readout_devices']})"
    )
    paths = [plot_inner_step_curves(results, out / "fewshot_inner_steps.png")]
    if metadata.get("metrics"):
        paths.append(plot_training_curves(training_record(metadata), out / "fewshot_training.png"))
    sampler = TaskSampler(images, config.ways, config.shots, args.queries)
    sx, sy, qx, qy = (a[0] for a in sampler.sample(args.seed + 99, 1))
    learner = ChipFewShotLearner(params, config, jax.random.PRNGKey(args.seed))
    task = learner.adapt(sx, sy, qx, qy, jax.random.PRNGKey(args.seed + 1))
    paths.append(
        plot_example_task(sx, sy, qx, qy, np.asarray(task.predictions), out / "fewshot_example_task.png", config.ways)
    )
    from l2l_pcm._io import atomic_write_text

    record = {**results, "provenance": _provenance(args, config.hardware, backend="software+chip")}
    paths.append(atomic_write_text(out / "fewshot_results.json", json.dumps(record, indent=1)))
    print("wrote: " + ", ".join(str(p) for p in paths))


def _robot_train(args: argparse.Namespace) -> None:
    import dataclasses

    _join_cluster(args)
    from l2l_pcm.robot.train import RobotTrainConfig, train

    config = RobotTrainConfig.from_json(_read_json(args.config)) if args.config else RobotTrainConfig()
    model = {name: getattr(args, name) for name in ("batch", "seed", "arm") if getattr(args, name) is not None}
    if args.software_only:
        model["hardware_aware"] = False
    model["hardware"] = _hardware(args, config.model.hardware)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, **model))
    if args.iterations is not None:
        config = dataclasses.replace(config, iterations=args.iterations)
    summary = train(
        config,
        args.out,
        resume=args.resume,
        progress=not args.no_progress,
        init_from=args.init_from,
        overwrite=args.overwrite,
    )
    _print_summary(summary)


def _robot_eval(args: argparse.Namespace) -> None:
    from l2l_pcm.robot.evaluate import evaluate
    from l2l_pcm.robot.train import SHIPPED_CHECKPOINT, load_robot_checkpoint

    params, config, _ = load_robot_checkpoint(Path(args.checkpoint) if args.checkpoint else SHIPPED_CHECKPOINT)
    model = _robot_overrides(args, config.model)
    _refuse_chip_only_flags(args, model.hardware)
    precision = _precision(args, "trained")
    result = evaluate(params, model, args.backend, args.tasks, args.seed, precision)
    result["provenance"] = _provenance(
        args, model.hardware, backend=args.backend, precision=precision if args.backend == "software" else None
    )
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['backend']} ({result['precision']}), {result['tasks']} unseen trajectories: Cartesian MSE "
        f"{result['mse_before']:.4f} ± {result['mse_before_ci95']:.4f} before → {result['mse_after']:.4f} ± "
        f"{result['mse_after_ci95']:.4f} m² after one update (ratio {result['mse_ratio_after_to_before']:.2f}); "
        f"mean distance {result['distance_cm_before']:.1f} → {result['distance_cm_after']:.1f} cm"
    )
    if result["devices_reprogrammed_mean"] is not None:
        print(
            f"devices re-programmed per update: {result['devices_reprogrammed_mean']:.0f} "
            f"({100 * result['devices_reprogrammed_fraction']:.2f} % of the trainee's devices); energy estimate "
            f"{result['energy_estimate_pJ_per_update'] / 1e3:.1f} nJ per update"
        )


def _robot_overrides(args: argparse.Namespace, model):
    """The checkpoint's robot config with ``--hardware``, ``--device`` and ``--angle-clipping`` applied."""
    changes = {"hardware": _hardware(args, model.hardware)}
    if args.angle_clipping is not None:
        changes["clip_predicted_angles"] = args.angle_clipping == "on"
    return dataclasses.replace(model, **changes)


def _robot_demo(args: argparse.Namespace) -> None:
    """Software vs chip on the same trajectories, with the figures and the GIF."""
    from l2l_pcm._io import atomic_write_text
    from l2l_pcm.robot.evaluate import animate_arm, evaluate, plot_spikes_and_signals, plot_trajectories
    from l2l_pcm.robot.train import SHIPPED_CHECKPOINT, load_robot_checkpoint

    params, config, _ = load_robot_checkpoint(Path(args.checkpoint) if args.checkpoint else SHIPPED_CHECKPOINT)
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
    paths = [
        plot_trajectories(targets, result, out / "robot_trajectory.png"),
        plot_spikes_and_signals(result, out / "robot_spikes.png"),
        animate_arm(config.model.arm_model, targets, result, out / "robot_arm.gif"),
        atomic_write_text(
            out / "robot_results.json",
            json.dumps(
                {"software": software, "chip": chip, "provenance": _provenance(args, model.hardware, backend="both")},
                indent=1,
            ),
        ),
    ]
    print("wrote: " + ", ".join(str(p) for p in paths))


def _export(args: argparse.Namespace) -> None:
    from l2l_pcm.checkpoint import checkpoint_kind
    from l2l_pcm.training import export_checkpoint

    changes = dict(args.set or [])
    config_from_json = None
    if changes:
        config_from_json = _config_classes().get(checkpoint_kind(args.source))
        if config_from_json is None:
            raise L2LPCMError(f"--set: {args.source} is not a checkpoint of a kind whose config l2l-pcm knows")
    print(export_checkpoint(args.source, args.destination, changes, config_from_json))


def _config_classes() -> dict:
    """Checkpoint kind -> the config parser that validates its config."""
    from l2l_pcm.fewshot import pretrain as fewshot_pretrain
    from l2l_pcm.fewshot import train as fewshot_train
    from l2l_pcm.fewshot.maml import MAMLConfig
    from l2l_pcm.robot import train as robot_train

    return {
        fewshot_train.CHECKPOINT_KIND: MAMLConfig.from_json,
        fewshot_pretrain.CHECKPOINT_KIND: fewshot_pretrain.PretrainConfig.from_json,
        robot_train.CHECKPOINT_KIND: robot_train.RobotTrainConfig.from_json,
    }


def _config_assignment(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` of ``export --set``; VALUE is JSON (0.35, true, null, "text") or else a plain string."""
    field, equals, value = text.partition("=")
    if not (equals and field.strip()):
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return field.strip(), json.loads(value)
    except json.JSONDecodeError:
        return field.strip(), value


def _read_json(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise L2LPCMError(f"config file not found: {path}") from None
    except OSError as exc:
        raise L2LPCMError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise L2LPCMError(f"config {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise L2LPCMError(f"config {path} must hold a JSON object of config fields, got {type(data).__name__}")
    return data


def _human_time(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def add_hardware_arguments(sub: argparse.ArgumentParser, default: str) -> None:
    sub.add_argument(
        "--hardware",
        metavar="FILE.json",
        help=f"hardware configuration: a JSON object of ChipConfig fields (device or profile name, update_step, "
        f"arrays, DAC/ADC, drift compensation, read-noise mode); missing fields take their defaults "
        f"(default: {default})",
    )
    sub.add_argument(
        "--device",
        metavar="NAME|FILE.json",
        help=f"device profile ({PROFILE_LIST}) or JSON file of PCMDevice fields, replacing the hardware's "
        f"device (default: {default})",
    )


def add_distributed_arguments(sub: argparse.ArgumentParser) -> None:
    group = sub.add_argument_group(
        "multi-process training",
        "run the same command once per process; the meta-batch is split over the processes and only "
        "process 0 writes. Without these flags, a SLURM job step of several tasks (srun) is joined "
        "automatically from its environment.",
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (same on every process)")
    group.add_argument("--num-processes", type=_positive_int, metavar="N", help="number of processes")
    group.add_argument("--process-id", type=_non_negative_int, metavar="I", help="this process's rank, 0..N-1")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error: ...`` line, like every other error."""

    def error(self, message: str):
        self.exit(2, f"error: {' '.join(message.split())} (see '{self.prog} --help')\n")

    def parse_args(self, args=None, namespace=None):
        """Unknown options are reported against the subcommand they were given to, with its help."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = getattr(parsed, "command_prog", self.prog)
            self.exit(2, f"error: unrecognized arguments: {' '.join(extras)} (see '{prog} --help')\n")
        return parsed


def add_train_arguments(
    sub: argparse.ArgumentParser, config_class: str, init_from: str | None = "start from this checkpoint's parameters"
) -> None:
    """Arguments every ``train`` command shares: run folder, config, length, seed, resume, processes;
    ``--init-from`` with this help, unless None."""
    sub.add_argument("--out", required=True, help="run folder (checkpoints and metrics)")
    sub.add_argument("--config", help=f"JSON file with {config_class} fields")
    sub.add_argument("--iterations", type=_positive_int, help="outer iterations (default: the config's)")
    sub.add_argument("--seed", type=_seed, help="training seed: tasks and noise of each iteration (default: config's)")
    sub.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    sub.add_argument("--overwrite", action="store_true", help="replace a run already in OUT (default: refuse)")
    if init_from:
        sub.add_argument("--init-from", help=f"{init_from} (fresh optimiser)")
    add_hardware_arguments(sub, "the config's")
    sub.add_argument("--no-progress", action="store_true", help="no progress bar (validation lines still print)")
    add_distributed_arguments(sub)


PRECISIONS = ("trained", "fp32", "4bit", "pcm")
"""One ``--precision`` vocabulary for both scenarios (the robot has no 4-bit model and refuses it)."""


def add_backend_arguments(sub: argparse.ArgumentParser, precision_default: str) -> None:
    """What both ``eval`` commands share: backend, software precision, the chip's age and compensation."""
    sub.add_argument(
        "--backend", choices=("software", "chip"), default="chip", help="software model or emulated chip (default)"
    )
    add_precision_argument(sub, precision_default)
    sub.add_argument(
        "--time-since-programming",
        type=_seconds,
        default=None,
        help="chip only: time between programming and use, e.g. 3600, 1h, 1d, 1y (default: the training value)",
    )
    sub.add_argument(
        "--drift-compensation",
        nargs="?",
        const="array",
        choices=("global", "array", "column"),
        help="chip only: drift compensation measured by calibration reads per array (the default when the flag "
        "is given alone) or per column, or 'global' (an oracle factor from the noise-free device state)",
    )
    sub.add_argument("--json", action="store_true", help="print one JSON object")


def add_sweep_arguments(sub: argparse.ArgumentParser, readout_axes: bool) -> None:
    """A sweep's axes: comma-separated lists; the grid is their product, every point on the same tasks."""
    sub.add_argument(
        "--times",
        type=_list_of(_seconds),
        help="times since programming, e.g. 1s,1min,1h,1d,1w,30d,1y (the default)",
    )
    sub.add_argument(
        "--compensation",
        type=_list_of(_choice(("none", "global", "array", "column"))),
        help="drift compensations to compare, e.g. none,array (default: the hardware's)",
    )
    if readout_axes:  # the few-shot readout: update budgets and readout scales
        sub.add_argument(
            "--budgets",
            type=_list_of(_non_negative_int),
            help="update budgets (readout weights changed per step; 0 = all), e.g. 4,8,16,24,0",
        )
        sub.add_argument(
            "--readout-scales",
            type=_list_of(_positive_float),
            help="readout weights per device weight unit, e.g. 1,0.5,0.25",
        )
    for name in ("dac", "adc"):
        sub.add_argument(
            f"--{name}-bits",
            type=_list_of(_bits),
            help=f"{name.upper()} resolutions, e.g. none,8,6 (none = ideal; ranges: the hardware's)",
        )
    sub.add_argument("--devices", type=_list_of(str), help="device profiles or JSON files, e.g. ibm,hermes")
    sub.add_argument("--out", default="outputs", help="folder for the sweep's JSON, CSV and plot (default: outputs/)")
    sub.add_argument("--json", action="store_true", help="print one JSON object with a 'points' list")


def _list_of(parse):
    def parse_list(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return [parse(item) for item in items]

    return parse_list


def _choice(choices: tuple[str, ...]):
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def _bits(text: str) -> int | None:
    if text == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 2 <= value <= 32:
        raise argparse.ArgumentTypeError(f"expected 'none' or an integer number of bits in 2..32, got {text!r}")
    return value


def add_precision_argument(sub: argparse.ArgumentParser, default: str) -> None:
    sub.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="software only: the weights the model is run with: 'trained' (whatever the checkpoint was "
        "meta-trained with), 'fp32' (exact), '4bit' (few-shot only) or 'pcm' (the software PCM device model); "
        f"default {default}",
    )


def build_parser() -> argparse.ArgumentParser:
    from l2l_pcm import __version__

    parser = _Parser(
        prog="l2l-pcm",
        description="Learning-to-learn on emulated phase-change-memory chips: few-shot Omniglot (MAML) and "
        "robot-arm motor learning (natural e-prop). Each command has its own --help.",
    )
    parser.add_argument("--version", action="version", version=f"l2l-pcm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    chip = commands.add_parser("chip", help="the emulated PCM chip").add_subparsers(dest="chip_command", required=True)
    stats = chip.add_parser("stats", help="sampled device statistics vs. their equations")
    stats.add_argument("--json", action="store_true", help='print one JSON object {"rows": [...]}')
    stats.add_argument("--samples", type=_positive_int, default=100_000, help="samples per conductance (default 1e5)")
    stats.add_argument("--seed", type=_seed, default=0, help="random seed of the sampled devices (default 0)")
    stats.add_argument(
        "--device", metavar="NAME|FILE.json", help=f"device profile ({PROFILE_LIST}) or a JSON file of fields"
    )
    stats.set_defaults(run=_chip_stats)
    demo = chip.add_parser("demo", help="drift over 1 s … 1 day and devices touched by an update; writes a plot")
    demo.add_argument("--out", default="outputs", help="folder for the plot (default: outputs/)")
    demo.add_argument("--seed", type=_seed, default=0, help="random seed of the programmed devices (default 0)")
    demo.set_defaults(run=_chip_demo)

    fewshot = commands.add_parser("fewshot", help="few-shot Omniglot with MAML").add_subparsers(
        dest="fewshot_command", required=True
    )
    train = fewshot.add_parser("train", help="meta-train in software (checkpoints, metrics, resume)")
    add_train_arguments(
        train, "MAMLConfig", "start from a few-shot checkpoint's parameters or a 'fewshot pretrain' run's conv body"
    )
    train.add_argument(
        "--variant",
        choices=("fp32", "4bit", "pcm"),
        help="weights seen in training: 32-bit, 4-bit, or the PCM device model (default: the config's)",
    )
    train.add_argument("--meta-batch", type=_positive_int, help="tasks per outer iteration (default: config's)")
    train.add_argument("--data-dir", help="Omniglot folder (default: $L2L_PCM_DATA, ../shared/data/omniglot)")
    train.set_defaults(run=_fewshot_train)

    pretrain = fewshot.add_parser(
        "pretrain",
        help="supervised pre-training of the conv body on all meta-training classes (then: train --init-from)",
    )
    add_train_arguments(pretrain, "PretrainConfig", init_from=None)
    pretrain.add_argument("--data-dir", help="Omniglot folder (default: $L2L_PCM_DATA, ../shared/data/omniglot)")
    pretrain.set_defaults(run=_fewshot_pretrain)

    def add_eval_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--checkpoint", help="few-shot checkpoint (default: the shipped one)")
        sub.add_argument("--tasks", type=_positive_int, default=600, help="unseen tasks (default 600)")
        sub.add_argument("--queries", type=_positive_int, default=15, help="query images per class (default 15)")
        sub.add_argument(
            "--shots",
            type=_positive_int,
            metavar="K",
            help="labelled images per class in each task, K + queries <= 20 (default: the checkpoint's, 5)",
        )
        sub.add_argument(
            "--ways",
            type=_positive_int,
            metavar="N",
            help="classes per task; must equal the readout's outputs (default: the checkpoint's, 5)",
        )
        sub.add_argument("--seed", type=_seed, default=0, help="task seed: same seed, same tasks on every backend")
        sub.add_argument("--data-dir", help="Omniglot folder (default: $L2L_PCM_DATA, ../shared/data/omniglot)")
        sub.add_argument(
            "--alphabets",
            choices=("evaluation", "validation"),
            default="evaluation",
            help="tasks from the evaluation alphabets (the test set; default) or from the background alphabets "
            "meta-training held out for validation, where deployment settings are chosen",
        )
        sub.add_argument(
            "--update-budget",
            type=_non_negative_int,
            metavar="N",
            help="readout weights changed per inner step, largest updates first (default: the checkpoint's; 0 = all)",
        )
        sub.add_argument(
            "--readout-scale",
            type=_positive_float,
            metavar="S",
            help="readout weight per device weight unit: range ±S·w_max, update step S/16 (default: the "
            "checkpoint's; 1 = the authors' mapping)",
        )
        sub.add_argument(
            "--normalisation",
            choices=("support", "per_set"),
            help="support statistics (no leak between queries) or the authors' per-set rule "
            "(default: the checkpoint's)",
        )
        add_hardware_arguments(sub, "the checkpoint's")

    evaluate = fewshot.add_parser("eval", help="meta-test accuracy on unseen tasks, software or chip")
    add_eval_arguments(evaluate)
    add_backend_arguments(evaluate, "fp32")
    evaluate.set_defaults(run=_fewshot_eval)
    sweep_fs = fewshot.add_parser(
        "sweep", help="chip accuracy over time since programming, compensation, budgets, bits, devices"
    )
    add_eval_arguments(sweep_fs)
    add_sweep_arguments(sweep_fs, readout_axes=True)
    sweep_fs.set_defaults(run=_fewshot_sweep, tasks=200)
    demo_fs = fewshot.add_parser("demo", help="software 32-bit / 4-bit / chip on the same tasks, with plots")
    add_eval_arguments(demo_fs)
    demo_fs.add_argument("--out", default="outputs", help="folder for plots and results (default: outputs/)")
    demo_fs.set_defaults(run=_fewshot_demo)

    robot = commands.add_parser("robot", help="robot-arm motor learning with natural e-prop").add_subparsers(
        dest="robot_command", required=True
    )
    robot_train = robot.add_parser("train", help="meta-train trainee initial weights and the LSG (BPTT)")
    add_train_arguments(robot_train, "RobotTrainConfig")
    robot_train.add_argument("--batch", type=_positive_int, help="trajectories per outer iteration")
    robot_train.add_argument(
        "--arm", choices=("scorbot", "two_link"), help="Scorbot ER-VII or the planar 2-link arm (default: config's)"
    )
    robot_train.add_argument("--software-only", action="store_true", help="meta-train without the PCM model")
    robot_train.set_defaults(run=_robot_train)

    def add_robot_eval_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--checkpoint", help="robot checkpoint (default: the shipped one)")
        sub.add_argument("--tasks", type=_positive_int, default=200, help="unseen trajectories (default 200)")
        sub.add_argument("--seed", type=_seed, default=0, help="trajectory seed: same seed, same trajectories")
        add_hardware_arguments(sub, "the checkpoint's")
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

    imports = commands.add_parser(
        "import-authors", help="convert the authors' pretrained pickle into an l2l-pcm checkpoint (safely)"
    )
    imports.add_argument("scenario", choices=("fewshot", "robot"), help="which of the authors' two models")
    imports.add_argument("source", help="the authors' pretrained-weights.pickle")
    imports.add_argument("destination", help="l2l-pcm checkpoint to write (.safetensors)")
    imports.set_defaults(run=_import_authors)

    export = commands.add_parser("export", help="copy a training checkpoint without optimiser state")
    export.add_argument("source", help="training checkpoint (last.safetensors or best.safetensors)")
    export.add_argument("destination", help="checkpoint to write, parameters and config only")
    export.add_argument(
        "--set",
        action="append",
        type=_config_assignment,
        metavar="FIELD=VALUE",
        help="change a config field of the copy (a deployment setting, e.g. readout_scale=0.35, or a path into "
        "the hardware tree, e.g. hardware.forward.dac_bits=8); checked by the checkpoint's config class and "
        "recorded as export_changes; repeatable",
    )
    export.set_defaults(run=_export)
    _remember_subcommands(parser)
    return parser


def _remember_subcommands(parser: argparse.ArgumentParser) -> None:
    """Every subcommand records its name, so errors point at that subcommand's --help."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(command_prog=sub.prog)
                _remember_subcommands(sub)


def _bounded(convert, minimum: float, description: str):
    """An argparse type: ``convert(text)``, finite and >= ``minimum``, else a one-line usage error."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None
        if not (math.isfinite(value) and value >= minimum):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value

    return parse


_positive_int = _bounded(int, 1, "a positive integer")
_non_negative_int = _bounded(int, 0, "an integer >= 0")
_non_negative_float = _bounded(float, 0, "a finite number >= 0")
_positive_float = _bounded(float, math.nextafter(0.0, 1.0), "a finite number > 0")  # the smallest float > 0

TIME_UNITS_S = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0, "y": 365 * 86400.0}


def _seconds(text: str) -> float:
    """A duration: seconds as a plain number, or with a unit ``90s``, ``10min``, ``1h``, ``1d``, ``1w``, ``1y``."""
    stripped = text.strip()
    for unit in sorted(TIME_UNITS_S, key=len, reverse=True):
        if stripped.endswith(unit) and stripped[: -len(unit)].strip():
            number, scale = stripped[: -len(unit)].strip(), TIME_UNITS_S[unit]
            break
    else:
        number, scale = stripped, 1.0
    try:
        value = float(number) * scale
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(
            f"expected a duration >= 0 (seconds, or with a unit: {', '.join(TIME_UNITS_S)}), got {text!r}"
        )
    return value


def _seed(text: str) -> int:
    try:
        return check_seed("seed", int(text))
    except (ValueError, L2LPCMError):
        raise argparse.ArgumentTypeError(f"expected an integer in 0..{SEED_MAX}, got {text!r}") from None


COMPILATION_CACHE_ENV = "L2L_PCM_COMPILATION_CACHE"
"""A folder for JAX's persistent compilation cache, or "off"; default ``$XDG_CACHE_HOME/l2l-pcm/jax``
(``~/.cache/l2l-pcm/jax``)."""


def _use_compilation_cache() -> None:
    """Keep compiled computations across runs (JAX's persistent compilation cache): a repeated command
    starts in seconds instead of recompiling every jitted function (measured: a 10-task chip eval of the
    shipped few-shot model, 30 s cold, 5.8 s on the second run; identical results)."""
    setting = os.environ.get(COMPILATION_CACHE_ENV, "")
    if setting.lower() == "off":
        return
    import jax

    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    folder = Path(setting) if setting else cache_home / "l2l-pcm" / "jax"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # an unwritable home: run without the cache rather than fail
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # eager operations compile in ~0.1 s each, and there are many: keep them too (1.8 MB for a few-shot eval)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _use_compilation_cache()
    from l2l_pcm.training import TrainingStopped

    try:
        args.run(args)
    except TrainingStopped as exc:
        print(str(exc), file=sys.stderr)
        return 130
    except L2LPCMError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever the message
        return 2
    except OSError as exc:  # a file operation the library did not wrap: still one line, never a traceback
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
