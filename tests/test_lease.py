"""The store's lease: a takeover of an expired lease won by one run only, expiry judged on the taker's own clock
(a holder whose clock is behind is still live while it renews), and a lost lease surfaced to the run."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from pipeline.results.lease import StoreBusyError
from pipeline.results.store import ResultStore

OTHER = {"owner": "elsewhere", "host": "node7", "pid": 4242, "since": 0.0}


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    (tmp_path / "out.zarr").mkdir()
    return ResultStore(str(tmp_path / "out.zarr"))


def test_of_two_runs_that_find_the_same_expired_lease_one_takes_it(store: ResultStore) -> None:
    lease = Path(store.root, "lease.json")
    lease.write_text(json.dumps({**OTHER, "expires": time.time() - 10, "ttl_s": 0.3, "renewed": 1}))
    barrier, outcomes = threading.Barrier(2), {}
    inside = threading.Event()

    def run(name: str) -> None:
        barrier.wait()
        try:
            with ResultStore(store.url).lease(name, ttl_s=30):
                outcomes[name] = json.loads(lease.read_text())["owner"]
                inside.wait(5)
        except StoreBusyError as err:
            outcomes[name] = str(err)
            inside.set()

    threads = [threading.Thread(target=run, args=(name,)) for name in ("run-a", "run-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [name for name, outcome in outcomes.items() if outcome == name]
    assert len(winners) == 1 and len(outcomes) == 2, outcomes
    loser = next(outcome for name, outcome in outcomes.items() if name not in winners)
    assert "at the same moment" in loser or "being written by another run" in loser
    assert not lease.exists() and not list(Path(store.root).glob("lease.json.takeover-*"))  # released, claim too


def test_a_renewing_holder_is_live_whatever_its_clock_says(store: ResultStore) -> None:
    lease = Path(store.root, "lease.json")
    stop = threading.Event()

    def renew_with_a_clock_behind() -> None:  # its `expires` is always in the past by this host's clock
        n = 0
        while not stop.is_set():
            n += 1
            lease.write_text(json.dumps({**OTHER, "expires": time.time() - 3600, "ttl_s": 0.4, "renewed": n}))
            stop.wait(0.1)

    renewer = threading.Thread(target=renew_with_a_clock_behind)
    renewer.start()
    try:
        time.sleep(0.05)
        with pytest.raises(StoreBusyError, match="being written by another run"), store.lease("run-c"):
            pass
    finally:
        stop.set()
        renewer.join()
    assert json.loads(lease.read_text())["owner"] == "elsewhere"


def test_a_lease_taken_over_or_not_renewable_is_surfaced(store: ResultStore, tmp_path: Path) -> None:
    lease = Path(store.root, "lease.json")
    taken = pytest.raises(StoreBusyError, match="lost the store's lease \\(taken over by process 4242 on node7")
    with taken, store.lease("run-d", ttl_s=0.4) as held:
        lease.write_text(json.dumps({**OTHER, "expires": time.time() + 60, "ttl_s": 60}))
        deadline = time.monotonic() + 10
        while held.lost is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(StoreBusyError, match="lost the store's lease"):
            held.check()
    lease.unlink()
    failing = pytest.raises(StoreBusyError, match="renewing it failed: FileNotFoundError")
    with failing, store.lease("run-e", ttl_s=0.4) as held:
        shutil.move(store.root, tmp_path / "aside")  # the store vanishes under the run
        deadline = time.monotonic() + 10
        while held.lost is None and time.monotonic() < deadline:
            time.sleep(0.02)
        shutil.move(tmp_path / "aside", store.root)
