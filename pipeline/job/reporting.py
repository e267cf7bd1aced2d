"""How the job tells its caller what happens, without knowing who listens: the `Reporter` interface.

The CLI implements it with progress bars (`pipeline.cli.progress.JobProgress`); `Quiet` says nothing, for `--json`
runs and for library use. Progress advances as partition futures complete, so it costs the workers nothing.
"""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    """The hooks the job calls: a message, the start of the work (bins to do so far), more bins to do as the
    archive is listed, its progress, its end.

    ROIs are counted as they are classified: their total is known only once every bin's `.adc` has been read.
    """

    def message(self, text: str) -> None: ...
    def start(self, bins: int) -> None: ...
    def grow(self, bins: int) -> None: ...
    def advance(self, bins: int, rois: int) -> None: ...
    def stop(self) -> None: ...


class Quiet:
    """A reporter that says nothing."""

    def message(self, text: str) -> None:
        pass

    def start(self, bins: int) -> None:
        pass

    def grow(self, bins: int) -> None:
        pass

    def advance(self, bins: int, rois: int) -> None:
        pass

    def stop(self) -> None:
        pass
