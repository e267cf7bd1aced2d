"""What a store holds, as data (the CLI prints it as tables or JSON) and as a PNG of concentrations over time.

Built from the store's ledger (complete bins and failure records) at the time of asking, so it is right even after an
interrupted run whose `summary` group was never rewritten.

Counts come in two sets: `argmax` (every store) and `thresholded` (stores of bundles with per-class thresholds:
the classes, then `unclassified`). A class map (`pipeline.results.remap`) merges or renames the columns of both.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import xarray as xr

from pipeline.ifcb.adc import rows_left_out
from pipeline.redact import redact_url
from pipeline.results.carbon import PG_PER_ML_TO_UG_PER_L
from pipeline.results.remap import ClassMap, remap_counts
from pipeline.results.store import ResultStore

ARGMAX, THRESHOLDED = "argmax", "thresholded"


def count_sets(summary: xr.Dataset) -> list[str]:
    """The sets of counts a summary holds: argmax always, thresholded where the store's bundle has thresholds."""
    return [ARGMAX, THRESHOLDED] if "counts_thresholded" in summary else [ARGMAX]


def class_table(
    summary: xr.Dataset, counts: str, class_map: ClassMap | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(column names, counts (bin, column), concentrations per mL (bin, column)) of one set, remapped when asked."""
    if counts not in count_sets(summary):
        raise ValueError(f"this store has no {counts} counts: its model has no thresholds (use {ARGMAX})")
    suffix = "_thresholded" if counts == THRESHOLDED else ""
    names = [str(name) for name in summary[f"class{suffix}"].values]
    number, per_ml = summary[f"counts{suffix}"].values, summary[f"concentration{suffix}"].values
    if class_map is None:
        return names, number, per_ml
    return class_map.columns(counts == THRESHOLDED), remap_counts(number, class_map), remap_counts(per_ml, class_map)


#: The per-mL biomass arrays of a summary that measures, how the CSV and the report name them, and the factor to
#: their unit: biovolume in µm³ mL⁻¹, carbon in µg C L⁻¹ (the unit IFCB carbon summaries report; the summary keeps
#: pg mL⁻¹).
BIOMASS_COLUMNS = (
    ("biovolume_per_ml", "biovolume_um3_per_ml", 1.0),
    ("carbon_per_ml", "carbon_ug_per_l", PG_PER_ML_TO_UG_PER_L),
)


def biomass_table(
    summary: xr.Dataset, name: str, class_map: ClassMap | None = None
) -> tuple[list[str], np.ndarray]:
    """(column names, values (bin, column)) of a per-mL biomass array (`BIOMASS_COLUMNS`) in its reported unit, by
    argmax, remapped when asked (the columns a remap merges are summed)."""
    factor = next(scale for array, _, scale in BIOMASS_COLUMNS if array == name)
    values = summary[name].values * factor
    if class_map is None:
        return [str(c) for c in summary["class"].values], values
    return class_map.columns(False), remap_counts(values, class_map)


def store_report(
    store: ResultStore, class_map: ClassMap | None = None, remap: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Totals of a store: bins complete/failed, ROIs, per-class counts (argmax, and thresholded where the store has
    them), failures, warnings, `.adc` rows left out across complete bins (`pipeline.ifcb.adc.rows_left_out`), what
    the bins' headers say of their samples (`sample_totals`), model and archive; `remap` is the record of the remap
    behind `class_map`."""
    ledger = store.ledger()
    info = store.info() or {}
    summary = store.summary(ledger)
    failures = [ledger.failures[bin_id].to_dict() for bin_id in sorted(ledger.failures)]
    times = summary.time.values
    report: dict[str, Any] = {
        "store": redact_url(store.url),
        "bundle_hash": info.get("bundle_hash"),
        "bundle_arch": info.get("bundle_arch"),
        "archive_urls": info.get("archive_urls", []),
        "bins_complete": int(summary.sizes["bin"]),
        "bins_failed": len(failures),
        "rois": int(summary.n_rois.sum()),
        "model_hash": info.get("model_hash"),
        "thresholds": info.get("thresholds"),
        "thresholds_sha256": info.get("thresholds_sha256"),
        "remap": remap,
    }
    for counts in (ARGMAX, THRESHOLDED):
        suffix = "" if counts == ARGMAX else "_thresholded"
        if counts not in count_sets(summary):
            report.update({f"{key}{suffix}": None for key in ("classes", "counts", "mean_concentration_per_ml")})
            continue
        names, number, per_ml = class_table(summary, counts, class_map)
        totals = number.sum(axis=0)
        report[f"classes{suffix}"] = names
        report[f"counts{suffix}"] = {name: int(n) for name, n in zip(names, totals, strict=True)}
        report[f"mean_concentration_per_ml{suffix}"] = {
            name: _mean_or_none(per_ml[:, i]) for i, name in enumerate(names)
        }
    for name, reported, _ in BIOMASS_COLUMNS:
        if name not in summary:
            report[f"mean_{reported}"] = None
            continue
        names, values = biomass_table(summary, name, class_map)
        report[f"mean_{reported}"] = {n: _mean_or_none(values[:, i]) for i, n in enumerate(names)}
    report["bins_measured"] = int((~np.isnan(summary["biovolume"].values).all(axis=1)).sum()) \
        if "biovolume" in summary else 0  # fmt: skip
    report.update(
        {
            "bins_without_volume": int(np.isnan(summary.ml_analyzed.values).sum()),
            "adc_rows_left_out": sum(rows_left_out(record.warnings or ()) for record in ledger.bins.values()),
            **sample_totals(summary, len(ledger.bead_runs)),
            "first_bin_time": _iso(times.min()) if times.size else None,
            "last_bin_time": _iso(times.max()) if times.size else None,
            "failures": failures,
            "warnings": [
                {"bin": record.bin, "warning": warning}
                for record in sorted(ledger.bins.values(), key=lambda r: r.bin)
                for warning in record.warnings or ()
            ],
        }
    )
    return report


#: How the report names bins whose header does not say their run or sample type.
UNKNOWN = "unknown"


def sample_totals(summary: xr.Dataset, bead_runs_left_out: int) -> dict[str, Any]:
    """Complete bins by run type (NORMAL and ALT are analysed apart) and by sample type, how many have a position,
    and bead runs: left out (not complete: `Ledger.bead_runs`) and classified as asked (`classify
    --include-beads`)."""

    def by_value(name: str) -> dict[str, int]:
        counted = Counter(str(value) or UNKNOWN for value in summary[name].values)
        return dict(sorted(counted.items()))

    positioned = np.isfinite(summary.latitude.values) & np.isfinite(summary.longitude.values)
    return {
        "bins_by_run_type": by_value("run_type"),
        "bins_by_sample_type": by_value("sample_type"),
        "bins_with_position": int(positioned.sum()),
        "bead_runs_left_out": bead_runs_left_out,
        "bead_runs_classified": int(summary.bead_run.values.sum()),
    }


def _mean_or_none(values: np.ndarray) -> float | None:
    """The mean of the finite values (concentrations of bins with a volume); None when there is none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def _iso(moment: np.datetime64) -> str:
    return np.datetime_as_string(moment, unit="s") + "Z"


def plot_concentrations(
    store: ResultStore, png_path: str, counts: str = ARGMAX, class_map: ClassMap | None = None
) -> None:
    """A PNG of each class's concentration (per mL) over time: one line per class, legend, UTC dates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    summary = store.summary()
    names, _, per_ml = class_table(summary, counts, class_map)
    figure, axes = plt.subplots(figsize=(10, 5), layout="constrained")
    for i, name in enumerate(names):
        axes.plot(summary.time.values, per_ml[:, i], marker=".", label=name)
    axes.set_xlabel("bin time (UTC)")
    axes.set_ylabel("concentration (ROIs per mL)")
    axes.set_title(f"Class concentrations ({counts}), {summary.sizes['bin']} bins")
    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz="UTC"))
    if names:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="class")
    axes.grid(alpha=0.3)
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
