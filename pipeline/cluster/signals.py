"""Stop a run cleanly on SIGTERM, SIGHUP or SIGINT: what batch systems, a closed terminal and Ctrl-C send.

Python dies on SIGTERM and SIGHUP without unwinding anything, which would leave a run's certificates on disk and its
worker jobs queued. Inside `stop_on_signals()` these signals raise `StoppedBySignal` in the main thread instead, so the
`with` blocks that own the cluster close it; the process then exits with 128 + the signal number, as a shell reports a
command killed by that signal. A signal that arrives while the cluster is already being closed does not interrupt the
clean-up: it is remembered and raised once the clean-up is done.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class StoppedBySignal(SystemExit):
    """The run was stopped by a signal; exits the process with 128 + its number unless caught."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


@dataclass
class SignalGuard:
    """The state shared by the handler and the code it interrupts."""

    armed: bool = False
    received: int | None = None

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self.armed:
            self.armed = False  # one exception per run: a second signal must not interrupt the clean-up
            raise StoppedBySignal(signum)

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within this block a signal raises `StoppedBySignal`; outside it, it waits for `stop_on_signals` to end."""
        try:
            if self.received is not None:  # came before the block
                raise StoppedBySignal(self.received)
            self.armed = True
            yield
        except StoppedBySignal as stop:
            log.warning("%s: shutting the cluster down", stop)
            raise
        finally:
            self.armed = False


@contextmanager
def stop_on_signals() -> Iterator[SignalGuard]:
    """Install the handlers for the block (main thread only: Python runs handlers there), restore the previous ones
    after it, and raise `StoppedBySignal` at the end for a signal that came during a clean-up."""
    guard = SignalGuard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous = {signum: signal.signal(signum, guard.handle) for signum in SIGNALS}
    try:
        yield guard
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if guard.received is not None:
        stop = StoppedBySignal(guard.received)
        log.warning("%s during the shutdown", stop)
        raise stop
