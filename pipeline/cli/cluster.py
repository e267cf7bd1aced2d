"""`ifcbflow cluster` (show the worker job script) and `ifcbflow tls-certs` (certificates for batch scripts)."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from pipeline.cli.jobqueue_flags import (
    AccountOption,
    ConfigOption,
    CoresOption,
    DirectiveOption,
    GpusOption,
    InterfaceOption,
    LogDirectoryOption,
    MaxJobsOption,
    MemoryOption,
    MinJobsOption,
    PrologueOption,
    PythonOption,
    QueueOption,
    TlsDirOption,
    TlsOption,
    WalltimeOption,
    settings_from_flags,
)
from pipeline.cluster.jobqueue import KINDS, job_script
from pipeline.cluster.security import create_run_certificates


def cluster(
    kind: Annotated[str, typer.Option("--cluster", help="Batch system: slurm or pbs.")] = "slurm",
    config_file: ConfigOption = None,
    queue: QueueOption = None,
    account: AccountOption = None,
    walltime: WalltimeOption = None,
    cores: CoresOption = None,
    memory: MemoryOption = None,
    gpus_per_job: GpusOption = None,
    job_directive: DirectiveOption = None,
    prologue: PrologueOption = None,
    min_jobs: MinJobsOption = None,
    max_jobs: MaxJobsOption = None,
    python: PythonOption = None,
    interface: InterfaceOption = None,
    log_directory: LogDirectoryOption = None,
    tls: TlsOption = True,
    tls_dir: TlsDirOption = None,
) -> None:
    """Print the batch script that `classify --cluster slurm|pbs` would submit for each worker job (nothing is
    submitted), so the settings can be checked against the site's rules first."""
    if kind not in KINDS:
        raise typer.BadParameter(f"expected one of {', '.join(KINDS)}", param_hint="--cluster")
    settings = settings_from_flags(
        config_file=config_file,
        queue=queue,
        account=account,
        walltime=walltime,
        cores=cores,
        memory=memory,
        gpus_per_job=gpus_per_job,
        job_directives=job_directive,
        prologue=prologue,
        min_jobs=min_jobs,
        max_jobs=max_jobs,
        python=python,
        interface=interface,
        log_directory=log_directory,
        tls=tls,
        tls_dir=tls_dir,
    )
    try:
        typer.echo(job_script(kind, settings), nl=False)  # type: ignore[arg-type]
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


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("cluster")(cluster)
    app.command("tls-certs")(tls_certs)
