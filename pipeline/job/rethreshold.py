"""Re-thresholding a store: new thresholds applied to the stored scores on the cluster, without the model.

Thresholds are decisions on stored scores; the store's identity is the model. `rethreshold` reads each partition's
`scores` (one array per partition: no pixels, no model, a small fraction of a classification's work), counts every
complete bin's ROIs by the new thresholds (`model.decision.class_counts`, the rule every count follows), and
rewrites the summary; exports and reports follow the store's thresholds from then on.

The change is crash-safe in three writes: the root attributes first say which change is under way
(`thresholds_pending`), then the summary is rewritten with the new counts, then the root takes the new thresholds
(with their sha256, source and the number of bins they were applied to, appended to `decisions`) and drops the
pending mark. A run killed in between leaves the mark, which refuses readers and writers with a message naming
the command that finishes the change; running it again redoes the counts from the scores.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec
import numpy as np
from distributed import Client, as_completed

from model.decision import class_counts, parse_thresholds_file, threshold_array, thresholds_digest
from pipeline.faults import with_retries
from pipeline.job.reporting import Quiet, Reporter
from pipeline.redact import redact_url
from pipeline.results.records import BinRecord, Ledger
from pipeline.results.store import (
    PENDING_DECISION,
    ResultStore,
    StoreMismatchError,
    decision_attributes,
    model_identity,
)

#: ROIs whose scores one task reads at most (a partition is never split; 1 M ROIs x 10 classes is 40 MB of float32).
ROIS_PER_TASK = 1_000_000
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class RecountTask:
    """One task: partitions of the store and, per partition, its bins' (bin, first row, ROIs)."""

    store_url: str
    store_options: dict[str, Any]
    parts: tuple[tuple[str, tuple[tuple[str, int, int], ...]], ...]
    thresholds: tuple[float, ...]


@dataclass
class RethresholdSummary:
    """What `rethreshold` did (`--json` prints `asdict`)."""

    store_url: str
    thresholds_sha256: str
    previous_sha256: str
    source: str
    bins: int = 0
    rois: int = 0
    partitions: int = 0
    tasks: int = 0
    seconds: float = 0.0
    changed: bool = True


def read_thresholds(url: str, storage_options: dict[str, Any], info: dict[str, Any]) -> dict[str, float] | None:
    """The thresholds at `url` for a store of `info`: a model bundle's (None: it has none, argmax) or a JSON
    thresholds file's (`model.decision.parse_thresholds_file`).

    A bundle must hold the store's model (StoreMismatchError otherwise); ValueError for thresholds that name no
    class of the store or lie outside [0, 1].
    """
    from model.bundle import read_bundle_info

    with fsspec.open(url, "rb", **storage_options) as f:
        data = f.read(len(_ZIP_MAGIC))
    classes = list(info["classes"])
    if data == _ZIP_MAGIC:
        bundle = with_retries(lambda: read_bundle_info(url, storage_options), f"reading {redact_url(url)}")
        stored = info.get("model_hash")
        same = bundle["content_hash"] == info.get("bundle_hash") if stored is None else model_identity(bundle) == stored
        if not same or list(bundle["classes"]) != classes:
            raise StoreMismatchError(
                f"{redact_url(url)} holds another model than the store's; give a bundle of the store's model or a "
                "thresholds file (JSON {class: threshold})"
            )
        thresholds = bundle.get("thresholds")
    else:
        with fsspec.open(url, "rb", **storage_options) as f:
            thresholds = parse_thresholds_file(f.read(), redact_url(url))
    threshold_array(thresholds, classes)  # raises ValueError naming what is wrong
    return thresholds


def rethreshold_store(
    client: Client,
    store_url: str,
    storage_options: dict[str, Any],
    thresholds_url: str,
    reporter: Reporter | None = None,
) -> RethresholdSummary:
    """Apply the thresholds at `thresholds_url` to every complete bin of the store; returns what was done.

    Raises FileNotFoundError (no store), StoreMismatchError (a bundle of another model), StoreBusyError (another
    run writes the store), ValueError (thresholds that do not fit the store's classes).
    """
    reporter = reporter or Quiet()
    started = time.perf_counter()
    store = ResultStore(store_url, storage_options)
    info = store.info()
    if info is None:
        raise FileNotFoundError(f"no ifcbflow store at {redact_url(store_url)}")
    store.check_layout(info)
    classes = list(info["classes"])
    thresholds = read_thresholds(thresholds_url, storage_options, info)
    digest = thresholds_digest(thresholds, classes)
    source = redact_url(thresholds_url)
    previous = info.get("thresholds_sha256") or thresholds_digest(info.get("thresholds"), classes)
    summary = RethresholdSummary(redact_url(store_url), digest, previous, source)
    with store.lease(uuid.uuid4().hex) as lease:
        info = store.info() or info
        if digest == previous and PENDING_DECISION not in info:
            summary.changed = False
            return summary
        ledger = store.ledger(clean=True, finishing_decision=True)
        records = list(ledger.bins.values())
        store.write_info({**info, PENDING_DECISION: {"thresholds_sha256": digest, "source": source}})
        counts = {} if thresholds is None else _recount(client, store, records, classes, thresholds, summary, reporter)
        zeros = None if thresholds is None else [0] * (len(classes) + 1)  # bins without ROIs
        bins = {r.bin: dataclasses.replace(r, counts_thresholded=counts.get(r.bin, zeros)) for r in records}
        failures = ledger.recorded  # the bead runs left out too
        decided = Ledger(set(ledger.complete), set(ledger.parts), load=lambda: (bins, failures))
        attributes = decision_attributes(thresholds, classes, source=source)
        settled = {key: value for key, value in info.items() if key not in (PENDING_DECISION, "thresholds")}
        decision = {
            "thresholds_sha256": digest,
            "source": source,
            "previous_sha256": previous,
            "bins": len(records),
            "applied": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        new_info = {**settled, **attributes, "decisions": [*info.get("decisions", []), decision]}
        lease.check()
        # the summary first (rewritten whole: every bin's counts change), then the root that makes it the decision
        store.consolidate(decided, info=new_info, full=True)
        store.write_info(new_info)
    summary.bins = len(records)
    summary.rois = sum(record.n_rois for record in records)
    summary.seconds = time.perf_counter() - started
    return summary


def recount(task: RecountTask) -> list[tuple[str, list[int]]]:
    """Task: each listed bin's counts by `task.thresholds` (classes, then unclassified), from the stored scores."""
    store = ResultStore(task.store_url, task.store_options)
    thresholds = np.asarray(task.thresholds)
    out = []
    for part, spans in task.parts:
        scores = store.read_scores(part)
        for bin_id, offset, n in spans:
            out.append((bin_id, class_counts(scores[offset : offset + n], thresholds).tolist()))
    return out


def _recount(
    client: Client,
    store: ResultStore,
    records: Sequence[BinRecord],
    classes: Sequence[str],
    thresholds: dict[str, float],
    summary: RethresholdSummary,
    reporter: Reporter,
) -> dict[str, list[int]]:
    """Every record's thresholded counts, computed on the cluster a few partitions per task."""
    values = threshold_array(thresholds, classes)
    assert values is not None
    tasks = list(_tasks(store, records, tuple(values.tolist())))
    summary.partitions = sum(len(task.parts) for task in tasks)
    summary.tasks = len(tasks)
    reporter.message(f"recounting {len(records)} bins from {summary.partitions} partitions in {len(tasks)} tasks")
    reporter.start(len(records))
    counts: dict[str, list[int]] = {}
    try:
        for future in as_completed(client.map(recount, tasks, key=[f"recount-{uuid.uuid4().hex}" for _ in tasks])):
            done = future.result()
            counts.update(done)
            reporter.advance(len(done), 0)
    finally:
        reporter.stop()
    return counts


def _tasks(store: ResultStore, records: Sequence[BinRecord], thresholds: tuple[float, ...]) -> Iterator[RecountTask]:
    by_part: dict[str, list[BinRecord]] = {}
    for record in records:
        if record.n_rois:
            by_part.setdefault(record.part, []).append(record)
    batch: list[tuple[str, tuple[tuple[str, int, int], ...]]] = []
    rois = 0
    for part in sorted(by_part):
        spans = tuple((r.bin, r.roi_offset, r.n_rois) for r in by_part[part])
        size = sum(n for _, _, n in spans)
        if batch and rois + size > ROIS_PER_TASK:
            yield RecountTask(store.url, store.storage_options, tuple(batch), thresholds)
            batch, rois = [], 0
        batch.append((part, spans))
        rois += size
    if batch:
        yield RecountTask(store.url, store.storage_options, tuple(batch), thresholds)
