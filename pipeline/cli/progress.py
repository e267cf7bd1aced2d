"""What the user sees while a classification runs: the dashboard link, a bins/ROIs progress bar, a final summary.

Progress advances as partition futures complete (their results say how many bins and ROIs they did), so it costs
the workers nothing. `Quiet` has the same methods and prints nothing, for `--json` runs and for library use.
"""

from __future__ import annotations

from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text


class Reporter(Protocol):
    """The hooks the job calls; see `JobProgress` and `Quiet`."""

    def message(self, text: str) -> None: ...
    def start(self, bins: int, rois: int) -> None: ...
    def advance(self, bins: int, rois: int) -> None: ...
    def stop(self) -> None: ...


class _Rate(ProgressColumn):
    """Items per second over the recent past (rich's own speed estimate)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} {task.description}/s", style="progress.data.speed")


class JobProgress:
    """Rich progress bars over bins and ROIs with rate and ETA."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._bins: Any = None
        self._rois: Any = None

    def message(self, text: str) -> None:
        self.console.print(text)

    def start(self, bins: int, rois: int) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<5}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._bins = self._progress.add_task("bins", total=bins)
        self._rois = self._progress.add_task("ROIs", total=rois)
        self._progress.start()

    def advance(self, bins: int, rois: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._bins, bins)
            self._progress.advance(self._rois, rois)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class Quiet:
    """A reporter that says nothing."""

    def message(self, text: str) -> None:
        pass

    def start(self, bins: int, rois: int) -> None:
        pass

    def advance(self, bins: int, rois: int) -> None:
        pass

    def stop(self) -> None:
        pass


def summary_table(summary: dict[str, Any]) -> Table:
    """The final summary of a run (`RunSummary.to_dict()`) as a rich table."""
    table = Table(title="ifcbflow classify", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("bins in the archive (selected)", summary["bins_listed"]),
        ("already complete (skipped)", summary["bins_already_complete"]),
        ("classified now", summary["bins_done"]),
        ("failed (recorded in the store)", summary["bins_failed"]),
        ("ROIs classified", f"{summary['rois']:,}"),
        ("wall time (s)", f"{summary['seconds']:.1f}"),
        ("ROIs/s", f"{summary['rois_per_second']:,.1f}"),
    ]
    if summary["errors"]:
        rows.append(("partitions that errored", len(summary["errors"])))
    for label, value in rows:
        table.add_row(label, str(value))
    return table
