"""A hold point for tests that stop a run mid-way: with `IFCBFLOW_TEST_HOLD_FILE=<path>` set in the workers'
environment, each partition task, once its partition is committed, creates `<path>.held` and then waits for as
long as `<path>` exists.

A test that kills or cancels a run creates `<path>`, starts the run, waits for `<path>.held` (so at least one
partition is committed and the run cannot have finished), kills, then removes `<path>`. Nothing waits when the
variable is unset, which is every real run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HOLD_ENV = "IFCBFLOW_TEST_HOLD_FILE"
POLL_S = 0.1


def hold_if_asked() -> None:
    """Wait while the hold file exists (announcing the wait in `<path>.held`); return at once when unset."""
    path = os.environ.get(HOLD_ENV)
    if not path or not Path(path).exists():
        return
    Path(f"{path}.held").touch()
    while Path(path).exists():
        time.sleep(POLL_S)
