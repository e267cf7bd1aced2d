"""The cluster factory: one call gives a connected `distributed.Client`, whatever runs the workers.

- `"local"`: the embedded cluster on this machine (`pipeline.cluster.local`).
- `"slurm"` / `"pbs"`: a dask-jobqueue cluster (`pipeline.cluster.jobqueue`), TLS-secured.
- anything else: an existing scheduler, by address (`tcp://host:8786`, `tls://...`) or scheduler JSON file.

A cluster started here lives exactly as long as the `with open_client(...)` block, however that block ends: normally,
by an exception, or by SIGTERM/SIGHUP/SIGINT (`pipeline.cluster.signals`), after which the process exits 128 + N.

`open_client(..., deferred=True)` with the embedded cluster gives a `DeferredCluster` instead: the run starts it once
it has listed enough to know what it needs (`pipeline.job.run`), in a background thread while the listing goes on.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from distributed import Client

from pipeline.cluster.local import (
    DEFAULT_DASHBOARD,
    GPU_RESOURCE,
    in_process_cluster,
    local_cluster,
    planned_workers,
)
from pipeline.cluster.signals import stop_on_signals
from pipeline.cluster.worker_setup import gpu_given

#: A run of at most this many bins, on a machine without GPUs and without `--workers`, runs in one worker thread
#: of this process: starting worker processes, and the model in each, costs more than such a job (2 or 4 bins of a
#: zero-cost model on 2 cores: 3.0 s in this process against 5.2 s on a worker process; a bin is rarely more than
#: a few thousand ROIs). A run of one bin always does, whatever `--workers` says.
SMALL_JOB_BINS = 4


class DeferredCluster:
    """The embedded cluster, started when the run knows what it needs: not at all for a run with nothing to
    classify, one worker thread in this process for a small job on a machine without GPUs (`SMALL_JOB_BINS`:
    nothing to distribute), the usual workers otherwise, started in a background thread while the caller goes on
    listing. `client()` waits for it; `close()` (by `open_client`) closes whatever was started."""

    def __init__(self, workers: int | None, dashboard_address: str | None) -> None:
        self.workers, self.dashboard_address = workers, dashboard_address
        self.planned_workers = planned_workers(workers)
        self.in_process = False
        self._stack = ExitStack()
        self._thread: threading.Thread | None = None
        self._client: Client | None = None
        self._error: BaseException | None = None

    def start(self, *, bins: int) -> None:
        """Start the cluster for a run of `bins` bins to classify (more than `SMALL_JOB_BINS`: a large job), once."""
        if self._thread is not None:
            return
        small = bins <= 1 or (self.workers is None and bins <= SMALL_JOB_BINS)
        self.in_process = small and not gpu_given()
        self._thread = threading.Thread(target=self._start, name="ifcbflow-cluster-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            if self.in_process:
                cluster = in_process_cluster()
            else:
                cluster = local_cluster(self.workers, dashboard_address=self.dashboard_address)
            self._stack.enter_context(cluster)
            self._client = Client(cluster)  # closed by `close`: a `with Client` block cannot span two threads
            self._stack.callback(self._client.close)
        except BaseException as err:  # handed to the caller's thread by `client()`
            self._error = err

    def client(self) -> Client:
        """The connected client, once the cluster has started (started now, with its workers, if not yet)."""
        self.start(bins=SMALL_JOB_BINS + 1)
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._client is not None
        return self._client

    def close(self) -> None:
        """Close what was started (after waiting for a start in progress to end)."""
        if self._thread is not None:
            self._thread.join()
        self._stack.close()


@contextmanager
def open_client(
    cluster: str = "local",
    *,
    workers: int | None = None,
    jobqueue: Any = None,
    security: Any = None,
    dashboard_address: str | None = DEFAULT_DASHBOARD,
    deferred: bool = False,
) -> Iterator[Client | DeferredCluster]:
    """A client of the named cluster; a cluster started here is closed on exit, an external one is left running.
    With `deferred`, the embedded cluster comes as a `DeferredCluster`, to be started by the run.

    A signal to this process ends the block with `StoppedBySignal` once the cluster (and its worker jobs and
    certificates) is gone; previous signal handlers are restored on exit."""
    with stop_on_signals() as guard, ExitStack() as stack, guard.interruptible():
        if cluster == "local" and deferred:
            pending = DeferredCluster(workers, dashboard_address)
            stack.callback(pending.close)
            yield pending
            return
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
