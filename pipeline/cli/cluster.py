"""`ifcbflow cluster` (show the worker job script), and what the batch scripts run: `ifcbflow tls-certs` (certificates
for their scheduler and workers) and `ifcbflow worker` (the workers of one node)."""

from __future__ import annotations

import datetime as dt
import os
import shlex
from typing import Annotated

import typer

from pipeline.cli.jobqueue_flags import with_jobqueue_flags
from pipeline.cluster.cpu_share import GPU_WORKERS_ENV
from pipeline.cluster.devices import visible_gpus
from pipeline.cluster.jobqueue import KINDS, JobqueueSettings, job_script
from pipeline.cluster.security import DEFAULT_VALIDITY, create_run_certificates
from pipeline.cluster.worker_setup import NON_DAEMONIC_ENV
from pipeline.cluster.workers import default_name, worker_command

#: What batch systems print for a job without a time limit.
_UNLIMITED = {"", "UNLIMITED", "NOT_SET", "INVALID", "INFINITE"}


@with_jobqueue_flags
def cluster(
    kind: Annotated[str, typer.Option("--cluster", help="Batch system: slurm or pbs.")] = "slurm",
    jobqueue: JobqueueSettings | None = None,
) -> None:
    """Print the batch script that `classify --cluster slurm|pbs` would submit for each worker job (nothing is
    submitted), so the settings can be checked against the site's rules first."""
    if kind not in KINDS:
        raise typer.BadParameter(f"expected one of {', '.join(KINDS)}", param_hint="--cluster")
    try:
        typer.echo(job_script(kind, jobqueue), nl=False)  # type: ignore[arg-type]
    except (OSError, ValueError) as err:
        raise typer.BadParameter(str(err)) from None


def parse_duration(text: str) -> dt.timedelta | None:
    """A batch system's time, `[D-]HH:MM:SS`, `MM:SS` or seconds (squeue's %L, qstat's walltime); None for none."""
    if text.strip().upper() in _UNLIMITED:
        return None
    days, _, clock = text.strip().rpartition("-")
    try:
        parts = [int(part) for part in clock.split(":")]
        if len(parts) > 3 or any(part < 0 for part in parts):
            raise ValueError
        seconds = sum(part * 60**i for i, part in enumerate(reversed(parts)))
        return dt.timedelta(days=int(days or 0), seconds=seconds)
    except ValueError:
        raise typer.BadParameter(f"expected [D-]HH:MM:SS, MM:SS or seconds, got {text!r}") from None


def tls_certs(
    parent: Annotated[
        str | None,
        typer.Argument(help="Shared directory to create the run's private directory in (default ~/.ifcbflow/tls)."),
    ] = None,
    valid_for: Annotated[
        str,
        typer.Option(
            help="How long the certificates must work: the job's time left, as [D-]HH:MM:SS (squeue -o %L, qstat's "
            f"walltime). Empty or UNLIMITED: {DEFAULT_VALIDITY.days} days."
        ),
    ] = "",
    owner_pid: Annotated[
        int | None,
        typer.Option(help="Process whose end makes the directory stale (default: the calling shell), e.g. $$."),
    ] = None,
) -> None:
    """Create per-run TLS certificates and print `export` lines that make dask scheduler, workers and clients use
    them: `eval "$(ifcbflow tls-certs "$DIR" --owner-pid $$)"` in a batch script. The last line exports
    IFCBFLOW_TLS_RUN_DIR, the directory to delete at the end; a later call removes it if its owner died first."""
    certs = create_run_certificates(
        parent, valid_for=parse_duration(valid_for) or DEFAULT_VALIDITY, owner_pid=owner_pid
    )
    for name, value in {**certs.environment(), "IFCBFLOW_TLS_RUN_DIR": str(certs.directory)}.items():
        typer.echo(f"export {name}={shlex.quote(value)}")


def worker(
    dask_args: Annotated[
        list[str] | None,
        typer.Argument(
            help="Arguments for `dask worker` after `--`: --scheduler-file FILE (or the address), --protocol, "
            "--interface, --tls-ca-file/--tls-cert/--tls-key."
        ),
    ] = None,
    gpus: Annotated[
        int | None,
        typer.Option(min=0, help="GPU workers, one per GPU (0: one CPU worker). Default: the GPUs visible here."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Worker name prefix, unique in the cluster (default: ifcbflow-HOST-PID).")
    ] = None,
) -> None:
    """Run this node's Dask workers for a batch script: one per GPU, worker i named NAME-i and pinned to the i-th
    visible GPU. It becomes the `dask worker` process, so signals reach it directly."""
    count = len(visible_gpus()) if gpus is None else gpus
    command = worker_command(count, name or default_name(), dask_args or [])
    gpu_env = {**NON_DAEMONIC_ENV, GPU_WORKERS_ENV: str(count)} if count else {}
    os.execve(command[0], command, {**os.environ, **gpu_env})
