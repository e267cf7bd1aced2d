"""Hold points for tests that stop a run mid-way.

- With `IFCBFLOW_TEST_HOLD_FILE=<path>` set in the workers' environment, each partition task, once its partition is
  committed, creates `<path>.held` and then waits for as long as `<path>` exists.
- With `IFCBFLOW_TEST_FEEDER_HOLD_FILE=<path>`, each feeder process, once it has put a bin's inputs in shared memory
  and before it hands them over, creates `<path>.<its pid>.held` and waits the same way (the moment when a kill of
  the feeder, or of its worker, leaves a block that nobody else owns).

A test that kills or cancels a run creates `<path>`, starts the run, waits for the `.held` file (so the run is where
the test wants it and cannot have finished), kills, then removes `<path>`. Nothing waits when the variables are
unset, which is every real run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HOLD_ENV = "IFCBFLOW_TEST_HOLD_FILE"
FEEDER_HOLD_ENV = "IFCBFLOW_TEST_FEEDER_HOLD_FILE"
POLL_S = 0.1


def _hold(path: str | None, announce: str) -> None:
    if not path or not Path(path).exists():
        return
    Path(announce.format(path=path)).touch()
    while Path(path).exists():
        time.sleep(POLL_S)


def hold_if_asked() -> None:
    """Wait while the hold file exists (announcing the wait in `<path>.held`); return at once when unset."""
    _hold(os.environ.get(HOLD_ENV), "{path}.held")


def hold_feeder_if_asked() -> None:
    """In a feeder process: wait while the feeder hold file exists (announced in `<path>.<pid>.held`)."""
    _hold(os.environ.get(FEEDER_HOLD_ENV), "{path}." + str(os.getpid()) + ".held")
