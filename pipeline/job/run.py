"""The classification job, client side: check, take the store, plan, submit one task per partition, follow, consolidate.

The client never touches pixels or the model: it reads the store's ledger, lists the archive as a stream (only the day
folders the request can touch), forms partitions of the bins that are not complete while the listing goes on and
submits them a few per worker at a time (so the first bins are classified long before a large archive is listed,
and no run waits on one straggler longer than one partition), and finally appends its bins to the store's
`summary`. A bin that failed as bad data is not read again while its files are the ones it failed with (same sizes
and ETags or modification times, as the listing gives them), unless the request asks to retry failed bins: it stays
failed in the run's summary (and its exit code) without costing a read. A bead run by its header
(`pipeline.ifcb.sample`) is left out the same way: the worker stops at its header (its images are never read) and
commits a record of kind "beads" (not plankton, never failed, no exit code of its own), which later runs skip while
its files are unchanged, unless the request includes bead runs.
Everything it sends to the cluster is URLs, options and small plans. Bad input is refused before anything is
written: an empty time window, a missing archive, bins asked for that the archive lacks, a bundle that cannot be
read.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Collection, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from distributed import Client, as_completed

from model.bundle import runtimes
from model.decision import threshold_array, thresholds_digest
from pipeline.cluster.client import GPU_RESOURCE, SMALL_JOB_BINS, DeferredCluster, dashboard_link, workers_have_gpus
from pipeline.faults import ConfigurationError, is_node_fault, with_retries
from pipeline.ifcb.archive import EXCLUDED_FOLDERS, NOT_IN_ARCHIVE, iter_bins
from pipeline.ifcb.bins import BinFiles
from pipeline.ifcb.errors import BinFailure
from pipeline.job.feeder import NODE_ADVICE
from pipeline.job.plan import DEFAULT_PARTITION_MB, MB, balanced_target, bin_weight, stream_partitions
from pipeline.job.reporting import Quiet, Reporter
from pipeline.job.worker import JobSpec, PartitionResult, PartitionTask, classify_partition
from pipeline.morphology.units import DEFAULT_CALIBRATION, parse_calibration
from pipeline.redact import redact_text, redact_url
from pipeline.results.biomass import Sizing
from pipeline.results.lease import Lease, StoreBusyError
from pipeline.results.partitions import partition_id
from pipeline.results.records import Ledger, files_changed
from pipeline.results.store import ResultStore
from pipeline.results.taxa import read_taxon_table

log = logging.getLogger(__name__)

#: Partitions submitted per worker at most (one running, one queued): later ones are formed as earlier ones finish.
IN_FLIGHT_PER_WORKER = 2
#: How long to wait for the first worker (a batch-queue cluster starts its workers as jobs begin).
WORKER_WAIT_S = 600


class UsageError(ValueError):
    """The request cannot be right as given (an empty time window, bins the archive does not have)."""


def check_window(request: ClassifyRequest) -> None:
    """Refuse an empty time window: it would select nothing and look like success."""
    if request.start and request.end and request.start >= request.end:
        raise UsageError(f"--start {request.start.isoformat()} is not before --end {request.end.isoformat()}")


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
    partition_mb: float = DEFAULT_PARTITION_MB
    batch_size: int | None = None
    feeders: int | None = None
    exclude_folders: tuple[str, ...] = EXCLUDED_FOLDERS
    retry_failed: bool = False  # read bins that failed as bad data again even if their files have not changed
    include_beads: bool = False  # classify bead runs by their header too (`pipeline.ifcb.sample`), even those left out
    embeddings: bool = False  # also store each ROI's penultimate features
    feeder_kind: str | None = None  # "processes" or "threads"; None: processes on GPU workers, threads on CPU ones
    runtime: str | None = None  # "keras" or "onnx"; None or "auto": `model.inference.runtimes.choose_runtime`'s rule
    morphology: bool = False  # measure each ROI too (`pipeline.morphology`): biovolume and carbon per class
    pixels_per_micron: str | None = None  # the calibration (`pipeline.morphology.units.parse_calibration`)
    taxa_url: str | None = None  # the class-to-taxon table: which classes are diatoms (carbon)


@dataclass
class RunSummary:
    """The outcome of one run, as printed at the end (`--json` prints `to_dict()`)."""

    store_url: str
    bundle_hash: str
    bins_listed: int = 0
    bins_already_complete: int = 0
    bins_known_bad: int = 0  # failed before with the same files: not read again (still counted in bins_failed)
    bins_changed: int = 0  # complete, but their files changed since (sizes): classified again (in bins_planned)
    bins_measured_now: int = 0  # complete, but classified before the store measured: classified again to measure
    bins_bead_runs: int = 0  # bead runs by their header, left out: neither classified nor failed (`bead_runs`)
    bins_planned: int = 0
    partitions: int = 0
    partition_mb: float = 0.0
    bins_done: int = 0
    bins_failed: int = 0
    bins_incomplete: int = 0
    rois: int = 0
    seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    incomplete: list[dict[str, str]] = field(default_factory=list)
    bead_runs: list[dict[str, str]] = field(default_factory=list)  # their records (kind "beads", the reason, files)
    left_out: dict[str, dict[str, Any]] = field(default_factory=dict)  # the listing's `LeftOut.to_dict()`
    #: where the time went: the workers' stages summed over partitions (`pipeline.job.worker.STAGES`: feeder stages
    #: in thread-seconds, the task thread's in seconds), and this process's "start" (bundle, ledger, the head of the
    #: listing, the cluster: until the first partition is submitted) and "consolidate"
    stage_seconds: dict[str, float] = field(default_factory=dict)
    dashboard: str | None = None

    @property
    def rois_per_second(self) -> float:
        return self.rois / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Whether every selected bin is complete in the store (no failure, nothing left to redo)."""
        return not self.bins_failed and not self.bins_incomplete

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rois_per_second": self.rois_per_second, "complete": self.complete}


def run_classification(
    client: Client | DeferredCluster, request: ClassifyRequest, reporter: Reporter | None = None
) -> RunSummary:
    """Classify every selected bin of the archive that the store does not hold yet; return what happened.

    On a `DeferredCluster` the cluster is started once the listing shows what the run needs (none for nothing to
    classify, one worker thread in this process for a small job: `pipeline.cluster.client.SMALL_JOB_BINS`), while the
    rest of the archive's head is listed.

    Raises `UsageError` or `ConfigurationError` (nothing written) for a request that cannot succeed,
    `StoreMismatchError` for a store of another model, `StoreBusyError` for a store another run holds.
    """
    from model.bundle import BundleError, read_bundle_info
    from model.inference.runtimes import check_runtime

    reporter = reporter or Quiet()
    started = time.perf_counter()
    options = request.storage_options
    check_window(request)
    try:
        bundle_info = with_retries(lambda: read_bundle_info(request.bundle_url, options), "reading the bundle")
        # the runtime that must run it can be imported (`model.inference.runtimes`): else every partition fails on it
        check_runtime(runtimes(bundle_info), request.runtime)
    except BundleError as err:
        raise ConfigurationError(redact_text(str(err))) from None
    try:
        _, listing = iter_bins(
            request.archive_url, options, start=request.start, end=request.end, bin_ids=request.bin_ids,
            exclude=request.exclude_folders,
        )  # fmt: skip
    except FileNotFoundError as err:  # its message names the archive (redacted)
        raise ConfigurationError(str(err)) from None
    listed: Iterable[BinFiles | BinFailure] = listing
    if request.bin_ids is not None:  # a list of bins is listed whole (its days only), so that bins it names that
        listed = list(listing)  # the archive lacks are refused before anything is written
        unknown = [f.bin for f in listed if isinstance(f, BinFailure) and f.reason == NOT_IN_ARCHIVE]
        if unknown:
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise UsageError(
                f"--bins names bins the archive does not have: {', '.join(unknown[:5])}{more} (looked in the day "
                "folders of their days and of the days either side, outside excluded folders)"
            )

    asked = AskedSizing.of(request, list(bundle_info["classes"]))
    store = ResultStore(request.store_url, options)
    summary = RunSummary(store_url=redact_url(request.store_url), bundle_hash=bundle_info["content_hash"])
    with store.lease(uuid.uuid4().hex) as lease:  # first: two first runs on one new --out never both create it
        store_info = store.prepare(
            bundle_info=bundle_info,
            bundle_url=request.bundle_url,
            archive_url=request.archive_url,
            embeddings=request.embeddings,
        )
        if thresholds_digest(bundle_info.get("thresholds"), store_info["classes"]) != store_info["thresholds_sha256"]:
            reporter.message(
                f"counts follow the store's thresholds ({store_info['thresholds_sha256'][:12]}, from "
                f"{store_info.get('thresholds_source')}), not the bundle's; `ifcbflow rethreshold` changes them"
            )
        kept = Sizing.from_attributes(store_info.get("morphology"))
        sizing = store.adopt_sizing(None if asked is None else asked.given(kept))
        if sizing is not None:
            store_info = {**store_info, "morphology": sizing.to_attributes()}
        ledger = store.ledger(clean=True)
        selection = Selection(
            ledger, retry_failed=request.retry_failed, include_beads=request.include_beads,
            unmeasured=ledger.unmeasured() if sizing is not None else frozenset(),
        )  # fmt: skip
        target = int(request.partition_mb * MB)
        reporter.message("classifying the bins not in the store as the archive is listed")
        n_workers = 0
        node_failures: list[BinFailure] = []  # bins the worker's own thread could not hold (`_follow`)
        try:
            todo = selection.todo(listed)
            if isinstance(client, DeferredCluster):
                head = list(itertools.islice(todo, SMALL_JOB_BINS + 1))  # what the cluster must be: none, small, more
                if head:
                    client.start(bins=len(head))
                todo = itertools.chain(head, todo)
                n_workers = 1 if client.in_process else client.planned_workers
            else:
                n_workers = _connected_workers(client, summary, reporter)
            partitions = stream_partitions(todo, n_workers, target)
            first = next(partitions, None)  # lists the head of the archive while a deferred cluster starts
            if first is not None:
                if isinstance(client, DeferredCluster):
                    in_process = client.in_process
                    client = client.client()
                    n_workers = _connected_workers(client, summary, reporter, in_process)
                partitions = itertools.chain([first], partitions)
                summary.stage_seconds["start"] = time.perf_counter() - started
                _follow(client, request, store_info, bundle_info, partitions, n_workers, ledger, summary, reporter,
                        node_failures)  # fmt: skip
        finally:
            list_failures = selection.failures
            found = [*list_failures, *node_failures]  # failures no commit holds
            changed = ledger.changed or any(ledger.failures.get(f.bin) != f for f in found)
            # a measuring store's summary of before its count of unmeasured bins: written once, so that later runs
            # need not read every bin record to find them (`Ledger.unmeasured`)
            changed = changed or (sizing is not None and ledger.rows is not None and not ledger.counts_unmeasured)
            if changed and _still_held(lease):  # a run that lost the lease leaves the summary to the next one
                consolidating = time.perf_counter()
                store.consolidate(ledger, found)
                summary.stage_seconds["consolidate"] = time.perf_counter() - consolidating
        summary.bins_listed = selection.complete + len(list_failures)
        summary.bins_already_complete = (
            selection.complete - selection.planned - len(selection.known_bad) - len(selection.bead_runs)
        )
        summary.bins_planned = selection.planned
        summary.bins_known_bad = len(selection.known_bad)
        summary.bins_changed = len(selection.changed)
        summary.bins_measured_now = len(selection.measured_now)
        if selection.measured_now:
            reporter.message(
                f"{len(selection.measured_now)} complete bins were classified before the store measured: read and "
                "classified again with its model, to measure them"
            )
        if selection.changed:
            shown = ", ".join(selection.changed[:3]) + (", ..." if len(selection.changed) > 3 else "")
            reporter.message(
                f"{len(selection.changed)} complete bins whose files changed since they were classified (other "
                f"sizes: a copy that was still being written): classified again ({shown})"
            )
        if selection.known_bad:
            reporter.message(
                f"{len(selection.known_bad)} bins failed before with the same files: not read again "
                "(--retry-failed reads them)"
            )
        summary.bead_runs += [run.to_dict() for run in selection.bead_runs]
        if summary.bead_runs:
            reporter.message(
                f"{len(summary.bead_runs)} bead runs by their header left out: not plankton, not failed, not read "
                "again while their files are unchanged (--include-beads classifies them)"
            )
        summary.left_out = listing.left_out.to_dict()
        for line in listing.left_out.lines():
            reporter.message(line)
        summary.partition_mb = balanced_target(selection.weight, max(n_workers, 1), target) / MB
        reporter.message(
            f"{summary.bins_listed} bins selected, {summary.bins_already_complete} already complete, "
            f"{len(list_failures)} incomplete in the archive; classified {selection.planned} bins "
            f"({selection.roi_bytes / MB:,.1f} MB of images) in {summary.partitions} partitions"
        )
    summary.failures += [failure.to_dict() for failure in [*list_failures, *selection.known_bad]]
    summary.failures.sort(key=lambda failure: failure["bin"])
    summary.incomplete.sort(key=lambda entry: entry["bin"])
    summary.bead_runs.sort(key=lambda entry: entry["bin"])
    summary.bins_failed, summary.bins_incomplete = len(summary.failures), len(summary.incomplete)
    summary.bins_bead_runs = len(summary.bead_runs)
    summary.seconds = time.perf_counter() - started
    return summary


def _still_held(lease: Lease) -> bool:
    """Whether the lease is still this run's, asked afresh (`Lease.check`): else the summary is not written, the
    run ends with StoreBusyError when its lease closes, and its commits wait for the next run."""
    try:
        lease.check()
    except StoreBusyError:
        return False
    return True


def _connected_workers(client: Client, summary: RunSummary, reporter: Reporter, in_process: bool = False) -> int:
    """Wait for the first worker; say where the dashboard is and how many workers there are."""
    client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    if in_process:
        reporter.message("on 1 worker thread in this process (a small job: no worker processes to start)")
        return 1
    summary.dashboard = dashboard_link(client)
    if summary.dashboard:
        reporter.message(f"Dask dashboard: {summary.dashboard}")
    n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
    reporter.message(f"on {n_workers} worker(s)")
    return n_workers


class Selection:
    """The bins of a listing that a run classifies, counted as they go by: those not complete in the store, less the
    known-bad ones (a recorded data failure whose files are unchanged since) unless `retry_failed`, less the bead runs
    left out before (a record of kind "beads" whose files are unchanged since) unless `include_beads`, and the
    complete ones whose files are not those they were classified from (`pipeline.results.records.files_digest`: the
    sizes changed, as when a copy was taken while the instrument was still writing): a bin is complete only for the
    files it was read from. With `unmeasured` (the complete bins without biovolume, of a run that measures), those
    bins are planned too: a store that measures holds every bin it shows measured alike."""

    def __init__(
        self, ledger: Ledger, *, retry_failed: bool = False, include_beads: bool = False,
        unmeasured: AbstractSet[str] = frozenset(),
    ) -> None:  # fmt: skip
        self.ledger = ledger
        self.unmeasured = unmeasured
        self.retry_failed = retry_failed
        self.include_beads = include_beads
        self.complete = 0  # complete bins listed
        self.planned = 0  # of which not yet in the store
        self.weight = 0  # `plan.bin_weight` of the planned bins
        self.roi_bytes = 0
        self.failures: list[BinFailure] = []  # bins the archive holds incomplete
        self.known_bad: list[BinFailure] = []  # bins not read again: they failed with the files they still have
        self.bead_runs: list[BinFailure] = []  # bead runs not read again: left out with the files they still have
        self.changed: list[str] = []  # complete bins whose files changed since: classified again
        self.measured_now: list[str] = []  # complete bins not measured: classified again, measured

    def todo(self, listed: Iterable[BinFiles | BinFailure]) -> Iterator[BinFiles]:
        """The planned bins of `listed`, in its order."""
        for item in listed:
            if isinstance(item, BinFailure):
                self.failures.append(item)
                continue
            self.complete += 1
            if item.bin.id in self.ledger.complete:
                if self._changed(item):
                    self.changed.append(item.bin.id)
                elif item.bin.id in self.unmeasured:
                    self.measured_now.append(item.bin.id)
                else:
                    continue
            if (known := self._known_bad(item)) is not None:
                self.known_bad.append(known)
                continue
            if (bead_run := self._known_bead_run(item)) is not None:
                self.bead_runs.append(bead_run)
                continue
            self.planned += 1
            self.weight += bin_weight(item)
            self.roi_bytes += item.roi_size
            yield item

    def _changed(self, files: BinFiles) -> bool:
        """Whether a complete bin's listed files differ from those it was classified from (both fingerprints known)."""
        return files_changed(self.ledger.digests.get(files.bin.id), files.sizes)

    def _known_bad(self, files: BinFiles) -> BinFailure | None:
        """The recorded data failure of `files`' bin when its files are the ones it failed with."""
        if self.retry_failed:
            return None
        failure = self.ledger.failures.get(files.bin.id)
        if failure is not None and failure.kind == "data" and failure.files and failure.files == files.stamp:
            return failure
        return None

    def _known_bead_run(self, files: BinFiles) -> BinFailure | None:
        """The recorded bead run of `files`' bin when its files are the ones it was left out with."""
        if self.include_beads:
            return None
        bead_run = self.ledger.bead_runs.get(files.bin.id)
        if bead_run is not None and bead_run.files and bead_run.files == files.stamp:
            return bead_run
        return None


@dataclass(frozen=True)
class AskedSizing:
    """The morphology settings a run gives (`classify --morphology/--pixels-per-micron/--taxa`), read and checked
    before anything is written; None where it gives none (the store's own, or the default, apply)."""

    calibration: dict[str, float] | None
    diatoms: tuple[bool, ...] | None
    taxa_source: str | None

    @classmethod
    def of(cls, request: ClassifyRequest, classes: list[str]) -> AskedSizing | None:
        """None when the run asks for no morphology. Raises UsageError for a calibration or a class-to-taxon table
        that cannot be read, or a table that lacks a class of the model."""
        if not (request.morphology or request.pixels_per_micron or request.taxa_url):
            return None
        try:
            calibration = None if request.pixels_per_micron is None else parse_calibration(request.pixels_per_micron)
            diatoms = None
            if request.taxa_url is not None:
                table = read_taxon_table(request.taxa_url, classes, request.storage_options)
                diatoms = tuple(table.diatom_flags(classes).tolist())
        except (ValueError, FileNotFoundError) as err:
            raise UsageError(redact_text(str(err))) from None
        return cls(calibration, diatoms, None if request.taxa_url is None else redact_url(request.taxa_url))

    def given(self, kept: Sizing | None) -> Sizing:
        """The settings in full: what the run gives, else the store's (`kept`), else the default calibration and
        no table (no carbon)."""
        calibration = self.calibration or (kept.calibration if kept is not None else dict(DEFAULT_CALIBRATION))
        if self.diatoms is not None:
            return Sizing(calibration, self.diatoms, self.taxa_source)
        return Sizing(calibration, *((kept.diatoms, kept.taxa_source) if kept is not None else (None, None)))


def _node_fault(
    task: PartitionTask,
    err: BaseException,
    submit: Any,
    split: set[str],
    node_failures: list[BinFailure],
    summary: RunSummary,
    reporter: Reporter,
) -> None:
    """A partition that the node's limit failed twice in the worker's thread: its bins, each alone, once more (noted
    in `split`); a bin alone, recorded at stage "node" (see `_follow`)."""
    what = redact_text(f"{type(err).__name__}: {err}")
    if len(task.bins) > 1:
        log.warning("partition %s: the worker ran out of memory (%s): its %d bins once more, each alone",
                    task.part, what, len(task.bins))  # fmt: skip
        for files in task.bins:
            split.add(files.bin.id)
            submit([files])
        return
    (files,) = task.bins
    attempts = "2 with its partition and 2 alone" if files.bin.id in split else "2, alone"
    reason = (
        f"the worker ran out of memory classifying it ({what}), in {attempts}: a limit of the node, not a fault of "
        f"the bin's files; a smaller --batch-size may fit, or {NODE_ADVICE}"
    )
    log.warning("bin %s: %s", files.bin.id, reason)
    failure = BinFailure(files.bin.id, "node", reason, files=files.stamp)
    node_failures.append(failure)
    summary.failures.append(failure.to_dict())
    reporter.advance(1, 0)


def _store_thresholds(store_info: dict[str, Any]) -> tuple[float, ...] | None:
    """The store's thresholds in class order (what tasks count by), or None (argmax only)."""
    values = threshold_array(store_info.get("thresholds"), store_info["classes"])
    return None if values is None else tuple(values.tolist())


def _follow(
    client: Client,
    request: ClassifyRequest,
    store_info: dict[str, Any],
    bundle_info: dict[str, Any],
    partitions: Iterator[list[BinFiles]],
    n_workers: int,
    ledger: Ledger,
    summary: RunSummary,
    reporter: Reporter,
    node_failures: list[BinFailure],
) -> None:
    """Submit partitions as they are formed, `IN_FLIGHT_PER_WORKER` per worker at most, and take in their commits
    (and their failed and incomplete bins) as they come; stop at the first configuration fault.

    A partition that fails both its attempts on a fault of the node in the worker's own thread (batching, the model,
    the commit: `MemoryError`, `ENOMEM`) is split: each of its bins is tried once more in a partition of its own, and
    a bin that fails so alone is recorded at stage "node" (appended to `node_failures`), the reason naming the limit,
    as a feeder's bin is (`pipeline.job.feeder`): neither redone by every run forever nor taken for bad data."""
    resources = {GPU_RESOURCE: 1} if workers_have_gpus(client) else None
    run_id = uuid.uuid4().hex[:8]
    job = JobSpec(
        archive_url=request.archive_url,
        store_url=request.store_url,
        bundle_url=request.bundle_url,
        bundle_hash=bundle_info["content_hash"],
        classes=tuple(store_info["classes"]),
        storage_options=request.storage_options,
        batch_size=request.batch_size,
        feeders=request.feeders,
        feeder_kind=request.feeder_kind,
        embeddings=request.embeddings,
        include_beads=request.include_beads,
        runtimes=runtimes(bundle_info),
        runtime=request.runtime,
        thresholds=_store_thresholds(store_info),
        sizing=store_info.get("morphology"),
    )
    futures: dict[Any, PartitionTask] = {}
    running = as_completed()
    split: set[str] = set()  # bins tried alone after their partition ran out of the node's memory

    def submit_next() -> None:
        bins = next(partitions, None)
        if bins is not None:
            submit(bins)
            summary.partitions += 1
            reporter.grow(len(bins))

    def submit(bins: list[BinFiles]) -> None:
        task = PartitionTask(partition_id([files.bin.id for files in bins], run_id), tuple(bins), job)
        future = client.submit(classify_partition, task, key=f"classify-{run_id}-{task.part}", retries=1,
                               resources=resources)  # fmt: skip
        futures[future] = task
        running.add(future)

    reporter.start(0)
    try:
        for _ in range(IN_FLIGHT_PER_WORKER * max(n_workers, 1)):
            submit_next()
        for future in running:
            task = futures.pop(future)
            try:
                result: PartitionResult = future.result()
            except Exception as err:
                if is_node_fault(err):
                    _node_fault(task, err, submit, split, node_failures, summary, reporter)
                    if len(task.bins) == 1:
                        submit_next()
                    continue
                reason = redact_text(f"partition lost: {type(err).__name__}: {err}")
                log.error("partition %s failed after retries: %s", task.part, reason)
                summary.incomplete += [{"bin": files.bin.id, "reason": reason} for files in task.bins]
                reporter.advance(len(task.bins), 0)
                submit_next()
                continue
            if result.configuration_error:
                for pending in futures:
                    pending.cancel()
                raise ConfigurationError(result.configuration_error)
            submit_next()
            for stage, seconds in result.seconds.items():
                if stage != "total":
                    summary.stage_seconds[stage] = summary.stage_seconds.get(stage, 0.0) + seconds
            commit = result.commit
            assert commit is not None
            ledger.add(commit)
            summary.failures += [failure.to_dict() for failure in commit.failures if not failure.bead_run]
            summary.bead_runs += [failure.to_dict() for failure in commit.failures if failure.bead_run]
            summary.incomplete += commit.incomplete
            summary.bins_done += len(commit.bins)
            summary.rois += sum(record.n_rois for record in commit.bins)
            reporter.advance(len(task.bins), sum(record.n_rois for record in commit.bins))
            future.release()
    finally:
        reporter.stop()
