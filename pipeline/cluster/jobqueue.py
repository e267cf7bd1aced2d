"""Dask workers as SLURM or PBS batch jobs (dask-jobqueue), configured from a YAML file and CLI flags.

Settings resolve in this order, later wins: dask-jobqueue's defaults and the user's own dask config
(`~/.config/dask/jobqueue.yaml`), the `--jobqueue-config` file (same shape: `jobqueue: {slurm: {...}, pbs: {...}}`),
then the command-line flags. ifcbflow adds four keys to that shape: `gpus-per-job`, `min-jobs`, `max-jobs`,
`tls-dir` (see deploy/jobqueue.yaml).

A GPU worker job asks the batch system for N GPUs and runs N worker processes, one per GPU, each advertising the
Dask resource `GPU=1` (the classify tasks ask for it) and pinned to its own device by `pipeline.cluster.gpu_pin`.

The scheduler must be reachable from the compute nodes, so it listens on the network, over TLS by default
(`pipeline.cluster.security`); its dashboard listens on loopback only (plain HTTP, no authentication): from another
machine, reach it through an SSH tunnel. Worker jobs run no dashboard.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import dask.config
import yaml
from dask.utils import parse_bytes
from distributed.security import Security

from pipeline.cluster.local import DEFAULT_DASHBOARD
from pipeline.cluster.security import RunCertificates, default_parent, temporary_certificates
from pipeline.cluster.worker_setup import NON_DAEMONIC_ENV

logger = logging.getLogger(__name__)

Kind = Literal["slurm", "pbs"]
KINDS: tuple[Kind, ...] = ("slurm", "pbs")

# ifcbflow's own keys in a `jobqueue.<kind>` section, with their defaults.
DEFAULT_GPUS_PER_JOB = 1
DEFAULT_MIN_JOBS = 1
DEFAULT_MAX_JOBS = 4
# Per-GPU fallbacks when neither the config nor a flag says how big a job is (dask-jobqueue insists on both).
DEFAULT_MEMORY_PER_WORKER_GIB = 8
# Keys of a dask-jobqueue section that configure the cluster object, not each job.
_CLUSTER_ONLY = {"scheduler-options", "shared-temp-directory"}
# dask-jobqueue's config calls the job name `name`; its Job class calls it `job_name` (`name` is the worker's).
_RENAMED = {"name": "job_name"}


def _setting(
    flag: str, help: str, *, key: str | None = None, default: Any = None, repeated: bool = False, min: int | None = None
) -> Any:
    """One batch-job setting: its CLI flag, help and lowest value, and the key it overrides in a `jobqueue.<kind>`
    section of the config."""
    metadata = {"flag": flag, "help": help, "key": key, "min": min}
    if repeated:
        return field(default_factory=list, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class JobqueueSettings:
    """The batch-job settings a command line gives, declared once: every field is one flag of `classify` and
    `cluster` (see `pipeline.cli.jobqueue_flags`). None means "from the config file, else the default"."""

    config_file: str | None = _setting(
        "--jobqueue-config",
        "YAML file in dask-jobqueue's shape (jobqueue: {slurm: ..., pbs: ...}), e.g. deploy/jobqueue.yaml; "
        "flags override it.",
    )
    queue: str | None = _setting("--queue", "Partition (SLURM) or queue (PBS).", key="queue")
    account: str | None = _setting("--account", "Account charged for the jobs.", key="account")
    walltime: str | None = _setting("--walltime", "Time limit of each worker job, e.g. 02:00:00.", key="walltime")
    cores: int | None = _setting("--cores", "CPU cores per worker job.", key="cores", min=1)
    memory: str | None = _setting("--memory", "Memory per worker job, e.g. 32GiB.", key="memory")
    gpus_per_job: int | None = _setting(
        "--gpus-per-job",
        "GPUs per worker job, one Dask worker each (0: CPU workers). Default 1.",
        key="gpus-per-job",
        min=0,
    )
    job_directives: list[str] = _setting(
        "--job-directive",
        "Extra batch directive without its #SBATCH/#PBS prefix, e.g. '--constraint=a100'. Repeatable.",
        key="job-extra-directives",
        repeated=True,
    )
    prologue: list[str] = _setting(
        "--prologue",
        "Shell line run before the worker starts, e.g. 'module load cuda/12.4'. Repeatable.",
        key="job-script-prologue",
        repeated=True,
    )
    min_jobs: int | None = _setting("--min-jobs", "Adaptive scaling: fewest worker jobs.", key="min-jobs", min=0)
    max_jobs: int | None = _setting("--max-jobs", "Adaptive scaling: most worker jobs.", key="max-jobs", min=1)
    python: str | None = _setting(
        "--python", "Python executable on the compute nodes (default: this one).", key="python"
    )
    interface: str | None = _setting(
        "--interface", "Network interface for scheduler and workers, e.g. ib0.", key="interface"
    )
    log_directory: str | None = _setting(
        "--log-directory", "Directory for the worker jobs' logs.", key="log-directory"
    )
    tls: bool = _setting(
        "--tls/--no-tls",
        "Encrypt and authenticate scheduler-worker traffic with per-run certificates. --no-tls lets anyone who "
        "reaches the scheduler run code as you.",
        default=True,
    )
    tls_dir: str | None = _setting(
        "--tls-dir",
        "Shared directory for the per-run certificates (default $IFCBFLOW_TLS_DIR or ~/.ifcbflow/tls).",
        key="tls-dir",
    )


@dataclass(frozen=True)
class ResolvedJobqueue:
    """Everything needed to build the dask-jobqueue cluster, after config file and flags are merged."""

    kind: Kind
    job_kwargs: dict[str, Any]  # accepted by both the Job and the Cluster classes
    cluster_kwargs: dict[str, Any]  # accepted by the Cluster class only
    gpus_per_job: int
    min_jobs: int
    max_jobs: int
    tls_dir: Path


def load_config_file(path: str | Path, kind: Kind) -> dict[str, Any]:
    """The `jobqueue.<kind>` section of a YAML file in dask-jobqueue's shape (empty when the kind is absent)."""
    with open(path) as f:
        document = yaml.safe_load(f) or {}
    if not isinstance(document, dict) or not isinstance(document.get("jobqueue", {}), dict):
        raise ValueError(f"{path}: expected a mapping `jobqueue: {{slurm: {{...}}, pbs: {{...}}}}`")
    section = document.get("jobqueue", {}).get(kind) or {}
    if not isinstance(section, dict):
        raise ValueError(f"{path}: `jobqueue.{kind}` must be a mapping of settings")
    return section


def resolve(kind: Kind, settings: JobqueueSettings) -> ResolvedJobqueue:
    """Merge dask's config, the config file and the flags into keyword arguments for dask-jobqueue."""
    if kind not in KINDS:
        raise ValueError(f"unknown batch system {kind!r}: expected one of {', '.join(KINDS)}")
    section: dict[str, Any] = {k: v for k, v in dask.config.get(f"jobqueue.{kind}", {}).items() if v is not None}
    if settings.config_file:
        section.update({k: v for k, v in load_config_file(settings.config_file, kind).items() if v is not None})
    for setting in fields(JobqueueSettings):
        key, value = setting.metadata["key"], getattr(settings, setting.name)
        if key is None or value is None:
            continue
        # repeated flags add to the file's list; the others replace its value
        section[key] = [*section.get(key, []), *value] if isinstance(value, list) else value

    gpus = int(section.pop("gpus-per-job", DEFAULT_GPUS_PER_JOB))
    min_jobs = int(section.pop("min-jobs", DEFAULT_MIN_JOBS))
    max_jobs = int(section.pop("max-jobs", DEFAULT_MAX_JOBS))
    tls_dir = Path(section.pop("tls-dir", None) or default_parent()).expanduser()
    if gpus < 0 or min_jobs < 0 or max_jobs < max(min_jobs, 1):
        raise ValueError(
            f"need gpus-per-job >= 0 and 0 <= min-jobs <= max-jobs >= 1 (got {gpus}, {min_jobs}, {max_jobs})"
        )

    workers = max(gpus, 1)
    section.setdefault("processes", workers)
    section.setdefault("cores", workers)
    section.setdefault("memory", f"{DEFAULT_MEMORY_PER_WORKER_GIB * workers}GiB")
    if section["cores"] < section["processes"]:
        raise ValueError(
            f"cores ({section['cores']}) < processes ({section['processes']}): workers would get 0 threads"
        )
    if kind == "pbs":
        _pbs_resources(section, gpus)
    if gpus:
        _request_gpus(kind, section, gpus)
    section["worker-extra-args"] = [*section.get("worker-extra-args", []), "--no-dashboard"]
    cluster_kwargs = {_kwarg(k): section.pop(k) for k in _CLUSTER_ONLY if k in section}
    # dask-jobqueue's default dashboard, port 8787 on every interface, is open to the network and collides with other
    # users' on a shared login node; `scheduler-options: {dashboard_address: ...}` in the config overrides this.
    cluster_kwargs["scheduler_options"] = {
        "dashboard_address": DEFAULT_DASHBOARD,
        **cluster_kwargs.get("scheduler_options", {}),
    }
    job_kwargs = {_kwarg(k): v for k, v in section.items()}
    return ResolvedJobqueue(kind, job_kwargs, cluster_kwargs, gpus, min_jobs, max_jobs, tls_dir)


def _request_gpus(kind: Kind, section: dict[str, Any], gpus: int) -> None:
    """Ask the batch system for the GPUs and make each worker process advertise and use exactly one."""
    if section["processes"] != gpus:
        raise ValueError(f"processes ({section['processes']}) must equal gpus-per-job ({gpus}): one worker per GPU")
    if kind == "slurm":
        section["job-extra-directives"] = [*section["job-extra-directives"], f"--gres=gpu:{gpus}"]
    elif f"ngpus={gpus}" not in section["resource-spec"]:
        logger.warning("PBS resource-spec %r does not ask for ngpus=%d", section["resource-spec"], gpus)
    section["worker-extra-args"] = [
        *section.get("worker-extra-args", []),
        *("--resources", "GPU=1", "--preload", "pipeline.cluster.gpu_pin"),
    ]
    exports = [f"export {name}={value}" for name, value in NON_DAEMONIC_ENV.items()]  # for the feeder processes
    section["job-script-prologue"] = [*section.get("job-script-prologue", []), *exports]


def _pbs_resources(section: dict[str, Any], gpus: int) -> None:
    """PBS's `-l select=` line, unless the config gives one: CPUs from `job-cpu` as on SLURM (dask-jobqueue's
    PBS jobs know no such key), else `cores`."""
    ncpus = section.pop("job-cpu", None) or section["cores"]
    if "resource-spec" not in section:
        from dask_jobqueue.pbs import pbs_format_bytes_ceil  # dask-jobqueue is imported by batch runs only

        memory = pbs_format_bytes_ceil(parse_bytes(section["memory"]))
        section["resource-spec"] = f"select=1:ncpus={ncpus}{f':ngpus={gpus}' if gpus else ''}:mem={memory}"


def _kwarg(key: str) -> str:
    return _RENAMED.get(key, key.replace("-", "_"))


def _cluster_class(kind: Kind) -> type:
    from dask_jobqueue import PBSCluster, SLURMCluster  # imported by batch runs only (~0.3-1 s)

    return {"slurm": SLURMCluster, "pbs": PBSCluster}[kind]


def _tls_placeholder(parent: Path) -> RunCertificates:
    """The paths a run's certificates will have, for showing a job script without creating any."""
    return RunCertificates.in_directory(parent / "run-XXXXXXXX")


def job_script(kind: Kind, settings: JobqueueSettings) -> str:
    """The batch script one worker job would run, without starting a scheduler or submitting anything."""
    resolved = resolve(kind, settings)
    security = _tls_placeholder(resolved.tls_dir).security() if settings.tls else None
    job_cls = _cluster_class(kind).job_cls
    scheme = "tls" if security else "tcp"
    job = job_cls(
        f"{scheme}://<scheduler-address>:<port>",
        name="<worker-name>",
        config_name=kind,
        protocol=f"{scheme}://" if security else None,
        security=security,
        **resolved.job_kwargs,
    )
    return job.job_script()


@contextmanager
def jobqueue_cluster(kind: Kind, settings: JobqueueSettings) -> Iterator[tuple[Any, Security | None]]:
    """A scheduler here and an adaptive pool of worker jobs, as (cluster, security for the client).

    With `settings.tls` (the default) the scheduler only talks TLS to holders of this run's certificate. On exit the
    cluster closes (its worker jobs are cancelled), then the certificate's directory is removed.
    """
    resolved = resolve(kind, settings)
    with ExitStack() as stack:
        security: Security | None = None
        if settings.tls:
            certs = temporary_certificates(resolved.tls_dir)
            stack.callback(certs.remove)
            security = certs.security()
        else:
            logger.warning(
                "TLS is off (--no-tls): anyone who can reach the scheduler's port can connect to it and run code as you"
            )
        cluster = stack.enter_context(
            _cluster_class(kind)(
                security=security,
                protocol="tls://" if security else None,
                config_name=kind,
                **resolved.cluster_kwargs,
                **resolved.job_kwargs,
            )
        )
        cluster.adapt(minimum_jobs=resolved.min_jobs, maximum_jobs=resolved.max_jobs)
        logger.info(
            "%s scheduler at %s: %d to %d worker jobs, %d GPU(s) each, TLS %s",
            kind.upper(),
            cluster.scheduler_address,
            resolved.min_jobs,
            resolved.max_jobs,
            resolved.gpus_per_job,
            "on" if security else "off",
        )
        logger.debug("worker job script:\n%s", cluster.job_script())
        yield cluster, security
