"""The GPU worker's feeding path (feeder processes, shared memory) run on CPU workers through the CLI, with real kills
at a hold point (`pipeline.job.hold`): a feeder process SIGKILLed while it holds a bin in shared memory, and the whole
run SIGKILLed (CLI, scheduler, workers, feeders, resource trackers) at the same point. Each run is compared with an
uninterrupted run that feeds with threads, leaves no shared memory block of ifcbflow, and no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import xarray as xr
from classify_support import make_bundle, session_survivors

from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.job import shm
from pipeline.job.hold import FEEDER_HOLD_ENV
from pipeline.results.store import ResultStore

pytestmark = pytest.mark.slow
IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))
BINS = 6


@pytest.fixture(scope="module")
def workload(tmp_path_factory) -> dict[str, str]:
    """A local archive, an untrained bundle, and the store of an uninterrupted run fed by threads."""
    root = tmp_path_factory.mktemp("feeders")
    archive, bundle = str(root / "archive"), str(root / "bundle.zip")
    write_synthetic_archive(archive, bins=BINS, rois=12, classes=3, seed=18)
    make_bundle(bundle)
    work = {"archive": archive, "bundle": bundle, "reference": str(root / "reference.zarr")}
    run = _run(work, Path(work["reference"]), "--feeder-kind", "threads")
    assert run.returncode == 0, run.stderr
    return work


def _command(workload: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [IFCBFLOW, "classify", workload["archive"], "--model", workload["bundle"], "--out", str(out),
            "--workers", "1", "--json", *extra]  # fmt: skip


def _run(workload: dict[str, str], out: Path, *extra: str, env: dict[str, str] | None = None):
    job = subprocess.Popen(_command(workload, out, *extra), start_new_session=True, env={**os.environ, **(env or {})},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    stdout, stderr = job.communicate(timeout=300)
    assert not session_survivors(job.pid), "a process of the run outlived it"
    return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)


def _results(store: str) -> xr.Dataset:
    summary = ResultStore(store).summary().drop_vars(["part", "roi_offset"])
    scores = {record.bin: scores for record, _, scores in ResultStore(store).iter_bins()}
    return summary.assign(scores_sum=("bin", [float(scores[b].sum()) for b in summary.bin.values]))


def _held_feeder(hold: Path, job: subprocess.Popen, timeout_s: float = 240) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        held = sorted(hold.parent.glob(f"{hold.name}.*.held"))
        if held:
            return int(held[0].name.split(".")[-2])
        assert job.poll() is None, f"the run ended before a feeder held: {job.communicate()}"
        time.sleep(0.05)
    raise TimeoutError("no feeder process reached the hold point")


def _ifcbflow_blocks() -> dict[str, tuple[int, int]]:
    return shm.blocks()


def test_a_feeder_killed_mid_partition_costs_nothing(workload, tmp_path: Path) -> None:
    out, hold = tmp_path / "healed.zarr", tmp_path / "hold"
    hold.touch()
    job = subprocess.Popen(
        _command(workload, out, "--feeder-kind", "processes", "--feeders", "2"), start_new_session=True,
        env={**os.environ, FEEDER_HOLD_ENV: str(hold)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        feeder = _held_feeder(hold, job)
        os.kill(feeder, signal.SIGKILL)
        hold.unlink()
        stdout, stderr = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["bins_done"] == BINS and summary["complete"]
    assert "a feeder process died" in stderr
    assert _results(str(out)).equals(_results(workload["reference"]))
    assert not session_survivors(job.pid), "a process of the run outlived it"
    assert not _ifcbflow_blocks()


def test_a_run_killed_with_blocks_in_flight_leaves_none_after_the_rerun(workload, tmp_path: Path) -> None:
    out, hold = tmp_path / "killed.zarr", tmp_path / "hold"
    hold.touch()
    job = subprocess.Popen(
        _command(workload, out, "--feeder-kind", "processes", "--feeders", "2"), start_new_session=True,
        env={**os.environ, FEEDER_HOLD_ENV: str(hold)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _held_feeder(hold, job)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the CLI, scheduler, worker, feeders and resource trackers: a lost node
        job.wait()
    hold.unlink()
    assert not session_survivors(job.pid, grace_s=10)  # orphaned feeders notice within ORPHAN_POLL_S
    left = _ifcbflow_blocks()
    assert left, "no block was left to sweep: nothing was tested"
    assert not any(psutil.pid_exists(owner) and psutil.Process(owner).status() != psutil.STATUS_ZOMBIE
                   for owner, _ in left.values())  # fmt: skip
    rerun = _run(workload, out, "--feeder-kind", "processes", "--feeders", "2")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["complete"]
    assert not _ifcbflow_blocks()
    assert _results(str(out)).equals(_results(workload["reference"]))
