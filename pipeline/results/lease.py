"""One run at a time per store: a lease object in the store, created only if absent, renewed while the run lives.

The lease is `lease.json` (owner, host, pid, since, expires) beside the store's root. Taking it is an exclusive
create (`If-None-Match: *` on object storage, `O_EXCL` on a local disk), so of two runs that start together one
wins. The holder renews it every quarter of its lifetime; a second run is refused while it is live. A killed run
stops renewing, and its lease expires after `LEASE_TTL_S` (at once when the killed process was on this host), so it
never locks the store for good.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pipeline.faults import with_retries

log = logging.getLogger(__name__)

#: A run's lease lasts this long without renewal; it is renewed every quarter of it.
LEASE_TTL_S = 120.0


class StoreBusyError(RuntimeError):
    """Another live run holds the store's lease."""


class Lease:
    """The lease at `path` on `fs` (`local`: a local disk, where an exclusive create is `open(..., "xb")`)."""

    def __init__(self, fs: Any, path: str, *, local: bool, label: str) -> None:
        self.fs, self.path, self.local, self.label = fs, path, local, label

    @contextlib.contextmanager
    def held(self, owner: str, ttl_s: float = LEASE_TTL_S) -> Iterator[None]:
        """Hold the lease for the body (renewed in the background); refuse if another live run holds it."""
        since = time.time()
        self._take(owner, ttl_s, since)
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(ttl_s / 4):
                holder = self.holder()
                if holder is not None and holder.get("owner") != owner:
                    log.error("the store's lease was taken over by %s@%s", holder.get("pid"), holder.get("host"))
                    return
                self._renew(owner, ttl_s, since)

        renewer = threading.Thread(target=renew, name="ifcbflow-lease", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            holder = self.holder()
            if holder is not None and holder.get("owner") == owner:
                with_retries(lambda: self.fs.rm_file(self.path), "releasing the store's lease")

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lease now (None: nobody)."""

        def read() -> dict[str, Any] | None:
            try:
                return json.loads(self.fs.cat_file(self.path))
            except FileNotFoundError:
                return None

        return with_retries(read, "reading the store's lease")

    def _renew(self, owner: str, ttl_s: float, since: float) -> None:
        document = self._document(owner, ttl_s, since)
        with_retries(lambda: self.fs.pipe_file(self.path, document), "renewing the store's lease")

    def _document(self, owner: str, ttl_s: float, since: float) -> bytes:
        holder = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "since": since}
        return json.dumps({**holder, "expires": time.time() + ttl_s}).encode()

    def _take(self, owner: str, ttl_s: float, since: float) -> None:
        for _ in range(2):  # a second try after removing an expired lease
            try:
                with_retries(lambda: self._create(self._document(owner, ttl_s, since)), "taking the store's lease")
                return
            except FileExistsError:
                holder = self.holder()
            if holder is not None and holder.get("owner") == owner:
                return  # our own create went through before a transient fault hid its answer
            if holder is not None and holder.get("expires", 0) > time.time() and _alive(holder):
                started = datetime.fromtimestamp(holder["since"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                raise StoreBusyError(
                    f"{self.label} is being written by another run (process {holder.get('pid')} on "
                    f"{holder.get('host')}, since {started}); wait for it to finish. A run that was killed releases "
                    f"the store {ttl_s / 60:.0f} minutes after its last sign of life."
                )
            log.warning("taking over the expired lease of a run that stopped without releasing it: %s", holder)
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self.path)
        raise StoreBusyError(f"{self.label}: another run took the store's lease at the same moment")

    def _create(self, data: bytes) -> None:
        """Write the lease only if it does not exist (FileExistsError otherwise), atomically where the store can."""
        if self.local:
            with open(self.path, "xb") as f:
                f.write(data)
        else:
            self.fs.pipe_file(self.path, data, mode="create")
        self.fs.invalidate_cache(self.path)


def _alive(holder: dict[str, Any]) -> bool:
    """Whether a lease's holder may still be running: a process of this host is checked, others are trusted."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True
