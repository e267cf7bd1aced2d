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
