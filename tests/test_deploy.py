"""deploy/: container recipes agree with pyproject's pins, shell scripts are sound, GPU workers (local, and those
the batch scripts start) each get their own GPU."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
SCRIPTS = [
    DEPLOY / "slurm" / "local-slurm.sh",
    DEPLOY / "slurm" / "classify.sbatch",
    DEPLOY / "slurm" / "train.sbatch",
    DEPLOY / "pbs" / "classify.pbs",
    DEPLOY / "pbs" / "train.pbs",
]
IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _gpu_pin(name: str) -> str:
    pins = dict(
        re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(.+)", p).groups()
        for p in _pyproject()["project"]["optional-dependencies"]["gpu"]
    )
    return pins[name]


def test_container_recipes_use_the_pinned_tensorflow_and_the_gpu_extra() -> None:
    tf = _gpu_pin("tensorflow")
    dockerfile = (DEPLOY / "container" / "Dockerfile").read_text()
    definition = (DEPLOY / "container" / "ifcbflow.def").read_text()
    assert f"ARG TF_VERSION={tf}\n" in dockerfile and "FROM tensorflow/tensorflow:${TF_VERSION}-gpu" in dockerfile
    assert f"From: tensorflow/tensorflow:{tf}-gpu\n" in definition
    for recipe in (dockerfile, definition):
        assert 'pip install ".[gpu]"' in recipe
        assert not re.search(r"pip install [^\n]*==", recipe), "versions belong in pyproject.toml, not the recipe"
    version = _pyproject()["project"]["version"]
    assert f"org.opencontainers.image.version {version}" in definition
    assert f"ifcbflow:{version}" in dockerfile


@pytest.mark.parametrize("script", [*SCRIPTS, REPO / ".ci" / "run"], ids=lambda p: p.name)
def test_shell_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    assert os.access(script, os.X_OK) or script.suffix in (".sbatch", ".pbs"), f"{script} is not executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI"):
            pytest.fail("shellcheck not installed: .ci/run installs it (apt-get install shellcheck)")
        pytest.skip("shellcheck not installed (apt-get install shellcheck); bash -n passed")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_batch_scripts_hard_code_no_paths() -> None:
    for script in SCRIPTS[1:]:
        text = script.read_text()
        for forbidden in ("/work/", "/home/", "/root/", ".venv"):
            assert forbidden not in text, f"{script.name} mentions {forbidden}"


def test_sbatch_directives() -> None:
    classify = (DEPLOY / "slurm" / "classify.sbatch").read_text()
    train = (DEPLOY / "slurm" / "train.sbatch").read_text()
    assert "#SBATCH --gres=gpu:" in classify and "--gpus-per-task=1" in classify
    assert 'ifcbflow worker --gpus "$gpus_per_task" --' in classify
    assert "--scheduler-file" in classify and "--protocol tls" in classify and "trap cleanup EXIT" in classify
    for directive in ("#SBATCH --requeue", "#SBATCH --signal=B:USR1@120", "#SBATCH --open-mode=append"):
        assert directive in train.splitlines()
    assert "scontrol requeue" in train and "--replicas" in train


def _pin_workers(client) -> dict[str, str]:
    return client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES", ""))


@pytest.fixture
def tls_scheduler(tmp_path: Path):
    """A real TLS scheduler on loopback with the certificates `ifcbflow tls-certs` makes for a batch script: a client,
    and the `dask worker` arguments the PBS script gives `ifcbflow worker` (scheduler file, protocol, TLS files)."""
    from distributed import Client, LocalCluster

    from pipeline.cluster.local import DEFAULT_DASHBOARD as DASHBOARD
    from pipeline.cluster.security import create_run_certificates

    certs = create_run_certificates(tmp_path / "tls")
    security = certs.security()
    scheduler_file = tmp_path / "scheduler.json"
    tls = ["--tls-ca-file", str(certs.ca_file), "--tls-cert", str(certs.cert_file), "--tls-key", str(certs.key_file)]
    cluster = LocalCluster(
        n_workers=0, host="127.0.0.1", protocol="tls://", security=security, dashboard_address=DASHBOARD
    )
    with cluster, Client(cluster, security=security) as client:
        client.write_scheduler_file(str(scheduler_file))
        yield client, ["--scheduler-file", str(scheduler_file), "--protocol", "tls", *tls]


def _stop(process: subprocess.Popen) -> str:
    """Stop a `dask worker` process as a batch system would (SIGTERM) and return its output."""
    process.terminate()
    return process.communicate(timeout=60)[0]


def test_the_batch_scripts_workers_each_get_their_own_gpu(tls_scheduler) -> None:
    """The command line classify.pbs runs on each node (and classify.sbatch in each task): a node showing GPUs 0 and 1
    gets two workers, each seeing one of them."""
    client, dask_args = tls_scheduler
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}
    command = [IFCBFLOW, "worker", "--gpus", "2", "--", *dask_args]
    workers = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client.wait_for_workers(2, timeout=120)
        pinned = _pin_workers(client)
        info = client.scheduler_info(n_workers=-1)["workers"].values()
    finally:
        output = _stop(workers)
    assert sorted(pinned.values()) == ["0", "1"], output[-3000:]
    assert all(w["resources"] == {"GPU": 1} for w in info) and len({w["name"] for w in info}) == 2


def test_workers_that_cannot_tell_their_gpu_refuse_to_start(tls_scheduler) -> None:
    """What classify.pbs used to run: `dask worker --nworkers 2` without --name gives address names; with the pinning
    preload and two GPUs visible, each worker must stop with a clear error instead of silently sharing GPU 0."""
    client, dask_args = tls_scheduler
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}
    command = [sys.executable, "-m", "distributed.cli.dask_worker", *dask_args, "--nworkers", "2", "--nthreads", "1"]
    command += ["--preload", "pipeline.cluster.gpu_pin"]
    workers = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = workers.communicate(timeout=120)[0]
    finally:
        workers.kill()
    assert workers.returncode != 0, output[-3000:]
    assert "its name does not end in -0 … -1" in output
    assert not client.scheduler_info(n_workers=-1)["workers"], "a worker joined without a GPU of its own"


def test_local_cluster_pins_one_worker_to_each_visible_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a SLURM job step without device cgroups sees: GPUs 3 and 5 of the node. Fake ids work on a CPU machine
    (CPU TensorFlow ignores the variable), so this runs everywhere; each worker must keep one of the job's own GPUs."""
    from pipeline.cluster.client import GPU_RESOURCE, open_client

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with open_client("local") as client:
        client.wait_for_workers(2, timeout=60)
        pinned = _pin_workers(client)
        resources = [w["resources"] for w in client.scheduler_info(n_workers=-1)["workers"].values()]
    assert sorted(pinned.values()) == ["3", "5"], pinned
    assert all(r.get(GPU_RESOURCE) == 1 for r in resources), resources


def _visible_gpus() -> list[str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    listing = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout
    return [str(i) for i, line in enumerate(ln for ln in listing.splitlines() if ln.startswith("GPU "))]


@pytest.mark.gpu
def test_local_cluster_on_a_gpu_machine_runs_one_worker_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    gpus = _visible_gpus()
    if not gpus:
        pytest.skip("no NVIDIA GPU visible (nvidia-smi absent or lists none)")
    from pipeline.cluster.client import open_client

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with open_client("local") as client:
        client.wait_for_workers(len(gpus), timeout=120)
        pinned = _pin_workers(client)
    assert len(pinned) == len(gpus)
    # dask-cuda lists every device, its own first (it only orders them); a bare pin lists one.
    assert sorted(v.split(",")[0] for v in pinned.values()) == gpus, pinned
