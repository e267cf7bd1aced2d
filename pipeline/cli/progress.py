"""What the user sees while a classification runs: the dashboard link and bins/ROIs progress bars.

`JobProgress` implements the job's `Reporter` interface (`pipeline.job.reporting`) with rich.
"""

from __future__ import annotations

from typing import Any

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
from rich.text import Text


class _Rate(ProgressColumn):
    """Bins per second over the recent past (rich's own speed estimate)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} bins/s", style="progress.data.speed")


class _Rois(ProgressColumn):
    """ROIs classified so far and their mean rate (their total is known only at the end)."""

    def render(self, task: Task) -> Text:
        rois, elapsed = task.fields.get("rois", 0), task.elapsed or 0.0
        rate = f", {rois / elapsed:,.0f} ROIs/s" if elapsed > 0 else ""
        return Text(f"{rois:,} ROIs{rate}", style="progress.data.speed")


class JobProgress:
    """A rich progress bar over bins, with rate, ETA and the ROIs classified so far."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._bins: Any = None
        self._rois = 0

    def message(self, text: str) -> None:
        self.console.print(text)

    def start(self, bins: int) -> None:
        self._progress = Progress(
            TextColumn("bins"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(),
            _Rois(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._bins = self._progress.add_task("bins", total=bins, rois=0)
        self._progress.start()

    def grow(self, bins: int) -> None:
        if self._progress is not None:
            total = self._progress.tasks[self._bins].total or 0
            self._progress.update(self._bins, total=total + bins)

    def advance(self, bins: int, rois: int) -> None:
        if self._progress is not None:
            self._rois += rois
            self._progress.update(self._bins, advance=bins, rois=self._rois)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
