"""Watching an archive: classify its bins as they land, with one ordinary run per poll, until asked to stop.

A poll lists only the newest day folders (from the day before the newest bin listed so far, or from the oldest bin
still waiting to settle; `pipeline.ifcb.archive` lists only the day folders a window can touch), and every
`full_pass_every` polls the whole archive, which finds bins that arrive late (a station that was offline uploads its
backlog: the next polls list from its first day until it is classified), merges the small partitions the polls
wrote (`pipeline.results.compact`) and resynchronises with the store. Between
full passes a poll costs what it adds: its listing, its run over the new bins, and no full read of the store.

A bin qualifies once it is complete and settled: its three files are listed and their sizes are those of the
previous poll (an instrument or a sync tool still writing a `.roi` makes it grow; a bin whose `.roi` is not there
yet is not complete). Each poll that finds settled bins the store does not hold classifies exactly those with
`run_classification` - the job of `ifcbflow classify`, on the one client of the whole watch - which also appends
them to the store's summary. The store is the ledger: a restarted watch skips what the store holds (its first poll only
learns the sizes, so bins are classified from the second poll on). A bin that failed as bad data is retried only
once its files change (or once with `retry_failed`, as `classify --retry-failed`); one left incomplete by transient
faults is retried at the next poll. A bead run by its header, left out (`pipeline.job.run`), is due again only once
its files change too, unless the request includes bead runs (`include_beads`, as `classify --include-beads`): then
those left out before are classified at the first poll that lists them settled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from distributed import Client

from pipeline.faults import TransientError, with_retries
from pipeline.ifcb.archive import iter_bins
from pipeline.ifcb.bins import BinFiles
from pipeline.ifcb.errors import BinFailure
from pipeline.ifcb.identifiers import parse_bin_id
from pipeline.job.metrics import WatchMetrics
from pipeline.job.reporting import Quiet, Reporter
from pipeline.job.run import ClassifyRequest, RunSummary, UsageError, check_window, run_classification
from pipeline.redact import redact_url
from pipeline.results.compact import compact_store
from pipeline.results.lease import StoreBusyError
from pipeline.results.records import files_changed, files_digest
from pipeline.results.store import ResultStore

log = logging.getLogger(__name__)

Sizes = tuple[int, int, int] | None
#: Polls between two full passes over the archive (the first poll is one): the others list the newest days only.
FULL_PASS_EVERY = 60
#: Days before the newest bin's day that a poll lists too (a bin written just after midnight, a late upload).
RECENT_DAYS = 1
_UNSEEN = object()  # the sizes of a bin no poll has listed yet: equal to no sizes


@dataclass
class Poll:
    """What one poll saw and did."""

    number: int
    waiting: int = 0  # bins in the archive not in the store yet (being written, or settled and not classified)
    classified: list[str] | None = None  # the bins this poll's run was asked to classify (None: no run)
    run: RunSummary | None = None
    store_bins: int = 0
    newest_classified: datetime | None = None
    skipped: str | None = None  # why this poll ran nothing although there was work (the store busy, a listing fault)
    full_pass: bool = False  # whether this poll listed the whole archive (else: its newest days only)


@dataclass
class _Listing:
    """What a poll's listing found: the complete bins the store does not hold (by id, in time order), how many bins
    still lack a file, and the newest bin listed."""

    waiting: dict[str, BinFiles] = field(default_factory=dict)
    unfinished: int = 0
    newest: datetime | None = None


class Watcher:
    """Polls an archive and classifies its settled new bins into a store; `run` loops until `stop` or a poll limit.

    `poll` is one step (tests and scripts drive it directly). `stop` may be called from a signal handler or another
    thread: the loop ends after the current poll, never in the middle of a run.
    """

    def __init__(
        self,
        client: Client,
        request: ClassifyRequest,
        metrics: WatchMetrics | None = None,
        reporter: Reporter | None = None,
        full_pass_every: int = FULL_PASS_EVERY,
    ) -> None:
        check_window(request)
        self.client = client
        self.request = request
        self.metrics = metrics or WatchMetrics()
        self.reporter = reporter or Quiet()
        self.store = ResultStore(request.store_url, request.storage_options)
        self.polls = 0
        self._sizes: dict[str, Sizes] = {}  # by bin, at the previous poll
        #: Bins that failed as bad data, and bead runs left out, with the versions of the files they failed or were
        #: left out with (`BinFiles.stamp`): not due again until those change. The store's rule
        #: (`pipeline.job.run.Selection`), kept here so that a poll does not start a run only to skip them; taken
        #: from the store at the start (failures unless `retry_failed`, bead runs unless `include_beads`).
        self._bad: dict[str, str] = {}
        self._complete: set[str] = set()
        #: The fingerprints of the complete bins' files (`files_digest`): a complete bin listed with other sizes is
        #: waiting again (the run classifies it again: `pipeline.job.run.Selection`)
        self._digests: dict[str, int] = {}
        self._newest: datetime | None = None  # the newest bin in the store
        self._rois = 0  # ROIs in the store
        self._newest_listed: datetime | None = None
        self._last_full_pass = 0
        self.full_pass_every = full_pass_every
        self._stop = threading.Event()
        self._read_store()

    def stop(self) -> None:
        """End the loop after the current poll (safe from a signal handler)."""
        self._stop.set()

    @property
    def bins_in_store(self) -> int:
        """Complete bins in the store, as of the last run (or the start)."""
        return len(self._complete)

    def run(
        self, interval_s: float, max_polls: int | None = None, on_poll: Callable[[Poll], None] | None = None
    ) -> int:
        """Poll every `interval_s` seconds until `stop` (or `max_polls` polls); returns the number of polls."""
        while not self._stop.is_set():
            result = self.poll()
            if on_poll is not None:
                on_poll(result)
            if max_polls is not None and self.polls >= max_polls:
                break
            self._stop.wait(interval_s)
        return self.polls

    def poll(self) -> Poll:
        """List the archive (its newest days, or all of it on a full pass) and classify the settled bins the store
        does not hold."""
        self.polls += 1
        result = Poll(self.polls)
        request = self.request
        recent = self._recent_start()
        result.full_pass = recent is None
        start = recent if recent is not None and (request.start is None or recent > request.start) else request.start
        try:
            listing = with_retries(lambda: self._list(start), f"listing {redact_url(request.archive_url)}")
        except TransientError as err:
            log.warning("%s; trying again at the next poll", err)
            self.metrics.failed("transient", 1)
            result.skipped = str(err)
            return self._finish(result, None, None)
        if result.full_pass:
            self._last_full_pass = self.polls
        waiting = listing.waiting.values()
        settled = [files for files in waiting if self._sizes.get(files.bin.id, _UNSEEN) == files.sizes]
        self._sizes = {**self._outside(start), **{files.bin.id: files.sizes for files in waiting}}
        due = [files.bin.id for files in settled if self._bad.get(files.bin.id) != files.stamp]
        if listing.newest is not None and (self._newest_listed is None or listing.newest > self._newest_listed):
            self._newest_listed = listing.newest
        if due:
            try:
                run = run_classification(self.client, replace(request, bin_ids=due), self.reporter)
            except (StoreBusyError, UsageError) as err:  # another run holds the store; a bin vanished since listing
                log.warning("poll %d classifies nothing: %s", self.polls, err)
                result.skipped = str(err)
            else:
                result.classified, result.run = due, run
                self._take_failures(run)
                self._take_run(due, run)
        if result.full_pass and self.polls > 1:
            self._compact()
            self._read_store()  # resynchronise with what other runs may have written
        waiting = len(self._sizes.keys() - self._complete - self._bad.keys()) + listing.unfinished
        return self._finish(result, self._newest_listed, waiting)

    def _list(self, start: datetime | None) -> _Listing:
        """The archive from `start` (all of it for None), streamed day folder by day folder: only the bins the store
        does not hold are kept, so a full pass over a million bins holds the few waiting, not the listing."""
        request = self.request
        try:
            _, stream = iter_bins(
                request.archive_url, request.storage_options, start=start, end=request.end,
                exclude=request.exclude_folders,
            )  # fmt: skip
        except FileNotFoundError:  # nothing there yet (an empty prefix of a bucket lists as missing)
            return _Listing()
        listing = _Listing()
        for item in stream:
            if isinstance(item, BinFailure):  # a bin still missing a file
                listing.unfinished += 1
                moment = parse_bin_id(item.bin).time
            else:
                moment = item.bin.time
                if item.bin.id not in self._complete or self._changed(item):
                    listing.waiting[item.bin.id] = item
            if listing.newest is None or moment > listing.newest:
                listing.newest = moment
        return listing

    def _changed(self, files: BinFiles) -> bool:
        """Whether a complete bin is listed with other files than it was classified from."""
        return files_changed(self._digests.get(files.bin.id), files.sizes)

    def _recent_start(self) -> datetime | None:
        """Where a poll's listing starts: the day before the newest bin listed so far, or the day of the oldest bin
        still waiting to settle (a backlog found by a full pass is listed until it is classified); None for a full
        pass (the first poll, then every `full_pass_every` polls)."""
        if self._newest_listed is None or self.polls - self._last_full_pass >= self.full_pass_every:
            return None
        waiting = [parse_bin_id(bin_id).time for bin_id in self._sizes.keys() - self._bad.keys()]
        first = min([self._newest_listed - timedelta(days=RECENT_DAYS), *waiting])
        return first.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    def _outside(self, start: datetime | None) -> dict[str, Sizes]:
        """The sizes of waiting bins a listing from `start` did not cover (all of them for a full listing: none)."""
        if start is None or start == self.request.start:
            return {}
        return {bin_id: sizes for bin_id, sizes in self._sizes.items() if parse_bin_id(bin_id).time < start}

    def _take_run(self, due: list[str], run: RunSummary) -> None:
        """What the run added to the store, without reading the store again: O(bins classified) per poll."""
        left = {entry["bin"] for entry in [*run.failures, *run.incomplete, *run.bead_runs]}
        done = [bin_id for bin_id in due if bin_id not in left]
        self._complete.update(done)
        for bin_id in done:
            self._bad.pop(bin_id, None)
            digest = files_digest(self._sizes.pop(bin_id, None))
            if digest is not None:
                self._digests[bin_id] = digest
        newest = max((parse_bin_id(bin_id).time for bin_id in done), default=None)
        if newest is not None and (self._newest is None or newest > self._newest):
            self._newest = newest
        self._rois += run.rois
        self.metrics.store_totals(len(self._complete), self._rois, self._newest)

    def _finish(self, result: Poll, newest_listed: datetime | None, waiting: int | None) -> Poll:
        """Metrics and the poll's record; `waiting` None: unknown (the listing failed)."""
        self.metrics.archive_state(newest_listed, waiting)
        result.waiting = waiting or 0
        result.store_bins, result.newest_classified = len(self._complete), self._newest
        return result

    def _take_failures(self, run: RunSummary) -> None:
        """Remember bad bins and bead runs left out with their files' versions (due again once they change); count
        failures by kind."""
        bad = {failure["bin"]: failure["files"] for failure in run.failures if failure["kind"] == "data"}
        self._bad.update(bad)
        self._bad.update({bead_run["bin"]: bead_run["files"] for bead_run in run.bead_runs})
        self.metrics.failed("data", len(bad))
        self.metrics.failed("transient", len(run.incomplete))

    def _compact(self) -> None:
        """Merge the small partitions the polls wrote since the last full pass (skipped while another run writes)."""
        if self.store.info() is None:
            return
        try:
            done = compact_store(self.store)
        except StoreBusyError as err:
            log.warning("poll %d: no compaction: %s", self.polls, err)
            return
        if done.parts_written:
            log.info("poll %d: merged %d small partitions into %d", self.polls, done.parts_merged, done.parts_written)

    def _read_store(self) -> None:
        """The store's complete bins, ROIs and newest bin: the watch's ledger and its metrics' counts (read at the
        start and at each full pass; polls in between add what their runs classified)."""
        if self.store.info() is None:
            return
        ledger = self.store.ledger(remember=True)  # the polls' runs then read no bin list
        totals = self.store.totals(ledger)
        self._complete = set(ledger.complete)
        self._digests = ledger.digests
        for bin_id in self._complete:
            self._bad.pop(bin_id, None)
        if not self.request.retry_failed or self.polls:  # --retry-failed: the stored failures once, at the start
            stored = ledger.failures.values()
            self._bad.update({f.bin: f.files for f in stored if f.kind == "data" and f.files})
        if not self.request.include_beads:
            self._bad.update({f.bin: f.files for f in ledger.bead_runs.values() if f.files})
        self._newest, self._rois = totals.newest, totals.rois
        self.metrics.store_totals(totals.bins, self._rois, self._newest)
