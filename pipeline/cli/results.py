"""Commands on output stores: `report`, `export`, `compare`, `rethreshold`, `compact`, `migrate`."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from pipeline.cli.exit_codes import refusals
from pipeline.cli.options import (
    KEEP_UNMAPPED_HELP,
    REMAP_HELP,
    STORAGE_OPTIONS_HELP,
    load_class_map,
    parse_storage_options,
)


class Counts(StrEnum):
    """The sets of counts a store holds."""

    argmax = "argmax"
    thresholded = "thresholded"


def store_classes(store: Any) -> list[str]:
    """The classes of the store (FileNotFoundError where there is none), before any remap is applied to them."""
    from pipeline.redact import redact_url

    info = store.info()
    if info is None:
        raise FileNotFoundError(f"no ifcbflow store at {redact_url(store.url)}")
    store.check_layout(info)
    return list(info["classes"])


def export(
    store: str = typer.Argument(..., help="Output store URL written by `classify`."),
    dashboard: str | None = typer.Option(None, help="Folder (or URL) for IFCB Dashboard v3 {bin}_class.h5 files."),
    csv: str | None = typer.Option(
        None, "--csv", help="CSV file (or URL) of per-bin class counts and per mL, argmax and thresholded."
    ),
    seabass: str | None = typer.Option(
        None, help="Folder (or URL) for SeaBASS files, one per bin, each ROI with its class, WoRMS taxon and size "
        "(a store classified with --morphology; needs --seabass-metadata and --taxa)."
    ),
    seabass_metadata: str | None = typer.Option(
        None, help="YAML or JSON file of the SeaBASS headers every file shares (investigators, experiment, cruise, "
        "...; docs/examples/seabass-metadata.yaml)."
    ),
    taxa: str | None = typer.Option(
        None, help="Class-to-taxon table for --seabass (CSV: class, scientificName, aphia_id, diatom; "
        "docs/examples/utopia-taxa.csv)."
    ),
    remap: str | None = typer.Option(None, "--remap", help=REMAP_HELP),
    keep_unmapped: bool = typer.Option(False, "--keep-unmapped", help=KEEP_UNMAPPED_HELP),
    storage_options: str | None = typer.Option(None, help=STORAGE_OPTIONS_HELP),
) -> None:
    """Export a store to Dashboard class files, a per-bin CSV table and/or SeaBASS files.

    Class files keep the raw scores; `class_name` is each ROI's class by the model's thresholds (`unclassified`
    below them), `class_name_auto` its argmax class, `thresholds` the model's. The CSV has argmax and thresholded
    counts (and biovolume and carbon per mL for a store that measures), and a sidecar CSV.json saying which store,
    model, thresholds and remap it came from. SeaBASS files follow NASA's format, one row per ROI.
    """
    from pipeline.job.run import UsageError
    from pipeline.results.export import export_csv, export_dashboard, export_seabass
    from pipeline.results.seabass import load_metadata
    from pipeline.results.store import ResultStore
    from pipeline.results.taxa import read_taxon_table

    if dashboard is None and csv is None and seabass is None:
        raise typer.BadParameter("give --dashboard DIR, --csv FILE and/or --seabass DIR")
    if seabass is not None and (seabass_metadata is None or taxa is None):
        raise typer.BadParameter("--seabass needs --seabass-metadata FILE and --taxa FILE")
    _check_keep_unmapped(keep_unmapped, remap)
    options = parse_storage_options(storage_options)
    results = ResultStore(store, options)
    with refusals(Console(stderr=True)):
        class_map, record = load_class_map(remap, keep_unmapped, store_classes(results), options)
        if dashboard is not None:
            written = export_dashboard(results, dashboard, options, class_map)
            typer.echo(f"wrote {len(written)} class files under {dashboard}")
        if csv is not None:
            rows = export_csv(results, csv, options, class_map, record)
            typer.echo(f"wrote {rows} bins to {csv} (provenance in {csv}.json)")
        if seabass is not None:
            assert seabass_metadata is not None and taxa is not None
            try:
                metadata = load_metadata(seabass_metadata, options)
                written = export_seabass(results, seabass, metadata, read_taxon_table(taxa, None, options), options,
                                         class_map)  # fmt: skip
            except (ValueError, FileNotFoundError) as err:  # the user's files or a store that does not measure
                raise UsageError(str(err)) from None
            typer.echo(f"wrote {len(written)} SeaBASS files under {seabass}")


def report(
    store: str = typer.Argument(..., help="Output store URL written by `classify`."),
    plot: Path | None = typer.Option(None, help="Write a PNG of class concentrations over time."),
    counts: Counts | None = typer.Option(
        None,
        "--counts",
        help="Which counts the tables and the plot show: argmax, or thresholded (a ROI below its class threshold "
        "is unclassified). Default: thresholded where the store's model has thresholds. --json carries both.",
    ),
    remap: str | None = typer.Option(None, "--remap", help=REMAP_HELP),
    keep_unmapped: bool = typer.Option(False, "--keep-unmapped", help=KEEP_UNMAPPED_HELP),
    storage_options: str | None = typer.Option(None, help=STORAGE_OPTIONS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Summarise a store: bins complete and failed, ROIs, counts per class, failures."""
    from pipeline.cli.tables import report_tables
    from pipeline.results.report import plot_concentrations, store_report
    from pipeline.results.store import ResultStore

    _check_keep_unmapped(keep_unmapped, remap)
    options = parse_storage_options(storage_options)
    results = ResultStore(store, options)
    with refusals(Console(stderr=True)):
        class_map, record = load_class_map(remap, keep_unmapped, store_classes(results), options)
        summary = store_report(results, class_map, record)
        has_thresholds = summary["counts_thresholded"] is not None
        if counts is Counts.thresholded and not has_thresholds:
            raise typer.BadParameter("this store's model has no thresholds: only argmax counts", param_hint="--counts")
        shown = (counts or (Counts.thresholded if has_thresholds else Counts.argmax)).value
        if plot is not None:
            plot_concentrations(results, str(plot), shown, class_map)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console = Console()
    for table in report_tables(summary, shown):
        console.print(table)
    if plot is not None:
        console.print(f"plot: {plot}")


def compare(
    store_a: str = typer.Argument(..., help="Output store A (rows of the confusion table)."),
    store_b: str = typer.Argument(..., help="Output store B (columns of the confusion table)."),
    remap_a: str | None = typer.Option(None, "--remap-a", help=f"For A's classes: {REMAP_HELP}"),
    remap_b: str | None = typer.Option(None, "--remap-b", help=f"For B's classes: {REMAP_HELP}"),
    keep_unmapped: bool = typer.Option(False, "--keep-unmapped", help=KEEP_UNMAPPED_HELP),
    use_thresholds: bool = typer.Option(
        True,
        "--thresholds/--argmax",
        help="Decide each store's ROIs by its own model's thresholds (unclassified below them; argmax where the "
        "model has none), or by plain argmax on both sides.",
    ),
    top: int = typer.Option(10, "--top", min=1, help="How many of the most changed bins to list."),
    plot: str | None = typer.Option(None, "--plot", help="Write a PNG heatmap of the confusion table."),
    storage_options: str | None = typer.Option(None, help=STORAGE_OPTIONS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Compare two stores ROI by ROI over the bins both hold: totals per class, agreement, the confusion table A x B,
    which classes absorbed which, and the bins whose counts changed most.

    Each store's ROIs are decided by its own model's rule (its thresholds, unless --argmax), as its counts are.
    Classes of A and B are matched by name, after each side's remap. Reads one partition of each store at a time.
    """
    from pipeline.cli.tables import comparison_tables
    from pipeline.results.compare import plot_confusion
    from pipeline.results.compare_stores import compare_stores
    from pipeline.results.store import ResultStore

    _check_keep_unmapped(keep_unmapped, remap_a or remap_b, "--remap-a or --remap-b")
    options = parse_storage_options(storage_options)
    a, b = ResultStore(store_a, options), ResultStore(store_b, options)
    with refusals(Console(stderr=True)):
        map_a, _ = load_class_map(remap_a, keep_unmapped, store_classes(a), options, "--remap-a")
        map_b, _ = load_class_map(remap_b, keep_unmapped, store_classes(b), options, "--remap-b")
        result = compare_stores(a, b, map_a=map_a, map_b=map_b, use_thresholds=use_thresholds, top_n=top)
        if plot is not None:
            plot_confusion(result.comparison, plot, label_a="A", label_b="B", storage_options=options)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    console = Console()
    for table in comparison_tables(result.to_dict()):
        console.print(table)
    if plot is not None:
        console.print(f"plot: {plot}")


def rethreshold(
    store: str = typer.Argument(..., help="Output store URL written by `classify`."),
    thresholds: str = typer.Option(
        ...,
        "--thresholds",
        help="A model bundle of the store's model (its thresholds are taken; one without thresholds means argmax), "
        "or a JSON file {class: threshold} (classes left out keep 0.0, argmax).",
    ),
    cluster: str = typer.Option(
        "local", help="local (embedded), or a scheduler address (tcp://host:8786) or scheduler file."
    ),
    workers: int | None = typer.Option(None, help="Local workers (default: cores/2)."),
    storage_options: str | None = typer.Option(None, help=STORAGE_OPTIONS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a line."),
) -> None:
    """Apply other thresholds to a store's stored scores, without the model: thresholded counts, summary, reports
    and exports follow them from then on, and the store records which thresholds (by sha256) it applied.

    Exit codes: 0 done; 2 usage or configuration error (no store, a bundle of another model, thresholds that name
    no class of the store, a store another run is writing).
    """
    from dataclasses import asdict

    from pipeline.cli.progress import JobProgress
    from pipeline.cluster.client import open_client
    from pipeline.job.reporting import Quiet
    from pipeline.job.rethreshold import rethreshold_store

    options = parse_storage_options(storage_options)
    console = Console(stderr=True)
    with refusals(console), open_client(cluster, workers=workers) as client:
        try:
            done = rethreshold_store(client, store, options, thresholds, Quiet() if as_json else JobProgress(console))
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--thresholds") from None
    if as_json:
        typer.echo(json.dumps(asdict(done), indent=2))
    elif not done.changed:
        typer.echo(f"{store} already decides by these thresholds ({done.thresholds_sha256[:12]})")
    else:
        typer.echo(
            f"applied thresholds {done.thresholds_sha256[:12]} from {done.source} to {done.bins} bins "
            f"({done.rois} ROIs, {done.partitions} partitions) in {done.seconds:.1f} s"
        )


def compact(
    store: str = typer.Argument(..., help="Output store URL written by `classify` or `watch`."),
    target_rois: int = typer.Option(
        500_000, min=2, help="ROIs a merged partition holds at most; partitions under half of it are merged."
    ),
    storage_options: str | None = typer.Option(None, help=STORAGE_OPTIONS_HELP),
) -> None:
    """Merge the store's small partitions (one per `watch` poll) into large ones, so that readers open few;
    scores are copied bit for bit. Safe to interrupt and rerun. Exit codes: 0 done; 2 no store, or a store another
    run is writing."""
    from pipeline.results.compact import compact_store
    from pipeline.results.store import ResultStore

    results = ResultStore(store, parse_storage_options(storage_options))
    with refusals(Console(stderr=True)):
        store_classes(results)
        done = compact_store(results, target_rois)
    typer.echo(
        f"merged {done.parts_merged} of {done.parts_before} partitions into {done.parts_written}; "
        f"removed {done.parts_removed} replaced partitions"
    )


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


def _check_keep_unmapped(keep_unmapped: bool, remap: str | None, flags: str = "--remap") -> None:
    if keep_unmapped and remap is None:
        raise typer.BadParameter(f"it applies to a remap: give {flags} too", param_hint="--keep-unmapped")
