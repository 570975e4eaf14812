"""The command line a newcomer reads: every option explained, plain text, errors naming the subcommand."""

import argparse
import re

import pytest

from l2l_pcm.cli import build_parser, main

RST = re.compile(r"``|:(func|class|mod|math|meth|data):")


def subcommands(parser: argparse.ArgumentParser, path=("l2l-pcm",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, (*path, name))


def test_every_option_has_help_and_no_rst_markup():
    missing, markup = [], []
    for path, parser in subcommands(build_parser()):
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction) and not action.help:
                missing.append(f"{' '.join(path)} {action.option_strings or action.dest}")
        if RST.search(parser.format_help()):
            markup.append(" ".join(path))
    assert not missing, missing
    assert not markup, markup


@pytest.mark.parametrize("scenario", ["fewshot", "robot"])
def test_one_precision_vocabulary(scenario):
    parsers = dict(subcommands(build_parser()))
    evaluate = parsers[("l2l-pcm", scenario, "eval")]
    (precision,) = [a for a in evaluate._actions if "--precision" in a.option_strings]
    assert precision.choices == ("trained", "fp32", "4bit", "pcm")


def test_a_bad_option_points_at_the_subcommands_help(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["robot", "demo", "--tasks", "0"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("(see 'l2l-pcm robot demo --help')\n")


def test_the_help_lists_every_device_profile():
    from l2l_pcm.cli.common import PROFILE_LIST
    from l2l_pcm.pcm import DEVICE_PROFILES

    assert PROFILE_LIST.split(", ") == list(DEVICE_PROFILES)


def test_the_cli_keeps_compiled_code_in_a_persistent_cache_unless_off(tmp_path, monkeypatch):
    import jax

    from l2l_pcm import compilation_cache as cache

    calls = {}
    monkeypatch.setattr(jax.config, "update", lambda name, value: calls.__setitem__(name, value))
    monkeypatch.setenv(cache.COMPILATION_CACHE_ENV, str(tmp_path / "cache"))
    cache.use_compilation_cache()
    assert calls["jax_compilation_cache_dir"] == str(tmp_path / "cache") and (tmp_path / "cache").is_dir()
    calls.clear()
    monkeypatch.setenv(cache.COMPILATION_CACHE_ENV, "off")
    cache.use_compilation_cache()
    assert calls == {}
    monkeypatch.delenv(cache.COMPILATION_CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache.use_compilation_cache()
    assert calls["jax_compilation_cache_dir"] == str(tmp_path / "xdg" / "l2l-pcm" / "jax")


def test_eval_without_checkpoint_uses_and_records_the_shipped_one_and_refuses_an_empty_path():
    from l2l_pcm.cli.common import checkpoint_path
    from l2l_pcm.errors import L2LPCMError
    from l2l_pcm.fewshot.train import SHIPPED_CHECKPOINT as FEWSHOT
    from l2l_pcm.robot.train import SHIPPED_CHECKPOINT as ROBOT

    for command, shipped in (("fewshot", FEWSHOT), ("robot", ROBOT)):
        path = checkpoint_path(argparse.Namespace(command=command, checkpoint=None))
        assert path == shipped and path.is_file()
    assert str(checkpoint_path(argparse.Namespace(command="robot", checkpoint="a.safetensors"))) == "a.safetensors"
    with pytest.raises(L2LPCMError, match="--checkpoint is empty"):
        checkpoint_path(argparse.Namespace(command="robot", checkpoint=" "))


def test_an_unexpected_exception_is_one_error_line_with_the_traceback_in_a_file(monkeypatch, capsys):
    """The last line of defence: a bug (not bad input) exits 70 with one line naming the command and the
    file that holds the traceback; bad input never reaches it (every catalogued case exits 2)."""
    from pathlib import Path

    from l2l_pcm.cli import INTERNAL_ERROR
    from l2l_pcm.cli import chip as chip_commands

    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(chip_commands, "_chip_demo", broken)
    monkeypatch.setenv("L2L_PCM_COMPILATION_CACHE", "off")
    assert main(["chip", "demo"]) == INTERNAL_ERROR == 70
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    match = re.fullmatch(r"error: internal error in chip demo: ZeroDivisionError: division by zero; "
                         r"the traceback is in (\S+)", err)  # fmt: skip
    assert match, err
    report = Path(match.group(1))
    assert "ZeroDivisionError" in report.read_text() and "broken" in report.read_text()
    report.unlink()
