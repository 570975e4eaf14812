"""MkDocs hooks (https://www.mkdocs.org/user-guide/configuration/#hooks): the CLI reference page is generated
from the parser at build time, so it cannot drift from the code; Sphinx role names are dropped from the
rendered docstrings."""

from __future__ import annotations

import argparse
import os
import re

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


_SPHINX_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc|math):(?=<code)")


def on_page_content(html: str, page, **kwargs) -> str:
    """Docstrings are written for Sphinx-aware readers (``:func:`name```); mkdocstrings renders the role's
    argument as code and leaves the role's name in front of it: drop the name."""
    return _SPHINX_ROLE.sub("", html)
