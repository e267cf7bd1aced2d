"""`ifcbflow migrate`: rewrite a store of the first layout (`ifcbflow-store/1`, one zarr group per bin) in place.

Safe to interrupt and rerun: the new partitions are written next to the old groups, the root switches layout only
once they are all committed, and the old groups are removed last (a rerun on a converted store removes what is
left of them). Scores are copied bit for bit; counts and concentrations are recomputed the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import zarr

from pipeline.ifcb.errors import BinFailure
from pipeline.results.partitions import partition_id
from pipeline.results.records import BinResult, Ledger
from pipeline.results.store import COMMITS, LAYOUT, OLD_LAYOUTS, PARTS, ResultStore, group_document

log = logging.getLogger(__name__)

OLD_BINS, OLD_FAILURES = "bins", "failures"
#: Bins per partition of a migrated store (their ROI counts are only known once read; this keeps commits small).
BINS_PER_PART = 64


def migrate_store(
    url: str, storage_options: dict[str, Any] | None = None, progress: Callable[[int, int], None] | None = None
) -> int:
    """Convert the store at `url` to the current layout; returns the number of bins moved (0 if nothing to do)."""
    store = ResultStore(url, storage_options)
    info = store.info()
    if info is None:
        raise FileNotFoundError(f"no ifcbflow store at {url}")
    if info.get("layout") == LAYOUT:
        store.remove(OLD_BINS)
        store.remove(OLD_FAILURES)
        return 0
    if info.get("layout") not in OLD_LAYOUTS:
        store.check_layout(info)  # raises with the reason
    classes = list(info["classes"])
    names = store.children(OLD_BINS)
    documents = store.read_documents([f"{OLD_BINS}/{name}/zarr.json" for name in names])
    complete = sorted(
        (meta["attributes"] for meta in documents.values() if meta.get("attributes", {}).get("complete") is True),
        key=lambda attrs: (attrs["time"], attrs["bin"]),
    )
    ledger = Ledger()
    for first in range(0, len(complete), BINS_PER_PART):
        chunk = complete[first : first + BINS_PER_PART]
        results = [_old_bin(store, attrs) for attrs in chunk]
        part = partition_id([result.bin for result in results], "migrate")
        ledger.add(store.commit_partition(part, results, classes))
        if progress is not None:
            progress(first + len(chunk), len(complete))
    failures = [
        BinFailure(**{k: v for k, v in meta["attributes"].items() if k in ("bin", "stage", "reason")})
        for meta in store.read_documents(
            [f"{OLD_FAILURES}/{name}/zarr.json" for name in store.children(OLD_FAILURES)]
        ).values()
        if meta.get("attributes")
    ]
    store.write_documents(
        {
            "zarr.json": group_document({**info, "layout": LAYOUT, "migrated_from": info.get("layout")}),
            f"{PARTS}/zarr.json": group_document({}),
            f"{COMMITS}/zarr.json": group_document({}),
        }
    )
    store.consolidate(ledger, failures, full=True)
    store.remove(OLD_BINS)
    store.remove(OLD_FAILURES)
    log.info("migrated %d bins of %s to %s", len(complete), url, LAYOUT)
    return len(complete)


def _old_bin(store: ResultStore, attrs: dict[str, Any]) -> BinResult:
    group = zarr.open_group(store.zarr_store, path=f"{OLD_BINS}/{attrs['bin']}", mode="r", zarr_format=3)
    n_rois = int(attrs["n_rois"])
    numbers = np.asarray(group["roi"][...], dtype=np.int64)[:n_rois]
    scores = np.asarray(group["scores"][...], dtype=np.float32)[:n_rois]
    time = datetime.fromisoformat(attrs["time"].replace("Z", "+00:00"))
    return BinResult(attrs["bin"], time, numbers, scores, attrs.get("ml_analyzed"))
