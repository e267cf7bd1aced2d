"""Crashes: the whole job killed (SIGKILL) and resumed, and a worker process killed while it runs a partition."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from classify_support import make_bundle, tree_digests, tree_mtimes

from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.job.run import ClassifyRequest, RunSummary, run_classification
from pipeline.results.store import ResultStore

pytestmark = pytest.mark.slow
IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def workload(tmp_path_factory) -> dict[str, str]:
    """A local archive of 16 small bins and an untrained bundle."""
    root = tmp_path_factory.mktemp("resume")
    archive, bundle = str(root / "archive"), str(root / "bundle.zip")
    write_synthetic_archive(archive, bins=16, rois=10, classes=3, seed=11)
    make_bundle(bundle)
    return {"root": str(root), "archive": archive, "bundle": bundle}


def _classify_command(workload: dict[str, str], out: str) -> list[str]:
    return [
        IFCBFLOW,
        "classify",
        workload["archive"],
        "--model",
        workload["bundle"],
        "--out",
        out,
        "--workers",
        "1",
        "--partition-rois",
        "10",
        "--json",
    ]


def test_killed_run_resumes_without_redoing_complete_bins(workload, dask_client) -> None:
    root = Path(workload["root"])
    killed, reference = root / "killed.zarr", root / "reference.zarr"
    run_classification(
        dask_client, ClassifyRequest(workload["archive"], workload["bundle"], str(reference), partition_rois=10)
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    job = subprocess.Popen(
        _classify_command(workload, str(killed)),
        start_new_session=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = ResultStore(str(killed))
    try:
        _wait_for(lambda: killed.exists() and len(store.bin_index()) >= 2, 240, "two complete bins")
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the CLI, its scheduler and its worker processes: a crashed node
        job.wait()
    done_before = store.bin_index()
    assert 0 < len(done_before) < 16, "the kill must land mid-run"
    stamps = {path: stamp for path, stamp in tree_mtimes(killed / "bins").items() if path.split("/")[0] in done_before}

    rerun = subprocess.run(
        _classify_command(workload, str(killed)), env=env, capture_output=True, text=True, timeout=300, check=True
    )
    summary = json.loads(rerun.stdout)
    assert summary["bins_already_complete"] == len(done_before)
    assert summary["bins_done"] == 16 - len(done_before) and summary["errors"] == []
    after = tree_mtimes(killed / "bins")
    assert {path: after[path] for path in stamps} == stamps, "a complete bin was rewritten"
    assert tree_digests(killed / "bins") == tree_digests(reference / "bins")
    assert ResultStore(str(killed)).summary_dataset().equals(ResultStore(str(reference)).summary_dataset())


def test_worker_killed_mid_task_job_completes_identically(workload) -> None:
    from distributed import Client, LocalCluster

    root = Path(workload["root"])
    crashed, clean = root / "crashed.zarr", root / "clean.zarr"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="3GiB"
        ) as cluster,
        Client(cluster) as client,
    ):
        outcome: dict[str, RunSummary] = {}
        request = ClassifyRequest(workload["archive"], workload["bundle"], str(crashed), partition_rois=10)
        runner = threading.Thread(target=lambda: outcome.setdefault("run", run_classification(client, request)))
        runner.start()
        store = ResultStore(str(crashed))
        _wait_for(lambda: crashed.exists() and len(store.bin_index()) >= 1, 240, "a first complete bin")
        busy = [address for address, keys in client.processing().items() if keys]
        assert busy, "no worker was running a partition"
        pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
        os.kill(pid, signal.SIGKILL)
        runner.join(timeout=300)
        summary = outcome["run"]
        assert summary.errors == [] and summary.bins_failed == 0
        assert len(store.bin_index()) == 16
        run_classification(
            client, ClassifyRequest(workload["archive"], workload["bundle"], str(clean), partition_rois=10)
        )
    assert tree_digests(crashed / "bins") == tree_digests(clean / "bins")
