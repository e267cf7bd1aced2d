"""Commands on an output store: `report`, `export`, `migrate`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from pipeline.cli.exit_codes import refusals
from pipeline.cli.options import STORAGE_OPTIONS_HELP, parse_storage_options


def export(
    store: str = typer.Argument(..., help="Output store URL written by `classify`."),
    dashboard: str | None = typer.Option(None, help="Folder (or URL) for IFCB Dashboard v3 {bin}_class.h5 files."),
    csv: str | None = typer.Option(None, "--csv", help="CSV file (or URL) of per-bin class counts and per mL."),
    storage_options: str | None = typer.Option(None, help=STORAGE_OPTIONS_HELP),
) -> None:
    """Export a store to Dashboard class files and/or a per-bin CSV table."""
    from pipeline.results.export import export_csv, export_dashboard
    from pipeline.results.store import ResultStore

    if dashboard is None and csv is None:
        raise typer.BadParameter("give --dashboard DIR and/or --csv FILE")
    options = parse_storage_options(storage_options)
    results = ResultStore(store, options)
    with refusals(Console(stderr=True)):
        if dashboard is not None:
            written = export_dashboard(results, dashboard, options)
            typer.echo(f"wrote {len(written)} class files under {dashboard}")
        if csv is not None:
            rows = export_csv(results, csv, options)
            typer.echo(f"wrote {rows} bins to {csv}")


def report(
    store: str = typer.Argument(..., help="Output store URL written by `classify`."),
    plot: Path | None = typer.Option(None, help="Write a PNG of class concentrations over time."),
    storage_options: str | None = typer.Option(None, help=STORAGE_OPTIONS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Summarise a store: bins complete and failed, ROIs, counts per class, failures."""
    from pipeline.cli.tables import report_tables
    from pipeline.results.report import plot_concentrations, store_report
    from pipeline.results.store import ResultStore

    results = ResultStore(store, parse_storage_options(storage_options))
    with refusals(Console(stderr=True)):
        summary = store_report(results)
        if plot is not None:
            plot_concentrations(results, str(plot))
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console = Console()
    for table in report_tables(summary):
        console.print(table)
    if plot is not None:
        console.print(f"plot: {plot}")


def migrate(
    store: str = typer.Argument(..., help="Store written by an earlier ifcbflow (layout ifcbflow-store/1)."),
    storage_options: str | None = typer.Option(None, help=STORAGE_OPTIONS_HELP),
) -> None:
    """Convert a store of the earlier layout (one group per bin) to the current one, in place; scores are copied
    bit for bit. Safe to interrupt and rerun."""
    from rich.progress import Progress

    from pipeline.results.migrate import migrate_store

    with refusals(Console(stderr=True)), Progress(transient=True) as progress:
        task = progress.add_task("migrating bins", total=None)
        moved = migrate_store(
            store,
            parse_storage_options(storage_options),
            lambda done, total: progress.update(task, completed=done, total=total),
        )
    typer.echo(f"migrated {moved} bins; {store} is in the current layout" if moved else f"{store} needs no migration")
