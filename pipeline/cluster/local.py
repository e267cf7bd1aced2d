"""The embedded cluster on this machine (`--cluster local`, the default).

With GPUs: one worker process per GPU, pinned to it with `CUDA_VISIBLE_DEVICES` and advertising the resource `GPU=1`
(dask-cuda's LocalCUDACluster when installed). Without: CPU worker processes, one task thread each, TensorFlow's
threads split between them so they share the cores instead of oversubscribing them.

Everything listens on loopback, and speaks TLS with a certificate made for this run (`run_security`): a Dask
scheduler or worker runs whatever a connected peer sends it, and loopback is shared by every user of the machine (a
login node, a lab's GPU workstation). Only this process and the workers it starts hold the run's key, which never
touches the disk, so another user's process cannot connect, let alone run code as ours. The dashboard listens on
loopback too (HTTP, read-only pages; reach it from another machine with an SSH tunnel).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import dask
from distributed.security import Security

from pipeline.cluster.cpu_share import GPU_WORKERS_ENV, cores
from pipeline.cluster.devices import visible_gpus
from pipeline.cluster.worker_setup import NON_DAEMONIC_WORKERS, TF_THREADS_ENV

log = logging.getLogger(__name__)

#: The Dask resource a GPU worker advertises and a classify task asks for.
GPU_RESOURCE = "GPU"
#: Where a local cluster's scheduler, workers and dashboard listen.
LOOPBACK = "127.0.0.1"
#: The preload that pins each GPU worker to its share of the node's cores.
CPU_SHARE_PRELOAD = "pipeline.cluster.cpu_share"
#: Any free port on loopback (not ":0", which Dask reads as every interface).
DEFAULT_DASHBOARD = f"{LOOPBACK}:0"


def run_security() -> Security:
    """This run's TLS for the embedded cluster: distributed's `Security.temporary()`, a key and self-signed
    certificate made in memory, which scheduler, workers and client all present and require (`require_encryption`).
    Worker processes get it through their nanny; nothing is written to disk."""
    return Security.temporary()


def _local_gpu_cluster(devices: list[str], workers: int | None, dashboard_address: str | None) -> Any:
    """One worker per GPU, worker i pinned to the i-th *visible* device (not to device i)."""
    devices = devices[: planned_workers(workers, devices)]
    n = len(devices)
    dask.config.set(NON_DAEMONIC_WORKERS)  # read by each Nanny whenever it (re)starts its worker
    threads = str(max(1, cores() // n))
    share = {GPU_WORKERS_ENV: str(n)}  # each worker pins itself to its share of the cores (cpu_share)
    security = run_security()
    if importlib.util.find_spec("dask_cuda") is not None:
        from dask_cuda import LocalCUDACluster

        return LocalCUDACluster(
            host=LOOPBACK,
            CUDA_VISIBLE_DEVICES=devices,
            threads_per_worker=1,
            resources={GPU_RESOURCE: 1},
            dashboard_address=dashboard_address,
            env={TF_THREADS_ENV: threads, **share},
            preload=[CPU_SHARE_PRELOAD],
            security=security,
            protocol="tls://",
        )
    from distributed import Nanny, Scheduler, SpecCluster

    workers_spec = {
        f"gpu-{i}": {
            "cls": Nanny,
            "options": {
                "host": LOOPBACK,
                "nthreads": 1,
                "resources": {GPU_RESOURCE: 1},
                "env": {"CUDA_VISIBLE_DEVICES": device, TF_THREADS_ENV: threads, **share},
                "preload": [CPU_SHARE_PRELOAD],
                "security": security,
                "protocol": "tls://",
            },
        }
        for i, device in enumerate(devices)
    }
    scheduler_options = {"host": LOOPBACK, "dashboard_address": dashboard_address, "security": security,
                         "protocol": "tls://"}  # fmt: skip
    scheduler = {"cls": Scheduler, "options": scheduler_options}
    return SpecCluster(workers=workers_spec, scheduler=scheduler, security=security, name="ifcbflow-gpu")


def planned_workers(workers: int | None = None, gpus: list[str] | None = None) -> int:
    """How many workers `local_cluster(workers)` starts, known before it starts them (`gpus`: `visible_gpus()`,
    where the caller has it already: each ask may run nvidia-smi)."""
    gpus = visible_gpus() if gpus is None else gpus
    if gpus:
        return min(workers or len(gpus), len(gpus))
    return workers or max(1, cores() // 2)


def in_process_cluster() -> Any:
    """One worker thread in this process, reached in memory (Dask's inproc transport), without a dashboard (the
    scheduler's HTTP routes still listen, on a free loopback port): for a small job (`pipeline.cluster.client.
    SMALL_JOB_BINS`), which has nothing to distribute and would spend longer starting worker processes than
    classifying its bins."""
    from distributed import LocalCluster

    log.info("local cluster: 1 worker thread in this process")
    return LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        dashboard_address=DEFAULT_DASHBOARD,
        scheduler_kwargs={"dashboard": False},
    )


def local_cluster(workers: int | None = None, *, dashboard_address: str | None = DEFAULT_DASHBOARD) -> Any:
    """The embedded default: GPU workers when GPUs exist, CPU worker processes otherwise."""
    gpus = visible_gpus()
    if gpus:
        log.info("local cluster: GPU(s) %s", ",".join(gpus))
        return _local_gpu_cluster(gpus, workers, dashboard_address)
    from distributed import LocalCluster

    n = planned_workers(workers, gpus)
    dask.config.set(NON_DAEMONIC_WORKERS)  # so that `--feeder-kind processes` can start feeder processes
    tf_threads = max(1, cores() // n)
    log.debug("local cluster: %d CPU worker process(es), %d model thread(s) each", n, tf_threads)
    return LocalCluster(
        host=LOOPBACK,
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=dashboard_address,
        env={TF_THREADS_ENV: str(tf_threads)},
        security=run_security(),
    )
