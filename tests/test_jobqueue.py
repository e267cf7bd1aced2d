"""Batch-job settings, the `ifcbflow cluster` script, GPU pinning, and the TLS scheduler (real, on loopback)."""

from __future__ import annotations

import gc
import socket
import ssl
import stat
from pathlib import Path

import pytest
from distributed import Client, Security
from distributed.comm import parse_host_port
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.cluster.gpu_pin import device_for
from pipeline.cluster.jobqueue import JobqueueSettings, job_script, resolve, start_jobqueue_cluster
from pipeline.cluster.security import create_run_certificates

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
    assert "--resources GPU=1" in script
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
    assert resolved.job_kwargs["job_script_prologue"] == ["module load cuda", "source venv/bin/activate"]
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
    [("job-3-0", "4,6", "4"), ("job-3-1", "4,6", "6"), ("job-3", "2", "2"), ("w", "GPU-a,GPU-b", "GPU-a")],
)
def test_each_worker_of_a_job_keeps_one_gpu(name: str, visible: str, expected: str) -> None:
    assert device_for(name, visible) == expected


def test_certificates_are_private(tmp_path: Path) -> None:
    certs = create_run_certificates(tmp_path)
    assert stat.S_IMODE(certs.directory.stat().st_mode) == 0o700
    for path in (certs.ca_file, certs.cert_file, certs.key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in certs.ca_file.read_text()  # the CA's key is never written
    certs.remove()
    assert not certs.directory.exists()


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
    cluster, security = start_jobqueue_cluster(
        "slurm", JobqueueSettings(min_jobs=0, interface="lo", tls_dir=str(tmp_path))
    )
    assert security is not None
    run_dir = Path(security.tls_ca_file).parent
    try:
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        assert _refused_without_client_certificate(address, security.tls_ca_file)
        with pytest.raises(OSError):  # certificates of another CA
            Client(address, security=Security.temporary(), timeout="5s")
        with pytest.raises(OSError):  # plain TCP
            Client(address.replace("tls://", "tcp://"), timeout="5s")
        with Client(address, security=security, timeout="10s") as client:
            assert client.run_on_scheduler(lambda: 42) == 42
    finally:
        cluster.close()
    del cluster
    gc.collect()
    assert not run_dir.exists(), "the run's certificates outlive the cluster"


def test_no_tls_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cluster, security = start_jobqueue_cluster("slurm", JobqueueSettings(min_jobs=0, interface="lo", tls=False))
    try:
        assert security is None and cluster.scheduler_address.startswith("tcp://")
        assert "TLS is off" in caplog.text
    finally:
        cluster.close()
