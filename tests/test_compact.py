"""Compaction of small partitions: every bin's scores, counts and ROIs unchanged with fewer partitions, and a
compaction killed at its hold point (after a merged commit) that loses nothing and is finished by the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from pipeline.job.hold import HOLD_ENV
from pipeline.results.compact import compact_store
from pipeline.results.partitions import partition_id
from pipeline.results.records import BinResult
from pipeline.results.rois import open_rois
from pipeline.results.store import COMMITS, PARTS, ResultStore, open_summary

REPO = Path(__file__).resolve().parent.parent
CLASSES = ["a", "b", "c"]
THRESHOLDS = {"a": 0.5, "b": 0.0, "c": 0.6}


def _polls_store(tmp_path: Path, polls: int = 12) -> ResultStore:
    """A store as a watch leaves it: one small partition per poll (2 bins of 10-19 ROIs), and one failed bin."""
    store = ResultStore(str(tmp_path / "out.zarr"))
    info = {"classes": CLASSES, "content_hash": "h", "arch": "small-cnn", "thresholds": THRESHOLDS}
    store.prepare(bundle_info=info, bundle_url="b.zip", archive_url="archive")
    array = np.array([THRESHOLDS[c] for c in CLASSES])
    rng = np.random.default_rng(0)
    ledger = store.ledger()
    for poll in range(polls):
        results = []
        for i in range(2):
            moment = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=20 * (2 * poll + i))
            n = 10 + (poll + i) % 10
            scores = rng.dirichlet([1, 1, 1], size=n).astype(np.float32)
            results.append(BinResult(f"D{moment:%Y%m%dT%H%M%S}_IFCB999", moment, np.arange(1, n + 1) * 2, scores, 1.5))
        ledger.add(store.commit_partition(partition_id([r.bin for r in results], f"poll{poll}"), results, CLASSES,
                                          thresholds=array))  # fmt: skip
    store.consolidate(ledger)
    return store


def _contents(store: ResultStore) -> dict[str, tuple[list[int], bytes, list[int], list[int] | None]]:
    """Per bin: ROI numbers, score bytes, counts, thresholded counts (what compaction must keep)."""
    fresh = ResultStore(store.url)
    ledger = fresh.ledger()
    out = {}
    for record, numbers, scores in fresh.iter_bins():
        out[record.bin] = (numbers.tolist(), scores.tobytes(), record.counts, record.counts_thresholded)
    assert set(out) == set(ledger.bins)
    return out


def _parts(store: ResultStore) -> int:
    return len(ResultStore(store.url).children(PARTS))


@pytest.mark.slow
def test_small_partitions_merge_and_nothing_changes(tmp_path: Path) -> None:
    store = _polls_store(tmp_path)
    before, rois_before = _contents(store), open_rois(store.url).load()
    summary_before = open_summary(store.url).load()
    done = compact_store(store, target_rois=200)
    assert (done.parts_before, done.parts_merged, done.parts_written, done.parts_removed) == (12, 12, 2, 12)
    assert _parts(store) == 2 and len(store.children(COMMITS)) == 2
    assert _contents(store) == before
    rois = open_rois(store.url).load()
    np.testing.assert_array_equal(rois.scores.values, rois_before.scores.values)
    np.testing.assert_array_equal(rois.roi_number.values, rois_before.roi_number.values)
    summary = open_summary(store.url).load()
    for name in ("counts", "counts_thresholded", "concentration", "n_rois"):
        np.testing.assert_array_equal(summary[name].values, summary_before[name].values)
    assert compact_store(store, target_rois=200).parts_written == 0  # nothing small left to merge


@pytest.mark.slow
def test_a_compaction_killed_after_a_merged_commit_loses_nothing_and_is_redone(tmp_path: Path) -> None:
    store = _polls_store(tmp_path)
    before = _contents(store)
    hold = tmp_path / "hold"
    hold.touch()
    code = (
        "from pipeline.job.hold import hold_if_asked; from pipeline.results.compact import compact_store; "
        "from pipeline.results.store import ResultStore; "
        f"compact_store(ResultStore({store.url!r}), target_rois=200, progress=lambda done, total: hold_if_asked())"
    )
    env = {**os.environ, HOLD_ENV: str(hold), "PYTHONPATH": str(REPO)}
    job = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 120
        while not Path(f"{hold}.held").exists():
            assert job.poll() is None and time.monotonic() < deadline, "the compaction ended before its hold point"
            time.sleep(0.05)
        job.send_signal(signal.SIGKILL)
        job.wait(30)
    finally:
        job.kill()
        hold.unlink()
    assert _parts(store) == 13  # the first merged partition is committed, nothing was removed yet
    assert _contents(store) == before  # the ledger reads the merged commit over the ones it replaces
    done = compact_store(store, target_rois=200)  # the killed run's lease is released at once (its process is gone)
    assert done.parts_removed == 12 and _parts(store) == 2
    assert _contents(store) == before


def test_a_store_without_small_partitions_is_left_alone(tmp_path: Path) -> None:
    store = _polls_store(tmp_path, 3)
    done = compact_store(store, target_rois=20)  # every partition holds at least half of it
    assert (done.parts_written, done.parts_removed) == (0, 0) and _parts(store) == 3
