"""MkDocs hook: the CLI reference page is generated from the parser at build time, so it cannot drift from
the code (https://www.mkdocs.org/user-guide/configuration/#hooks)."""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- cli-reference -->"


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("l2l-pcm",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, (*path, name))


def cli_reference() -> str:
    from l2l_pcm.cli import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps help at the terminal width: fix it for a stable page
    sections = []
    for path, parser in _subcommands(build_parser()):
        heading = "#" * min(len(path) + 1, 4)
        sections.append(f"{heading} `{' '.join(path)}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
    return "\n".join(sections)


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
