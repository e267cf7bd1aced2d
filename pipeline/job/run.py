"""The classification job, client side: prepare the store, plan, submit one task per partition, follow, consolidate.

The client never touches pixels or the model: it lists the archive, asks the store what is done, has the workers
read metadata and classify partitions, and finally rewrites the store's `summary` group. Everything it sends to the
cluster is URLs, options and small plans.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from distributed import Client, as_completed

from pipeline.cluster.client import GPU_RESOURCE, dashboard_link, workers_have_gpus
from pipeline.ifcb.archive import list_bins
from pipeline.ifcb.errors import BinFailure
from pipeline.job.plan import DEFAULT_PARTITION_ROIS, balanced_target, partition, read_metadata
from pipeline.job.reporting import Quiet, Reporter
from pipeline.job.worker import PartitionResult, PartitionTask, classify_partition
from pipeline.results.store import ResultStore

log = logging.getLogger(__name__)

#: How long to wait for the first worker (a batch-queue cluster starts its workers as jobs begin).
WORKER_WAIT_S = 600


@dataclass
class ClassifyRequest:
    """What to classify with what, and where the results go (the CLI's options, parsed)."""

    archive_url: str
    bundle_url: str
    store_url: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None
    bin_ids: Collection[str] | None = None
    partition_rois: int = DEFAULT_PARTITION_ROIS
    batch_size: int = 256


@dataclass
class RunSummary:
    """The outcome of one run, as printed at the end (`--json` prints `to_dict()`)."""

    store_url: str
    bundle_hash: str
    bins_listed: int = 0
    bins_already_complete: int = 0
    bins_planned: int = 0
    partitions: int = 0
    partition_rois: int = 0
    bins_done: int = 0
    bins_failed: int = 0
    rois: int = 0
    seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dashboard: str | None = None

    @property
    def rois_per_second(self) -> float:
        return self.rois / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rois_per_second": self.rois_per_second}


def run_classification(client: Client, request: ClassifyRequest, reporter: Reporter | None = None) -> RunSummary:
    """Classify every bin of the archive that the store does not hold yet; return what happened."""
    from model.bundle import read_bundle_info

    reporter = reporter or Quiet()
    started = time.perf_counter()
    options = request.storage_options
    bundle_info = read_bundle_info(request.bundle_url, options)
    store = ResultStore(request.store_url, options)
    store_info = store.prepare(bundle_info=bundle_info, bundle_url=request.bundle_url, archive_url=request.archive_url)
    summary = RunSummary(store_url=request.store_url, bundle_hash=bundle_info["content_hash"])
    summary.dashboard = dashboard_link(client)
    if summary.dashboard:
        reporter.message(f"Dask dashboard: {summary.dashboard}")

    _, bins, list_failures = list_bins(
        request.archive_url, options, start=request.start, end=request.end, bin_ids=request.bin_ids
    )
    complete = store.bin_index()
    todo = [files for files in bins if files.bin.id not in complete]
    summary.bins_listed = len(bins) + len(list_failures)
    summary.bins_already_complete = len(bins) - len(todo)
    client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    plans, meta_failures = read_metadata(client, request.archive_url, options, todo)
    early_failures = [f for f in [*list_failures, *meta_failures] if f.bin not in complete]
    for failure in early_failures:
        store.write_failure(failure)

    n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
    total_rois = sum(entry.n_rois for entry in plans)
    summary.partition_rois = balanced_target(total_rois, n_workers, request.partition_rois)
    partitions = partition(plans, summary.partition_rois)
    summary.bins_planned, summary.partitions = len(plans), len(partitions)
    reporter.message(
        f"{summary.bins_listed} bins selected, {summary.bins_already_complete} already complete, "
        f"{len(early_failures)} unreadable; classifying {len(plans)} bins ({total_rois:,} ROIs) "
        f"in {len(partitions)} partitions of ~{summary.partition_rois:,} ROIs on {n_workers} worker(s)"
    )

    classes = tuple(store_info["classes"])
    resources = {GPU_RESOURCE: 1} if workers_have_gpus(client) else None
    run_id = uuid.uuid4().hex[:8]
    futures = {}
    for index, bins_of_partition in enumerate(partitions):
        task = PartitionTask(
            index=index,
            bins=tuple(bins_of_partition),
            archive_url=request.archive_url,
            store_url=request.store_url,
            bundle_url=request.bundle_url,
            bundle_hash=bundle_info["content_hash"],
            classes=classes,
            archive_options=options,
            store_options=options,
            bundle_options=options,
            batch_size=request.batch_size,
        )
        future = client.submit(
            classify_partition, task, key=f"classify-{run_id}-{index}", pure=False, retries=2, resources=resources
        )
        futures[future] = task

    reporter.start(len(plans), total_rois)
    failures: list[BinFailure] = list(early_failures)
    try:
        for future in as_completed(list(futures)):
            task = futures[future]
            try:
                result: PartitionResult = future.result()
            except Exception as err:
                summary.errors.append(f"partition {task.index} ({len(task.bins)} bins): {type(err).__name__}: {err}")
                log.error("partition %d failed after retries: %s", task.index, err)
                reporter.advance(len(task.bins), task.n_rois)
                continue
            summary.bins_done += len(result.done) + len(result.skipped)
            summary.rois += result.rois
            failures.extend(result.failures)
            reporter.advance(len(task.bins), task.n_rois)
            future.release()
    finally:
        reporter.stop()

    summary.bins_failed = len(failures)
    summary.failures = [failure.to_dict() for failure in failures]
    store.consolidate()
    summary.seconds = time.perf_counter() - started
    return summary
