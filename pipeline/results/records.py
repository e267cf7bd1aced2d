"""The records the store is made of: a classified bin, what a commit says of a bin, a commit, the ledger."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from model.decision import class_counts
from pipeline.ifcb.errors import BinFailure
from pipeline.ifcb.sample import SampleInfo
from pipeline.results.layout import UNMEASURED


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
    warnings: tuple[str, ...] = ()  # what the reader forgave in the bin's files
    embeddings: np.ndarray | None = None  # float16 (roi, feature): penultimate features, with `classify --embeddings`
    files_digest: int | None = None  # `files_digest` of the files it was read from; None: unknown (sizes not listed)
    sample: SampleInfo = field(default_factory=SampleInfo)  # what its header says of the sample
    #: float32 (roi, feature) in pixels, columns `pipeline.morphology.COLUMNS`, with `classify --morphology`
    morphology: np.ndarray | None = None

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
    warnings: list[str] | None = None  # what the reader forgave (a cut-off last .adc line); None: nothing
    files_digest: int | None = None  # `files_digest` of the files it was read from; None: unknown
    # what the header says of the sample (`pipeline.ifcb.sample`); None: it does not say (or a store of before)
    run_type: str | None = None
    sample_type: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    bead_run: bool = False  # a bead run by its header, classified because the run asked for bead runs
    # with morphology (`pipeline.results.biomass`), per class by argmax; None: not measured
    biovolume: list[float] | None = None  # summed biovolume of the class's ROIs, µm³
    carbon: list[float] | None = None  # their carbon, pg (needs the class-to-taxon table: which are diatoms)

    @property
    def sample(self) -> SampleInfo:
        """The sample metadata the record keeps (without the reason of a bead run, which is not kept)."""
        return SampleInfo(self.run_type, self.sample_type, self.latitude, self.longitude, self.bead_run)


def sample_fields(sample: SampleInfo) -> dict[str, Any]:
    """The `BinRecord` fields of a bin's sample metadata."""
    return {
        "run_type": sample.run_type,
        "sample_type": sample.sample_type,
        "latitude": sample.latitude,
        "longitude": sample.longitude,
        "bead_run": sample.bead_run,
    }


def files_digest(sizes: tuple[int, int, int] | None) -> int | None:
    """The fingerprint a complete bin keeps of its files: a 48-bit digest of the `.hdr`, `.adc` and `.roi` sizes in
    bytes (None when the listing gave no sizes). A copy taken while the instrument was still writing, or a bin
    exported again with more triggers, has other sizes: the ledger then reports the bin as changed and it is redone.

    Sizes and not modification times or ETags: a copy of an archive (rsync without `-t`, an upload by another tool,
    which changes a multipart ETag) keeps its sizes, and must not make a million bins look new. A rewrite that keeps
    every size is not noticed. Never 0, which the summary's array takes for "unknown"."""
    if sizes is None:
        return None
    digest = hashlib.blake2b(":".join(str(int(size)) for size in sizes).encode(), digest_size=6).digest()
    return int.from_bytes(digest, "big") or 1


def files_changed(kept: int | None, sizes: tuple[int, int, int] | None) -> bool:
    """Whether a complete bin whose files had the fingerprint `kept` is listed now with files of other `sizes`
    (both known: a bin of unknown fingerprint or sizes is taken as unchanged)."""
    listed = files_digest(sizes)
    return kept is not None and listed is not None and kept != listed


@dataclass(frozen=True)
class StoreTotals:
    """What a store holds in three numbers: complete bins, their ROIs, and the newest complete bin's sample time
    (UTC; None for an empty store)."""

    bins: int
    rois: int
    newest: datetime | None


@dataclass
class Commit:
    """The record of one committed partition (the attributes of `commits/<part>`)."""

    part: str
    bins: list[BinRecord] = field(default_factory=list)
    failures: list[BinFailure] = field(default_factory=list)
    incomplete: list[dict[str, str]] = field(default_factory=list)  # {bin, reason}: transient, redone next run
    thresholds_sha256: str | None = None  # the thresholds behind counts_thresholded (None: a commit of before)
    replaces: list[str] = field(default_factory=list)  # partitions whose bins this one took over (compaction)

    def to_attributes(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "bins": [_record_attributes(record) for record in self.bins],
            "failures": [failure.to_dict() for failure in self.failures],
            "incomplete": list(self.incomplete),
            "thresholds_sha256": self.thresholds_sha256,
            "replaces": list(self.replaces),
        }

    @classmethod
    def from_attributes(cls, attrs: dict[str, Any]) -> Commit:
        return cls(
            part=attrs["part"],
            bins=[BinRecord(**record) for record in attrs.get("bins", [])],
            failures=[BinFailure(**failure) for failure in attrs.get("failures", [])],
            incomplete=list(attrs.get("incomplete", [])),
            thresholds_sha256=attrs.get("thresholds_sha256"),
            replaces=list(attrs.get("replaces", [])),
        )


def _record_attributes(record: BinRecord) -> dict[str, Any]:
    """A bin record as commit attributes; `warnings`, `files_digest`, the sample metadata and `bead_run` only where
    there are some (records of clean bins of unknown sizes whose header says nothing of the sample keep the bytes
    they always had)."""
    attributes = asdict(record)
    for optional in ("warnings", "files_digest", "bead_run"):
        if not attributes[optional]:
            del attributes[optional]
    for known in ("run_type", "sample_type", "latitude", "longitude", "biovolume", "carbon"):
        if attributes[known] is None:  # a latitude of 0 is a position
            del attributes[known]
    return attributes


class Ledger:
    """What the store holds: complete bins, failed bins not complete, partitions already in the summary.

    Cheap to read: the set of complete bins and consolidated partitions comes from two small arrays; the full bin
    records and failures (what a summary or a report needs) are read only when first asked for, so a rerun with
    nothing to do reads a few objects whatever the number of complete bins. The fingerprints of the complete bins'
    files (`digests`, what a rerun compares with its listing) come with the set, from one more array.

    Failures are facts of the past: a failure of a bin that is complete now (from a later commit, or read before
    the bin was redone) is never reported. Bead runs left out (records of kind "beads", `BinFailure.bead_run`) are
    kept beside the failures, and as they are (a bin classified since is no bead run left out), but never among
    them: `failures` are failed bins, `bead_runs` bins that are not plankton.
    """

    def __init__(
        self,
        complete: set[str] | None = None,
        parts: set[str] | None = None,
        load: Callable[[], tuple[dict[str, BinRecord], dict[str, BinFailure]]] | None = None,
        load_failures: Callable[[], dict[str, BinFailure]] | None = None,
        digests: dict[str, int] | None = None,
    ) -> None:
        self.complete: set[str] = set(complete or ())
        self.parts: set[str] = set(parts or ())
        self.changed = False  # whether commits exist that the summary does not show yet
        #: Rows the consolidated summary and ledger hold, by dimension (`bin`, `part`, `warned`), and the summary's
        #: attributes; None when there is no summary of the current layout (then the next consolidation rewrites).
        self.rows: dict[str, int] | None = None
        self.summary_attributes: dict[str, Any] = {}
        self.pending: list[Commit] = []  # commits taken in since the summary was written: what a consolidation adds
        self.new_parts: list[str] = []  # their partitions, in the order taken in
        #: Whether one of them lists a bin the summary already shows (then a consolidation rewrites); two pending
        #: commits of one bin (two attempts of a partition) need no rewrite: the later one's record is appended.
        self.recompleted = False
        self._load = load
        self._load_failures = load_failures
        #: `files_digest` of the complete bins' files, where known (bins committed before fingerprints were kept,
        #: and bins of listings without sizes, have none)
        self.digests: dict[str, int] = digests if digests is not None else {}
        self._pending_bins: set[str] = set()
        self._commits: list[Commit] = []
        self._bins: dict[str, BinRecord] | None = None
        self._failures: dict[str, BinFailure] | None = None
        self._bead_runs: dict[str, BinFailure] = {}

    def add(self, commit: Commit) -> None:
        """Take in a commit: its bins become complete, its failures replace older ones of bins still not complete."""
        self._commits.append(commit)
        self.pending.append(commit)
        if any(record.bin in self.complete and record.bin not in self._pending_bins for record in commit.bins):
            self.recompleted = True
        self.complete.update(record.bin for record in commit.bins)
        self._pending_bins.update(record.bin for record in commit.bins)
        self.digests.update({r.bin: r.files_digest for r in commit.bins if r.files_digest})
        if commit.part not in self.parts:
            self.new_parts.append(commit.part)
        self.parts.add(commit.part)
        self.changed = True
        if self._failures is not None:
            self._apply(commit)

    def consolidated(self, rows: dict[str, int], attributes: dict[str, Any]) -> None:
        """The summary now shows every commit taken in (`ResultStore.consolidate` wrote it)."""
        self.rows, self.summary_attributes = dict(rows), dict(attributes)
        self.pending, self.new_parts, self.recompleted = [], [], False
        self._pending_bins = set()
        self.changed = False

    @property
    def bins(self) -> dict[str, BinRecord]:
        """Every complete bin's record, by bin id (read in full when first asked for)."""
        if self._bins is None:
            self._bins, recorded = self._load() if self._load is not None else ({}, {})
            self._take_recorded(recorded)
        return self._bins

    @property
    def loaded_records(self) -> bool:
        """Whether every bin record has been read (`bins`): what planning avoids where it can."""
        return self._bins is not None

    @property
    def counts_unmeasured(self) -> bool:
        """Whether the summary says how many of its bins are unmeasured (`layout.UNMEASURED`); a summary of before
        that count is rewritten by the next consolidation, which writes it."""
        return UNMEASURED in self.summary_attributes

    def unmeasured(self) -> set[str]:
        """The complete bins without biovolume (classified before the store measured, `BinRecord.biovolume` None).

        Reads every bin record only where the summary does not say that none of its bins is unmeasured
        (`layout.UNMEASURED`): a store whose bins are all measured costs nothing more to plan; one that has
        unmeasured bins is read once, by the run that measures them."""
        if self.summary_attributes.get(UNMEASURED) == 0:  # only bins of commits since may be unmeasured
            latest = {record.bin: record for commit in self.pending for record in commit.bins}
            return {bin_id for bin_id, record in latest.items() if record.biovolume is None}
        return {record.bin for record in self.bins.values() if record.biovolume is None}

    @property
    def failures(self) -> dict[str, BinFailure]:
        """The failure of every bin that failed and is not complete, by bin id (without reading the complete bins'
        records when they were not asked for); bead runs are none (`bead_runs`)."""
        return self._read_recorded()[0]

    @property
    def bead_runs(self) -> dict[str, BinFailure]:
        """The record of every bead run left out (kind "beads") that is not complete, by bin id."""
        return self._read_recorded()[1]

    @property
    def recorded(self) -> dict[str, BinFailure]:
        """`failures` and `bead_runs` together: what the ledger's failure table keeps."""
        failures, bead_runs = self._read_recorded()
        return {**failures, **bead_runs}

    def _read_recorded(self) -> tuple[dict[str, BinFailure], dict[str, BinFailure]]:
        if self._failures is None and self._load_failures is None:
            _ = self.bins  # the records and the failures are read together
        elif self._failures is None:
            self._take_recorded(self._load_failures())
        assert self._failures is not None
        return self._failures, self._bead_runs

    def _take_recorded(self, recorded: dict[str, BinFailure]) -> None:
        """The failures and bead runs read from the store, less those of bins complete now, then the commits'."""
        self._failures, self._bead_runs = {}, {}
        for bin_id, failure in recorded.items():
            if bin_id not in self.complete:
                (self._bead_runs if failure.bead_run else self._failures)[bin_id] = failure
        for commit in self._commits:
            self._apply(commit)

    def _apply(self, commit: Commit) -> None:
        """A commit's effect on what is loaded: records (when read), failures and bead runs of bins not complete."""
        assert self._failures is not None
        for record in commit.bins:
            if self._bins is not None:
                self._bins[record.bin] = record
            self._failures.pop(record.bin, None)
            self._bead_runs.pop(record.bin, None)
        for failure in commit.failures:
            if failure.bin not in self.complete:
                self._failures.pop(failure.bin, None)
                self._bead_runs.pop(failure.bin, None)
                (self._bead_runs if failure.bead_run else self._failures)[failure.bin] = failure
