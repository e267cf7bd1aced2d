"""Errors and failure records of the IFCB reader.

Bad input raises `IfcbFormatError` (a `ValueError`, so callers that only know "bad value" still catch it); a bin that
cannot be processed becomes a `BinFailure` record, because failures are data: one bad bin must never stop an archive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.faults import is_transient

#: The stages a bin goes through; a failure names the one where it stopped.
STAGES = ("files", "hdr", "adc", "roi", "preprocess", "predict", "write")


class IfcbFormatError(ValueError):
    """Input that does not follow the IFCB format; the message says what and why.

    `stage` names the file kind at fault ("hdr", "adc", "roi", "files") when the reader knows it, so that the
    failure record can say where a bin stopped.
    """

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage


#: "data": the bin's own files are bad (recorded, final until they change); "transient": a storage or network fault
#: outlasted its retries (the bin is simply not done; the next run tries again).
KINDS = ("data", "transient")


@dataclass(frozen=True)
class BinFailure:
    """A bin that could not be processed: which bin, at which stage, why, whether it is the data's fault, and the
    versions of the files it failed with (`BinFiles.stamp`; "" when unknown): a data failure is final until they
    change."""

    bin: str
    stage: str
    reason: str
    kind: str = "data"
    files: str = ""

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"unknown failure stage {self.stage!r}; expected one of {', '.join(STAGES)}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown failure kind {self.kind!r}; expected one of {', '.join(KINDS)}")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_error(cls, bin_id: str, error: Exception, default_stage: str) -> BinFailure:
        """The record for `error` raised while processing `bin_id` (stage from the error when it carries one)."""
        stage = getattr(error, "stage", None) or default_stage
        reason = str(error) if isinstance(error, IfcbFormatError) else f"{type(error).__name__}: {error}"
        return cls(bin=bin_id, stage=stage, reason=reason, kind="transient" if is_transient(error) else "data")
