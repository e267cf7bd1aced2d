"""`ifcbflow cluster` (show the worker job script) and `ifcbflow tls-certs` (certificates for batch scripts)."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from pipeline.cli.jobqueue_flags import with_jobqueue_flags
from pipeline.cluster.jobqueue import KINDS, JobqueueSettings, job_script
from pipeline.cluster.security import create_run_certificates


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


def tls_certs(
    parent: Annotated[
        str | None,
        typer.Argument(help="Shared directory to create the run's private directory in (default ~/.ifcbflow/tls)."),
    ] = None,
) -> None:
    """Create per-run TLS certificates and print `export` lines that make dask scheduler, workers and clients use
    them: `eval "$(ifcbflow tls-certs "$DIR")"` in a batch script. The last line exports IFCBFLOW_TLS_RUN_DIR, the
    directory to delete at the end."""
    certs = create_run_certificates(parent)
    for name, value in {**certs.environment(), "IFCBFLOW_TLS_RUN_DIR": str(certs.directory)}.items():
        typer.echo(f"export {name}={shlex.quote(value)}")
