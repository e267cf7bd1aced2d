"""Batch-job settings, the `ifcbflow cluster` script, GPU pinning, the TLS scheduler (real, on loopback), and what a
client leaves behind when a signal stops it (real processes, real signals)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from cryptography import x509
from distributed import Client, Security
from distributed.comm import parse_host_port
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.cli.cluster import parse_duration
from pipeline.cluster.gpu_pin import UnpinnableWorker, device_for
from pipeline.cluster.jobqueue import JobqueueSettings, job_script, jobqueue_cluster, resolve
from pipeline.cluster.security import (
    OWNER_FILE,
    create_run_certificates,
    create_run_directory,
    remove_stale_runs,
    temporary_certificates,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_tls_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Certificates from the environment (a batch script's) would make every client look authorised."""
    monkeypatch.delenv("IFCBFLOW_TLS_DIR", raising=False)
    for name in [
        "REQUIRE_ENCRYPTION",
        "TLS__CA_FILE",
        *(f"TLS__{r}__{p}" for r in ("SCHEDULER", "WORKER", "CLIENT") for p in ("CERT", "KEY")),
    ]:
        monkeypatch.delenv(f"DASK_DISTRIBUTED__COMM__{name}", raising=False)


def test_cluster_command_prints_a_gpu_slurm_job(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "cluster",
            "--cluster",
            "slurm",
            "--queue",
            "gpu-a100",
            "--account",
            "plankton",
            "--walltime",
            "02:00:00",
            "--prologue",
            "module load cuda/12.4",
            "--job-directive=--constraint=a100",
            "--tls-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    script = result.output
    for line in [
        "#SBATCH -p gpu-a100",
        "#SBATCH -A plankton",
        "#SBATCH -t 02:00:00",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --constraint=a100",
        "module load cuda/12.4",
    ]:
        assert line in script.splitlines(), line
    assert "--resources GPU=1" in script and "--no-dashboard" in script
    assert "--protocol tls://" in script and f"--tls-ca-file {tmp_path}/" in script
    assert not list(tmp_path.iterdir()), "showing a script must not create certificates"


def test_config_file_is_read_and_flags_win(tmp_path: Path) -> None:
    config = tmp_path / "jobqueue.yaml"
    config.write_text(
        "jobqueue:\n"
        "  slurm:\n"
        "    queue: from-file\n"
        "    account: file-account\n"
        "    gpus-per-job: 2\n"
        "    cores: 8\n"
        "    memory: 64GiB\n"
        "    max-jobs: 7\n"
        "    job-script-prologue: ['module load cuda']\n"
    )
    settings = JobqueueSettings(config_file=str(config), queue="from-flag", prologue=["source venv/bin/activate"])
    resolved = resolve("slurm", settings)
    assert resolved.job_kwargs["queue"] == "from-flag"
    assert resolved.job_kwargs["account"] == "file-account"
    assert resolved.job_kwargs["processes"] == 2 and resolved.gpus_per_job == 2 and resolved.max_jobs == 7
    assert resolved.job_kwargs["job_script_prologue"] == [
        "module load cuda",
        "source venv/bin/activate",
        "export DASK_DISTRIBUTED__WORKER__DAEMON=False",  # GPU workers start feeder processes
    ]
    script = job_script("slurm", settings)
    assert "#SBATCH --gres=gpu:2" in script and "--nworkers 2" in script and "--nthreads 4" in script


def test_shipped_config_file_works_for_both_batch_systems() -> None:
    for kind in ("slurm", "pbs"):
        script = job_script(kind, JobqueueSettings(config_file=str(REPO / "deploy" / "jobqueue.yaml")))
        assert "--resources GPU=1" in script


def test_cpu_jobs_ask_for_no_gpu() -> None:
    script = job_script("slurm", JobqueueSettings(gpus_per_job=0, cores=4, memory="8GiB", tls=False))
    assert "gres" not in script and "GPU=1" not in script and "tcp://" in script


def test_one_worker_per_gpu_is_enforced(tmp_path: Path) -> None:
    config = tmp_path / "jobqueue.yaml"
    config.write_text("jobqueue:\n  slurm:\n    processes: 3\n    cores: 6\n    gpus-per-job: 2\n")
    with pytest.raises(ValueError, match="one worker per GPU"):
        resolve("slurm", JobqueueSettings(config_file=str(config)))


@pytest.mark.parametrize(
    ("name", "visible", "expected"),
    [("job-3-0", "4,6", "4"), ("job-3-1", "4,6", "6"), ("job-3", "2", "2"), ("w", "", "")],
)
def test_each_worker_of_a_job_keeps_one_gpu(name: str, visible: str, expected: str) -> None:
    assert device_for(name, visible) == expected


@pytest.mark.parametrize("name", ["tcp://10.0.0.7:40123", "job-3-2", "worker"])
def test_a_worker_that_cannot_tell_its_gpu_is_refused(name: str) -> None:
    with pytest.raises(UnpinnableWorker, match="-0 … -1"):
        device_for(name, "GPU-a,GPU-b")


@pytest.mark.parametrize("make", [create_run_certificates, temporary_certificates], ids=["tls-certs", "temporary"])
def test_certificates_are_private(tmp_path: Path, make) -> None:
    certs = make(tmp_path)
    assert stat.S_IMODE(certs.directory.stat().st_mode) == 0o700
    for path in (certs.ca_file, certs.cert_file, certs.key_file, certs.directory / OWNER_FILE):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    certs.remove()
    assert not certs.directory.exists()


def test_batch_certificates_expire_with_the_job_and_their_ca_key_is_never_written(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["tls-certs", str(tmp_path), "--valid-for", "1-02:00:00"])
    assert result.exit_code == 0, result.output
    exports = dict(line.removeprefix("export ").split("=", 1) for line in result.output.splitlines())
    ca = Path(exports["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"])
    assert "PRIVATE KEY" not in ca.read_text()
    expires = x509.load_pem_x509_certificate(ca.read_bytes()).not_valid_after_utc
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(days=1, hours=2)
    assert abs(expires - expected) <= dt.timedelta(minutes=6)  # the job's time, and a margin for clock skew
    assert Path(exports["IFCBFLOW_TLS_RUN_DIR"]) == ca.parent


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1-02:03:04", 93784), ("12:00:00", 43200), ("59:30", 3570), ("90", 90), ("UNLIMITED", None), ("", None)],
)
def test_batch_time_formats(text: str, seconds: int | None) -> None:
    duration = parse_duration(text)
    assert (duration.total_seconds() if duration else None) == seconds


def _refused_without_client_certificate(address: str, ca_file: str) -> bool:
    """Speak TLS to the scheduler trusting its CA but presenting no certificate: it must hang up on us."""
    host, port = parse_host_port(address.removeprefix("tls://"))
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False
    try:
        with socket.create_connection((host, port), timeout=5) as raw, context.wrap_socket(raw) as tls:
            tls.sendall(b"\0" * 8)
            return tls.recv(1) == b""
    except (ssl.SSLError, ConnectionError):
        return True


def test_tls_scheduler_admits_only_holders_of_the_run_certificates(tmp_path: Path) -> None:
    # A real scheduler started by our code; min-jobs 0 means no job is submitted, so no SLURM is needed.
    with jobqueue_cluster("slurm", JobqueueSettings(min_jobs=0, interface="lo", tls_dir=str(tmp_path))) as (
        cluster,
        security,
    ):
        assert security is not None
        run_dir = Path(security.tls_ca_file).parent
        assert run_dir.parent == tmp_path
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        assert _refused_without_client_certificate(address, security.tls_ca_file)
        with pytest.raises(OSError):  # certificates of another CA
            Client(address, security=Security.temporary(), timeout="5s")
        with pytest.raises(OSError):  # plain TCP
            Client(address.replace("tls://", "tcp://"), timeout="5s")
        with Client(address, security=security, timeout="10s") as client:
            assert client.run_on_scheduler(lambda: 42) == 42
    assert not run_dir.exists(), "the run's certificates outlive the cluster"


def test_no_tls_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with jobqueue_cluster("slurm", JobqueueSettings(min_jobs=0, interface="lo", tls=False)) as (cluster, security):
        assert security is None and cluster.scheduler_address.startswith("tcp://")
        assert "TLS is off" in caplog.text


def test_the_scheduler_dashboard_listens_on_loopback_only(tmp_path: Path) -> None:
    with jobqueue_cluster("slurm", JobqueueSettings(min_jobs=0, interface="lo", tls_dir=str(tmp_path))) as (
        cluster,
        _,
    ):
        port = cluster.scheduler.http_server.port
        listening = psutil.Process().net_connections("inet")
        hosts = {c.laddr.ip for c in listening if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    assert hosts == {"127.0.0.1"}  # not the login node's network: reach it through an SSH tunnel


#: A login-node client: a `--cluster slurm` cluster (min-jobs 0: no job is submitted, no SLURM needed) with TLS,
#: which says it is up on stdout and then waits for a signal.
CLIENT = """
import signal, sys
from pipeline.cluster.client import open_client
from pipeline.cluster.jobqueue import JobqueueSettings
settings = JobqueueSettings(min_jobs=0, interface="lo", tls_dir=sys.argv[1])
with open_client("slurm", jobqueue=settings) as client:
    print(client.scheduler.address, flush=True)
    signal.pause()
"""


def _start_client(tls_dir: Path) -> tuple[subprocess.Popen, str]:
    """A client process, once its cluster is up (it has printed the scheduler's address)."""
    process = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(tls_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    address = process.stdout.readline().strip()
    if not address.startswith("tls://"):
        process.kill()
        raise AssertionError(f"the client did not start: {process.communicate()[1][-3000:]}")
    return process, address


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_client_stopped_by_a_signal_shuts_down_removes_its_certificates_and_exits_128_plus_n(
    tmp_path: Path, signum: int
) -> None:
    process, address = _start_client(tmp_path)
    assert len(list(tmp_path.glob("run-*"))) == 1
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr[-3000:]
    assert f"stopped by {signal.Signals(signum).name}" in stderr
    assert not list(tmp_path.glob("run-*")), "certificates left behind"
    with pytest.raises(OSError):  # the scheduler is gone
        socket.create_connection(parse_host_port(address.removeprefix("tls://")), timeout=5).close()


def test_a_killed_clients_certificates_are_removed_by_the_next_run(tmp_path: Path) -> None:
    process, _ = _start_client(tmp_path)
    (left,) = tmp_path.glob("run-*")
    process.kill()  # SIGKILL cannot be caught: nothing cleans up
    process.communicate()
    assert left.exists()
    certs = temporary_certificates(tmp_path)  # the next run on this host
    assert not left.exists() and certs.directory.exists()
    certs.remove()


def _rewrite_owner(directory: Path, **changes: object) -> None:
    owner = json.loads((directory / OWNER_FILE).read_text())
    (directory / OWNER_FILE).write_text(json.dumps({**owner, **changes}))


def test_only_run_directories_of_dead_or_expired_runs_are_stale(tmp_path: Path) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    here = os.getpid()
    live, dead, elsewhere = (create_run_directory(tmp_path, owner_pid=here) for _ in range(3))
    expired = create_run_directory(tmp_path, owner_pid=here, expires=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    _rewrite_owner(dead, pid=ended.pid)
    _rewrite_owner(elsewhere, pid=ended.pid, host="another-login-node")  # its owner cannot be checked from here
    unowned_new, unowned_old = tmp_path / "run-new", tmp_path / "run-old"  # killed between mkdir and the record
    unowned_new.mkdir()
    unowned_old.mkdir()
    an_hour_ago = time.time() - 3600
    os.utime(unowned_old, (an_hour_ago, an_hour_ago))
    assert sorted(remove_stale_runs(tmp_path)) == sorted([dead, expired, unowned_old])
    assert live.exists() and elsewhere.exists() and unowned_new.exists()
