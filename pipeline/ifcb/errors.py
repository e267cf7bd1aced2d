"""Errors and failure records of the IFCB reader.

Bad input raises `IfcbFormatError` (a `ValueError`, so callers that only know "bad value" still catch it); a bin that
cannot be processed becomes a `BinFailure` record, because failures are data: one bad bin must never stop an archive.
A bin whose files are not whole yet (a copy taken while the instrument was still writing it) raises
`BinNotFinished`, which is both: a format error of these bytes, and transient (`pipeline.faults.TransientError`), so
the bin is left incomplete and read again by the next run instead of being recorded as bad. A bin whose header says
it is a bead-calibration run raises `BeadRun` where the caller leaves bead runs out: no fault at all, recorded as a
`BinFailure` of kind "beads" so that the store remembers it is not plankton without reading it again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.faults import TransientError, is_node_fault, is_transient

#: The stages a bin goes through; a failure names the one where it stopped. "node" is no stage of the bin: the node
#: could not hold it (out of memory, its feeder process killed; `pipeline.faults`, kind "node").
STAGES = ("files", "hdr", "adc", "roi", "preprocess", "morphology", "predict", "write", "node")


class IfcbFormatError(ValueError):
    """Input that does not follow the IFCB format; the message says what and why.

    `stage` names the file kind at fault ("hdr", "adc", "roi", "files") when the reader knows it, so that the
    failure record can say where a bin stopped.
    """

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage


class BinNotFinished(IfcbFormatError, TransientError):
    """The bin's files hold less than its header says (the `.adc` lists fewer images than the `.hdr`'s `roiCount`):
    a copy taken while the instrument was still writing. Transient: the bin is left incomplete, and the next run
    reads it again, whole by then (`pipeline.ifcb.bins.check_roi_count`)."""


class BeadRun(Exception):
    """The bin's header says it is a bead-calibration run (`pipeline.ifcb.sample`, the message says why), and the
    caller leaves bead runs out: its files are not at fault (stage "hdr", kind "beads")."""

    stage = "hdr"


#: "data": recorded, and final until the bin's files change (or `classify --retry-failed`): its own files are bad, or,
#: at stage "node", the node could not hold it after `pipeline.job.feeder.NODE_ATTEMPTS` attempts (the reason names
#: the limit); "transient": a storage or network fault outlasted its retries, or the bin was still being written
#: (the bin is simply not done; the next run tries again); "beads": no failure: a bead run by its header, left out of
#: classification (`BeadRun`) and not read again until its files change (or `classify --include-beads`); never
#: counted as failed.
KINDS = ("data", "transient", "beads")


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

    @property
    def bead_run(self) -> bool:
        """Whether this is no failure but a bead run left out (kind "beads")."""
        return self.kind == "beads"

    @property
    def node(self) -> bool:
        """Whether the node's limit, not the bin, stopped it (stage "node")."""
        return self.stage == "node"

    @classmethod
    def from_error(cls, bin_id: str, error: Exception, default_stage: str) -> BinFailure:
        """The record for `error` raised while processing `bin_id` (stage from the error when it carries one).

        A node fault (`pipeline.faults.is_node_fault`: `MemoryError`, `ENOMEM`) becomes stage "node", its reason
        naming the stage it happened in and the limit."""
        stage = getattr(error, "stage", None) or default_stage
        if isinstance(error, BeadRun):
            return cls(bin=bin_id, stage=stage, reason=str(error), kind="beads")
        reason = str(error) if isinstance(error, IfcbFormatError) else f"{type(error).__name__}: {error}"
        if is_node_fault(error):
            reason = f"the worker ran out of memory at stage {stage} ({reason}): a limit of the node, not of the bin"
            return cls(bin=bin_id, stage="node", reason=reason)
        return cls(bin=bin_id, stage=stage, reason=reason, kind="transient" if is_transient(error) else "data")
