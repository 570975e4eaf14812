"""``l2l-pcm fewshot``: meta-training, pretraining, evaluation, sweeps and the demo."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
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
    non_negative_int,
    point_hardware,
    positive_float,
    positive_int,
    print_summary,
    refuse_chip_only_flags,
    seed_arg,
    starting_config,
    sweep_axes,
    write_per_task,
)
from l2l_pcm.errors import L2LPCMError


def _fewshot_train(args: argparse.Namespace) -> None:
    import dataclasses

    join_cluster(args)
    from l2l_pcm.fewshot.train import CHECKPOINT_KIND, FewshotTrainConfig, train

    config = starting_config(args, CHECKPOINT_KIND, FewshotTrainConfig.from_json, FewshotTrainConfig())
    model = {name: getattr(args, name) for name in ("variant", "meta_batch") if getattr(args, name) is not None}
    model["hardware"] = command_hardware(args, config.model.hardware)
    run = {name: getattr(args, name) for name in ("iterations", "seed") if getattr(args, name) is not None}
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, **model), **run)
    summary = train(
        config,
        args.out,
        data_dir=args.data_dir,
        resume=args.resume,
        progress=not args.no_progress,
        init_from=args.init_from,
        overwrite=args.overwrite,
        tensorboard=args.tensorboard,
    )
    print_summary(summary)


def _fewshot_pretrain(args: argparse.Namespace) -> None:
    import dataclasses

    join_cluster(args)
    from l2l_pcm.fewshot.pretrain import CHECKPOINT_KIND, PretrainConfig, pretrain

    config = starting_config(args, CHECKPOINT_KIND, PretrainConfig.from_json, PretrainConfig())
    overrides = {name: getattr(args, name) for name in ("iterations", "seed")}
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    fewshot = dataclasses.replace(config.fewshot, hardware=command_hardware(args, config.fewshot.hardware))
    summary = pretrain(
        dataclasses.replace(config, fewshot=fewshot),
        args.out,
        data_dir=args.data_dir,
        resume=args.resume,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        tensorboard=args.tensorboard,
    )
    print_summary(summary)


def _load_fewshot(args: argparse.Namespace):
    from l2l_pcm.fewshot.omniglot import load_omniglot, split_background
    from l2l_pcm.fewshot.train import load_learner

    path = checkpoint_path(args)
    params, config, metadata = load_learner(path)
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
    if getattr(args, "backend", "chip") == "chip":  # the software model takes it as evaluate_software(hardware=)
        config = dataclasses.replace(config, hardware=command_hardware(args, config.hardware))
    if args.alphabets == "validation":  # the meta-training run's held-out background alphabets
        images = split_background(load_omniglot("background", args.data_dir))[1]
    else:
        images = load_omniglot("evaluation", args.data_dir)
    return params, config, metadata, images


def _refuse_what_fp32_ignores(args: argparse.Namespace, precision: str) -> None:
    """The fp32 software model has no devices: it keeps the readout as it is (no range, no grid) and reads no
    device model, so a readout scale, a device or a hardware file given for it could not take effect."""
    if args.backend != "software" or precision != "fp32":
        return
    for flag, given in (
        ("--readout-scale", args.readout_scale is not None),
        ("--device", args.device is not None),
        ("--hardware", args.hardware is not None),
    ):
        if given:
            raise L2LPCMError(
                f"{flag} does not apply to the fp32 software model (it has no devices); evaluate with "
                "--precision pcm or 4bit, or --backend chip"
            )


def _fewshot_eval(args: argparse.Namespace) -> None:
    from l2l_pcm.fewshot.evaluate import evaluate_chip, evaluate_software

    params, config, _, images = _load_fewshot(args)
    refuse_chip_only_flags(args)
    precision = command_precision(args, "fp32")
    variant = config.variant if precision == "trained" else precision
    _refuse_what_fp32_ignores(args, variant)
    if args.backend == "chip":
        result = evaluate_chip(
            params,
            config,
            images,
            args.tasks,
            args.queries,
            args.seed,
            progress=not args.json,
            chips=args.chips,
        )
    else:
        hardware = command_hardware(args, config.hardware)
        result = evaluate_software(params, config, images, args.tasks, precision, args.queries, args.seed, hardware)
        config = dataclasses.replace(config, hardware=hardware)
    hardware_used = None if args.backend == "software" and variant == "fp32" else config.hardware  # what took effect
    result["provenance"] = command_provenance(
        args, hardware_used, backend=args.backend, precision=precision if args.backend == "software" else None
    )
    for line in result.get("warnings", []):  # on stderr, so --json output stays one object
        print(f"warning: {line}", file=sys.stderr)
    write_per_task(args, result, result["provenance"])
    if args.json:
        print(json.dumps(result))
        return
    steps = " → ".join(f"{100 * a:.1f}" for a in result["accuracy_per_step"])
    print(
        f"{result['backend']}: {100 * result['accuracy_mean']:.2f} ± {100 * result['accuracy_ci95']:.2f} % "
        f"over {result['tasks']} tasks (per inner step: {steps})"
    )
    if result.get("chips", 1) > 1:
        print(
            f"{result['chips']} chips × {result['tasks']} tasks: chip means "
            + ", ".join(f"{100 * a:.2f}" for a in result["accuracy_per_chip"])
            + f" %; spread between chips (std) {100 * result['accuracy_between_chips_std']:.2f} points, between "
            f"tasks {100 * result['accuracy_between_tasks_std']:.2f}; the ± above counts both (tasks only: "
            f"± {100 * result['accuracy_ci95_tasks_only']:.2f})"
        )
    if result.get("devices_reprogrammed_mean") is not None:
        print(
            f"programming operations per task: mean {result['devices_reprogrammed_mean']:.1f}, max "
            f"{result['devices_reprogrammed_max']} ({100 * result['devices_reprogrammed_fraction']:.1f} % of the "
            f"{result['adapted_devices']} devices of the adapted layers; distinct devices "
            f"{100 * result['unique_devices_reprogrammed_fraction']:.1f} %); energy estimate "
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


def _fewshot_sweep(args: argparse.Namespace) -> None:
    from l2l_pcm import sweep
    from l2l_pcm.fewshot.evaluate import evaluate_chip, software_reference

    params, config, _, images = _load_fewshot(args)
    points = sweep.grid(sweep_axes(args, config.hardware, readout_axes=True))
    hardware = [point_hardware(config.hardware, point) for point in points]  # every point checked first

    def evaluate_point(point: dict) -> dict:
        changes = {"hardware": hardware[points.index(point)]}
        changes.update({name: point[name] for name in ("update_budget", "readout_scale") if name in point})
        point_config = dataclasses.replace(config, **changes)
        return evaluate_chip(params, point_config, images, args.tasks, args.queries, args.seed)

    per_task = args.per_task is not None
    rows = sweep.run(points, evaluate_point, FEWSHOT_SWEEP_METRICS, progress=not args.json, per_task=per_task)
    plot = {"metric": "accuracy_mean", "ci": "accuracy_ci95", "y_scale": 100.0, "tasks": args.tasks}
    plot["ylabel"] = f"query accuracy after {config.inner_steps} inner steps (%)"
    plot["reference"] = software_reference(params, config, images, args.tasks, args.queries, args.seed)
    plot["title"] = f"{config.ways}-way {config.shots}-shot Omniglot on the emulated PCM chip"
    finish_sweep(args, rows, "fewshot_sweep", config.hardware, plot)


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
        stage_description,
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
        f"chip: {chip['devices_reprogrammed_mean']:.1f} programming operations per task "
        f"({100 * chip['devices_reprogrammed_fraction']:.1f} % of the adapted layers' {chip['adapted_devices']})"
    )
    paths = [plot_inner_step_curves(results, out / "fewshot_inner_steps.png")]
    if metadata.get("metrics"):
        record, trained = training_record(metadata), metadata.get("config", {})  # as trained, before any flag
        labels = {}
        if "variant" in trained and record:  # the checkpoint's own stage, the last; earlier ones are not stored
            labels[record[-1]["stage"]] = stage_description(trained["variant"], trained.get("update_budget"))
        validation_tasks = trained.get("validation_tasks")
        paths.append(plot_training_curves(record, out / "fewshot_training.png", labels, validation_tasks))
    sampler = TaskSampler(images, config.ways, config.shots, args.queries)
    sx, sy, qx, qy = (a[0] for a in sampler.sample(args.seed + 99, 1))
    learner = ChipFewShotLearner(params, config, jax.random.PRNGKey(args.seed))
    task = learner.adapt(sx, sy, qx, qy, jax.random.PRNGKey(args.seed + 1))
    paths.append(
        plot_example_task(sx, sy, qx, qy, np.asarray(task.predictions), out / "fewshot_example_task.png", config.ways)
    )
    from l2l_pcm._io import atomic_write_text

    record = {**results, "provenance": command_provenance(args, config.hardware, backend="software+chip")}
    paths.append(atomic_write_text(out / "fewshot_results.json", json.dumps(record, indent=1)))
    print("wrote: " + ", ".join(str(p) for p in paths))


def _learner_assignment(text: str) -> tuple[str, str]:
    """``METHOD=PATH`` of ``baselines --learner``."""
    method, equals, path = text.partition("=")
    if not (equals and method.strip() and path.strip()):
        raise argparse.ArgumentTypeError(f"expected METHOD=CHECKPOINT, got {text!r}")
    return method.strip(), path.strip()


def _name_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return names


def _fewshot_baselines(args: argparse.Namespace) -> None:
    """Every method on the same unseen tasks, software and chip: a table (or JSON) and a figure."""
    from l2l_pcm.fewshot.baselines import compare, learner_paths, plot_baselines
    from l2l_pcm.fewshot.maml import METHODS
    from l2l_pcm.fewshot.omniglot import load_omniglot

    overrides = dict(args.learner or [])
    if len(overrides) != len(args.learner or []):
        raise L2LPCMError("--learner: a method was given more than once")
    paths = learner_paths(overrides, args.methods or METHODS)
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise L2LPCMError(f"learner checkpoint(s) not found: {', '.join(missing)}")
    images = load_omniglot("evaluation", args.data_dir)
    result = compare(paths, images, args.tasks, args.backends, args.queries, args.seed, progress=not args.json)
    from l2l_pcm.provenance import run_provenance

    result["provenance"] = run_provenance(seed=args.seed, tasks=args.tasks, backends=list(args.backends))
    for row in result["rows"]:
        for line in row.get("warnings") or []:
            print(f"warning: {row['method']} on {row['backend']}: {line}", file=sys.stderr)
    if args.plot:
        print(f"wrote: {plot_baselines(result, args.plot)}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result))
        return
    header = ("method", "backend", "accuracy (%)", "devices/task", "of layers", "energy (nJ)")
    print("{:>10} {:>8} {:>15} {:>13} {:>9} {:>12}".format(*header))
    for row in result["rows"]:
        chip = row["backend"] == "chip"
        devices = f"{row['devices_reprogrammed_mean']:.1f}" if chip else "-"
        fraction = f"{100 * row['devices_reprogrammed_fraction']:.1f} %" if chip else "-"
        energy = f"{row['energy_estimate_pJ_per_adaptation'] / 1e3:.1f}" if chip else "-"
        accuracy = f"{100 * row['accuracy_mean']:.2f} ± {100 * row['accuracy_ci95']:.2f}"
        print(f"{row['method']:>10} {row['backend']:>8} {accuracy:>15} {devices:>13} {fraction:>9} {energy:>12}")


def add_commands(commands) -> None:
    """The ``fewshot`` subcommands: train, pretrain, eval, sweep and demo."""
    fewshot = commands.add_parser("fewshot", help="few-shot Omniglot with MAML").add_subparsers(
        dest="fewshot_command", required=True
    )
    train = fewshot.add_parser("train", help="meta-train in software (checkpoints, metrics, resume)")
    add_train_arguments(
        train,
        "FewshotTrainConfig",
        "start from a few-shot checkpoint's parameters or a 'fewshot pretrain' run's conv body",
    )
    train.add_argument(
        "--variant",
        choices=("fp32", "4bit", "pcm"),
        help="weights seen in training: 32-bit, 4-bit, or the PCM device model (default: the config's)",
    )
    train.add_argument("--meta-batch", type=positive_int, help="tasks per outer iteration (default: config's)")
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
        sub.add_argument("--tasks", type=positive_int, default=600, help="unseen tasks (default 600)")
        sub.add_argument("--queries", type=positive_int, default=15, help="query images per class (default 15)")
        sub.add_argument(
            "--shots",
            type=positive_int,
            metavar="K",
            help="labelled images per class in each task, K + queries <= 20 (default: the checkpoint's, 5)",
        )
        sub.add_argument(
            "--ways",
            type=positive_int,
            metavar="N",
            help="classes per task; must equal the readout's outputs (default: the checkpoint's, 5)",
        )
        sub.add_argument("--seed", type=seed_arg, default=0, help="task seed: same seed, same tasks on every backend")
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
            type=non_negative_int,
            metavar="N",
            help="readout weights changed per inner step, largest updates first (default: the checkpoint's; 0 = all)",
        )
        sub.add_argument(
            "--readout-scale",
            type=positive_float,
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

    baselines = fewshot.add_parser(
        "baselines",
        help="MAML, ANIL-style MAML, Meta-SGD, ProtoNet and fine-tuning on the same unseen tasks, software and chip",
    )
    baselines.add_argument("--tasks", type=positive_int, default=600, help="unseen tasks (default 600)")
    baselines.add_argument("--queries", type=positive_int, default=15, help="query images per class (default 15)")
    baselines.add_argument("--seed", type=seed_arg, default=0, help="task seed (the same tasks for every method)")
    baselines.add_argument(
        "--methods", type=_name_list, metavar="A,B", help="methods to compare (default: all shipped learners)"
    )
    baselines.add_argument(
        "--backends", type=_name_list, default=("software", "chip"), metavar="A,B", help="software, chip (default both)"
    )
    baselines.add_argument(
        "--learner",
        type=_learner_assignment,
        action="append",
        metavar="METHOD=CHECKPOINT",
        help="evaluate this checkpoint for METHOD instead of the shipped one (repeatable)",
    )
    baselines.add_argument("--plot", metavar="FILE.png", help="write the comparison figure here")
    baselines.add_argument("--json", action="store_true", help='print one JSON object {"rows": [...]}')
    baselines.add_argument("--data-dir", help="Omniglot folder (default: $L2L_PCM_DATA, ../shared/data/omniglot)")
    baselines.set_defaults(run=_fewshot_baselines)
