"""One run at a time per store: a lease object in the store, created only if absent, renewed while the run lives.

The lease is `lease.json` (owner, host, pid, since, ttl_s, expires, renewed) beside the store's root. Taking it is
an exclusive create (`If-None-Match: *` on object storage, a hard link on a local disk), so of two runs that start
together one wins. The holder renews it every quarter of its lifetime; a second run is refused while it is live. A
killed run stops renewing, and its lease can be taken over once it has not changed for its whole lifetime as timed
by the run that takes it over, on its own clock (at once when the killed process was on this host): two hosts'
clocks are never compared. Taking over is atomic too: the runs that found the same expired lease race to create one
claim object (`lease.json.takeover-<holder>-<renewal>`, exclusive create), and only its creator replaces the lease.
A renewal that fails, or finds the lease taken over, is recorded in `Lease.lost` and logged; the run then raises
StoreBusyError before it writes the summary and when it ends (`Lease.check`, which also reads the lease afresh and
times the last renewal on this process's clock).

"This host" is the same host name, boot and PID namespace (`/proc/sys/kernel/random/boot_id`,
`/proc/self/ns/pid`): two containers that share a host name see other processes under the same PIDs, so a PID
that is not running here says nothing of a holder in another namespace, whose lease is then waited out like another
host's. A lease is read back once taken: an object store that ignores `If-None-Match` (s3fs documents it as known to
work on AWS S3) would let two runs "create" it, and only the one whose document is there goes on.
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
    """The lease at `path` on `fs` (`local`: a local disk, where an exclusive create is a hard link).

    `lost` says why the lease is no longer this run's (a renewal that failed, another run that took it over);
    `check` raises it.
    """

    def __init__(self, fs: Any, path: str, *, local: bool, label: str) -> None:
        self.fs, self.path, self.local, self.label = fs, path, local, label
        self.lost: str | None = None
        self._owner: str | None = None
        self._ttl_s = LEASE_TTL_S
        self._renewed = 0.0  # time.monotonic() of the last write of the lease that went through

    @contextlib.contextmanager
    def held(self, owner: str, ttl_s: float = LEASE_TTL_S) -> Iterator[Lease]:
        """Hold the lease for the body (renewed in the background); refuse if another live run holds it.

        A lease lost while the body runs raises StoreBusyError when the body ends (and at any `check` before).
        """
        since = time.time()
        self._owner, self._ttl_s = owner, ttl_s
        claim = self._take(owner, ttl_s, since)
        self._renewed = time.monotonic()
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(ttl_s / 4):
                try:
                    holder = self.holder()
                    if holder is not None and holder.get("owner") != owner:
                        self.lost = f"taken over by process {holder.get('pid')} on {holder.get('host')}"
                    else:
                        self._renew(owner, ttl_s, since)
                        self._renewed = time.monotonic()
                except Exception as err:  # retried already where transient: the lease cannot be kept
                    self.lost = f"renewing it failed: {type(err).__name__}: {err}"
                if self.lost is not None:
                    log.error("%s: this run lost the store's lease: %s", self.label, self.lost)
                    return

        renewer = threading.Thread(target=renew, name="ifcbflow-lease", daemon=True)
        renewer.start()
        try:
            yield self
            self.check()
        finally:
            stop.set()
            renewer.join()
            holder = self.holder()
            if holder is not None and holder.get("owner") == owner:
                with_retries(lambda: self.fs.rm_file(self.path), "releasing the store's lease")
            if claim is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(claim)

    def check(self) -> None:
        """Raise StoreBusyError unless the lease is still this run's (then it must not write the summary).

        Asked afresh, not from what the renewer last saw (it looks every quarter of the lifetime): the lease is read
        (another run that took it over is seen at once), and this run's last renewal must be younger than the
        lifetime by this process's own clock (a run that was paused, stopped or starved past it may have been taken
        over by now: it leaves the writing to the next run)."""
        if self.lost is None and self._owner is not None:
            if (other := self._held_by_another(self._owner)) is not None:
                self.lost = f"it is held by {other} now"
            elif time.monotonic() - self._renewed > self._ttl_s:
                self.lost = f"not renewed for {time.monotonic() - self._renewed:.0f} s, more than its lifetime"
        if self.lost is not None:
            raise StoreBusyError(f"{self.label}: this run lost the store's lease ({self.lost}); rerun")

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
        with_retries(lambda: self._replace(self.path, document), "renewing the store's lease")

    def _document(self, owner: str, ttl_s: float, since: float) -> bytes:
        holder = {"owner": owner, **_this_process(), "since": since, "ttl_s": ttl_s}
        return json.dumps({**holder, "expires": time.time() + ttl_s, "renewed": time.monotonic_ns()}).encode()

    def _take(self, owner: str, ttl_s: float, since: float) -> str | None:
        """Take the lease; returns the path of the takeover claim made to take an expired one (None: none)."""
        document = self._document(owner, ttl_s, since)
        try:
            with_retries(lambda: self._create(self.path, document), "taking the store's lease")
            self._confirm(owner)
            return None
        except FileExistsError:
            holder = self.holder()
        if holder is None:  # released between the two requests
            return self._take(owner, ttl_s, since)
        if holder.get("owner") == owner:
            return None  # our own create went through before a transient fault hid its answer
        if _alive(holder) and not self._stopped_renewing(holder):
            started = datetime.fromtimestamp(holder["since"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            raise StoreBusyError(
                f"{self.label} is being written by another run (process {holder.get('pid')} on "
                f"{holder.get('host')}, since {started}); wait for it to finish. A run that was killed releases "
                f"the store {float(holder.get('ttl_s', LEASE_TTL_S)) / 60:.0f} minutes after its last sign of life."
            )
        # Of the runs that found the same expired holder, the one whose claim is created first takes its place.
        claim = f"{self.path}.takeover-{holder.get('owner')}-{holder.get('renewed', holder.get('expires'))}"
        try:
            with_retries(lambda: self._create(claim, document), "claiming the store's lease")
        except FileExistsError:
            raise StoreBusyError(f"{self.label}: another run took the store's lease at the same moment") from None
        log.warning("taking over the expired lease of a run that stopped without releasing it: %s", holder)
        with_retries(lambda: self._replace(self.path, document), "taking the store's lease")
        self._confirm(owner)
        return claim

    def _held_by_another(self, owner: str) -> str | None:
        """Who holds the lease now when it is not `owner` ("nobody" when no one does), read afresh; None: `owner`."""
        holder = self.holder()
        if holder is not None and holder.get("owner") == owner:
            return None
        return "nobody" if holder is None else f"process {holder.get('pid')} on {holder.get('host')}"

    def _confirm(self, owner: str) -> None:
        """Read the lease back: StoreBusyError when another run's document is there (a store that does not honour
        exclusive creates let both runs write it)."""
        if (other := self._held_by_another(owner)) is not None:
            raise StoreBusyError(
                f"{self.label}: another run took the store's lease at the same moment (read back: {other}); if no "
                "other run was started, the object store does not honour exclusive creates (If-None-Match)"
            )

    def _stopped_renewing(self, holder: dict[str, Any]) -> bool:
        """Whether a holder that looks expired really stopped renewing: its lease unchanged for its whole lifetime,
        timed on this host's own clock (two hosts' clocks are never compared). One that looks live is live."""
        if holder.get("expires", 0) > time.time():
            return False
        ttl_s = float(holder.get("ttl_s", LEASE_TTL_S))
        deadline = time.monotonic() + ttl_s
        while time.monotonic() < deadline:
            time.sleep(min(ttl_s / 8, max(deadline - time.monotonic(), 0)))
            if self.holder() != holder:
                return False
        return True

    def _replace(self, path: str, data: bytes) -> None:
        """Overwrite `path` so that a reader sees the old document or the new one, never a part: one PUT on object
        storage; on a local disk a file beside it renamed over it (a plain write truncates first, and a run reading
        the lease at that moment would find it empty)."""
        if self.local:
            partial = f"{path}.{os.getpid()}-{threading.get_ident()}.partial"
            with open(partial, "wb") as f:
                f.write(data)
            os.replace(partial, path)
        else:
            self.fs.pipe_file(path, data)
        self.fs.invalidate_cache(path)

    def _create(self, path: str, data: bytes) -> None:
        """Write `path` only if it does not exist (FileExistsError otherwise), atomically where the store can."""
        if self.local:  # written beside it, then linked to its name: exclusive, and never seen half written
            os.makedirs(os.path.dirname(path), exist_ok=True)  # a new store: the lease comes before its root
            partial = f"{path}.{os.getpid()}-{threading.get_ident()}.partial"
            with open(partial, "wb") as f:
                f.write(data)
            try:
                os.link(partial, path)
            finally:
                os.unlink(partial)
        else:
            self.fs.pipe_file(path, data, mode="create")
        self.fs.invalidate_cache(path)


def _this_process() -> dict[str, Any]:
    """Who takes a lease: host name, PID, and the boot and PID namespace that make a PID mean this process
    (absent where the system does not say: then no holder counts as of this host)."""
    here: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as boot:
        here["boot_id"] = boot.read().strip()
    with contextlib.suppress(OSError):
        here["pid_namespace"] = os.readlink("/proc/self/ns/pid")
    return here


def _alive(holder: dict[str, Any]) -> bool:
    """Whether a lease's holder may still be running: a process of this host, boot and PID namespace is checked,
    others (a holder in another container of the same host name, a lease of before these were recorded) are
    trusted."""
    here = _this_process()
    if any(key not in holder or holder[key] != here.get(key) for key in ("host", "boot_id", "pid_namespace")):
        return True
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True
