"""Prometheus metrics of a watch: what the store holds, what failed, and how far classification is behind.

Counts of bins and ROIs are those of the store (the ledger), not of this process: they are set from the store when
the watch starts and after every run, so they agree with `ifcbflow report` whatever restarts happened in between.
Each watch has its own registry, so several can live in one process (tests) without clashing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from pipeline.ifcb.errors import KINDS


class WatchMetrics:
    """The metrics of one watch, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.bins = Counter("ifcbflow_bins_classified", "Bins complete in the store.", registry=registry)
        self.rois = Counter("ifcbflow_rois_classified", "ROIs of the bins complete in the store.", registry=registry)
        self.failures = Counter(
            "ifcbflow_bin_failures",
            "Bins a run of this watch could not classify, by kind: data (bad files, recorded in the store) or "
            "transient (storage faults that outlasted their retries; retried at the next poll).",
            ["kind"],
            registry=registry,
        )
        for kind in KINDS:
            self.failures.labels(kind=kind)  # exported at 0 before the first failure
        self.polls = Counter("ifcbflow_polls", "Polls of the archive.", registry=registry)
        self.newest_classified = Gauge(
            "ifcbflow_newest_classified_bin_timestamp_seconds",
            "Sample time of the newest bin complete in the store (Unix seconds).",
            registry=registry,
        )
        self.newest_listed = Gauge(
            "ifcbflow_newest_archive_bin_timestamp_seconds",
            "Sample time of the newest bin in the archive, complete or still being written (Unix seconds).",
            registry=registry,
        )
        self.lag = Gauge(
            "ifcbflow_lag_seconds",
            "Sample time of the newest bin in the archive minus that of the newest classified bin.",
            registry=registry,
        )
        self.waiting = Gauge(
            "ifcbflow_bins_waiting",
            "Bins in the archive not classified yet: still being written, or settled and due at the next poll.",
            registry=registry,
        )
        self._bins = self._rois = 0
        self._newest: dict[str, float] = {}

    def store_totals(self, bins: int, rois: int, newest: datetime | None) -> None:
        """What the store holds now (never less than before: a store only grows)."""
        self.bins.inc(max(0, bins - self._bins))
        self.rois.inc(max(0, rois - self._rois))
        self._bins, self._rois = max(bins, self._bins), max(rois, self._rois)
        if newest is not None:
            self._newest["classified"] = newest.timestamp()
            self.newest_classified.set(newest.timestamp())
        self._update_lag()

    def archive_state(self, newest: datetime | None, waiting: int | None) -> None:
        """What the latest poll's listing showed: the newest bin and how many bins are not classified yet (None for
        either: unknown, as when the listing failed)."""
        self.polls.inc()
        if waiting is not None:
            self.waiting.set(waiting)
        if newest is not None:
            self._newest["listed"] = newest.timestamp()
            self.newest_listed.set(newest.timestamp())
        self._update_lag()

    def failed(self, kind: str, bins: int) -> None:
        """Count `bins` failures of `kind` (data or transient)."""
        if bins:
            self.failures.labels(kind=kind).inc(bins)

    def _update_lag(self) -> None:
        if "listed" in self._newest and "classified" in self._newest:
            self.lag.set(max(0.0, self._newest["listed"] - self._newest["classified"]))

    def serve(self, port: int, address: str = "0.0.0.0") -> Any:
        """Serve `/metrics` on `address:port` (0: a free port) in a daemon thread; returns the server, whose
        `server_port` is the port and whose `shutdown()` stops it."""
        server, _ = start_http_server(port, addr=address, registry=self.registry)
        return server
