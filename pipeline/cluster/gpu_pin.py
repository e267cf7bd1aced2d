"""Dask worker preload: pin each worker process of a multi-GPU batch job to one GPU.

`dask worker --nworkers N` starts N processes that all inherit the job's `CUDA_VISIBLE_DEVICES` (N devices), so
TensorFlow in each would grab every GPU. The worker names end in `-0` … `-(N-1)`; worker i keeps device i only.
It runs when the worker starts, before any task imports TensorFlow, which reads the variable once.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)


def device_for(worker_name: str, visible: str) -> str:
    """The one device that the worker called `worker_name` should see, out of the comma-separated `visible`."""
    devices = [d for d in visible.split(",") if d]
    if len(devices) <= 1:
        return visible
    suffix = str(worker_name).rsplit("-", 1)[-1]
    index = int(suffix) if suffix.isdigit() else 0
    return devices[index % len(devices)]


def dask_setup(worker: Any) -> None:
    """Distributed's preload hook."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        os.environ["CUDA_VISIBLE_DEVICES"] = device_for(worker.name, visible)
        logger.info("worker %s uses GPU %s", worker.name, os.environ["CUDA_VISIBLE_DEVICES"])
