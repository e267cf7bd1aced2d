"""The `ifcbflow` command: one Typer app; each area of the tool registers its own commands here."""

from __future__ import annotations

import typer

from pipeline.cli import archive as cli_archive
from pipeline.cli import classify as cli_classify
from pipeline.cli import cluster as cli_cluster
from pipeline.cli import model as cli_model
from pipeline.cli.logs import configure_logging

app = typer.Typer(
    name="ifcbflow",
    help="Classify IFCB archives in object storage with a CNN, distributed with Dask.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold credentials from --storage-options
)


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    configure_logging(verbose)


for _area in (cli_archive, cli_model, cli_classify, cli_cluster):
    _area.register(app)


def main() -> None:
    app()
