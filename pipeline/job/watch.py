"""Watching an archive: classify its bins as they land, with one ordinary run per poll, until asked to stop.

A bin qualifies once it is complete and settled: its three files are listed and their sizes are those of the
previous poll (an instrument or a sync tool still writing a `.roi` makes it grow; a bin whose `.roi` is not there
yet is not complete). Each poll that finds settled bins the store does not hold classifies exactly those with
`run_classification` - the job of `ifcbflow classify`, on the one client of the whole watch - which also rewrites
the store's summary. The store is the ledger: a restarted watch skips what the store holds (its first poll only
learns the sizes, so bins are classified from the second poll on). A bin that failed as bad data is retried only
once its files change; one left incomplete by transient faults is retried at the next poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from distributed import Client

from pipeline.faults import TransientError, with_retries
from pipeline.ifcb.archive import list_bins
from pipeline.ifcb.identifiers import parse_bin_id
from pipeline.job.metrics import WatchMetrics
from pipeline.job.reporting import Quiet, Reporter
from pipeline.job.run import ClassifyRequest, RunSummary, UsageError, check_window, run_classification
from pipeline.redact import redact_url
from pipeline.results.lease import StoreBusyError
from pipeline.results.store import ResultStore

log = logging.getLogger(__name__)

Sizes = tuple[int, int, int] | None
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
    ) -> None:
        check_window(request)
        self.client = client
        self.request = request
        self.metrics = metrics or WatchMetrics()
        self.reporter = reporter or Quiet()
        self.store = ResultStore(request.store_url, request.storage_options)
        self.polls = 0
        self._sizes: dict[str, Sizes] = {}  # by bin, at the previous poll
        self._bad: dict[str, Sizes] = {}  # bins that failed as bad data, with the sizes they failed with
        self._complete: set[str] = set()
        self._newest: datetime | None = None
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
        """List the archive once and classify the settled bins the store does not hold."""
        self.polls += 1
        result = Poll(self.polls)
        request = self.request
        try:
            _, bins, unfinished = with_retries(
                lambda: list_bins(
                    request.archive_url,
                    request.storage_options,
                    start=request.start,
                    end=request.end,
                    exclude=request.exclude_folders,
                ),
                f"listing {redact_url(request.archive_url)}",
            )
        except FileNotFoundError:  # nothing there yet (an empty prefix of a bucket lists as missing)
            bins, unfinished = [], []
        except TransientError as err:
            log.warning("%s; trying again at the next poll", err)
            self.metrics.failed("transient", 1)
            result.skipped = str(err)
            return self._finish(result, None, None)
        sizes = {files.bin.id: files.sizes for files in bins}
        settled = [files for files in bins if self._sizes.get(files.bin.id, _UNSEEN) == files.sizes]
        self._sizes = sizes
        due = [
            files.bin.id
            for files in settled
            if files.bin.id not in self._complete and self._bad.get(files.bin.id, _UNSEEN) != files.sizes
        ]
        times = [files.bin.time for files in bins] + [parse_bin_id(failure.bin).time for failure in unfinished]
        newest_listed = max(times, default=None)
        if due:
            try:
                run = run_classification(self.client, replace(request, bin_ids=due), self.reporter)
            except (StoreBusyError, UsageError) as err:  # another run holds the store; a bin vanished since listing
                log.warning("poll %d classifies nothing: %s", self.polls, err)
                result.skipped = str(err)
            else:
                result.classified, result.run = due, run
                self._take_failures(run, sizes)
                self._read_store()
        waiting = len({files.bin.id for files in bins} - self._complete - self._bad.keys()) + len(unfinished)
        return self._finish(result, newest_listed, waiting)

    def _finish(self, result: Poll, newest_listed: datetime | None, waiting: int | None) -> Poll:
        """Metrics and the poll's record; `waiting` None: unknown (the listing failed)."""
        self.metrics.archive_state(newest_listed, waiting)
        result.waiting = waiting or 0
        result.store_bins, result.newest_classified = len(self._complete), self._newest
        return result

    def _take_failures(self, run: RunSummary, sizes: dict[str, Sizes]) -> None:
        """Remember bad bins with their sizes (retried once they change); count failures by kind."""
        bad = [failure["bin"] for failure in run.failures if failure["kind"] == "data"]
        self._bad.update({bin_id: sizes.get(bin_id) for bin_id in bad})
        self.metrics.failed("data", len(bad))
        self.metrics.failed("transient", len(run.incomplete))

    def _read_store(self) -> None:
        """The store's complete bins, ROIs and newest bin: the watch's ledger and its metrics' counts."""
        if self.store.info() is None:
            return
        ledger = self.store.ledger()
        self._complete = set(ledger.bins)
        for bin_id in self._complete:
            self._bad.pop(bin_id, None)
        newest = max((record.time for record in ledger.bins.values()), default=None)
        self._newest = None if newest is None else datetime.fromisoformat(newest.replace("Z", "+00:00"))
        rois = sum(record.n_rois for record in ledger.bins.values())
        self.metrics.store_totals(len(ledger.bins), rois, self._newest)
