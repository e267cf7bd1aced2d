"""Archives: a folder (local or object storage) of bins, flat or in day folders (`D2019/D20190101/`,
`2012/IFCB5_2012_028/`), or a `.zip` of one.

Listing follows the request and streams: an archive laid out by day is listed day folder by day folder, in time
order, and only the days a time window (or a list of bins) can touch, with one day either side: day folders are
often named by the instrument's local date (`D20130526/D20130527T015207_IFCB013`), so a bin can sit in the folder
of the day before or after its own (UTC) day. Any other layout is one recursive `find` (one paginated listing on
object storage). Files are grouped by bin id; a bin that lacks a file becomes a `BinFailure` - never a crash,
never a silent skip. A bin found in several folders is one bin where the copies are byte-identical, a failure where
they differ (`pipeline.ifcb.copies`). Folder links are followed, once (a link back into the archive is not).

Folders of set-aside and staging copies (`bad`, `skip`, `beads`, `temp`, `data_temp`: the field's list, at any
depth), recycle bins, trash and hidden folders are left out, and everything that looks like part of an archive but
is not listed is counted in the listing's `LeftOut` report with the reason (`pipeline.ifcb.left_out`).
"""

from __future__ import annotations

import itertools
import logging
import os
import posixpath
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.zip import ZipFileSystem

from model.safe_zip import check_zip
from pipeline.faults import ConfigurationError, with_retries
from pipeline.ifcb.bins import BinFiles, BinMeta, file_stamp, read_many_bin_meta
from pipeline.ifcb.copies import Copy, choose_copy
from pipeline.ifcb.errors import BinFailure, IfcbFormatError
from pipeline.ifcb.identifiers import BinId, parse_bin_id
from pipeline.ifcb.left_out import (
    EXCLUDED_FOLDERS,
    LINK_LOOP,
    MISFILED,
    SAME_COPY,
    LeftOut,
    file_reason,
    folder_reason,
    path_reason,
    relative_path,
)
from pipeline.redact import redact_url
from pipeline.storage import fs_options

__all__ = ["EXCLUDED_FOLDERS", "NOT_IN_ARCHIVE", "Listing", "NotAnArchiveError", "iter_bins", "list_bins"]

log = logging.getLogger(__name__)

EXTENSIONS = ("hdr", "adc", "roi")
#: The reason of a failure for a requested bin the archive does not hold.
NOT_IN_ARCHIVE = "not found in the archive"
#: Bins whose `.hdr` and `.adc` `scan_archive` fetches in one batch (concurrent requests on object storage).
SCAN_BATCH = 64
#: How far from its own (UTC) day a bin's day folder may be and still be found by a window or a list of bins.
NEAR_DAYS = 1


Item = TypeVar("Item")


class NotAnArchiveError(ConfigurationError, ValueError):
    """The archive's URL names a file that is no archive (not a folder, not a `.zip`); the message says what to give.
    A configuration fault: the run cannot start (exit code 2)."""


def open_archive(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of `url` and the archive's root path on it.

    A URL that names a `.zip` file (`archive.zip`, `s3://bucket/archive.zip`, how archives are handed over and
    published) is opened as the `zip://` archive it holds (any other file is refused by the listing). A zip
    archive's directory is checked first (`model.safe_zip.check_zip`, no bound on the total): a member that inflates
    more than a real file could is refused with `UnsafeZipError` before any bin is read."""
    fs, root = url_to_fs(url, **fs_options(url, storage_options))
    if not isinstance(fs, ZipFileSystem) and root.lower().endswith(".zip") and _is_file(fs, root, url):
        fs, root = ZipFileSystem(fo=fs.open(root, "rb")), ""
    if isinstance(fs, ZipFileSystem):
        check_zip(fs.zip, redact_url(url), None)
    return fs, root.rstrip("/") or root


def _is_file(fs: fsspec.AbstractFileSystem, path: str, url: str) -> bool:
    """Whether `path` is a file (one request; a missing path is no file: the listing then says it is not found)."""
    return bool(with_retries(lambda: fs.isfile(path), f"looking at {redact_url(url)}"))


def _check_folder(top: dict[str, dict[str, Any]], root: str, url: str) -> None:
    """Refuse a root that is a file (a listing of a file is the file itself): `NotAnArchiveError`."""
    if len(top) == 1 and top.get(root.rstrip("/"), {}).get("type") == "file":
        raise NotAnArchiveError(
            f"{redact_url(url)} is a file, not an archive: give the folder that holds the bins (or a .zip of it)"
        )


def split_bin_filename(name: str) -> tuple[BinId, str] | None:
    """`D..._IFCB013.adc` -> (its BinId, "adc"); None for any file that is not one of a bin's three files."""
    stem, dot, ext = posixpath.basename(name).rpartition(".")
    if not dot or ext not in EXTENSIONS:
        return None
    try:
        return parse_bin_id(stem), ext
    except IfcbFormatError:
        return None


#: Folder names of archives laid out by day: years (`D2019`, `2012`), then days (`D20190101`, `IFCB5_2012_028`).
_YEAR_FOLDER = re.compile(r"D?(\d{4})", re.ASCII)
_DAY_FOLDER = re.compile(r"D(\d{4})(\d{2})(\d{2})|IFCB\d+_(\d{4})_(\d{3})", re.ASCII)


def folder_day(name: str) -> date | None:
    """The day a day folder holds (`D20190101` -> 2019-01-01, `IFCB5_2012_028` -> 2012-01-28), else None."""
    match = _DAY_FOLDER.fullmatch(name)
    if match is None:
        return None
    try:
        if match[1] is not None:
            return date(int(match[1]), int(match[2]), int(match[3]))
        day = date(int(match[4]), 1, 1) + timedelta(days=int(match[5]) - 1)
    except ValueError:
        return None
    return day if day.year == int(match[4]) else None


class Listing(Iterator[Item]):
    """What a listing yields (bins, or their metadata) as a stream, and `left_out`: what it left out and why,
    complete once the stream is exhausted."""

    def __init__(self, items: Iterator[Item], left_out: LeftOut) -> None:
        self._items = items
        self.left_out = left_out

    def __iter__(self) -> Listing[Item]:
        return self

    def __next__(self) -> Item:
        return next(self._items)


def iter_bins(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    bin_ids: Collection[str] | None = None,
    by_day: bool = True,
    exclude: Collection[str] = EXCLUDED_FOLDERS,
) -> tuple[fsspec.AbstractFileSystem, Listing[BinFiles | BinFailure]]:
    """The archive's bins (complete ones as `BinFiles`, the others as failures) as a stream, day by day in time order.

    An archive laid out by day (`D2019/D20190101/`, `2012/IFCB5_2012_028/`, both may sit side by side) is listed
    folder by folder, and only the day folders that can hold the request, one day either side (`NEAR_DAYS`): those
    of the window [start, end) (naive datetimes are UTC) or of the days of `bin_ids`. Memory holds about three days'
    listings at a time: a bin's day is complete once the folder of the day after it is listed. Any other layout (bins
    beside the years, folders that are not days) is listed whole, as one recursive listing. `bin_ids` keeps only
    those bins, and a requested bin that is not in the archive is a failure too (at the end of the stream).
    `by_day=False` lists any archive whole (fewer requests for a full pass on object storage; the whole listing in
    memory). Folders named in `exclude`, recycle bins and hidden folders are left out, and so is every file that
    looks like part of the archive but is none of a bin's files: all counted in the stream's `left_out`. A bin whose
    files have an extension in another case (`.ADC`) is a failure: IFCB readers, the Dashboard's among them, take
    only `.hdr`, `.adc`, `.roi`. A bin filed two or more days from its own day is listed where a full listing finds
    it (and noted), after the bins of its folder's days.

    The archive's root is listed before this returns: FileNotFoundError when it does not exist, `NotAnArchiveError`
    for a file that is no archive.
    """
    fs, root = open_archive(url, storage_options)
    wanted = {parse_bin_id(text).id for text in bin_ids} if bin_ids is not None else None
    start, end = _utc(start), _utc(end)
    days = {parse_bin_id(text).time.date() for text in wanted} if wanted is not None else None
    label = f"listing {redact_url(url)}"
    top = _listed(fs, root, label)
    if top is None:
        raise FileNotFoundError(f"archive not found: {redact_url(url)}")
    _check_folder(top, root, url)
    exclude = frozenset(exclude)
    left_out = LeftOut(exclude=tuple(sorted(exclude)))
    window = _Window(root, wanted, start, end, exclude)
    walk = _Walk(fs, window, left_out, label)
    folders = walk.day_folders(top, _Days.of(start, end, days)) if by_day else None
    return fs, Listing(_stream(walk, folders, redact_url(url)), left_out)


def list_bins(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    bin_ids: Collection[str] | None = None,
    by_day: bool = True,
    exclude: Collection[str] = EXCLUDED_FOLDERS,
) -> tuple[fsspec.AbstractFileSystem, list[BinFiles], list[BinFailure]]:
    """The complete bins under `url` sorted by time, and failures (sorted by bin) for bins that lack a file: the
    whole of `iter_bins`, held in memory."""
    fs, stream = iter_bins(url, storage_options, start=start, end=end, bin_ids=bin_ids, by_day=by_day, exclude=exclude)
    return (fs, *_collect(stream))


def _collect(stream: Iterator[BinFiles | BinFailure]) -> tuple[list[BinFiles], list[BinFailure]]:
    complete: list[BinFiles] = []
    failures: list[BinFailure] = []
    for item in stream:
        (failures if isinstance(item, BinFailure) else complete).append(item)
    complete.sort(key=lambda files: (files.bin.time, files.bin.id))
    failures.sort(key=lambda failure: failure.bin)
    return complete, failures


def _listed(fs: fsspec.AbstractFileSystem, path: str, label: str) -> dict[str, dict[str, Any]] | None:
    """One folder's entries by path (one request per thousand on object storage); None when it does not exist."""

    def listing() -> dict[str, dict[str, Any]] | None:
        try:
            return {str(entry["name"]).rstrip("/"): entry for entry in fs.ls(path, detail=True, refresh=True)}
        except FileNotFoundError:
            return None

    return with_retries(listing, label)


@dataclass(frozen=True)
class _Days:
    """The days whose day folders a request lists: from `first` to `last` (None: open), and among `only` when given;
    each already widened by `NEAR_DAYS` on either side of the UTC days the request touches."""

    first: date | None
    last: date | None
    only: frozenset[date] | None

    @classmethod
    def of(cls, start: datetime | None, end: datetime | None, only: set[date] | None) -> _Days:
        near = timedelta(days=NEAR_DAYS)
        first = start.astimezone(UTC).date() - near if start is not None else None
        last = (end.astimezone(UTC) - timedelta(microseconds=1)).date() + near if end is not None else None
        steps = range(-NEAR_DAYS, NEAR_DAYS + 1)
        wide = None if only is None else frozenset(day + timedelta(days=step) for day in only for step in steps)
        return cls(first, last, wide)

    def holds(self, day: date) -> bool:
        return (
            (self.first is None or day >= self.first)
            and (self.last is None or day <= self.last)
            and (self.only is None or day in self.only)
        )

    def meet_year(self, year: int) -> bool:
        return (
            (self.first is None or year >= self.first.year)
            and (self.last is None or year <= self.last.year)
            and (self.only is None or any(day.year == year for day in self.only))
        )


@dataclass(frozen=True)
class _Window:
    """What a listing keeps: bins below `root` of the window [start, end) and among `wanted` (None: any), outside
    folders named in `exclude`."""

    root: str
    wanted: set[str] | None
    start: datetime | None
    end: datetime | None
    exclude: frozenset[str]

    def takes(self, bin_id: BinId) -> bool:
        return (self.wanted is None or bin_id.id in self.wanted) and _in_range(bin_id, self.start, self.end)


@dataclass
class _Walk:
    """How a listing walks the archive: folder links followed once (local file systems are the ones with links),
    folders that are not part of the archive left out, both counted in `left_out`."""

    fs: fsspec.AbstractFileSystem
    window: _Window
    left_out: LeftOut
    label: str
    followed: set[str] = field(default_factory=set)  # real paths of the folder links followed so far
    outside: int = 0  # bin files outside the requested window or bins (a count for the log)

    def relative(self, path: str) -> str:
        return relative_path(path, self.window.root)

    def day_folders(self, top: dict[str, dict[str, Any]], days: _Days) -> list[tuple[date, str]] | None:
        """The day folders that can hold requested bins, by day, listing only the years that can; None when the
        archive is not laid out by day (then it is listed whole, and what the look at its top noted is dropped:
        the whole listing counts it again)."""
        noted = LeftOut(exclude=self.left_out.exclude)
        folders, has_bins = self._subfolders(top, noted)
        years = [(_YEAR_FOLDER.fullmatch(posixpath.basename(path)), path) for path in folders]
        if has_bins or any(match is None for match, _ in years):
            return None
        chosen: list[tuple[date, str]] = []
        for match, year_path in years:
            assert match is not None
            year = int(match[1])
            if not days.meet_year(year):
                continue
            entries = _listed(self.fs, year_path, self.label) or {}
            folders, has_bins = self._subfolders(entries, noted)
            if has_bins:
                return None
            for folder in folders:
                day = folder_day(posixpath.basename(folder))
                if day is None or day.year != year:
                    return None
                if days.holds(day):
                    chosen.append((day, folder))
        self.left_out.merge(noted)
        chosen.sort()
        return chosen

    def _subfolders(self, entries: dict[str, dict[str, Any]], noted: LeftOut) -> tuple[list[str], bool]:
        """(the folders among a listing's entries that are part of the archive, whether it holds bin files itself);
        folders left out and files that look like bin files are counted in `noted`."""
        folders: list[str] = []
        has_bins = False
        for name, entry in entries.items():
            if self._is_folder(name, entry):
                if (reason := folder_reason(posixpath.basename(name), self.window.exclude)) is not None:
                    noted.folder(reason, self.relative(name))
                else:
                    folders.append(name)
            elif split_bin_filename(name) is not None:
                has_bins = True
            elif (reason := file_reason(posixpath.basename(name))) is not None:
                noted.file(reason, self.relative(name))
        return sorted(folders), has_bins

    def _is_folder(self, name: str, entry: dict[str, Any]) -> bool:
        if entry.get("type") == "directory":
            return True
        return bool(entry.get("islink")) and with_retries(lambda: self.fs.isdir(name), self.label)

    def found(self, path: str) -> dict[str, Any]:
        """Every file under `path` with its details (one paginated listing on object storage); folder links below
        it followed (`_links`)."""

        def find() -> dict[str, Any]:
            try:
                return self.fs.find(path, detail=True)
            except FileNotFoundError:  # removed since its parent was listed
                return {}

        listing = with_retries(find, self.label)
        return self._links(listing) if isinstance(self.fs, LocalFileSystem) else listing

    def _links(self, listing: dict[str, Any]) -> dict[str, Any]:
        """A local listing with its links resolved: a link to a file stays (read through the link), a link that
        leads nowhere is marked `broken_link`, a link to a folder is listed in its place, once: a link into the
        archive itself, to a folder above it, or to a folder already followed is left out (`LINK_LOOP`) - pyifcb's
        `list_data_dirs` follows folder links too (`os.path.isdir`)."""
        root = os.path.realpath(self.window.root)
        for name, entry in list(listing.items()):
            if not entry.get("islink") or entry.get("type") == "directory":
                continue
            if not os.path.exists(name):
                listing[name] = {**entry, "broken_link": True}
                continue
            if not os.path.isdir(name):
                continue
            del listing[name]
            target = os.path.realpath(name)
            if _within(target, root) or _within(root, target) or target in self.followed:
                self.left_out.folder(LINK_LOOP, self.relative(name))
                continue
            self.followed.add(target)
            listing.update(self.found(name))
        return listing


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _stream(walk: _Walk, folders: list[tuple[date, str]] | None, where: str) -> Iterator[BinFiles | BinFailure]:
    """Bins in time order, by their own day: the files of each day folder (or of the whole root when `folders` is
    None) are gathered by the day of their bin, and a day's bins are grouped once no folder still to list can hold
    them (the folders of days up to `NEAR_DAYS` after it are listed)."""
    window = walk.window
    found: set[str] = set()  # only with `wanted`: which of them were seen
    pending: dict[date, dict[str, Any]] = {}
    groups = (
        [(None, [window.root])]
        if folders is None
        else [(day, [path for _, path in same]) for day, same in itertools.groupby(folders, _first)]
    )

    def grouped(days: list[date]) -> Iterator[BinFiles | BinFailure]:
        for day in sorted(days):
            for item in _group(walk, pending.pop(day)):
                if window.wanted is not None:
                    found.add(item.bin if isinstance(item, BinFailure) else item.bin.id)
                yield item

    for folder_day_, paths in groups:
        for path in paths:
            for name, entry in walk.found(path).items():
                pending.setdefault(_bin_day(name) or folder_day_ or date.min, {})[name] = entry
        if folder_day_ is not None:
            yield from grouped([day for day in pending if day < folder_day_ - timedelta(days=NEAR_DAYS)])
    yield from grouped(list(pending))
    for line in walk.left_out.lines():
        log.info("%s: %s", where, line)
    if walk.outside:
        log.info("%s: %d bin file(s) outside the requested window or bins left out", where, walk.outside)
    for bin_text in sorted((window.wanted or set()) - found):
        yield BinFailure(bin_text, "files", NOT_IN_ARCHIVE)


def _first(pair: tuple[date, str]) -> date:
    return pair[0]


def _bin_day(path: str) -> date | None:
    """The UTC day of the bin a file is named after (any extension), or None."""
    stem = posixpath.basename(path).split(".", 1)[0]
    try:
        return parse_bin_id(stem).time.date()
    except IfcbFormatError:
        return None


def _group(walk: _Walk, listing: dict[str, Any]) -> list[BinFiles | BinFailure]:
    """A listing's files grouped by bin: complete bins by time, then failures for bins that lack a file, have copies
    that differ or extensions in capitals; what is left out is counted in `walk.left_out`."""
    window, left_out = walk.window, walk.left_out
    copies: dict[str, dict[str, Copy]] = {}  # bin -> folder -> its files there
    bin_of: dict[str, BinId] = {}
    miscased: dict[str, list[str]] = {}
    broken: dict[str, list[str]] = {}
    reasons: dict[str, str | None] = {}  # by folder: why it is not part of the archive (None: it is)
    for path, entry in listing.items():
        folder = posixpath.dirname(path)
        if folder not in reasons:
            reasons[folder] = path_reason(walk.relative(path), window.exclude)
        if (reason := reasons[folder]) is not None:
            left_out.file(reason, walk.relative(path))
            continue
        parsed = split_bin_filename(path)
        if parsed is None:
            _note_other_file(path, walk.relative(path), miscased, left_out)
            continue
        bin_id, ext = parsed
        if not window.takes(bin_id):
            walk.outside += 1
            continue
        bin_of[bin_id.id] = bin_id
        if entry.get("broken_link"):
            broken.setdefault(bin_id.id, []).append(walk.relative(path))
            continue
        copies.setdefault(bin_id.id, {}).setdefault(folder, {})[ext] = path
    complete: list[BinFiles] = []
    failures: list[BinFailure] = []
    for bin_text, paths in sorted(miscased.items()):
        if window.takes(parse_bin_id(bin_text)):
            copies.pop(bin_text, None)
            broken.pop(bin_text, None)
            names = ", ".join(sorted(posixpath.basename(path) for path in paths))
            reason = f"extension not in lower case: {names} (rename to .hdr, .adc, .roi)"
            failures.append(BinFailure(bin_text, "files", reason))
    for bin_text, links in sorted(broken.items()):
        copies.pop(bin_text, None)
        failures.append(BinFailure(bin_text, "files", f"links that lead nowhere: {', '.join(sorted(links))}"))
    for bin_text, folders in copies.items():
        item = _one_bin(walk, bin_of[bin_text], folders, listing)
        (failures if isinstance(item, BinFailure) else complete).append(item)
    complete.sort(key=lambda files: (files.bin.time, files.bin.id))
    return [*complete, *sorted(failures, key=lambda failure: failure.bin)]


def _one_bin(walk: _Walk, bin_id: BinId, folders: dict[str, Copy], listing: dict[str, Any]) -> BinFiles | BinFailure:
    """The bin of `folders` (the folders its files were found in), or its failure; identical copies and a folder of
    another day are noted in `walk.left_out`."""
    if len(folders) == 1:
        files = next(iter(folders.values()))
    else:
        chosen = choose_copy(walk.fs, bin_id, folders, listing)
        if isinstance(chosen, BinFailure):
            return chosen
        files, others = chosen
        for other in others:
            for ext, path in sorted(other.items()):
                shown = f"{walk.relative(path)} (same as {walk.relative(files[ext])})"
                walk.left_out.file(SAME_COPY, path, shown)
    if len(files) < len(EXTENSIONS):
        missing = [f".{ext}" for ext in EXTENSIONS if ext not in files]
        return BinFailure(bin_id.id, "files", f"missing {' and '.join(missing)}")
    entries = [listing[files[ext]] for ext in EXTENSIONS]
    listed = [entry.get("size") for entry in entries]
    # an HTTP directory listing gives no sizes: unknown (None), never 0, which would read as empty files
    sizes = None if None in listed else (int(listed[0]), int(listed[1]), int(listed[2]))
    folder = posixpath.dirname(files["hdr"])
    day = folder_day(posixpath.basename(folder))
    if day is not None and day != bin_id.time.date():
        walk.left_out.file(MISFILED, folder, f"{walk.relative(folder)}/{bin_id.id}")
    return BinFiles(bin_id, files["hdr"], files["adc"], files["roi"], sizes, file_stamp(entries))


def scan_archive(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    bin_ids: Collection[str] | None = None,
    exclude: Collection[str] = EXCLUDED_FOLDERS,
) -> Listing[BinMeta | BinFailure]:
    """Metadata of every bin (listing failures first, then bins by time), reading many bins' files at once, and
    the listing's `left_out` report.

    The archive is listed when this is called, so a bad URL raises here rather than at the first iteration.
    """
    fs, stream = iter_bins(url, storage_options, start=start, end=end, bin_ids=bin_ids, exclude=exclude)
    bins, failures = _collect(stream)
    return Listing(_scan(fs, bins, failures), stream.left_out)


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


def _note_other_file(path: str, relative: str, miscased: dict[str, list[str]], left_out: LeftOut) -> None:
    """Account for a file that is none of a bin's three files: a bin file with its extension in another case is
    remembered by bin (a failure of the bin), one that looks like part of the archive is counted in `left_out`
    (`left_out.file_reason`), any other file is ignored."""
    stem, dot, ext = posixpath.basename(path).rpartition(".")
    if dot and ext.lower() in EXTENSIONS:
        try:
            miscased.setdefault(parse_bin_id(stem).id, []).append(path)
            return
        except IfcbFormatError:
            pass
    if (reason := file_reason(posixpath.basename(path))) is not None:
        left_out.file(reason, relative)
    else:
        log.debug("ignoring %s: not a bin file", path)


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _in_range(bin_id: BinId, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or bin_id.time >= start) and (end is None or bin_id.time < end)
