"""Compaction: a store's small partitions (a year of `watch` polls writes one per poll) merged into large ones.

Readers open one zarr group per partition (`open_rois`, exports), so thousands of small ones cost thousands of
opens. Compaction merges consecutive small partitions (by time) into partitions of about `target_rois` ROIs, with
the same crash-safety as a run: for each merged partition, its arrays and then its commit are written (the commit
lists the partitions it `replaces`, so the ledger takes its records over theirs from that moment), then the summary
is rewritten once, and only then are the replaced partitions deleted. A compaction killed at any point loses nothing:
before a merged commit its arrays are an uncommitted partition (deleted by the next run); after it, the ledger reads
the merged records; replaced partitions that outlive a kill are deleted by the next compaction. Scores are copied
bit for bit and counts recomputed by the store's own rule.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from model.decision import threshold_array
from pipeline.results.biomass import Sizing
from pipeline.results.lease import Lease
from pipeline.results.partitions import partition_id
from pipeline.results.records import BinRecord, BinResult, Ledger
from pipeline.results.store import COMMITS, ResultStore, part_key

#: ROIs a merged partition holds at most; partitions under half of it are small.
TARGET_ROIS = 500_000


@dataclass
class Compaction:
    """What a compaction did."""

    parts_before: int = 0
    parts_merged: int = 0  # small partitions merged into others
    parts_written: int = 0
    parts_removed: int = 0  # replaced partitions deleted (this run's, and any a killed compaction left)


def compact_store(
    store: ResultStore, target_rois: int = TARGET_ROIS, progress: Callable[[int, int], None] | None = None
) -> Compaction:
    """Merge the store's small partitions; holds the store's lease (StoreBusyError while another run writes).

    `progress(done, total)` is called after each merged commit (tests stop a compaction there).
    """
    with store.lease(uuid.uuid4().hex) as lease:
        info = store.info() or {}
        return _compact(store, info, target_rois, progress, lease)


def _compact(
    store: ResultStore, info: dict, target_rois: int, progress: Callable[[int, int], None] | None, lease: Lease
) -> Compaction:
    classes = list(info["classes"])
    thresholds = threshold_array(info.get("thresholds"), classes)
    ledger = store.ledger(clean=True)
    by_part: dict[str, list[BinRecord]] = {}
    for record in ledger.bins.values():
        by_part.setdefault(record.part, []).append(record)
    done = Compaction(parts_before=len(by_part))
    groups = _groups(by_part, target_rois)
    for n, group in enumerate(groups):
        records = sorted((r for part in group for r in by_part[part]), key=lambda r: (r.time, r.bin))
        results = _results(store, group, records)
        digest = hashlib.sha256("\n".join(group).encode()).hexdigest()[:12]
        part = partition_id([r.bin for r in records], f"compact-{digest}")
        sizing = Sizing.from_attributes(info.get("morphology"))
        ledger.add(store.commit_partition(part, results, classes, thresholds=thresholds, replaces=group, sizing=sizing))
        done.parts_merged += len(group)
        done.parts_written += 1
        if progress is not None:
            progress(n + 1, len(groups))
    if ledger.changed:
        lease.check()
        store.consolidate(ledger)
    done.parts_removed = _remove_replaced(store, ledger)
    return done


def _groups(by_part: dict[str, list[BinRecord]], target_rois: int) -> list[list[str]]:
    """Runs of consecutive small partitions (by their first bin's time) of at most `target_rois` ROIs together;
    a run of one partition is left as it is."""
    small = sorted(
        (min(r.time for r in records), part, sum(r.n_rois for r in records))
        for part, records in by_part.items()
        if sum(r.n_rois for r in records) < target_rois / 2
    )
    groups: list[list[str]] = []
    current: list[str] = []
    rois = 0
    for _, part, n in small:
        if current and rois + n > target_rois:
            groups.append(current)
            current, rois = [], 0
        current.append(part)
        rois += n
    groups.append(current)
    return [group for group in groups if len(group) > 1]


def _results(store: ResultStore, parts: Sequence[str], records: Sequence[BinRecord]) -> list[BinResult]:
    """The bins of `records` with their ROI numbers, scores, embeddings and morphology (where the store has them),
    warnings, the fingerprints of their files and their sample metadata, read from `parts` (each read once)."""
    arrays = {}
    for part in parts:
        _, numbers, scores = store.read_part(part)
        arrays[part] = (numbers, scores, store.read_embeddings(part), store.read_morphology(part))
    results = []
    for record in records:
        numbers, scores, embeddings, morphology = arrays[record.part]
        rows = slice(record.roi_offset, record.roi_offset + record.n_rois)
        moment = datetime.fromisoformat(record.time.replace("Z", "+00:00"))
        features = None if embeddings is None else embeddings[rows]
        warnings = tuple(record.warnings or ())
        result = BinResult(
            record.bin, moment, np.asarray(numbers[rows]), scores[rows], record.ml_analyzed, warnings, features,
            record.files_digest, record.sample, None if morphology is None else morphology[rows],
        )  # fmt: skip
        results.append(result)
    return results


def _remove_replaced(store: ResultStore, ledger: Ledger) -> int:
    """Delete the committed partitions whose bins all live in other partitions now (a merged commit replaced
    them): those the summary includes, no complete bin refers to, and whose commit lists bins. Commits of failed
    bins only are kept."""
    referenced = {record.part for record in ledger.bins.values()}
    unreferenced = [part for part in store.children(COMMITS) if part in ledger.parts and part not in referenced]
    documents = store.read_documents([f"{COMMITS}/{part}/zarr.json" for part in unreferenced])
    replaced = [
        part
        for part in unreferenced
        if documents.get(f"{COMMITS}/{part}/zarr.json", {}).get("attributes", {}).get("bins")
    ]
    for part in replaced:
        store.remove(f"{COMMITS}/{part}")  # the commit first: a partition without one is deleted by any next run
        store.remove(part_key(part))
    return len(replaced)
