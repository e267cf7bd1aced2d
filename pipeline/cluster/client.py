"""The cluster factory: one call gives a connected `distributed.Client`, whatever runs the workers.

- `"local"`: the embedded cluster on this machine (`pipeline.cluster.local`).
- `"slurm"` / `"pbs"`: a dask-jobqueue cluster (`pipeline.cluster.jobqueue`), TLS-secured.
- anything else: an existing scheduler, by address (`tcp://host:8786`, `tls://...`) or scheduler JSON file.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from distributed import Client

from pipeline.cluster.local import GPU_RESOURCE, local_cluster


@contextmanager
def open_client(
    cluster: str = "local",
    *,
    workers: int | None = None,
    jobqueue: Any = None,
    security: Any = None,
    dashboard_address: str | None = ":0",
) -> Iterator[Client]:
    """A client of the named cluster; a cluster started here is closed on exit, an external one is left running."""
    with ExitStack() as stack:
        if cluster == "local":
            started = stack.enter_context(local_cluster(workers, dashboard_address=dashboard_address))
            client = stack.enter_context(Client(started))
        elif cluster in ("slurm", "pbs"):
            from pipeline.cluster.jobqueue import start_jobqueue_cluster

            if jobqueue is None:
                raise ValueError(f"--cluster {cluster} needs jobqueue settings")
            started, jobqueue_security = start_jobqueue_cluster(cluster, jobqueue)
            stack.enter_context(started)
            client = stack.enter_context(Client(started, security=jobqueue_security))
        elif Path(cluster).is_file():
            client = stack.enter_context(Client(scheduler_file=cluster, security=security))
        elif "://" in cluster or ":" in cluster:
            client = stack.enter_context(Client(cluster, security=security))
        else:
            raise ValueError(
                f"unknown cluster {cluster!r}: use local, slurm, pbs, a scheduler address (tcp://host:8786) "
                "or a scheduler JSON file"
            )
        yield client


def workers_have_gpus(client: Client) -> bool:
    """Whether any connected worker advertises the GPU resource (then partition tasks ask for one)."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return any(info.get("resources", {}).get(GPU_RESOURCE, 0) > 0 for info in workers)


def dashboard_link(client: Client) -> str | None:
    """The Dask dashboard URL, or None when the dashboard cannot run here (bokeh not installed)."""
    if importlib.util.find_spec("bokeh") is None:
        return None
    return client.dashboard_link
