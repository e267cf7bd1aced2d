"""Two output stores compared ROI by ROI: the bin stream `pipeline.results.compare` folds, read from both stores.

Only bins complete in both stores are compared (the others are counted). Each side streams its partitions in time
order, holding one partition at a time, so memory does not grow with the archive. Each store's ROIs are decided by
its own model's rule: its bundle's thresholds (`unclassified` below them) unless `use_thresholds` is off, and plain
argmax for a bundle without thresholds. That compares what each model reports, the way each store's counts do.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from model.decision import threshold_array, winners
from pipeline.redact import redact_url
from pipeline.results.compare import BinWinners, Comparer, Comparison
from pipeline.results.records import Ledger
from pipeline.results.remap import ClassMap
from pipeline.results.report import ARGMAX, THRESHOLDED
from pipeline.results.store import ResultStore


@dataclass
class StoreComparison:
    """A comparison of two stores: the ROI-level result, which rule decided each side, bins only one side holds."""

    store_a: str
    store_b: str
    decision_a: str
    decision_b: str
    bins_only_a: int
    bins_only_b: int
    comparison: Comparison

    def to_dict(self) -> dict[str, Any]:
        """What `compare --json` prints."""
        return {
            "store_a": self.store_a,
            "store_b": self.store_b,
            "decision_a": self.decision_a,
            "decision_b": self.decision_b,
            "bins_only_a": self.bins_only_a,
            "bins_only_b": self.bins_only_b,
            **self.comparison.to_dict(),
        }


def compare_stores(
    store_a: ResultStore,
    store_b: ResultStore,
    *,
    map_a: ClassMap | None = None,
    map_b: ClassMap | None = None,
    use_thresholds: bool = True,
    top_n: int = 10,
) -> StoreComparison:
    """Compare the bins both stores hold; FileNotFoundError when either is not a store."""
    ledger_a, ledger_b = store_a.ledger(), store_b.ledger()  # these check that each is a store of this layout
    info_a, info_b = store_a.info() or {}, store_b.info() or {}
    classes_a, classes_b = list(info_a["classes"]), list(info_b["classes"])
    rule_a = threshold_array(info_a.get("thresholds"), classes_a) if use_thresholds else None
    rule_b = threshold_array(info_b.get("thresholds"), classes_b) if use_thresholds else None
    common = ledger_a.bins.keys() & ledger_b.bins.keys()
    comparer = Comparer(classes_a, classes_b, map_a, map_b, top_n)
    for a, b in zip(_bins(store_a, ledger_a, common), _bins(store_b, ledger_b, common), strict=True):
        (record_a, rois_a, scores_a), (record_b, rois_b, scores_b) = a, b
        if record_a.bin != record_b.bin:  # both streams are in (time, bin) order of the same bins
            raise RuntimeError(f"bins out of step: {record_a.bin} in A, {record_b.bin} in B")
        comparer.add(
            BinWinners(record_a.bin, rois_a, winners(scores_a, rule_a), rois_b, winners(scores_b, rule_b))
        )
    return StoreComparison(
        store_a=redact_url(store_a.url),
        store_b=redact_url(store_b.url),
        decision_a=ARGMAX if rule_a is None else THRESHOLDED,
        decision_b=ARGMAX if rule_b is None else THRESHOLDED,
        bins_only_a=len(ledger_a.bins.keys() - common),
        bins_only_b=len(ledger_b.bins.keys() - common),
        comparison=comparer.result(),
    )


def _bins(store: ResultStore, ledger: Ledger, keep: set[str]) -> Iterator[Any]:
    return store.iter_bins(ledger.bins[bin_id] for bin_id in keep)
