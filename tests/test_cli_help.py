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

    from l2l_pcm import cli

    calls = {}
    monkeypatch.setattr(jax.config, "update", lambda name, value: calls.__setitem__(name, value))
    monkeypatch.setenv(cli.COMPILATION_CACHE_ENV, str(tmp_path / "cache"))
    cli._use_compilation_cache()
    assert calls["jax_compilation_cache_dir"] == str(tmp_path / "cache") and (tmp_path / "cache").is_dir()
    calls.clear()
    monkeypatch.setenv(cli.COMPILATION_CACHE_ENV, "off")
    cli._use_compilation_cache()
    assert calls == {}
    monkeypatch.delenv(cli.COMPILATION_CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cli._use_compilation_cache()
    assert calls["jax_compilation_cache_dir"] == str(tmp_path / "xdg" / "l2l-pcm" / "jax")
