"""`ifcbflow classify`, `export` and `report`: run the job, and get results out of the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
import typer
import yaml
from rich.console import Console

from pipeline.cli.jobqueue_flags import with_jobqueue_flags
from pipeline.cli.options import STORAGE_OPTIONS_HELP, parse_storage_options, parse_time
from pipeline.cluster.jobqueue import JobqueueSettings
from pipeline.job.plan import DEFAULT_PARTITION_ROIS

#: `--config` keys: the option names (dashes or underscores).
CONFIG_KEYS = (
    "model",
    "out",
    "cluster",
    "workers",
    "partition_rois",
    "start",
    "end",
    "bins",
    "storage_options",
    "batch_size",
)


def load_run_config(path: str) -> dict[str, Any]:
    """A run YAML file as {option name: value}; unknown keys are an error so a typo never goes unnoticed."""
    with fsspec.open(path, "rt") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: expected a mapping of option names to values")
    config = {str(key).replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise typer.BadParameter(f"{path}: unknown keys {unknown}; known: {', '.join(CONFIG_KEYS)}")
    return config


def merge_config(ctx: typer.Context, values: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Flags given on the command line win; the YAML fills the rest; defaults fill what neither sets."""
    merged = dict(values)
    for key, value in config.items():
        source = ctx.get_parameter_source(key)  # compared by name: typer may bundle its own click
        if source is None or source.name != "COMMANDLINE":
            merged[key] = value
    return merged


def _bin_list(url: str | None) -> list[str] | None:
    if url is None:
        return None
    with fsspec.open(url, "rt") as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]


def _options(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else parse_storage_options(value)


@with_jobqueue_flags
def classify(
    ctx: typer.Context,
    archive: str = typer.Argument(..., help="Archive URL: local folder, s3://bucket/prefix, gs://, file://."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model bundle URL (from `ifcbflow train`)."),
    out: str | None = typer.Option(None, "--out", "-o", help="Output zarr store URL (one store per model)."),
    cluster: str = typer.Option(
        "local", help="local (embedded), slurm, pbs, a scheduler address (tcp://host:8786) or scheduler file."
    ),
    workers: int | None = typer.Option(None, help="Local workers (default: one per GPU, else cores/2)."),
    partition_rois: int = typer.Option(DEFAULT_PARTITION_ROIS, help="Target ROIs per task (whole bins)."),
    start: str | None = typer.Option(None, help="Only bins at or after this UTC time (ISO)."),
    end: str | None = typer.Option(None, help="Only bins before this UTC time (ISO)."),
    bins: str | None = typer.Option(None, help="File (or URL) listing the bin ids to classify, one per line."),
    storage_options: str | None = typer.Option(None, help=STORAGE_OPTIONS_HELP),
    config: str | None = typer.Option(None, help="YAML file with any of these options; flags win."),
    batch_size: int = typer.Option(256, help="Images per model call."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of progress and tables."),
    jobqueue: JobqueueSettings | None = None,
) -> None:
    """Classify every bin of ARCHIVE not yet in the store; rerun to resume or to pick up new bins."""
    from pipeline.cli.progress import JobProgress
    from pipeline.cli.tables import summary_table
    from pipeline.cluster.client import open_client
    from pipeline.job.reporting import Quiet
    from pipeline.job.run import ClassifyRequest, run_classification
    from pipeline.results.store import StoreMismatchError

    values = {
        "model": model,
        "out": out,
        "cluster": cluster,
        "workers": workers,
        "partition_rois": partition_rois,
        "start": start,
        "end": end,
        "bins": bins,
        "storage_options": storage_options,
        "batch_size": batch_size,
    }
    settings = merge_config(ctx, values, load_run_config(config) if config else {})
    for required in ("model", "out"):
        if not settings[required]:
            raise typer.BadParameter(f"--{required} is required (on the command line or in --config)")
    request = ClassifyRequest(
        archive_url=archive,
        bundle_url=settings["model"],
        store_url=settings["out"],
        storage_options=_options(settings["storage_options"]),
        start=parse_time(settings["start"], "--start"),
        end=parse_time(settings["end"], "--end"),
        bin_ids=_bin_list(settings["bins"]),
        partition_rois=int(settings["partition_rois"]),
        batch_size=int(settings["batch_size"]),
    )
    console = Console(stderr=True)
    reporter = Quiet() if as_json else JobProgress(console)
    try:
        with open_client(settings["cluster"], workers=settings["workers"], jobqueue=jobqueue) as client:
            summary = run_classification(client, request, reporter)
    except StoreMismatchError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        Console().print(summary_table(summary.to_dict()))
        for failure in summary.failures:
            console.print(f"[yellow]failed[/yellow] {failure['bin']} at {failure['stage']}: {failure['reason']}")
        for error in summary.errors:
            console.print(f"[red]error[/red] {error}")
    if summary.errors:
        raise typer.Exit(1)


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
    if results.info() is None:
        raise typer.BadParameter(f"no ifcbflow store at {store}")
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
    try:
        summary = store_report(results)
    except FileNotFoundError as err:
        raise typer.BadParameter(str(err)) from None
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
