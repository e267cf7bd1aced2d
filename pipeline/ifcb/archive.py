"""Archives: a folder (local or object storage) of bins, flat or in day folders (`D2019/D20190101/`,
`2012/IFCB5_2012_028/`).

Listing is one recursive `find` (one paginated listing on object storage, not one request per folder). Files are
grouped by bin id; unrelated files are ignored; a bin that lacks a file becomes a `BinFailure` - never a crash, never
a silent skip.

Folders named `skip` or `beads` (at any depth) are left out, as every WHOI reader does: pyifcb's `DataDirectory`
(`ifcb/data/files.py`, blacklist `['skip', 'beads']`), which the IFCB Dashboard lists archives with. `skip/` holds
bins set aside by their operators, `beads/` bead-calibration runs, neither of them plankton. `exclude` changes the
list. Nothing else is dropped without a word: files named like a bin's files that the listing cannot take (an
extension in capitals, a name that is not a bin id) are failures or a logged count.
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
from pipeline.ifcb.bins import BinFiles, BinMeta, file_stamp, read_many_bin_meta
from pipeline.ifcb.errors import BinFailure, IfcbFormatError
from pipeline.ifcb.identifiers import BinId, parse_bin_id
from pipeline.redact import redact_url
from pipeline.storage import fs_options

log = logging.getLogger(__name__)

EXTENSIONS = ("hdr", "adc", "roi")
#: Folders left out of every listing unless the caller says otherwise (pyifcb's `DataDirectory` blacklist).
EXCLUDED_FOLDERS: tuple[str, ...] = ("skip", "beads")
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


def in_excluded_folder(path: str, root: str, exclude: Collection[str]) -> bool:
    """Whether `path` lies in a folder (below `root`, at any depth) whose name is in `exclude`."""
    relative = path[len(root) :] if path.startswith(root) else path
    return any(folder in exclude for folder in relative.strip("/").split("/")[:-1])


def list_bins(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    bin_ids: Collection[str] | None = None,
    exclude: Collection[str] = EXCLUDED_FOLDERS,
) -> tuple[fsspec.AbstractFileSystem, list[BinFiles], list[BinFailure]]:
    """The complete bins under `url` sorted by time, and failures for bins that lack a file.

    `start` is inclusive and `end` exclusive (naive datetimes are UTC); `bin_ids` keeps only those bins, and a
    requested bin that is not in the archive is a failure too. Folders named in `exclude` are left out (counted in
    the log). A bin whose files have an extension in another case (`.ADC`) is a failure: IFCB readers, the
    Dashboard's among them, take only `.hdr`, `.adc`, `.roi`. Files with one of those extensions whose name is not a
    bin id are counted in a warning.
    """
    fs, root = open_archive(url, storage_options)
    wanted = {parse_bin_id(text).id for text in bin_ids} if bin_ids is not None else None
    start, end = _utc(start), _utc(end)
    found: dict[str, dict[str, str]] = {}
    bin_of: dict[str, BinId] = {}
    duplicates: dict[str, set[str]] = {}
    miscased: dict[str, list[str]] = {}
    left_out = {"excluded": 0, "outside": 0}
    unnamed: list[str] = []
    listing = with_retries(lambda: fs.find(root, detail=True), f"listing {redact_url(url)}")
    if not listing and not with_retries(lambda: fs.isdir(root), f"listing {redact_url(url)}"):
        raise FileNotFoundError(f"archive not found: {redact_url(url)}")
    for path in listing:
        if exclude and in_excluded_folder(path, root, exclude):
            left_out["excluded"] += 1
            continue
        parsed = split_bin_filename(path)
        if parsed is None:
            _note_other_file(path, miscased, unnamed)
            continue
        bin_id, ext = parsed
        if (wanted is not None and bin_id.id not in wanted) or not _in_range(bin_id, start, end):
            left_out["outside"] += 1
            continue
        bin_of[bin_id.id] = bin_id
        files = found.setdefault(bin_id.id, {})
        if ext in files:
            duplicates.setdefault(bin_id.id, set()).update((files[ext], path))
        files[ext] = path
    complete: list[BinFiles] = []
    failures: list[BinFailure] = []
    for bin_text, paths in sorted(miscased.items()):
        bin_id = parse_bin_id(bin_text)
        if (wanted is None or bin_text in wanted) and _in_range(bin_id, start, end):
            found.pop(bin_text, None)
            names = ", ".join(sorted(posixpath.basename(path) for path in paths))
            reason = f"extension not in lower case: {names} (rename to .hdr, .adc, .roi)"
            failures.append(BinFailure(bin_text, "files", reason))
    _log_left_out(url, left_out, unnamed, exclude)
    for bin_text, files in found.items():
        sizes = tuple(int(listing[files[ext]].get("size") or 0) for ext in EXTENSIONS) if len(files) == 3 else None
        stamp = file_stamp([listing[files[ext]] for ext in EXTENSIONS]) if len(files) == 3 else ""
        entry = BinFiles(bin_of[bin_text], files.get("hdr"), files.get("adc"), files.get("roi"), sizes, stamp)
        if bin_text in duplicates:
            places = ", ".join(sorted(duplicates[bin_text]))
            failures.append(BinFailure(bin_text, "files", f"files found in several places: {places}"))
        elif entry.missing:
            failures.append(BinFailure(bin_text, "files", f"missing {' and '.join(entry.missing)}"))
        else:
            complete.append(entry)
    for bin_text in sorted((wanted or set()) - set(found) - set(miscased)):
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
    exclude: Collection[str] = EXCLUDED_FOLDERS,
) -> Iterator[BinMeta | BinFailure]:
    """Metadata of every bin (listing failures first, then bins by time), reading many bins' files at once.

    The archive is listed when this is called, so a bad URL raises here rather than at the first iteration.
    """
    fs, bins, failures = list_bins(url, storage_options, start=start, end=end, bin_ids=bin_ids, exclude=exclude)
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


def _note_other_file(path: str, miscased: dict[str, list[str]], unnamed: list[str]) -> None:
    """Remember a file that is not one of a bin's three files but looks meant to be: a bin file with its extension
    in another case (by bin), or a `.hdr`/`.adc`/`.roi` (any case) whose name is not a bin id."""
    stem, dot, ext = posixpath.basename(path).rpartition(".")
    if not dot or ext.lower() not in EXTENSIONS:
        log.debug("ignoring %s: not a bin file", path)
        return
    try:
        bin_id = parse_bin_id(stem)
    except IfcbFormatError:
        unnamed.append(path)
        return
    miscased.setdefault(bin_id.id, []).append(path)


def _log_left_out(url: str, left_out: dict[str, int], unnamed: list[str], exclude: Collection[str]) -> None:
    """One line per kind of file the listing did not take, so that nothing leaves without a word."""
    where = redact_url(url)
    if unnamed:
        examples = ", ".join(posixpath.basename(path) for path in sorted(unnamed)[:3])
        log.warning("%s: %d .hdr/.adc/.roi file(s) whose name is not a bin id were left out, e.g. %s",
                    where, len(unnamed), examples)  # fmt: skip
    if left_out["excluded"]:
        log.info("%s: %d file(s) in excluded folders (%s) left out", where, left_out["excluded"], ", ".join(exclude))
    if left_out["outside"]:
        log.info("%s: %d bin file(s) outside the requested window or bins left out", where, left_out["outside"])


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _in_range(bin_id: BinId, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or bin_id.time >= start) and (end is None or bin_id.time < end)
