"""Dask worker preload: pin each worker process of a multi-GPU batch job to one GPU.

`dask worker --name NAME --nworkers N` starts N processes named NAME-0 … NAME-(N-1) that all inherit the job's
`CUDA_VISIBLE_DEVICES` (N devices), so TensorFlow in each would grab every GPU. Worker i keeps device i only. It runs
when the worker starts, before any task imports TensorFlow, which reads the variable once.

A worker whose name has no such index (started without `--name`, it is named after its address) while several GPUs
are visible cannot know its GPU: guessing would put several workers on one device and leave the others idle, so it
refuses to start instead. `ifcbflow worker` (pipeline.cluster.workers) always names them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)


class UnpinnableWorker(RuntimeError):
    """A worker that cannot tell which of several visible GPUs is its own."""


def device_for(worker_name: str, visible: str) -> str:
    """The one device that the worker called `worker_name` should see, out of the comma-separated `visible`."""
    devices = [d for d in visible.split(",") if d]
    if len(devices) <= 1:
        return visible
    suffix = str(worker_name).rsplit("-", 1)[-1]
    if not suffix.isdigit() or int(suffix) >= len(devices):
        raise UnpinnableWorker(
            f"worker {worker_name!r} sees GPUs {visible} but its name does not end in -0 … -{len(devices) - 1}, "
            "which picks its own: start workers with `ifcbflow worker` (or `dask worker --name NAME --nworkers "
            f"{len(devices)}`)"
        )
    return devices[int(suffix)]


def dask_setup(worker: Any) -> None:
    """Distributed's preload hook. Distributed logs and ignores a preload's exceptions, so a worker that cannot be
    pinned exits instead (SystemExit passes through): it never joins the scheduler, and `dask worker` fails."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not visible:
        return
    try:
        os.environ["CUDA_VISIBLE_DEVICES"] = device_for(worker.name, visible)
    except UnpinnableWorker as err:
        logger.error("%s", err)
        raise SystemExit(f"error: {err}") from None
    logger.info("worker %s uses GPU %s", worker.name, os.environ["CUDA_VISIBLE_DEVICES"])
