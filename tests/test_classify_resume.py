"""Crashes: the whole job killed (SIGKILL) and resumed, and a worker process killed while it runs a partition.

Both kills land at a hold point (`pipeline.job.hold`): a partition is committed and its task is waiting, so the run
can neither have finished nor be between commits when the kill comes; no timing is guessed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import xarray as xr
from classify_support import make_bundle, tree_mtimes

from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.job.hold import HOLD_ENV
from pipeline.job.run import ClassifyRequest, RunSummary, run_classification
from pipeline.results.store import COMMITS, PARTS, ResultStore

pytestmark = pytest.mark.slow
IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))
BINS = 16
ONE_BIN_PER_PARTITION = 0.0001  # MB: every bin is bigger, so each is a partition of its own


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def workload(tmp_path_factory) -> dict[str, str]:
    """A local archive of 16 small bins, an untrained bundle, and a reference store of an uninterrupted run."""
    root = tmp_path_factory.mktemp("resume")
    archive, bundle = str(root / "archive"), str(root / "bundle.zip")
    write_synthetic_archive(archive, bins=BINS, rois=10, classes=3, seed=11)
    make_bundle(bundle)
    return {"root": str(root), "archive": archive, "bundle": bundle}


def _request(workload: dict[str, str], out: Path) -> ClassifyRequest:
    return ClassifyRequest(workload["archive"], workload["bundle"], str(out), partition_mb=ONE_BIN_PER_PARTITION)


def _results(store: Path) -> xr.Dataset:
    """Everything a store says about its bins, whatever partitions they were committed in."""
    summary = ResultStore(str(store)).summary().drop_vars(["part", "roi_offset"])
    scores = {record.bin: scores for record, _, scores in ResultStore(str(store)).iter_bins()}
    return summary.assign(scores_sum=("bin", [float(scores[b].sum()) for b in summary.bin.values]))


def _classify_command(workload: dict[str, str], out: Path) -> list[str]:
    return [IFCBFLOW, "classify", workload["archive"], "--model", workload["bundle"], "--out", str(out),
            "--workers", "1", "--partition-mb", str(ONE_BIN_PER_PARTITION), "--json"]  # fmt: skip


def test_killed_run_resumes_without_redoing_complete_bins(workload, dask_client, tmp_path: Path) -> None:
    killed, reference, hold = tmp_path / "killed.zarr", tmp_path / "reference.zarr", tmp_path / "hold"
    run_classification(dask_client, _request(workload, reference))
    hold.touch()
    job = subprocess.Popen(
        _classify_command(workload, killed),
        start_new_session=True,
        env={**os.environ, HOLD_ENV: str(hold)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: Path(f"{hold}.held").exists(), 240, "a committed partition at the hold point")
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the CLI, its scheduler and its worker processes: a crashed node
        job.wait()
    hold.unlink()
    done_before = ResultStore(str(killed)).ledger().bins
    assert 0 < len(done_before) < BINS, "the kill must land mid-run"
    stamps = tree_mtimes(killed / PARTS)

    rerun = subprocess.run(
        _classify_command(workload, killed), capture_output=True, text=True, timeout=300, check=True
    )
    summary = json.loads(rerun.stdout)
    assert summary["bins_already_complete"] == len(done_before)
    assert summary["bins_done"] == BINS - len(done_before) and summary["complete"]
    after = tree_mtimes(killed / PARTS)
    assert {path: after[path] for path in stamps} == stamps, "a committed partition was rewritten"
    assert _results(killed).equals(_results(reference))
    summary_on_disk = xr.open_zarr(str(killed), group="summary", consolidated=False)
    assert len(summary_on_disk.bin) == BINS  # the summary shows every complete bin, those of the killed run too


def test_worker_killed_mid_task_job_completes_identically(workload, tmp_path: Path, monkeypatch) -> None:
    from distributed import Client, LocalCluster

    crashed, clean, hold = tmp_path / "crashed.zarr", tmp_path / "clean.zarr", tmp_path / "hold"
    hold.touch()
    monkeypatch.setenv(HOLD_ENV, str(hold))  # worker processes inherit it
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="3GiB"
        ) as cluster,
        Client(cluster) as client,
    ):
        outcome: dict[str, RunSummary] = {}
        runner = threading.Thread(
            target=lambda: outcome.setdefault("run", run_classification(client, _request(workload, crashed)))
        )
        runner.start()
        _wait_for(lambda: Path(f"{hold}.held").exists(), 240, "a task holding after its commit")
        busy = [address for address, keys in client.processing().items() if keys]
        assert busy, "no worker was running a partition"
        pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
        os.kill(pid, signal.SIGKILL)  # inside a task: the scheduler reruns it elsewhere
        hold.unlink()
        runner.join(timeout=300)
        summary = outcome["run"]
        assert summary.complete and summary.bins_done == BINS
        assert len(ResultStore(str(crashed)).ledger().bins) == BINS
        # the killed attempt's commit, if it made one, and the retry's sit side by side (each attempt has its own
        # keys: neither overwrote the other); the ledger takes each bin once
        plans = Counter(path.parent.name.rsplit("-", 1)[0] for path in (crashed / COMMITS).glob("*/zarr.json"))
        assert len(plans) == BINS and set(plans.values()) <= {1, 2}
        monkeypatch.delenv(HOLD_ENV)
        run_classification(client, _request(workload, clean))
    assert _results(crashed).equals(_results(clean))
