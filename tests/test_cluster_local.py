"""The cluster factory: the embedded default, an existing scheduler by address or by scheduler file; what a local
cluster opens to the network (nothing: its real sockets are checked) and to other users of loopback (nothing: a
peer without the run's certificate is refused by the scheduler, each worker and each nanny)."""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import json
import multiprocessing
import os
import signal
import ssl
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from distributed import Client
from distributed.comm import connect, get_address_host_port
from distributed.security import Security

from pipeline.cluster.client import open_client, workers_have_gpus
from pipeline.cluster.devices import visible_gpus
from pipeline.cluster.local import cores
from pipeline.cluster.signals import StoppedBySignal, stop_on_signals
from pipeline.cluster.worker_setup import TF_THREADS_ENV

pytestmark = pytest.mark.slow


def _listening(process: psutil.Process) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}


class ListeningSockets:
    """The listening sockets that this process and the processes it starts open after this object is made."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.before = _listening(self.me)
        self.children_before = {child.pid for child in self.me.children(recursive=True)}

    def opened(self) -> set[tuple[str, int]]:
        sockets = _listening(self.me) - self.before
        for child in self.me.children(recursive=True):
            if child.pid not in self.children_before:
                sockets |= _listening(child)
        return sockets


def _assert_only_loopback(client: Client, sockets: ListeningSockets) -> None:
    """Every socket the cluster listens on (scheduler, dashboard, each worker and nanny) is on loopback."""
    opened = sockets.opened()
    workers = client.scheduler_info(n_workers=-1)["workers"]
    ports = {get_address_host_port(client.scheduler.address)[1], urlsplit(client.dashboard_link).port}
    for address, info in workers.items():
        ports |= {get_address_host_port(a)[1] for a in (address, info.get("nanny")) if a}
    assert ports <= {port for _, port in opened}, f"the cluster's ports {ports} are not among {opened}"
    assert all(ipaddress.ip_address(host).is_loopback for host, _ in opened), f"listening beyond loopback: {opened}"


async def _identity(address: str, **connection_args) -> dict:
    """The peer's answer to Dask's `identity` request, over a connection made with `connection_args`."""
    comm = await connect(address, timeout=10, **connection_args)
    try:
        await comm.write({"op": "identity"})
        return await comm.read()
    finally:
        comm.abort()


def _stranger_contexts() -> dict[str, ssl.SSLContext]:
    """TLS client contexts of another user of the machine: one with a certificate of its own (another run's), one
    with none. Both skip checking the server, so that only the server's refusal can stop them."""
    foreign = Security.temporary().get_connection_args("client")["ssl_context"]
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for context in (foreign, bare):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return {"another run's certificate": foreign, "no certificate": bare}


def _assert_refuses_strangers(client: Client) -> None:
    """The scheduler, every worker and every nanny speak TLS and answer only a peer holding the run's certificate."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    addresses = [client.scheduler.address, *workers, *(info["nanny"] for info in workers.values() if info.get("nanny"))]
    own = client.security.get_connection_args("client")
    for address in addresses:
        assert address.startswith("tls://"), address
        assert asyncio.run(_identity(address, **own))["type"]  # the run's own certificate is answered
        host, port = get_address_host_port(address)
        with pytest.raises((OSError, EOFError)):  # distributed's CommClosedError is an OSError
            asyncio.run(_identity(f"tcp://{host}:{port}"))
        for what, context in _stranger_contexts().items():
            try:
                answer = asyncio.run(_identity(address, ssl_context=context, require_encryption=True))
            except (OSError, EOFError):
                continue
            pytest.fail(f"{address} answered a peer with {what}: {answer}")


def test_local_cpu_cluster_splits_the_cores_listens_on_loopback_only_and_refuses_strangers() -> None:
    if visible_gpus():
        pytest.skip("GPUs visible: the local cluster starts GPU workers (see the gpu-marked tests)")
    sockets = ListeningSockets()
    with open_client("local", workers=2) as client:
        client.wait_for_workers(2, timeout=60)
        info = client.scheduler_info(n_workers=-1)["workers"].values()
        assert [w["nthreads"] for w in info] == [1, 1]
        threads = client.run(lambda: os.environ.get(TF_THREADS_ENV))
        assert set(threads.values()) == {str(max(1, cores() // 2))}
        assert not workers_have_gpus(client)
        _assert_only_loopback(client, sockets)
        _assert_refuses_strangers(client)


def test_gpu_cluster_without_dask_cuda_listens_on_loopback_only_and_refuses_strangers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fallback for GPUs without dask-cuda: a SpecCluster of Nannies. Fake device ids build it on any machine
    (CPU TensorFlow ignores them); its workers would run code for anyone who can reach them."""
    if importlib.util.find_spec("dask_cuda") is not None:
        pytest.skip("dask-cuda installed: GPUs get LocalCUDACluster, not the fallback")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    sockets = ListeningSockets()
    with open_client("local") as client:
        client.wait_for_workers(2, timeout=60)
        assert workers_have_gpus(client)
        _assert_only_loopback(client, sockets)
        _assert_refuses_strangers(client)
        # GPU workers must be able to start feeder processes: they are not daemonic
        assert set(client.run(lambda: multiprocessing.current_process().daemon).values()) == {False}


def test_existing_scheduler_by_address_and_file(dask_client, tmp_path: Path) -> None:
    address = dask_client.scheduler.address
    with open_client(address) as client:
        assert client.scheduler.address == address
        assert client.submit(sum, [1, 2], pure=False).result() == 3
    scheduler_file = tmp_path / "scheduler.json"  # as `dask scheduler --scheduler-file` writes it: the address is
    # what a client reads (Client.write_scheduler_file would also dump live worker metrics, whose keys JSON may refuse)
    scheduler_file.write_text(json.dumps({"type": "Scheduler", "address": address}))
    with open_client(str(scheduler_file)) as client:
        assert client.scheduler.address == address
    assert dask_client.submit(sum, [3], pure=False).result() == 3  # leaving did not stop the external cluster


def test_unknown_cluster_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown cluster"), open_client("nowhere"):
        pass
    with pytest.raises(ValueError, match="needs jobqueue settings"), open_client("slurm"):
        pass


def test_a_signal_during_the_shutdown_does_not_interrupt_it_and_stops_the_process_after() -> None:
    previous = signal.getsignal(signal.SIGHUP)
    shut_down = False
    with pytest.raises(StoppedBySignal) as stopped, stop_on_signals() as guard:
        with guard.interruptible():
            pass  # the run ended; what follows is the shutdown
        os.kill(os.getpid(), signal.SIGHUP)
        shut_down = True
    assert shut_down and stopped.value.code == 128 + signal.SIGHUP
    assert signal.getsignal(signal.SIGHUP) is previous


def _worker_imports() -> dict[str, object]:
    """In a worker: start the Keras runtime as a classify task does, then report what it loaded."""
    import sys

    import psutil

    from pipeline.cluster.worker_setup import configure_tensorflow

    configure_tensorflow()
    loaded = {name: name in sys.modules for name in ("jax", "sklearn", "keras")}
    import sklearn  # noqa: F401  (still importable afterwards, for whatever asks for it)

    return {**loaded, "rss_mib": psutil.Process().memory_info().rss / 2**20}


def test_a_tensorflow_worker_leaves_out_what_inference_never_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    """TF Lite's JAX converter and Keras' scikit-learn wrappers are imported by TensorFlow and Keras whenever they
    are installed; a worker keeps them out (~190 MiB of resident memory)."""
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    with open_client("local", workers=1, dashboard_address=None) as client:
        report = client.submit(_worker_imports, pure=False).result()
    assert report["keras"] and not report["jax"] and not report["sklearn"], report
