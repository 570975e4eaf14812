"""What the commands share: argument types, shared arguments, the hardware a command uses and the
rules the command line adds to the library's (e.g. a flag that cannot apply is an error), sweeps."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from l2l_pcm.errors import SEED_MAX, L2LPCMError, check_seed
from l2l_pcm.vocabulary import CONVERTER_BITS, DEVICE_PROFILE_NAMES, DRIFT_COMPENSATIONS, PRECISIONS

PROFILE_LIST = ", ".join(DEVICE_PROFILE_NAMES)


def device_arg(spec: str):
    """``--device NAME|FILE.json``: a named profile or a JSON object of PCMDevice fields."""
    from l2l_pcm.pcm import DEVICE_PROFILES, device_from_json

    if spec in DEVICE_PROFILES:
        return DEVICE_PROFILES[spec]
    if spec.endswith(".json") or Path(spec).exists():
        return device_from_json(read_json(spec))
    raise L2LPCMError(f"--device: {spec!r} is neither a profile ({', '.join(DEVICE_PROFILES)}) nor a JSON file")


def command_hardware(args: argparse.Namespace, current):
    """The hardware a command uses: the checkpoint's/config's ``current`` tree, with ``--hardware
    FILE.json`` laid over it (a partial tree; settings it leaves out keep the current ones), then
    ``--device``, ``--drift-compensation`` and ``--time-since-programming`` (the deployment age) set in
    it. The library checks the result (e.g. a fixed-age device refuses a deployment age)."""
    hardware = current
    if getattr(args, "hardware", None) is not None:
        hardware = hardware.updated(read_json(args.hardware), f"--hardware {args.hardware}")
    settings = {}
    if getattr(args, "device", None) is not None:
        settings["device"] = device_arg(args.device)
    if getattr(args, "drift_compensation", None):
        settings["drift_compensation"] = args.drift_compensation
    if getattr(args, "time_since_programming", None) is not None and args.backend == "chip":
        settings["clock.deployment_age_s"] = args.time_since_programming
    return hardware.with_settings(settings) if settings else hardware


def refuse_chip_only_flags(args: argparse.Namespace) -> None:
    """Flags that change only the chip are errors with the software backend (they could not take effect).
    Settings of a ``--hardware`` file are checked by the library (``ChipConfig.for_software_model``)."""
    if args.backend == "chip":
        return
    for flag, given in (
        ("--time-since-programming", args.time_since_programming is not None),
        ("--drift-compensation", args.drift_compensation),
        ("--chips", getattr(args, "chips", 1) != 1),
    ):
        if given:
            raise L2LPCMError(f"{flag} applies to the chip only; add --backend chip or leave it out")


def command_precision(args: argparse.Namespace, software_default: str) -> str:
    """``--precision`` is a software setting: refused with the chip (which has its own device physics)."""
    if args.backend == "chip" and args.precision is not None:
        raise L2LPCMError("--precision applies to the software backend only; the chip runs its own device model")
    return args.precision or software_default


def checkpoint_path(args: argparse.Namespace) -> Path:
    """The checkpoint an ``eval``/``demo``/``sweep`` loads: ``--checkpoint``, or the scenario's shipped one
    when the flag is not given. An empty path (an unset shell variable) is refused, not read as "not given"."""
    if args.checkpoint is not None:
        if not args.checkpoint.strip():
            raise L2LPCMError("--checkpoint is empty (an unset variable?); leave it out for the shipped checkpoint")
        return Path(args.checkpoint)
    if args.command == "fewshot":
        from l2l_pcm.fewshot.train import SHIPPED_CHECKPOINT
    else:
        from l2l_pcm.robot.train import SHIPPED_CHECKPOINT
    return SHIPPED_CHECKPOINT


def starting_config(args: argparse.Namespace, kind: str, from_json, default):
    """The config a ``train`` command starts from: ``--config``; on ``--resume`` without it, the run's own
    (stored in OUT/last.safetensors, so a resumed run needs no config file); else the defaults."""
    if args.config:
        return from_json(read_json(args.config))
    if args.resume:
        from l2l_pcm.training import LAST, checkpoint_config

        last = Path(args.out) / LAST
        if last.is_file():
            return checkpoint_config(last, kind, from_json)[0]
    return default


def command_provenance(args: argparse.Namespace, hardware, **settings) -> dict:
    from l2l_pcm.provenance import provenance

    checkpoint = checkpoint_path(args)
    asked = {
        "seed": args.seed,
        "tasks": args.tasks,
        "time_since_programming_s_asked": getattr(args, "time_since_programming", None),
        "drift_compensation": getattr(args, "drift_compensation", None),
    }
    if getattr(args, "alphabets", None):
        asked["alphabets"] = args.alphabets
    return provenance(checkpoint, hardware, **asked, **settings)


def join_cluster(args: argparse.Namespace) -> None:
    """Join a multi-process run (flags, or a SLURM job step) before any JAX computation."""
    from l2l_pcm import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def print_summary(summary: dict) -> None:
    from l2l_pcm import distributed

    if distributed.is_main():
        print(json.dumps(summary))


SWEEP_HARDWARE_AXES = {
    "time_since_programming_s": "clock.deployment_age_s",
    "drift_compensation": "drift_compensation",
    "dac_bits": "forward.dac_bits",
    "adc_bits": "forward.adc_bits",
}
"""Sweep axes that are hardware settings, and their home in the tree."""


def sweep_axes(args: argparse.Namespace, hardware, readout_axes: bool) -> dict:
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
        fixed = (device_arg(device) if device else hardware.device).fixed_age_s
        if fixed is not None and len(axes["time_since_programming_s"]) > 1:
            raise L2LPCMError(
                f"device {device or 'of the hardware'} reads every device at a fixed age of {fixed:g} s (the "
                "authors' convention): a sweep over time since programming cannot apply to it"
            )
    return axes


def point_hardware(hardware, point: dict):
    """The hardware of one sweep point: the base with the point's age, compensation, bits and device."""
    settings = {home: point[axis] for axis, home in SWEEP_HARDWARE_AXES.items() if axis in point}
    if "device" in point:
        settings["device"] = device_arg(point["device"])
    return hardware.with_settings(settings)


def finish_sweep(args, rows: list[dict], stem: str, hardware, plot_args: dict) -> None:
    from l2l_pcm import sweep

    record_provenance = command_provenance(
        args, hardware, backend="chip", sweep_axes=sorted({k for r in rows for k in r})
    )
    out = Path(args.out)
    per_task = [task for row in rows for task in row.pop("per_task", [])]
    if getattr(args, "per_task", None) is not None and per_task:
        write_per_task(args, {"per_task": per_task}, record_provenance)
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


MAX_CONFIG_BYTES = 1 << 20
"""The largest JSON config read (1 MiB; a config is a few kB): ``/dev/zero`` or a data file given by
mistake is refused instead of read without end."""


def read_json(path: str) -> dict:
    """A JSON object from a config file (``--config``, ``--hardware``, ``--device``), one error line otherwise."""
    if not str(path).strip():
        raise L2LPCMError("a config path is empty (an unset variable?)")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise L2LPCMError(f"config {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config file")
        data = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise L2LPCMError(f"config file not found: {path}") from None
    except OSError as exc:
        raise L2LPCMError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise L2LPCMError(f"config {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise L2LPCMError(f"config {path} must hold a JSON object of config fields, got {type(data).__name__}")
    return data


def human_time(seconds: float) -> str:
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
    group.add_argument("--num-processes", type=positive_int, metavar="N", help="number of processes")
    group.add_argument("--process-id", type=non_negative_int, metavar="I", help="this process's rank, 0..N-1")


def add_train_arguments(
    sub: argparse.ArgumentParser, config_class: str, init_from: str | None = "start from this checkpoint's parameters"
) -> None:
    """Arguments every ``train`` command shares: run folder, config, length, seed, resume, processes;
    ``--init-from`` with this help, unless None."""
    sub.add_argument("--out", required=True, help="run folder (checkpoints and metrics)")
    sub.add_argument("--config", help=f"JSON file with {config_class} fields")
    sub.add_argument("--iterations", type=positive_int, help="outer iterations (default: the config's)")
    sub.add_argument(
        "--seed", type=seed_arg, help="training seed: tasks and noise of each iteration (default: config's)"
    )
    sub.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    sub.add_argument("--overwrite", action="store_true", help="replace a run already in OUT (default: refuse)")
    if init_from:
        sub.add_argument("--init-from", help=f"{init_from} (fresh optimiser)")
    add_hardware_arguments(sub, "the config's")
    sub.add_argument("--no-progress", action="store_true", help="no progress bar (validation lines still print)")
    sub.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also write every validation row as TensorBoard event files to DIR (needs: pip install "
        "'l2l-pcm[tensorboard]'); metrics.csv/json are written either way",
    )
    add_distributed_arguments(sub)


def add_backend_arguments(sub: argparse.ArgumentParser, precision_default: str) -> None:
    """What both ``eval`` commands share: backend, software precision, the chip's age and compensation."""
    sub.add_argument(
        "--backend", choices=("software", "chip"), default="chip", help="software model or emulated chip (default)"
    )
    add_precision_argument(sub, precision_default)
    sub.add_argument(
        "--time-since-programming",
        type=seconds_arg,
        default=None,
        help="chip only: time between programming and use, e.g. 3600, 1h, 1d, 1y (default: the training value)",
    )
    sub.add_argument(
        "--drift-compensation",
        nargs="?",
        const="array",
        choices=DRIFT_COMPENSATIONS[1:],
        help="chip only: drift compensation measured by calibration reads per array (the default when the flag "
        "is given alone) or per column, or 'global' (an oracle factor from the noise-free device state)",
    )
    sub.add_argument(
        "--chips",
        type=positive_int,
        default=1,
        metavar="N",
        help="chip only: program N chip instances (each its own programming noise and drift) and run the same "
        "tasks on each; reports the spread between chips apart from the spread between tasks (default 1)",
    )
    add_per_task_argument(sub)
    sub.add_argument("--json", action="store_true", help="print one JSON object (without the per-task rows)")


def add_per_task_argument(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--per-task",
        type=per_task_path,
        metavar="FILE",
        help="also write one row per task (and chip, and sweep point) to FILE.csv or FILE.json",
    )


def per_task_path(text: str):
    from l2l_pcm.statistics import check_per_task_path

    try:
        return check_per_task_path(text)
    except L2LPCMError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def write_per_task(args: argparse.Namespace, result: dict, provenance: dict | None = None) -> None:
    """Move ``result["per_task"]`` to ``--per-task FILE`` when given (it is never printed with ``--json``)."""
    from l2l_pcm import statistics

    rows = result.pop("per_task", None)
    if getattr(args, "per_task", None) is not None and rows:
        path = statistics.write_per_task(args.per_task, rows, provenance)
        print(f"wrote {len(rows)} per-task rows to {path}", file=sys.stderr)


def add_sweep_arguments(sub: argparse.ArgumentParser, readout_axes: bool) -> None:
    """A sweep's axes: comma-separated lists; the grid is their product, every point on the same tasks."""
    sub.add_argument(
        "--times",
        type=list_of(seconds_arg),
        help="times since programming, e.g. 1s,1min,1h,1d,1w,30d,1y (the default)",
    )
    sub.add_argument(
        "--compensation",
        type=list_of(choice_arg(DRIFT_COMPENSATIONS)),
        help="drift compensations to compare, e.g. none,array (default: the hardware's)",
    )
    if readout_axes:  # the few-shot readout: update budgets and readout scales
        sub.add_argument(
            "--budgets",
            type=list_of(non_negative_int),
            help="update budgets (readout weights changed per step; 0 = all), e.g. 4,8,16,24,0",
        )
        sub.add_argument(
            "--readout-scales",
            type=list_of(positive_float),
            help="readout weights per device weight unit, e.g. 1,0.5,0.25",
        )
    for name in ("dac", "adc"):
        sub.add_argument(
            f"--{name}-bits",
            type=list_of(bits_arg),
            help=f"{name.upper()} resolutions, e.g. none,8,6 (none = ideal; ranges: the hardware's)",
        )
    sub.add_argument("--devices", type=list_of(str), help="device profiles or JSON files, e.g. ibm,hermes")
    sub.add_argument("--out", default="outputs", help="folder for the sweep's JSON, CSV and plot (default: outputs/)")
    add_per_task_argument(sub)
    sub.add_argument("--json", action="store_true", help="print one JSON object with a 'points' list")


def list_of(parse):
    def parse_list(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        return [parse(item) for item in items]

    return parse_list


def choice_arg(choices: tuple[str, ...]):
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def bits_arg(text: str) -> int | None:
    if text == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    low, high = CONVERTER_BITS
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected 'none' or an integer number of bits in {low}..{high}, got {text!r}")
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


def bounded(convert, minimum: float, description: str):
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


positive_int = bounded(int, 1, "a positive integer")


non_negative_int = bounded(int, 0, "an integer >= 0")


non_negative_float = bounded(float, 0, "a finite number >= 0")


positive_float = bounded(float, math.nextafter(0.0, 1.0), "a finite number > 0")  # the smallest float > 0


TIME_UNITS_S = {"s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0, "y": 365 * 86400.0}


def seconds_arg(text: str) -> float:
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


def seed_arg(text: str) -> int:
    try:
        return check_seed("seed", int(text))
    except (ValueError, L2LPCMError):
        raise argparse.ArgumentTypeError(f"expected an integer in 0..{SEED_MAX}, got {text!r}") from None
