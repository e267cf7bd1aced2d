"""MkDocs hook: the command-line reference page, generated from the Typer app at every build.

Typer's own Markdown generator (`typer.cli.get_docs_for_click`, what `typer ... utils docs` prints) walks the click
command tree of `pipeline.cli.app`, so every command, argument and option, with its help and default, comes from
the code: nothing is copied by hand and a new option appears by itself.
"""

from __future__ import annotations

import re

import typer.main
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from typer.cli import get_docs_for_click

PAGE = "reference/cli.md"
INTRO = (
    "Every `ifcbflow` command with its arguments and options, generated from the program itself when this site is "
    "built. The same help is printed by `ifcbflow COMMAND --help`."
)
_FENCE = re.compile(r"^```")


def escape_html(markdown: str) -> str:
    """Help texts such as `<roi id>.png` would read as HTML tags: escape `<` and `>` outside code."""
    out, in_fence = [], False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        if not in_fence:
            parts = line.split("`")  # even parts are outside code spans
            parts[::2] = [part.replace("<", "&lt;").replace(">", "&gt;") for part in parts[::2]]
            line = "`".join(parts)
        out.append(line)
    return "\n".join(out) + "\n"


def cli_markdown() -> str:
    """The reference page: Typer's Markdown for the whole `ifcbflow` command tree."""
    from pipeline.cli.app import app

    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="ifcbflow")  # typer carries its own click
    text = get_docs_for_click(obj=command, ctx=ctx, name="ifcbflow", title="Command line")
    title, _, rest = text.partition("\n")
    return escape_html(f"{title}\n\n{INTRO}\n{rest}")


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, PAGE, content=cli_markdown()))
    return files
