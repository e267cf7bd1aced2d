"""Each GPU worker's share of its node's cores, and the Dask worker preload that pins it there.

A GPU worker feeds its device from feeder processes (`pipeline.job.feeder`), one per core it may use but the one its
task thread needs. Counted from the whole node, 8 GPU workers on 64 cores would start ~500 feeders; counted from its
share, each gets `cores // gpus` cores (8 here: 1 task thread + 7 feeders, 64 processes in all). Worker i takes the
i-th contiguous slice of the cores this node lets the job use (neighbouring core ids usually share a socket), as
dask-cuda pins each worker to its GPU's cores.

The share is applied where the worker starts, by this module as a Dask preload (`--preload pipeline.cluster.cpu_share`
on every path: LocalCUDACluster, the fallback cluster, `ifcbflow worker`): it pins the worker process with
`os.sched_setaffinity` where the platform has it (Linux), and in any case records the share's size in
`IFCBFLOW_WORKER_CORES`, which `cores()` reads first, so the feeder count follows the share even where nothing can
be pinned.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

#: Cores of this worker's share (set and read here, by `pin` and `cores`).
CORES_ENV = "IFCBFLOW_WORKER_CORES"
#: GPU workers on this node, set by whatever starts them; worker i (its name ends in -i, or is i) takes share i.
GPU_WORKERS_ENV = "IFCBFLOW_GPU_WORKERS"


def core_share(index: int, workers: int, cores: Sequence[int]) -> list[int]:
    """The cores of worker `index` out of `workers` on a node that lets the job use `cores`: the index-th of
    `workers` contiguous slices of `len(cores) // workers` cores (at least one; with fewer cores than workers,
    workers share cores round-robin)."""
    ordered = sorted(cores)
    size = max(1, len(ordered) // max(1, workers))
    start = (index * size) % len(ordered)
    return ordered[start : start + size]


def node_cores() -> list[int]:
    """The cores this process may run on (all of the machine's where the platform cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cores() -> int:
    """CPU cores this process may use: its share of the node when it is a GPU worker (`CORES_ENV`), else what its
    affinity allows (`node_cores`)."""
    return int(os.environ.get(CORES_ENV) or 0) or len(node_cores())


def pin(index: int, workers: int) -> list[int]:
    """Pin this process (every thread it has, and so every process it starts later) to its share; returns it."""
    share = core_share(index, workers, node_cores())
    os.environ[CORES_ENV] = str(len(share))
    if hasattr(os, "sched_setaffinity"):
        import psutil

        for thread in psutil.Process().threads():
            try:
                os.sched_setaffinity(thread.id, share)
            except OSError as err:  # a thread that ended meanwhile, or a platform that refuses
                log.debug("cannot pin thread %d to cores %s: %s", thread.id, share, err)
    return share


def worker_index(name: Any) -> int | None:
    """The i of a worker named i, NAME-i (`ifcbflow worker`, LocalCUDACluster, the fallback cluster), or None."""
    suffix = str(name).rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else None


def dask_setup(worker: Any) -> None:
    """Distributed's preload hook: pin this GPU worker to its share of the node's cores."""
    workers = int(os.environ.get(GPU_WORKERS_ENV) or 0)
    index = worker_index(worker.name)
    if workers < 1 or index is None:
        return
    share = pin(index, workers)
    log.info("worker %s uses cores %s (share %d of %d)", worker.name, share, index, workers)
