"""THE one bin reader: metadata (`.hdr` + `.adc`, small) and images (`.roi`, one ranged read), over fsspec.

Everything that reads bins - `ls`, planning, the workers, training from an archive - goes through these functions,
so that one reader decides ROI numbers, pixels and volume analysed. Older bins (IFCB1-6) are stitched here
(`pipeline.ifcb.stitching`): their ROI numbers and images are the stitched ones everywhere. A bin whose header counts
more ROIs than its `.adc` lists is still being written (`check_roi_count`): transient, read again by the next run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fsspec import AbstractFileSystem

from pipeline.faults import TransientError, is_transient, with_retries
from pipeline.ifcb.adc import AdcTable, parse_adc
from pipeline.ifcb.errors import BeadRun, BinFailure, BinNotFinished, IfcbFormatError
from pipeline.ifcb.hdr import Header, parse_header
from pipeline.ifcb.identifiers import BinId
from pipeline.ifcb.roi import check_image_ranges, read_images
from pipeline.ifcb.sample import SampleInfo, read_sample
from pipeline.ifcb.stitching import NOT_STITCHED, Stitching, find_stitching, stitch_images
from pipeline.ifcb.volume import ml_analyzed

#: The most a `.roi` of a bin without images holds: real empty older bins have a 2-byte `.roi` (two pad bytes).
EMPTY_ROI_BYTES = 2


@dataclass(frozen=True)
class BinFiles:
    """Where the three files of a bin are (fsspec paths as the filesystem returns them; None = missing)."""

    bin: BinId
    hdr: str | None
    adc: str | None
    roi: str | None
    sizes: tuple[int, int, int] | None = None  # bytes of .hdr, .adc, .roi, when the listing gave them
    stamp: str = ""  # the files' versions as the listing gave them (sizes, ETags or modification times); "": unknown

    @property
    def roi_size(self) -> int:
        """Bytes of the `.roi` (0 when unknown): what reading and preprocessing the bin costs, roughly."""
        return self.sizes[2] if self.sizes else 0

    @property
    def missing(self) -> list[str]:
        """Extensions of the files the bin lacks, e.g. `[".roi"]`."""
        return [f".{ext}" for ext in ("hdr", "adc", "roi") if getattr(self, ext) is None]


def file_stamp(entries: Sequence[dict[str, Any]]) -> str:
    """One text naming the versions of a bin's files from their listing entries (fsspec `detail=True`): size and
    ETag (object stores) or modification time (file systems) of each. Equal stamps: the same files, unchanged;
    "" where a listing says neither of a file (then a failure is never taken as known)."""
    parts = []
    for entry in entries:
        version = entry.get("ETag") or entry.get("etag") or entry.get("mtime") or entry.get("LastModified") or ""
        if entry.get("size") is None and not version:
            return ""  # nothing known (an HTTP directory listing): no stamp can say the files are unchanged
        parts.append(f"{entry.get('size')}:{str(version).strip(chr(34))}")
    return "/".join(parts)


@dataclass
class BinMeta:
    """What a bin's `.hdr` and `.adc` say: enough to plan work and compute concentrations, without any pixels."""

    bin: BinId
    files: BinFiles
    header: Header
    adc: AdcTable
    roi_numbers: np.ndarray
    ml_analyzed: float | None
    stitching: Stitching = NOT_STITCHED
    warnings: list[str] = field(default_factory=list)  # what the reader forgave or noticed; [] for a clean bin
    sample: SampleInfo = field(default_factory=SampleInfo)  # what the header says of the sample (`read_sample`)
    roi_file_size: int | None = None  # bytes of the `.roi` from the listing, when it can be trusted (`listed_roi_size`)

    @property
    def n_rois(self) -> int:
        """Number of ROIs with an image."""
        return int(self.roi_numbers.size)

    @property
    def roi_bytes(self) -> int:
        """Pixel bytes of all images as the `.roi` holds them: what reading the bin's images costs."""
        rows = self.adc.roi_numbers - 1
        return int((self.adc.width[rows] * self.adc.height[rows]).sum())


def listed_roi_size(files: BinFiles, hdr: bytes, adc: bytes) -> int | None:
    """The `.roi`'s size as the listing gave it, when the listing's sizes of the `.hdr` and `.adc` are the sizes of
    the bytes read; None (unknown: the reader asks the filesystem) otherwise.

    The rule: a size is a fact about the file only where the listing knows it. An HTTP directory listing names
    files without sizes (fsspec's `HTTPFileSystem.ls` gives `"size": None`: the archive's listing then gives no
    sizes at all); a listing taken before a file changed gives its old size, which the `.hdr` and `.adc` just read
    show. A `.roi` judged truncated by such a size would be recorded as bad data that is not."""
    if files.sizes is None or files.sizes[:2] != (len(hdr), len(adc)):
        return None
    return files.sizes[2]


def check_roi_count(header: Header, table: AdcTable) -> str | None:
    """Refuse a bin whose `.adc` lists fewer images than its header's `roiCount` (`Header.roi_count`); the warning
    for one that lists more; None where they agree or the header has no count.

    The rule: newer acquisition software writes `roiCount` into the `.hdr` when a sample ends, and it equals the
    `.adc` rows with an image (`Header.roi_count` cites the real headers and iRfcb's check that say so). An `.adc`
    that lists fewer is a copy taken while the instrument was still writing (whole lines so far, the `.roi` ending
    after their images), which reads cleanly and would be classified as complete with ROIs missing: `BinNotFinished`
    (stage "adc", transient), so the bin is left incomplete and the next run reads it whole. Rows left out for an
    unreadable field (`AdcTable.left_out`) may each have had an image: the count agrees when it lies between the
    images listed and those plus the rows left out (their own warning says what was lost). More rows with an image
    than the count is no known writer's way: the reader goes on with the `.adc`'s, and says so.
    """
    expected = header.roi_count
    listed = int(table.roi_numbers.size)
    unknown = int(table.left_out.size)
    if expected is None or listed <= expected <= listed + unknown:
        return None
    if listed < expected:
        left_out = f" (and {unknown} row(s) left out)" if unknown else ""
        raise BinNotFinished(
            f"the header says {expected} ROIs, the .adc lists {listed}{left_out}: the bin is still being written",
            stage="adc",
        )
    return f"the header says {expected} ROIs, the .adc lists {listed}: the .adc's are read"


def bin_meta_from_bytes(files: BinFiles, hdr: bytes, adc: bytes, *, leave_out_beads: bool = False) -> BinMeta:
    """Parse the `.hdr` and `.adc` bytes of a bin (already fetched, e.g. in a batch); raise `IfcbFormatError`, or
    `BinNotFinished` (transient) for a bin still being written (`check_roi_count`). With `leave_out_beads`, a bead
    run by its header (`pipeline.ifcb.sample`) raises `BeadRun` before its `.adc` is parsed: a bead run is left out
    whatever its `.adc` holds.

    The `.adc`'s images are checked against the `.roi` here, before anything reads or allocates pixels
    (`check_image_ranges`: inside the file when the listing gave its size, no two ROIs sharing bytes): every reader
    of bins gets its metadata from this function, so no `.adc` can make any of them allocate more images than the
    `.roi` holds bytes. The volume comes from the rows whose times can be read (`AdcTable.volume_table`)."""
    header = parse_header(hdr)
    sample = read_sample(header)
    if leave_out_beads and sample.bead_run:
        raise BeadRun(sample.bead_reason)
    table = parse_adc(adc, files.bin.schema, header.adc_columns)
    warnings = [*table.warnings, *sample.warnings]
    if (count_warning := check_roi_count(header, table)) is not None:
        warnings.append(count_warning)
    roi_size = listed_roi_size(files, hdr, adc)
    check_image_ranges(table, roi_size)
    if roi_size is not None and table.roi_numbers.size == 0 and roi_size > EMPTY_ROI_BYTES:
        warnings.append(f".adc lists no image but the .roi holds {roi_size} bytes: they are not read")
    stitching = find_stitching(table) if files.bin.schema == "v1" else NOT_STITCHED  # newer bins never are
    return BinMeta(
        bin=files.bin,
        files=files,
        header=header,
        adc=table,
        roi_numbers=stitching.roi_numbers(table.roi_numbers),
        ml_analyzed=ml_analyzed(files.bin, header, table.volume_table()),
        stitching=stitching,
        warnings=warnings,
        roi_file_size=roi_size,
        sample=sample,
    )


def read_bin_meta(fs: AbstractFileSystem, files: BinFiles, *, leave_out_beads: bool = False) -> BinMeta:
    """Read and parse a bin's `.hdr` and `.adc` (two concurrent GETs on object storage); raise `IfcbFormatError`
    for bad or missing files, `TransientError` when the store keeps failing, `BinNotFinished` for a bin still being
    written, `BeadRun` for a bead run with `leave_out_beads` (`bin_meta_from_bytes`)."""
    paths = [path for path in (files.hdr, files.adc) if path is not None]
    data = _fetch(fs, paths)
    for content in data.values():
        if isinstance(content, Exception) and not isinstance(content, FileNotFoundError):
            raise content
    contents = _contents(files, data)
    if isinstance(contents, BinFailure):
        raise IfcbFormatError(contents.reason, stage=contents.stage)
    return bin_meta_from_bytes(files, *contents, leave_out_beads=leave_out_beads)


def read_many_bin_meta(fs: AbstractFileSystem, bins: Sequence[BinFiles]) -> list[BinMeta | BinFailure]:
    """Metadata of several bins, or the failure of each bin that cannot be read or parsed, in the order given.

    All `.hdr` and `.adc` files are fetched in one `fs.cat` call, which runs the requests concurrently on async
    filesystems (s3fs, gcsfs): a few dozen bins cost one round trip, not one per file. Transient faults are retried
    (`pipeline.faults`); a bin whose files keep failing becomes a failure of kind "transient".
    """
    paths = [path for files in bins for path in (files.hdr, files.adc) if path is not None]
    data = _fetch(fs, paths)
    return [_meta_or_failure(files, data) for files in bins]


def _fetch(fs: AbstractFileSystem, paths: list[str]) -> dict[str, bytes | Exception]:
    """Whole files by path, concurrently; transient faults retried, other errors returned in place of the bytes."""
    data: dict[str, bytes | Exception] = {}
    pending = list(paths)

    def attempt() -> None:
        nonlocal pending
        if not pending:
            return
        data.update(fs.cat(pending, on_error="return"))
        pending = [path for path in pending if isinstance(data.get(path), Exception) and is_transient(data[path])]
        if pending:
            raise data[pending[0]]  # type: ignore[misc]

    try:
        with_retries(attempt, f"reading {len(pending)} file(s) such as {pending[0] if pending else ''}")
    except TransientError as err:
        data.update({path: err for path in pending})
    return data


def _contents(files: BinFiles, data: dict[str, bytes | Exception]) -> tuple[bytes, bytes] | BinFailure:
    """The `.hdr` and `.adc` bytes of a bin from fetched `data`, or the failure of the first that is missing or
    could not be read."""
    contents = []
    for ext, path in (("hdr", files.hdr), ("adc", files.adc)):
        content = data.get(path) if path is not None else None
        if content is None or isinstance(content, FileNotFoundError):
            return BinFailure(files.bin.id, "files", f"missing .{ext}")
        if isinstance(content, Exception):
            return BinFailure.from_error(files.bin.id, content, default_stage=ext)
        contents.append(content)
    return contents[0], contents[1]


def _meta_or_failure(files: BinFiles, data: dict[str, bytes | Exception]) -> BinMeta | BinFailure:
    contents = _contents(files, data)
    if isinstance(contents, BinFailure):
        return contents
    try:
        return bin_meta_from_bytes(files, *contents)
    except IfcbFormatError as err:  # and BinNotFinished: a failure of kind "transient"
        return BinFailure.from_error(files.bin.id, err, default_stage="adc")


def read_bin_images(fs: AbstractFileSystem, meta: BinMeta) -> list[tuple[int, np.ndarray]]:
    """Every image of the bin as (ROI number, uint8 (height, width)), from one ranged read of the `.roi`
    (transient faults retried); older bins' pairs stitched into one image under the first row's number."""
    size = meta.roi_file_size
    images = with_retries(lambda: read_images(fs, meta.files.roi, meta.adc, size), f"reading {meta.files.roi}")
    return stitch_images(images, meta.adc, meta.stitching)
