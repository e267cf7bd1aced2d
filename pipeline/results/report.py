"""What a store holds, as data (the CLI prints it as tables or JSON) and as a PNG of concentrations over time.

Built from the store's ledger (complete bins and failure records) at the time of asking, so it is right even after an
interrupted run whose `summary` group was never rewritten.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.redact import redact_url
from pipeline.results.store import ResultStore


def store_report(store: ResultStore) -> dict[str, Any]:
    """Totals of a store: bins complete/failed, ROIs, per-class counts, failures, model and archive."""
    ledger = store.ledger()
    info = store.info() or {}
    summary = store.summary(ledger)
    failures = [ledger.failures[bin_id].to_dict() for bin_id in sorted(ledger.failures)]
    classes = [str(c) for c in summary["class"].values]
    totals = summary.counts.sum("bin").values if summary.sizes["bin"] else np.zeros(len(classes), dtype=np.int64)
    times = summary.time.values
    return {
        "store": redact_url(store.url),
        "bundle_hash": info.get("bundle_hash"),
        "bundle_arch": info.get("bundle_arch"),
        "archive_urls": info.get("archive_urls", []),
        "bins_complete": int(summary.sizes["bin"]),
        "bins_failed": len(failures),
        "rois": int(summary.n_rois.sum()),
        "classes": classes,
        "counts": {c: int(n) for c, n in zip(classes, totals, strict=True)},
        "mean_concentration_per_ml": {
            c: _finite_or_none(np.nanmean(summary.concentration.values[:, i]) if summary.sizes["bin"] else np.nan)
            for i, c in enumerate(classes)
        },
        "bins_without_volume": int(np.isnan(summary.ml_analyzed.values).sum()),
        "first_bin_time": _iso(times.min()) if times.size else None,
        "last_bin_time": _iso(times.max()) if times.size else None,
        "failures": failures,
    }


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _iso(moment: np.datetime64) -> str:
    return np.datetime_as_string(moment, unit="s") + "Z"


def plot_concentrations(store: ResultStore, png_path: str) -> None:
    """A PNG of each class's concentration (per mL) over time: one line per class, legend, UTC dates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    summary = store.summary()
    figure, axes = plt.subplots(figsize=(10, 5), layout="constrained")
    for i, name in enumerate(summary["class"].values):
        axes.plot(summary.time.values, summary.concentration.values[:, i], marker=".", label=str(name))
    axes.set_xlabel("bin time (UTC)")
    axes.set_ylabel("concentration (ROIs per mL)")
    axes.set_title(f"Class concentrations, {summary.sizes['bin']} bins")
    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz="UTC"))
    if summary.sizes["class"]:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="class")
    axes.grid(alpha=0.3)
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
