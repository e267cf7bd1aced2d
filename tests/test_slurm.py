"""The batch scripts and `--cluster slurm` on a real SLURM (a one-node cluster with 2 fake GPUs in CI).

Start it with `deploy/slurm/local-slurm.sh up`; without a SLURM that answers, the whole module skips and says why
(under CI, where .ci/run starts it, it fails instead). Every run classifies the same small synthetic archive with the
same untrained model and must give exactly the scores of a local run, bin by bin.

Tests that stop a job mid-way use the job's hold point (`IFCBFLOW_TEST_HOLD_FILE`, pipeline/job/hold.py): they stop
it only once a partition is committed and the workers wait, so the job can neither be stopped too early nor finish
first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SLURM_DIR = REPO / "deploy" / "slurm"
BINS, ROIS, CLASSES = 6, 20, 3
PARTITION_MB = 0.0001  # one bin per task: bins complete one by one, and every run batches the same images together


def _slurm_problem() -> str | None:
    """Why the SLURM tests cannot run here, or None when they can."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM client commands not installed (CI starts one with deploy/slurm/local-slurm.sh up)"
    try:
        answer = subprocess.run(["sinfo", "-h", "-N", "-o", "%T %G"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if answer.returncode != 0:
        return f"SLURM is not running (sinfo: {answer.stderr.strip()}); start it with deploy/slurm/local-slurm.sh up"
    states = answer.stdout.split()
    if not states or not any(s.startswith(("idle", "mixed", "allocated")) for s in states[::2]):
        return f"no usable SLURM node (sinfo: {answer.stdout.strip()!r})"
    if "gpu:" not in answer.stdout:
        return "the SLURM node has no GPU GRES (local-slurm.sh gives it 2 fake GPUs)"
    return None


_PROBLEM = _slurm_problem()
if _PROBLEM and os.environ.get("CI"):
    pytest.fail(f"CI must run the SLURM tests, but: {_PROBLEM}", pytrace=False)
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.skipif(_PROBLEM is not None, reason=_PROBLEM or "")]
HOLD_ENV = "IFCBFLOW_TEST_HOLD_FILE"


@dataclass
class Workload:
    archive: Path
    labels: Path
    model: Path
    reference: Path  # the store of a local run
    env: dict[str, str]
    root: Path


def _run(args: list[str], env: dict[str, str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, (
        f"{args[:3]} exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


MAKE_MODEL = """
import sys, keras
from model.architectures import build
from model.bundle import Bundle, save_bundle
from model.preprocess import PreprocessConfig
from pipeline.ifcb.synth import SYNTH_CLASSES
keras.utils.set_random_seed(0)
classes = SYNTH_CLASSES[: int(sys.argv[2])]
model = build("small-cnn", len(classes), 32)
save_bundle(Bundle(model=model, classes=classes, preprocess=PreprocessConfig(size=32), arch="small-cnn"), sys.argv[1])
"""


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    """Archive, untrained model (in a subprocess: TensorFlow stays out of the test process) and a local run's store."""
    root = tmp_path_factory.mktemp("slurm")
    env = {
        **os.environ,
        # The jobs run `ifcbflow`, `dask` and `python` from this venv (sbatch exports the environment).
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "IFCBFLOW_SHARED_DIR": str(root / "shared"),
        "IFCBFLOW_TLS_DIR": str(root / "shared" / "tls"),
        "IFCBFLOW_INTERFACE": "lo",
        # The local node declares GPUs it does not have (gres): its workers take them, and compute on the CPU.
        "IFCBFLOW_CPU": "1",
    }
    archive, model, reference = root / "archive", root / "model.zip", root / "local.zarr"
    _run(["ifcbflow", "synth", str(archive), "--bins", str(BINS), "--rois", str(ROIS), "--classes", str(CLASSES)], env)
    _run([sys.executable, "-c", MAKE_MODEL, str(model), str(CLASSES)], env)
    _run([*_classify(archive, model, reference), "--cluster", "local", "--workers", "1"], env)
    return Workload(archive, archive / "labels.csv", model, reference, env, root)


def _classify(archive: Path, model: Path, out: Path) -> list[str]:
    return [
        "ifcbflow",
        "classify",
        str(archive),
        "--model",
        str(model),
        "--out",
        str(out),
        "--json",
        "--partition-mb",
        str(PARTITION_MB),
    ]


def _complete_bins(store: Path) -> set[str]:
    """Bins committed in a store (it may be mid-write: a torn read counts as not complete)."""
    from pipeline.results.store import ResultStore

    try:
        return set(ResultStore(str(store)).ledger().bins)
    except Exception:
        return set()


def _assert_same_store(store: Path, reference: Path) -> None:
    from pipeline.results.store import ResultStore

    got, want = ResultStore(str(store)), ResultStore(str(reference))
    got_bins, want_bins = got.ledger(), want.ledger()
    assert sorted(got_bins.bins) == sorted(want_bins.bins) and len(want_bins.bins) == BINS
    for bin_id in want_bins.bins:
        (rois, scores), (want_rois, want_scores) = got.read_bin(bin_id, got_bins), want.read_bin(bin_id, want_bins)
        np.testing.assert_array_equal(rois, want_rois, err_msg=bin_id)
        np.testing.assert_array_equal(scores, want_scores, err_msg=bin_id)


def _sbatch(
    script: Path, args: list[str], env: dict[str, str], log: Path, *, wait: bool, exit_code: int = 0
) -> str:
    """Submit; with `wait`, until the job ends, whose exit code `sbatch --wait` returns and must be `exit_code`."""
    command = ["sbatch", "--parsable", "--export=ALL", f"--output={log}", *(["--wait"] if wait else []), str(script)]
    result = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == exit_code, f"sbatch exit {result.returncode}\n{result.stderr}\n{_tail(log)}"
    return result.stdout.strip().split(";")[0]


def _tail(log: Path) -> str:
    return log.read_text()[-4000:] if log.exists() else "(no log)"


def _job_field(job_id: str, name: str) -> str:
    """A field of `scontrol show job` (no accounting database here, so no sacct); '' once SLURM forgot the job."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return fields.get(name, "")


def _job_state(job_id: str) -> str:
    return _job_field(job_id, "JobState")


def _ended(job_id: str) -> bool:
    return _job_state(job_id) not in ("RUNNING", "COMPLETING", "PENDING", "CONFIGURING", "SUSPENDED")


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def test_classify_sbatch_matches_a_local_run(workload: Workload) -> None:
    out, log = workload.root / "sbatch.zarr", workload.root / "sbatch.log"
    _sbatch(
        SLURM_DIR / "classify.sbatch",
        _classify(workload.archive, workload.model, out)[2:],
        workload.env,
        log,
        wait=True,
    )
    _assert_same_store(out, workload.reference)
    text = log.read_text()
    assert "2 worker(s) with 1 GPU(s) each connected" in text and "tls://" in text
    assert not list((workload.root / "shared").glob("scheduler-*.json")), "scheduler file left behind"
    assert not list((workload.root / "shared" / "tls").glob("run-*")), "certificates left behind"


def test_the_job_exits_with_the_classify_commands_exit_code(workload: Workload) -> None:
    """A usage error (no --model) makes `ifcbflow classify` exit 2; the job must end with 2 too, after its clean-up."""
    log = workload.root / "usage.log"
    args = [str(workload.archive), "--out", str(workload.root / "usage.zarr")]
    job = _sbatch(SLURM_DIR / "classify.sbatch", args, workload.env, log, wait=True, exit_code=2)
    assert _job_field(job, "ExitCode") == "2:0" and _job_state(job) == "FAILED", _tail(log)
    assert "--model is required" in log.read_text()
    assert not list((workload.root / "shared").glob("scheduler-*.json")), "scheduler file left behind"
    assert not list((workload.root / "shared" / "tls").glob("run-*")), "certificates left behind"


def test_cancelled_classify_job_completes_when_resubmitted(workload: Workload) -> None:
    out, log, hold = workload.root / "cancelled.zarr", workload.root / "cancelled.log", workload.root / "hold-cancel"
    held = Path(f"{hold}.held")
    args = _classify(workload.archive, workload.model, out)[2:]
    hold.touch()
    try:
        job = _sbatch(SLURM_DIR / "classify.sbatch", args, {**workload.env, HOLD_ENV: str(hold)}, log, wait=False)
        # A partition is committed and its worker waits: the job is mid-way, and stays so until the hold file goes.
        _wait_for(lambda: held.exists() or _ended(job), 300, f"a worker to hold\n{_tail(log)}")
        assert held.exists(), f"the job ended before any worker held\n{_tail(log)}"
        subprocess.run(["scancel", job], check=True)
        _wait_for(lambda: _ended(job), 120, "the cancelled job to end")
    finally:
        hold.unlink()
    done_before = _complete_bins(out)
    assert 1 <= len(done_before) < BINS, done_before  # each of the 2 workers held after its first bin
    _sbatch(SLURM_DIR / "classify.sbatch", args, workload.env, workload.root / "resubmitted.log", wait=True)
    _assert_same_store(out, workload.reference)
    resubmitted = (workload.root / "resubmitted.log").read_text()
    assert f'"bins_already_complete": {len(done_before)}' in resubmitted, "the resubmitted job redid finished bins"
    # Whatever the cancelled job could not clean up, the resubmitted one removed when it started.
    assert not list((workload.root / "shared" / "tls").glob("run-*")), "certificates left behind"


def test_classify_with_slurm_worker_jobs_matches_a_local_run(workload: Workload) -> None:
    out = workload.root / "jobqueue.zarr"
    seen: set[str] = set()
    stop = threading.Event()

    def watch_squeue() -> None:
        while not stop.is_set():
            listing = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True).stdout
            seen.update(line for line in listing.splitlines() if "dask-worker" in line)
            time.sleep(0.5)

    watcher = threading.Thread(target=watch_squeue, daemon=True)
    watcher.start()
    try:
        _run(
            [
                *_classify(workload.archive, workload.model, out),
                "--cluster",
                "slurm",
                "--interface",
                "lo",
                "--min-jobs",
                "1",
                "--max-jobs",
                "2",
                "--memory",
                "2GiB",
                "--walltime",
                "00:10:00",
                "--log-directory",
                str(workload.root / "worker-logs"),
            ],
            workload.env,
            timeout=400,
            cwd=workload.root,
        )
    finally:
        stop.set()
        watcher.join()
    _assert_same_store(out, workload.reference)
    assert any("RUNNING" in line for line in seen), f"no dask-worker job seen running in squeue: {seen}"
    jobs = {line.split()[0] for line in seen}
    _wait_for(lambda: all(_ended(j) for j in jobs), 60, "worker jobs to end")


def test_a_client_stopped_by_sigterm_cancels_its_worker_jobs_and_removes_its_certificates(
    workload: Workload,
) -> None:
    """What a batch system or a closed terminal does to a login-node client: the worker jobs must not outlive it,
    nor the certificates, and it exits 128 + 15."""
    name, tls_dir, hold = "ifcbflow-sigterm-test", workload.root / "tls-sigterm", workload.root / "hold-client"
    config = workload.root / "sigterm.yaml"
    config.write_text(f"jobqueue:\n  slurm:\n    name: {name}\n")
    command = [
        *_classify(workload.archive, workload.model, workload.root / "sigterm.zarr"),
        *["--cluster", "slurm", "--jobqueue-config", str(config), "--interface", "lo", "--tls-dir", str(tls_dir)],
        *["--min-jobs", "1", "--max-jobs", "1", "--memory", "2GiB", "--walltime", "00:10:00"],
        *["--log-directory", str(workload.root / "sigterm-logs")],
    ]
    hold.touch()
    env = {**workload.env, HOLD_ENV: str(hold)}
    client = subprocess.Popen(command, env=env, cwd=workload.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Once a worker holds, the cluster and its worker job are up, and the run cannot finish on its own.
        _wait_for(lambda: Path(f"{hold}.held").exists() or client.poll() is not None, 300, "a worker to hold")
        assert client.poll() is None, client.communicate()[1].decode()[-3000:]
        listing = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout
        jobs = listing.split()
        assert jobs and len(list(tls_dir.glob("run-*"))) == 1
        client.send_signal(signal.SIGTERM)
        stderr = client.communicate(timeout=120)[1].decode()
    finally:
        client.kill()
        hold.unlink()
    assert client.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert not list(tls_dir.glob("run-*")), "certificates left behind"
    _wait_for(lambda: all(_ended(j) for j in jobs), 60, f"worker jobs {jobs} to end")


#: Epochs of the requeue test: once the first is checkpointed, the other 29 take many times longer than the requeue
#: takes to stop the job (training has no hold point), so the first run cannot finish before it is requeued.
TRAIN_EPOCHS = 30


def test_train_sbatch_resumes_after_requeue(workload: Workload) -> None:
    bundle, log = workload.root / "trained.zip", workload.root / "train.log"
    history = Path(f"{bundle}.ckpt") / "history.csv"
    args = [
        str(workload.archive),
        "--labels",
        str(workload.labels),
        "--out",
        str(bundle),
        "--arch",
        "small-cnn",
        "--epochs",
        str(TRAIN_EPOCHS),
        "--patience",
        str(TRAIN_EPOCHS),
        "--image-size",
        "32",
        "--val",
        "0.25",
        "--test",
        "0.25",
    ]
    job = _sbatch(SLURM_DIR / "train.sbatch", args, workload.env, log, wait=False)

    def first_epoch_checkpointed() -> bool:
        """Keras' BackupAndRestore writes this last, after the weights: only then is an epoch safe from a kill."""
        try:
            return json.loads((Path(f"{bundle}.ckpt") / "backup" / "training_metadata.json").read_text())["epoch"] >= 0
        except (OSError, ValueError, KeyError):
            return False

    _wait_for(first_epoch_checkpointed, 240, f"the first epoch's checkpoint\n{_tail(log)}")
    # What SLURM does 120 s before the time limit (--signal=B:USR1@120): the script's trap runs `scontrol requeue`.
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True)
    # A requeued job waits ~2 min (BeginTime) before it may start again; no need to wait in a test.
    _wait_for(lambda: _job_state(job) in ("PENDING", "COMPLETED"), 60, "the requeued job to be pending")
    assert _job_state(job) == "PENDING", f"training finished before the requeue: nothing was tested\n{_tail(log)}"
    # slurmd compares credential times to the second: a relaunch in the same second as the requeue's revocation is
    # refused ("Job credential revoked") and the job fails. SLURM's own ~2 min delay avoids it; 2 s do here.
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    _wait_for(lambda: _job_state(job) == "COMPLETED", 300, f"the requeued job to complete\n{_tail(log)}")

    text = log.read_text()
    assert "start 1 on" in text and "start 2 on" in text, text[-3000:]  # one log, appended by both runs
    assert "time limit near: requeueing" in text and "2 replica(s)" in text and "resuming at epoch" in text, text[
        -3000:
    ]
    assert bundle.exists()
    epochs = [int(line.split(",")[0]) for line in history.read_text().splitlines()[1:]]
    assert epochs == list(range(TRAIN_EPOCHS)), "every epoch recorded exactly once across the requeue"


def test_a_two_gpu_worker_job_pins_each_worker_to_its_own_gpu(
    workload: Workload, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed import Client

    from pipeline.cluster.jobqueue import JobqueueSettings, jobqueue_cluster

    monkeypatch.setenv("PATH", workload.env["PATH"])
    settings = JobqueueSettings(
        gpus_per_job=2,
        min_jobs=1,
        max_jobs=1,
        memory="2GiB",
        interface="lo",
        tls_dir=str(workload.root / "tls-pin"),
        log_directory=str(workload.root / "pin-logs"),
    )
    with jobqueue_cluster("slurm", settings) as (cluster, security), Client(cluster, security=security) as client:
        client.wait_for_workers(2, timeout=120)
        pinned = client.run(lambda: (os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("SLURM_JOB_ID")))
        resources = [w["resources"] for w in client.scheduler_info(n_workers=-1)["workers"].values()]
    devices = sorted(device for device, _ in pinned.values())
    assert devices == ["0", "1"], pinned  # the job got GPUs 0,1 (--gres=gpu:2); each worker keeps one
    assert len({job for _, job in pinned.values()}) == 1, "both workers belong to one job"
    assert resources == [{"GPU": 1}, {"GPU": 1}]
