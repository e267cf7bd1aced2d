"""`ifcbflow watch`: classify an archive's new bins as they land, serve Prometheus metrics, stop on a signal."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console

from pipeline.cli import exit_codes
from pipeline.cli.classify import (
    BATCH_SIZE,
    CLUSTER,
    EMBEDDINGS,
    END,
    EXCLUDE_FOLDERS,
    FEEDER_KIND,
    FEEDERS,
    INCLUDE_BEADS,
    MODEL,
    OUT,
    PARTITION_MB,
    RETRY_FAILED,
    RUNTIME,
    START,
    STORAGE_OPTIONS,
    WORKERS,
    check_feeder_kind,
    check_runtime,
)
from pipeline.cli.jobqueue_flags import with_jobqueue_flags
from pipeline.cli.options import parse_folder_list, parse_storage_options, parse_time
from pipeline.cluster.jobqueue import JobqueueSettings

HELP = (
    "Exit codes: 0 stopped by SIGTERM or SIGINT (between runs: a run in progress finishes first; a second signal "
    "stops at once) or after --max-polls polls; 2 usage or configuration error."
)


@contextlib.contextmanager
def stop_on_signals(stop: Any, console: Console) -> Iterator[None]:
    """SIGTERM and SIGINT call `stop` once (the watch ends after its current poll); a second signal acts as usual."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}

    def handle(signum: int, _frame: Any) -> None:
        console.print(f"{signal.Signals(signum).name}: stopping after the current poll")
        signal.signal(signum, previous[signum])
        stop()

    for signum in previous:
        signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@with_jobqueue_flags
def watch(
    archive: str = typer.Argument(..., help="Archive URL to watch: local folder, s3://bucket/prefix, gs://, file://."),
    model: str | None = MODEL,
    out: str | None = OUT,
    interval: float = typer.Option(60.0, min=0.0, help="Seconds between polls of the archive."),
    metrics_port: int | None = typer.Option(
        None, min=0, help="Serve Prometheus metrics on this port at /metrics (0: any free port, printed)."
    ),
    metrics_address: str = typer.Option("0.0.0.0", help="Address the metrics server listens on."),
    max_polls: int | None = typer.Option(
        None, min=1, help="Stop after this many polls (for scripts; a bin is classified from its second poll on)."
    ),
    full_pass_every: int = typer.Option(
        60, min=1, help="Polls between two full listings of the archive; the others list its newest days only "
        "(a full pass finds bins that arrive late)."
    ),
    cluster: str = CLUSTER,
    workers: int | None = WORKERS,
    partition_mb: float = PARTITION_MB,
    start: str | None = START,
    end: str | None = END,
    storage_options: str | None = STORAGE_OPTIONS,
    batch_size: int | None = BATCH_SIZE,
    feeders: int | None = FEEDERS,
    exclude_folders: str | None = EXCLUDE_FOLDERS,
    retry_failed: bool = RETRY_FAILED,
    include_beads: bool = INCLUDE_BEADS,
    embeddings: bool = EMBEDDINGS,
    feeder_kind: str | None = FEEDER_KIND,
    runtime: str = RUNTIME,
    jobqueue: JobqueueSettings | None = None,
) -> None:
    """Watch ARCHIVE and classify each new bin once it is complete: all three files present and their sizes
    unchanged since the previous poll. Each poll with such bins is an ordinary `classify` run over them (the store
    is the ledger, so a restarted watch resumes); the summary stays current. One cluster for the whole watch."""
    from pipeline.cluster.client import open_client
    from pipeline.job.run import ClassifyRequest
    from pipeline.job.watch import Watcher

    for name, value in (("model", model), ("out", out)):
        if not value:
            raise typer.BadParameter(f"--{name} is required")
    request = ClassifyRequest(
        archive_url=archive,
        bundle_url=str(model),
        store_url=str(out),
        storage_options=parse_storage_options(storage_options),
        start=parse_time(start, "--start"),
        end=parse_time(end, "--end"),
        partition_mb=partition_mb,
        batch_size=batch_size,
        feeders=feeders,
        exclude_folders=parse_folder_list(exclude_folders),
        retry_failed=retry_failed,
        include_beads=include_beads,
        embeddings=embeddings,
        feeder_kind=check_feeder_kind(feeder_kind),
        runtime=check_runtime(runtime),
    )
    console = Console(stderr=True)
    with exit_codes.refusals(console), open_client(cluster, workers=workers, jobqueue=jobqueue) as client:
        watcher = Watcher(client, request, full_pass_every=full_pass_every)
        server = None if metrics_port is None else watcher.metrics.serve(metrics_port, metrics_address)
        where = "" if server is None else f"; metrics at http://{metrics_address}:{server.server_port}/metrics"
        typer.echo(f"watching {archive} every {interval:g} s into {out}{where}")
        try:
            with stop_on_signals(watcher.stop, console):
                polls = watcher.run(interval, max_polls, _print_poll)
        finally:
            if server is not None:
                server.shutdown()
    typer.echo(f"stopped after {polls} polls; the store holds {watcher.bins_in_store} bins")


def _print_poll(poll: Any) -> None:
    """One line for a poll that did something or has bins waiting; nothing for a quiet one."""
    stamp = f"poll {poll.number}"
    if poll.skipped:
        typer.echo(f"{stamp}: nothing classified: {poll.skipped}")
    if poll.run is not None:
        run = poll.run
        newest = poll.newest_classified.strftime("%Y-%m-%dT%H:%M:%SZ") if poll.newest_classified else "-"
        typer.echo(
            f"{stamp}: classified {run.bins_done} bins ({run.rois} ROIs) in {run.seconds:.1f} s, {run.bins_failed} "
            f"failed, {run.bins_incomplete} incomplete; store: {poll.store_bins} bins, newest {newest}"
        )
    elif poll.waiting:
        typer.echo(f"{stamp}: {poll.waiting} bins waiting (being written, or settled and due next poll)")
