"""`ifcbflow classify`: run the job (its flags, its YAML config, its exit codes)."""

from __future__ import annotations

import json
from typing import Any

import fsspec
import typer
import yaml
from rich.console import Console

from pipeline.cli import exit_codes
from pipeline.cli.jobqueue_flags import with_jobqueue_flags
from pipeline.cli.options import (
    EXCLUDE_FOLDERS_HELP,
    STORAGE_OPTIONS_HELP,
    parse_folder_list,
    parse_storage_options,
    parse_window,
)
from pipeline.cluster.client import SMALL_JOB_BINS
from pipeline.cluster.jobqueue import JobqueueSettings
from pipeline.job.plan import DEFAULT_PARTITION_MB

#: `--config` keys: the option names (dashes or underscores).
CONFIG_KEYS = (
    "model",
    "out",
    "cluster",
    "workers",
    "partition_mb",
    "start",
    "end",
    "bins",
    "storage_options",
    "batch_size",
    "feeders",
    "exclude_folders",
    "retry_failed",
    "include_beads",
    "embeddings",
    "feeder_kind",
    "morphology",
    "pixels_per_micron",
    "taxa",
)


def load_run_config(path: str, storage_options: dict[str, Any]) -> dict[str, Any]:
    """A run YAML file as {option name: value}; unknown keys are an error so a typo never goes unnoticed."""
    with fsspec.open(path, "rt", **storage_options) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: expected a mapping of option names to values")
    config = {str(key).replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise typer.BadParameter(f"{path}: unknown keys {unknown}; known: {', '.join(CONFIG_KEYS)}")
    return config


def merge_config(ctx: typer.Context, values: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Flags given on the command line win; the YAML fills the rest; defaults fill what neither sets."""
    merged = dict(values)
    for key, value in config.items():
        source = ctx.get_parameter_source(key)  # compared by name: typer may bundle its own click
        if source is None or source.name != "COMMANDLINE":
            merged[key] = value
    return merged


def _bin_list(value: str | None, storage_options: dict[str, Any]) -> list[str] | None:
    """`--bins`: bin ids given as such (comma-separated), or the file (or URL) that lists them, one per line (lines
    starting with `#` are comments); a usage error when it is neither."""
    from pipeline.ifcb.errors import IfcbFormatError
    from pipeline.ifcb.identifiers import parse_bin_id

    if value is None:
        return None
    ids = [text.strip() for text in value.split(",") if text.strip()]
    try:
        return [parse_bin_id(text).id for text in ids]
    except IfcbFormatError:
        pass
    try:
        with fsspec.open(value, "rt", **storage_options) as f:
            return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except FileNotFoundError:
        raise typer.BadParameter(f"{value} is neither bin ids nor a file listing them", param_hint="--bins") from None


def check_runtime(runtime: str | None) -> str | None:
    """The --runtime value (None for auto), or a usage error naming the choices."""
    from model.inference.runtimes import CHOICES

    if runtime is not None and runtime not in CHOICES:
        raise typer.BadParameter(f"expected one of {', '.join(CHOICES)}, got {runtime!r}", param_hint="--runtime")
    return None if runtime in (None, "auto") else runtime


def check_feeder_kind(kind: str | None) -> str | None:
    """`--feeder-kind` as given, refused (exit 2) unless it is one the feeders know."""
    from pipeline.job.feeder import FEEDER_KINDS

    if kind is not None and kind not in FEEDER_KINDS:
        raise typer.BadParameter(f"expected one of {', '.join(FEEDER_KINDS)}, got {kind!r}", param_hint="--feeder-kind")
    return kind


def _options(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else parse_storage_options(value)


# The options `classify` shares with `watch`, declared once.
MODEL = typer.Option(None, "--model", "-m", help="Model bundle URL (from `ifcbflow train`).")
OUT = typer.Option(None, "--out", "-o", help="Output zarr store URL (one store per model).")
CLUSTER = typer.Option(
    "local", help="local (embedded), slurm, pbs, a scheduler address (tcp://host:8786) or scheduler file."
)
WORKERS = typer.Option(
    None, help=f"Local workers (default: one per GPU, else cores/2; a job of at most {SMALL_JOB_BINS} bins on a "
    "machine without GPUs runs in this process unless --workers is given)."
)
PARTITION_MB = typer.Option(
    DEFAULT_PARTITION_MB, min=0.0001, help="Target MB of images (.roi) per task; whole bins, at least 2 per worker."
)
START = typer.Option(None, help="Only bins at or after this UTC time (ISO 8601).")
END = typer.Option(None, help="Only bins before this UTC time (ISO 8601).")
STORAGE_OPTIONS = typer.Option(None, help=STORAGE_OPTIONS_HELP)
BATCH_SIZE = typer.Option(
    None, min=1, help="Images per model call, across bins (default: 4096 on a GPU; on a CPU 32 on ONNX Runtime, 256 "
    "on Keras)."
)
EXCLUDE_FOLDERS = typer.Option(None, "--exclude-folders", help=EXCLUDE_FOLDERS_HELP)
EMBEDDINGS = typer.Option(
    False,
    "--embeddings",
    help="Also store each ROI's penultimate-layer features (float16), for annotation and clustering tools; a store "
    "has them for every partition or for none.",
)
RETRY_FAILED = typer.Option(
    False, "--retry-failed", help="Read bins that failed as bad data again, even if their files have not changed."
)
INCLUDE_BEADS = typer.Option(
    False,
    "--include-beads",
    help="Classify bead runs too: bins whose header says runBeads: True or a sampleType with 'bead' (iRfcb's rule), "
    "which are left out by default (counted, not failed), including those an earlier run left out.",
)
FEEDERS = typer.Option(
    None, min=0, help="Feeders per worker that read and preprocess bins (0: threads; default: processes on a GPU "
    "worker, one per core of its share of the node less one; 2 threads on a CPU worker)."
)
RUNTIME = typer.Option(
    "auto", "--runtime", help="Inference runtime: onnx (ONNX Runtime, on the bundle's ONNX graph or ONNX twin), keras "
    "(the Keras model on TensorFlow) or auto: onnx on CPU workers where the bundle has an ONNX graph, keras on GPU "
    "workers (measured fastest to start and to run; scores agree within 1e-4)."
)
MORPHOLOGY = typer.Option(
    False, "--morphology", help="Also measure each ROI from the same read (the IFCB Dashboard's v4 features: "
    "area, biovolume, axes, ...), and keep each bin's biovolume per class, and its carbon per class with --taxa. "
    "A store that measures keeps doing so. Costs more than the classification on CPUs (docs: benchmarks)."
)
PIXELS_PER_MICRON = typer.Option(
    None, help="Calibration for --morphology: pixels per micron, one number (default 3.4, WHOI's classic value; "
    "newer optics about 2.77) or per instrument, e.g. IFCB13=3.4,IFCB125=2.77,*=3.4. Kept by the store."
)
TAXA = typer.Option(
    None, help="Class-to-taxon table (CSV or URL: class, scientificName, aphia_id, diatom) for carbon per class "
    "(Menden-Deuer & Lessard 2000: diatoms and other protists); implies --morphology. Kept by the store."
)
FEEDER_KIND = typer.Option(
    None, help="processes (shared memory, off the worker's GIL) or threads; default: processes on GPU workers, "
    "threads on CPU workers."
)


@with_jobqueue_flags
def classify(
    ctx: typer.Context,
    archive: str = typer.Argument(..., help="Archive URL: local folder, s3://bucket/prefix, gs://, file://."),
    model: str | None = MODEL,
    out: str | None = OUT,
    cluster: str = CLUSTER,
    workers: int | None = WORKERS,
    partition_mb: float = PARTITION_MB,
    start: str | None = START,
    end: str | None = END,
    bins: str | None = typer.Option(
        None, help="The bins to classify: bin ids (comma-separated), or a file (or URL) listing them, one per line."
    ),
    storage_options: str | None = STORAGE_OPTIONS,
    config: str | None = typer.Option(None, help="YAML file (or URL) with any of these options; flags win."),
    batch_size: int | None = BATCH_SIZE,
    feeders: int | None = FEEDERS,
    exclude_folders: str | None = EXCLUDE_FOLDERS,
    retry_failed: bool = RETRY_FAILED,
    include_beads: bool = INCLUDE_BEADS,
    embeddings: bool = EMBEDDINGS,
    feeder_kind: str | None = FEEDER_KIND,
    runtime: str = RUNTIME,
    morphology: bool = MORPHOLOGY,
    pixels_per_micron: str | None = PIXELS_PER_MICRON,
    taxa: str | None = TAXA,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of progress and tables."),
    jobqueue: JobqueueSettings | None = None,
) -> None:
    """Classify every bin of ARCHIVE not yet in the store; rerun to resume or to pick up new bins."""
    from pipeline.cli.progress import JobProgress
    from pipeline.cli.tables import summary_table
    from pipeline.cluster.client import open_client
    from pipeline.job.reporting import Quiet
    from pipeline.job.run import ClassifyRequest, run_classification

    flag_options = parse_storage_options(storage_options)
    values = {
        "model": model, "out": out, "cluster": cluster, "workers": workers, "partition_mb": partition_mb,
        "start": start, "end": end, "bins": bins, "storage_options": storage_options, "batch_size": batch_size,
        "feeders": feeders, "exclude_folders": exclude_folders, "retry_failed": retry_failed,
        "include_beads": include_beads,
        "embeddings": embeddings, "feeder_kind": feeder_kind, "runtime": runtime, "morphology": morphology,
        "pixels_per_micron": pixels_per_micron, "taxa": taxa,
    }  # fmt: skip
    settings = merge_config(ctx, values, load_run_config(config, flag_options) if config else {})
    for required in ("model", "out"):
        if not settings[required]:
            raise typer.BadParameter(f"--{required} is required (on the command line or in --config)")
    options = _options(settings["storage_options"])
    start_time, end_time = parse_window(settings["start"], settings["end"])
    request = ClassifyRequest(
        archive_url=archive,
        bundle_url=settings["model"],
        store_url=settings["out"],
        storage_options=options,
        start=start_time,
        end=end_time,
        bin_ids=_bin_list(settings["bins"], options),
        partition_mb=float(settings["partition_mb"]),
        batch_size=settings["batch_size"],
        feeders=settings["feeders"],
        exclude_folders=parse_folder_list(settings["exclude_folders"]),
        retry_failed=bool(settings["retry_failed"]),
        include_beads=bool(settings["include_beads"]),
        embeddings=bool(settings["embeddings"]),
        feeder_kind=check_feeder_kind(settings["feeder_kind"]),
        runtime=check_runtime(settings["runtime"]),
        morphology=bool(settings["morphology"]),
        pixels_per_micron=None if settings["pixels_per_micron"] is None else str(settings["pixels_per_micron"]),
        taxa_url=settings["taxa"],
    )
    console = Console(stderr=True)
    reporter = Quiet() if as_json else JobProgress(console)
    with (
        exit_codes.refusals(console),
        open_client(settings["cluster"], workers=settings["workers"], jobqueue=jobqueue, deferred=True) as client,
    ):
        summary = run_classification(client, request, reporter)
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        Console().print(summary_table(summary.to_dict()))
        for failure in summary.failures:
            console.print(f"[yellow]failed[/yellow] {failure['bin']} at {failure['stage']}: {failure['reason']}")
        for entry in summary.incomplete:
            console.print(f"[yellow]incomplete[/yellow] {entry['bin']}: {entry['reason']}")
    if not summary.complete:
        raise typer.Exit(exit_codes.NOT_COMPLETE)
