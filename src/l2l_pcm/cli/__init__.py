"""Command-line interface: a thin layer over the library (l2l-pcm --help). One module per command group
(:mod:`.chip`, :mod:`.fewshot`, :mod:`.robot`), what they share in :mod:`.common`; here the parser, the
checkpoint commands (import-authors, export) and :func:`main`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from l2l_pcm.cli import chip, fewshot, robot
from l2l_pcm.compilation_cache import use_compilation_cache
from l2l_pcm.errors import L2LPCMError


def _import_authors(args: argparse.Namespace) -> None:
    from l2l_pcm.import_authors import import_authors

    print(import_authors(args.scenario, args.source, args.destination, args.overwrite))


def _export(args: argparse.Namespace) -> None:
    from l2l_pcm.checkpoint import checkpoint_kind
    from l2l_pcm.training import export_checkpoint

    changes = dict(args.set or [])
    kind = checkpoint_kind(args.source)
    config_from_json, load = _checkpoint_kinds().get(kind, (None, None))
    if changes and config_from_json is None:
        raise L2LPCMError(f"--set: {args.source} is not a checkpoint of a kind whose config l2l-pcm knows")
    print(
        export_checkpoint(args.source, args.destination, changes, config_from_json, load=load, overwrite=args.overwrite)
    )


def _checkpoint_kinds() -> dict:
    """Checkpoint kind -> (the config parser that validates its config, the loader evaluation reads it with)."""
    from l2l_pcm import training
    from l2l_pcm.fewshot import pretrain as fewshot_pretrain
    from l2l_pcm.fewshot import train as fewshot_train
    from l2l_pcm.robot import train as robot_train

    def pretrained(path):
        config, _ = training.checkpoint_config(
            path, fewshot_pretrain.CHECKPOINT_KIND, fewshot_pretrain.PretrainConfig.from_json
        )
        return fewshot_pretrain.pretrained_body(path, config.fewshot)

    return {
        fewshot_train.CHECKPOINT_KIND: (
            fewshot_train.FewshotTrainConfig.from_json,
            fewshot_train.load_fewshot_checkpoint,
        ),
        fewshot_pretrain.CHECKPOINT_KIND: (fewshot_pretrain.PretrainConfig.from_json, pretrained),
        robot_train.CHECKPOINT_KIND: (robot_train.RobotTrainConfig.from_json, robot_train.load_robot_checkpoint),
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


def build_parser() -> argparse.ArgumentParser:
    from l2l_pcm import __version__

    parser = _Parser(
        prog="l2l-pcm",
        description="Learning-to-learn on emulated phase-change-memory chips: few-shot Omniglot (MAML) and "
        "robot-arm motor learning (natural e-prop). Each command has its own --help.",
    )
    parser.add_argument("--version", action="version", version=f"l2l-pcm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    chip.add_commands(commands)
    fewshot.add_commands(commands)
    robot.add_commands(commands)

    imports = commands.add_parser(
        "import-authors", help="convert the authors' pretrained pickle into an l2l-pcm checkpoint (safely)"
    )
    imports.add_argument("scenario", choices=("fewshot", "robot"), help="which of the authors' two models")
    imports.add_argument("source", help="the authors' pretrained-weights.pickle")
    imports.add_argument("destination", help="l2l-pcm checkpoint to write (.safetensors)")
    imports.add_argument("--overwrite", action="store_true", help="replace an existing destination (default: refuse)")
    imports.set_defaults(run=_import_authors)

    export = commands.add_parser("export", help="copy a training checkpoint without optimiser state")
    export.add_argument("source", help="training checkpoint (last.safetensors or best.safetensors)")
    export.add_argument("destination", help="checkpoint to write, parameters and config only")
    export.add_argument("--overwrite", action="store_true", help="replace an existing destination (default: refuse)")
    export.add_argument(
        "--set",
        action="append",
        type=_config_assignment,
        metavar="FIELD=VALUE",
        help="change a config field of the copy by its path (a deployment setting, e.g. model.readout_scale=0.35, "
        "or one in the hardware tree, e.g. model.hardware.forward.dac_bits=8); checked by the checkpoint's "
        "config class and recorded as export_changes; a JSON object merges into the section it names; the copy is "
        "loaded as an evaluation will load it before it is written; repeatable",
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_compilation_cache()
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
    except Exception as exc:  # a bug, not bad input: one line, the traceback kept in a file for the report
        command = " ".join(args.command_prog.split()[1:]) if hasattr(args, "command_prog") else args.command
        report = _write_traceback()
        where = f"; the traceback is in {report}" if report else ""
        print(f"error: internal error in {command}: {type(exc).__name__}: {' '.join(str(exc).split())}{where}",
              file=sys.stderr)  # fmt: skip
        return INTERNAL_ERROR
    return 0


INTERNAL_ERROR = 70
"""Exit status of an unexpected exception (``EX_SOFTWARE`` of BSD's sysexits.h); bad input exits 2."""


def _write_traceback() -> Path | None:
    """The current exception's traceback in a new file under the temp folder (None if none can be written)."""
    import tempfile
    import traceback

    try:
        handle, name = tempfile.mkstemp(prefix="l2l-pcm-error-", suffix=".txt")
        with os.fdopen(handle, "w") as file:
            traceback.print_exc(file=file)
    except OSError:
        return None
    return Path(name)
