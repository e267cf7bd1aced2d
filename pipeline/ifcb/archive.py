"""Archives: a folder (local or object storage) of bins, flat or in day folders (`D2019/D20190101/`,
`2012/IFCB5_2012_028/`).

Listing is one recursive `find` (one paginated listing on object storage, not one request per folder). Files are
grouped by bin id; unrelated files are ignored; a bin that lacks a file becomes a `BinFailure` - never a crash, never
a silent skip.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from pipeline.faults import with_retries
from pipeline.ifcb.bins import BinFiles, BinMeta, read_many_bin_meta
from pipeline.ifcb.errors import BinFailure, IfcbFormatError
from pipeline.ifcb.identifiers import BinId, parse_bin_id
from pipeline.redact import redact_url
from pipeline.storage import fs_options

log = logging.getLogger(__name__)

EXTENSIONS = ("hdr", "adc", "roi")
#: Bins whose `.hdr` and `.adc` `scan_archive` fetches in one batch (concurrent requests on object storage).
SCAN_BATCH = 64


def open_archive(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of `url` and the archive's root path on it."""
    fs, root = url_to_fs(url, **fs_options(url, storage_options))
    return fs, root.rstrip("/") or root


def split_bin_filename(name: str) -> tuple[BinId, str] | None:
    """`D..._IFCB013.adc` -> (its BinId, "adc"); None for any file that is not one of a bin's three files."""
    stem, dot, ext = posixpath.basename(name).rpartition(".")
    if not dot or ext not in EXTENSIONS:
        return None
    try:
        return parse_bin_id(stem), ext
    except IfcbFormatError:
        return None


def list_bins(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    bin_ids: Collection[str] | None = None,
) -> tuple[fsspec.AbstractFileSystem, list[BinFiles], list[BinFailure]]:
    """The complete bins under `url` sorted by time, and failures for bins that lack a file.

    `start` is inclusive and `end` exclusive (naive datetimes are UTC); `bin_ids` keeps only those bins, and a
    requested bin that is not in the archive is a failure too.
    """
    fs, root = open_archive(url, storage_options)
    wanted = {parse_bin_id(text).id for text in bin_ids} if bin_ids is not None else None
    start, end = _utc(start), _utc(end)
    found: dict[str, dict[str, str]] = {}
    bin_of: dict[str, BinId] = {}
    duplicates: dict[str, set[str]] = {}
    listing = with_retries(lambda: fs.find(root, detail=True), f"listing {redact_url(url)}")
    if not listing and not with_retries(lambda: fs.isdir(root), f"listing {redact_url(url)}"):
        raise FileNotFoundError(f"archive not found: {redact_url(url)}")
    for path in listing:
        parsed = split_bin_filename(path)
        if parsed is None:
            log.debug("ignoring %s: not a bin file", path)
            continue
        bin_id, ext = parsed
        if (wanted is not None and bin_id.id not in wanted) or not _in_range(bin_id, start, end):
            continue
        bin_of[bin_id.id] = bin_id
        files = found.setdefault(bin_id.id, {})
        if ext in files:
            duplicates.setdefault(bin_id.id, set()).update((files[ext], path))
        files[ext] = path
    complete: list[BinFiles] = []
    failures: list[BinFailure] = []
    for bin_text, files in found.items():
        sizes = tuple(int(listing[files[ext]].get("size") or 0) for ext in EXTENSIONS) if len(files) == 3 else None
        entry = BinFiles(bin_of[bin_text], files.get("hdr"), files.get("adc"), files.get("roi"), sizes)
        if bin_text in duplicates:
            places = ", ".join(sorted(duplicates[bin_text]))
            failures.append(BinFailure(bin_text, "files", f"files found in several places: {places}"))
        elif entry.missing:
            failures.append(BinFailure(bin_text, "files", f"missing {' and '.join(entry.missing)}"))
        else:
            complete.append(entry)
    for bin_text in sorted((wanted or set()) - set(found)):
        failures.append(BinFailure(bin_text, "files", "not found in the archive"))
    complete.sort(key=lambda files: (files.bin.time, files.bin.id))
    failures.sort(key=lambda failure: failure.bin)
    return fs, complete, failures


def scan_archive(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    bin_ids: Collection[str] | None = None,
) -> Iterator[BinMeta | BinFailure]:
    """Metadata of every bin (listing failures first, then bins by time), reading many bins' files at once.

    The archive is listed when this is called, so a bad URL raises here rather than at the first iteration.
    """
    fs, bins, failures = list_bins(url, storage_options, start=start, end=end, bin_ids=bin_ids)
    return _scan(fs, bins, failures)


def _scan(
    fs: fsspec.AbstractFileSystem, bins: list[BinFiles], failures: list[BinFailure]
) -> Iterator[BinMeta | BinFailure]:
    yield from failures
    for first in range(0, len(bins), SCAN_BATCH):
        yield from read_many_bin_meta(fs, bins[first : first + SCAN_BATCH])


def bin_files_at(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, BinFiles]:
    """The files of the single bin at `url`: its path without extension, or the path of any of its three files."""
    fs, path = url_to_fs(url, **(storage_options or {}))
    stem, dot, ext = path.rpartition(".")
    base = stem if dot and ext in EXTENSIONS else path
    bin_id = parse_bin_id(posixpath.basename(base))
    paths = {ext: f"{base}.{ext}" for ext in EXTENSIONS}
    present = {ext: (p if fs.exists(p) else None) for ext, p in paths.items()}
    return fs, BinFiles(bin_id, present["hdr"], present["adc"], present["roi"])


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _in_range(bin_id: BinId, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or bin_id.time >= start) and (end is None or bin_id.time < end)
