"""Results as rich tables: the summary of a run and the report of a store."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def summary_table(summary: dict[str, Any]) -> Table:
    """The final summary of a run (`RunSummary.to_dict()`) as a rich table."""
    table = Table(title="ifcbflow classify", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("bins in the archive (selected)", summary["bins_listed"]),
        ("already complete (skipped)", summary["bins_already_complete"]),
        ("classified now", summary["bins_done"]),
        ("failed (bad data, recorded in the store)", summary["bins_failed"]),
        ("incomplete (transient faults: rerun to redo)", summary["bins_incomplete"]),
        ("ROIs classified", f"{summary['rois']:,}"),
        ("wall time (s)", f"{summary['seconds']:.1f}"),
        ("ROIs/s", f"{summary['rois_per_second']:,.1f}"),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    return table


def report_tables(report: dict[str, Any]) -> list[Table]:
    """The report as rich tables: overview, per-class totals, failures (when any)."""
    overview = Table(title=f"ifcbflow store {report['store']}", show_header=False)
    overview.add_column("what")
    overview.add_column("value", justify="right")
    for label, value in (
        ("model bundle", f"{report['bundle_arch']} {str(report['bundle_hash'])[:12]}"),
        ("bins complete", report["bins_complete"]),
        ("bins failed", report["bins_failed"]),
        ("ROIs", f"{report['rois']:,}"),
        ("bins without volume analysed", report["bins_without_volume"]),
        ("time range (UTC)", f"{report['first_bin_time']} .. {report['last_bin_time']}"),
    ):
        overview.add_row(label, str(value))
    per_class = Table(title="classes")
    per_class.add_column("class")
    per_class.add_column("ROIs", justify="right")
    per_class.add_column("mean per mL", justify="right")
    for name in report["classes"]:
        mean = report["mean_concentration_per_ml"][name]
        per_class.add_row(name, f"{report['counts'][name]:,}", "-" if mean is None else f"{mean:,.2f}")
    tables = [overview, per_class]
    if report["failures"]:
        failed = Table(title="failed bins")
        for column in ("bin", "stage", "reason"):
            failed.add_column(column)
        for failure in report["failures"]:
            failed.add_row(failure["bin"], failure["stage"], failure["reason"])
        tables.append(failed)
    return tables
