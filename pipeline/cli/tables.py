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
        ("failed before, files unchanged (not read again)", summary.get("bins_known_bad", 0)),
        ("complete, files changed since (classified again)", summary.get("bins_changed", 0)),
        ("bead runs by their header (left out: --include-beads)", summary.get("bins_bead_runs", 0)),
        ("classified now", summary["bins_done"]),
        ("failed (bad data, recorded in the store)", summary["bins_failed"]),
        ("incomplete (transient faults: rerun to redo)", summary["bins_incomplete"]),
        ("ROIs classified", f"{summary['rois']:,}"),
        ("wall time (s)", f"{summary['seconds']:.1f}"),
        ("ROIs/s", f"{summary['rois_per_second']:,.1f}"),
    ]
    if summary.get("bins_measured_now"):  # a store that measures, with bins classified before it did
        rows.insert(4, ("complete, not yet measured (classified again to measure)", summary["bins_measured_now"]))
    stages = {name: seconds for name, seconds in summary.get("stage_seconds", {}).items() if seconds >= 0.05}
    if stages:  # feeder stages are thread-seconds (feeders run side by side), the others wall seconds
        rows.append(("time by stage (s)", " · ".join(f"{name} {seconds:.1f}" for name, seconds in stages.items())))
    for label, value in rows:
        table.add_row(label, str(value))
    return table


def report_tables(report: dict[str, Any], counts: str = "argmax") -> list[Table]:
    """The report as rich tables: overview, per-class totals of one set of `counts`, failures (when any)."""
    suffix = "_thresholded" if counts == "thresholded" else ""
    overview = Table(title=f"ifcbflow store {report['store']}", show_header=False)
    overview.add_column("what")
    overview.add_column("value", justify="right")
    rows = [
        ("model bundle", f"{report['bundle_arch']} {str(report['bundle_hash'])[:12]}"),
        ("bins complete", report["bins_complete"]),
        ("bins failed", report["bins_failed"]),
        ("ROIs", f"{report['rois']:,}"),
        ("bins without volume analysed", report["bins_without_volume"]),
        ("bins by run type", _amounts(report["bins_by_run_type"])),
        ("bins by sample type", _amounts(report["bins_by_sample_type"])),
        ("bins with a position", report["bins_with_position"]),
        ("bead runs left out / classified", f"{report['bead_runs_left_out']} / {report['bead_runs_classified']}"),
        ("time range (UTC)", f"{report['first_bin_time']} .. {report['last_bin_time']}"),
        ("counts", "thresholded (below its class threshold: unclassified)" if suffix else "argmax"),
    ]
    if report["remap"]:
        rows.append(("remap", report["remap"]["description"]))
    for label, value in rows:
        overview.add_row(label, str(value))
    thresholds = (report["thresholds"] or {}) if suffix and not report["remap"] else {}
    per_class = Table(title=f"classes ({counts})")
    per_class.add_column("class")
    per_class.add_column("ROIs", justify="right")
    per_class.add_column("mean per mL", justify="right")
    if thresholds:
        per_class.add_column("threshold", justify="right")
    for name in report[f"classes{suffix}"]:
        mean = report[f"mean_concentration_per_ml{suffix}"][name]
        cells = [name, f"{report[f'counts{suffix}'][name]:,}", "-" if mean is None else f"{mean:,.2f}"]
        if thresholds:
            cells.append(f"{thresholds[name]:.3f}" if name in thresholds else "")
        per_class.add_row(*cells)
    tables = [overview, per_class]
    if report["failures"]:
        failed = Table(title="failed bins")
        for column in ("bin", "stage", "reason"):
            failed.add_column(column)
        for failure in report["failures"]:
            failed.add_row(failure["bin"], failure["stage"], failure["reason"])
        tables.append(failed)
    if report.get("warnings"):
        warned = Table(title="complete bins with warnings (rows the reader left out)")
        for column in ("bin", "warning"):
            warned.add_column(column)
        for entry in report["warnings"]:
            warned.add_row(entry["bin"], entry["warning"])
        tables.append(warned)
    return tables


def _amounts(counted: dict[str, int]) -> str:
    """`{"NORMAL": 3, "ALT": 1}` as `NORMAL 3, ALT 1` ("-" for none)."""
    return ", ".join(f"{name} {count}" for name, count in counted.items()) or "-"


def comparison_tables(result: dict[str, Any]) -> list[Table]:
    """A store comparison (`StoreComparison.to_dict()`) as rich tables: overview, totals, confusion, absorbed, bins."""
    overview = Table(title="ifcbflow compare", show_header=False)
    overview.add_column("what")
    overview.add_column("value", justify="right")
    agreement = result["agreement"]
    for label, value in (
        ("A", f"{result['store_a']} ({result['decision_a']})"),
        ("B", f"{result['store_b']} ({result['decision_b']})"),
        ("bins compared (in both)", result["bins"]),
        ("bins only in A / only in B", f"{result['bins_only_a']} / {result['bins_only_b']}"),
        ("ROIs matched", f"{result['matched']:,}"),
        ("ROIs only in A / only in B", f"{result['only_a']:,} / {result['only_b']:,}"),
        ("agreement", "-" if agreement is None else f"{agreement:.3f}"),
        ("remap A", result["remap_a"]),
        ("remap B", result["remap_b"]),
    ):
        overview.add_row(label, str(value))
    classes = result["classes"]
    totals = Table(title="ROIs per class")
    for column in ("class", "A", "B", "B - A"):
        totals.add_column(column, justify="left" if column == "class" else "right")
    for name in classes:
        a, b = result["totals_a"][name], result["totals_b"][name]
        totals.add_row(name, f"{a:,}", f"{b:,}", f"{b - a:+,}")
    confusion = Table(title="matched ROIs: class in A (rows) x class in B (columns)")
    confusion.add_column("A \\ B")
    for name in classes:
        confusion.add_column(name, justify="right")
    for name, row in zip(classes, result["confusion"], strict=True):
        confusion.add_row(name, *(f"{n:,}" if n else "." for n in row))
    absorbed = Table(title="where A's classes went in B")
    for column in ("class in A", "same in B", "absorbed by (B)"):
        absorbed.add_column(column, justify="right" if column == "same in B" else "left")
    for name, destinations in result["absorbed"].items():
        same = next((d["fraction"] for d in destinations if d["class"] == name), 0.0)
        others = ", ".join(
            f"{d['class']} {d['fraction']:.0%} ({d['rois']:,})" for d in destinations if d["class"] != name
        )
        absorbed.add_row(name, f"{same:.0%}", others or "-")
    tables = [overview, totals, confusion, absorbed]
    if result["changed_bins"]:
        changed = Table(title="bins whose counts changed most (B - A)")
        for column in ("bin", "ROIs changed", "changes"):
            changed.add_column(column, justify="right" if column == "ROIs changed" else "left")
        for entry in result["changed_bins"]:
            changes = ", ".join(f"{name} {n:+}" for name, n in entry["changes"].items())
            changed.add_row(entry["bin"], str(entry["l1"]), changes)
        tables.append(changed)
    return tables
