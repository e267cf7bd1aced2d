"""The records the store is made of: a classified bin, what a commit says of a bin, a commit, the ledger."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from model.decision import class_counts
from pipeline.ifcb.errors import BinFailure


def iso_utc(moment: datetime) -> str:
    """A UTC time as `YYYY-MM-DDTHH:MM:SSZ` (no sub-seconds: stable bytes)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class BinResult:
    """One classified bin, as the worker hands it to the store."""

    bin: str
    time: datetime
    roi_numbers: np.ndarray  # int (roi,)
    scores: np.ndarray  # float32 (roi, class)
    ml_analyzed: float | None

    @property
    def counts(self) -> np.ndarray:
        """ROIs per class by argmax."""
        return class_counts(self.scores)


@dataclass(frozen=True)
class BinRecord:
    """What a commit says of one complete bin: enough for the summary and to find its ROIs in `parts/<part>`."""

    bin: str
    time: str  # UTC, YYYY-MM-DDTHH:MM:SSZ
    n_rois: int
    ml_analyzed: float | None
    counts: list[int]
    part: str
    roi_offset: int
    counts_thresholded: list[int] | None = None  # by the bundle's thresholds, unclassified last; None: no thresholds


@dataclass
class Commit:
    """The record of one committed partition (the attributes of `commits/<part>`)."""

    part: str
    bins: list[BinRecord] = field(default_factory=list)
    failures: list[BinFailure] = field(default_factory=list)
    incomplete: list[dict[str, str]] = field(default_factory=list)  # {bin, reason}: transient, redone next run

    def to_attributes(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "bins": [asdict(record) for record in self.bins],
            "failures": [failure.to_dict() for failure in self.failures],
            "incomplete": list(self.incomplete),
        }

    @classmethod
    def from_attributes(cls, attrs: dict[str, Any]) -> Commit:
        return cls(
            part=attrs["part"],
            bins=[BinRecord(**record) for record in attrs.get("bins", [])],
            failures=[BinFailure(**failure) for failure in attrs.get("failures", [])],
            incomplete=list(attrs.get("incomplete", [])),
        )


@dataclass
class Ledger:
    """What the store holds: complete bins (by id), failed bins not complete, partitions in the summary."""

    bins: dict[str, BinRecord] = field(default_factory=dict)
    failures: dict[str, BinFailure] = field(default_factory=dict)
    parts: set[str] = field(default_factory=set)
    changed: bool = False  # whether commits exist that the summary does not show yet

    def add(self, commit: Commit) -> None:
        """Take in a commit: its bins become complete, its failures replace older ones of bins still not complete."""
        for record in commit.bins:
            self.bins[record.bin] = record
            self.failures.pop(record.bin, None)
        for failure in commit.failures:
            if failure.bin not in self.bins:
                self.failures[failure.bin] = failure
        self.parts.add(commit.part)
        self.changed = True
