"""The cluster factory: one call gives a connected `distributed.Client`, whatever runs the workers.

- `"local"`: the embedded cluster on this machine (`pipeline.cluster.local`).
- `"slurm"` / `"pbs"`: a dask-jobqueue cluster (`pipeline.cluster.jobqueue`), TLS-secured.
- anything else: an existing scheduler, by address (`tcp://host:8786`, `tls://...`) or scheduler JSON file.

A cluster started here lives exactly as long as the `with open_client(...)` block, however that block ends: normally,
by an exception, or by SIGTERM/SIGHUP/SIGINT (`pipeline.cluster.signals`), after which the process exits 128 + N.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from distributed import Client

from pipeline.cluster.local import DEFAULT_DASHBOARD, GPU_RESOURCE, local_cluster
from pipeline.cluster.signals import stop_on_signals


@contextmanager
def open_client(
    cluster: str = "local",
    *,
    workers: int | None = None,
    jobqueue: Any = None,
    security: Any = None,
    dashboard_address: str | None = DEFAULT_DASHBOARD,
) -> Iterator[Client]:
    """A client of the named cluster; a cluster started here is closed on exit, an external one is left running.

    A signal to this process ends the block with `StoppedBySignal` once the cluster (and its worker jobs and
    certificates) is gone; previous signal handlers are restored on exit."""
    with stop_on_signals() as guard, ExitStack() as stack, guard.interruptible():
        if cluster == "local":
            started = stack.enter_context(local_cluster(workers, dashboard_address=dashboard_address))
            client = stack.enter_context(Client(started))
        elif cluster in ("slurm", "pbs"):
            from pipeline.cluster.jobqueue import jobqueue_cluster

            if jobqueue is None:
                raise ValueError(f"--cluster {cluster} needs jobqueue settings")
            started, jobqueue_security = stack.enter_context(jobqueue_cluster(cluster, jobqueue))
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
