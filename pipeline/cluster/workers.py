"""The Dask workers of one node in a batch allocation: the one `dask worker` command line that every batch script runs
(`ifcbflow worker`), so that SLURM, PBS and the tests start workers the same way.

One worker process per GPU, named NAME-0 … NAME-(N-1) so that `pipeline.cluster.gpu_pin` gives worker i the i-th
visible device and to its share of the node's cores (`pipeline.cluster.cpu_share`), each advertising the Dask
resource `GPU=1`; without GPUs, one CPU worker. One task thread per worker
(a classify task keeps its GPU busy on its own), no worker dashboard (it would listen on the network without
authentication), and an exit when the scheduler has been gone for two minutes.
"""

from __future__ import annotations

import os
import socket
import sys

from pipeline.cluster.local import CPU_SHARE_PRELOAD, GPU_RESOURCE

DEATH_TIMEOUT_S = 120


def default_name() -> str:
    """A worker name prefix unique in the cluster: the host, and this process, which becomes the `dask worker`."""
    return f"ifcbflow-{socket.gethostname().split('.')[0]}-{os.getpid()}"


def worker_command(gpus: int, name: str, dask_args: list[str]) -> list[str]:
    """The `dask worker` command line (this Python) for `gpus` GPU workers (0: one CPU worker) named after `name`,
    followed by `dask_args` (scheduler file or address, protocol, TLS files, interface)."""
    command = [sys.executable, "-m", "distributed.cli.dask_worker", *dask_args]
    command += ["--nthreads", "1", "--no-dashboard", "--death-timeout", str(DEATH_TIMEOUT_S)]
    if gpus <= 0:
        return [*command, "--name", name]
    # dask appends -0 … -(N-1) to the name only when N > 1: add the one index gpu_pin needs when N = 1.
    command += ["--name", name if gpus > 1 else f"{name}-0", "--nworkers", str(gpus)]
    command += ["--resources", f"{GPU_RESOURCE}=1", "--preload", "pipeline.cluster.gpu_pin"]
    return [*command, "--preload", CPU_SHARE_PRELOAD]
