"""The batch-job flags, declared once and shared by `ifcbflow cluster` and `ifcbflow classify`.

Each alias is an `Annotated` type: a command lists `queue: QueueOption = None` and gets the same flag, help and
help panel everywhere; `settings_from_flags` turns the values into a `JobqueueSettings`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cluster.jobqueue import JobqueueSettings

PANEL = "Batch jobs (--cluster slurm|pbs)"

ConfigOption = Annotated[
    str | None,
    typer.Option(
        "--jobqueue-config",
        help="YAML file in dask-jobqueue's shape (jobqueue: {slurm: ..., pbs: ...}), e.g. deploy/jobqueue.yaml; "
        "flags override it.",
        rich_help_panel=PANEL,
    ),
]
QueueOption = Annotated[
    str | None, typer.Option("--queue", help="Partition (SLURM) or queue (PBS).", rich_help_panel=PANEL)
]
AccountOption = Annotated[
    str | None, typer.Option("--account", help="Account charged for the jobs.", rich_help_panel=PANEL)
]
WalltimeOption = Annotated[
    str | None, typer.Option("--walltime", help="Time limit of each worker job, e.g. 02:00:00.", rich_help_panel=PANEL)
]
CoresOption = Annotated[
    int | None, typer.Option("--cores", min=1, help="CPU cores per worker job.", rich_help_panel=PANEL)
]
MemoryOption = Annotated[
    str | None, typer.Option("--memory", help="Memory per worker job, e.g. 32GiB.", rich_help_panel=PANEL)
]
GpusOption = Annotated[
    int | None,
    typer.Option(
        "--gpus-per-job",
        min=0,
        help="GPUs per worker job, one Dask worker each (0: CPU workers). Default 1.",
        rich_help_panel=PANEL,
    ),
]
DirectiveOption = Annotated[
    list[str] | None,
    typer.Option(
        "--job-directive",
        help="Extra batch directive without its #SBATCH/#PBS prefix, e.g. '--constraint=a100'. Repeatable.",
        rich_help_panel=PANEL,
    ),
]
PrologueOption = Annotated[
    list[str] | None,
    typer.Option(
        "--prologue",
        help="Shell line run before the worker starts, e.g. 'module load cuda/12.4'. Repeatable.",
        rich_help_panel=PANEL,
    ),
]
MinJobsOption = Annotated[
    int | None, typer.Option("--min-jobs", min=0, help="Adaptive scaling: fewest worker jobs.", rich_help_panel=PANEL)
]
MaxJobsOption = Annotated[
    int | None, typer.Option("--max-jobs", min=1, help="Adaptive scaling: most worker jobs.", rich_help_panel=PANEL)
]
PythonOption = Annotated[
    str | None,
    typer.Option("--python", help="Python executable on the compute nodes (default: this one).", rich_help_panel=PANEL),
]
InterfaceOption = Annotated[
    str | None,
    typer.Option("--interface", help="Network interface for scheduler and workers, e.g. ib0.", rich_help_panel=PANEL),
]
LogDirectoryOption = Annotated[
    str | None, typer.Option("--log-directory", help="Directory for the worker jobs' logs.", rich_help_panel=PANEL)
]
TlsOption = Annotated[
    bool,
    typer.Option(
        "--tls/--no-tls",
        help="Encrypt and authenticate scheduler-worker traffic with per-run certificates. --no-tls lets anyone "
        "who reaches the scheduler run code as you.",
        rich_help_panel=PANEL,
    ),
]
TlsDirOption = Annotated[
    str | None,
    typer.Option(
        "--tls-dir",
        help="Shared directory for the per-run certificates (default $IFCBFLOW_TLS_DIR or ~/.ifcbflow/tls).",
        rich_help_panel=PANEL,
    ),
]


def settings_from_flags(
    *,
    config_file: str | None = None,
    queue: str | None = None,
    account: str | None = None,
    walltime: str | None = None,
    cores: int | None = None,
    memory: str | None = None,
    gpus_per_job: int | None = None,
    job_directives: list[str] | None = None,
    prologue: list[str] | None = None,
    min_jobs: int | None = None,
    max_jobs: int | None = None,
    python: str | None = None,
    interface: str | None = None,
    log_directory: str | None = None,
    tls: bool = True,
    tls_dir: str | None = None,
) -> JobqueueSettings:
    """The flags' values as settings (Typer gives None, not [], for an unused repeatable flag)."""
    return JobqueueSettings(
        config_file=config_file,
        queue=queue,
        account=account,
        walltime=walltime,
        cores=cores,
        memory=memory,
        gpus_per_job=gpus_per_job,
        job_directives=list(job_directives or []),
        prologue=list(prologue or []),
        min_jobs=min_jobs,
        max_jobs=max_jobs,
        python=python,
        interface=interface,
        log_directory=log_directory,
        tls=tls,
        tls_dir=tls_dir,
    )
