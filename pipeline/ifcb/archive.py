"""Archives: a folder (local or object storage) of bins, flat or in day folders (`D2019/D20190101/`,
`2012/IFCB5_2012_028/`).

Listing follows the request and streams: an archive laid out by day is listed day folder by day folder, in time
order, and only the days a time window (or a list of bins) can touch; any other layout is one recursive `find` (one
paginated listing on object storage). Files are grouped by bin id; unrelated files are ignored; a bin that lacks a
file becomes a `BinFailure` - never a crash, never a silent skip.

Folders named `skip` or `beads` (at any depth) are left out, as every WHOI reader does: pyifcb's `DataDirectory`
(`ifcb/data/files.py`, blacklist `['skip', 'beads']`), which the IFCB Dashboard lists archives with. `skip/` holds
bins set aside by their operators, `beads/` bead-calibration runs, neither of them plankton. `exclude` changes the
list. Nothing else is dropped without a word: files named like a bin's files that the listing cannot take (an
extension in capitals, a name that is not a bin id) are failures or a logged count.
"""

from __future__ import annotations

import itertools
import logging
import posixpath
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.zip import ZipFileSystem

from model.safe_zip import check_zip
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
#: The reason of a failure for a requested bin the archive does not hold.
NOT_IN_ARCHIVE = "not found in the archive"
#: Bins whose `.hdr` and `.adc` `scan_archive` fetches in one batch (concurrent requests on object storage).
SCAN_BATCH = 64


def open_archive(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of `url` and the archive's root path on it.

    A `zip://` archive's directory is checked first (`model.safe_zip.check_zip`, no bound on the total): a member
    that inflates more than a real file could is refused with `UnsafeZipError` before any bin is read."""
    fs, root = url_to_fs(url, **fs_options(url, storage_options))
    if isinstance(fs, ZipFileSystem):
        check_zip(fs.zip, redact_url(url), None)
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


#: Folder names of archives laid out by day: years (`D2019`, `2012`), then days (`D20190101`, `IFCB5_2012_028`).
_YEAR_FOLDER = re.compile(r"D?(\d{4})", re.ASCII)
_DAY_FOLDER = re.compile(r"D(\d{4})(\d{2})(\d{2})|IFCB\d+_(\d{4})_(\d{3})", re.ASCII)


def folder_day(name: str) -> date | None:
    """The UTC day a day folder holds (`D20190101` -> 2019-01-01, `IFCB5_2012_028` -> 2012-01-28), else None."""
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


def iter_bins(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    bin_ids: Collection[str] | None = None,
    by_day: bool = True,
    exclude: Collection[str] = EXCLUDED_FOLDERS,
) -> tuple[fsspec.AbstractFileSystem, Iterator[BinFiles | BinFailure]]:
    """The archive's bins (complete ones as `BinFiles`, the others as failures) as a stream, day by day in time order.

    An archive laid out by day (`D2019/D20190101/`, `2012/IFCB5_2012_028/`, both may sit side by side) is listed
    folder by folder, and only the day folders that can hold the request: those of the window [start, end) (naive
    datetimes are UTC) or of the days of `bin_ids`. Memory holds one day's listing at a time. Any other layout (bins
    beside the years, folders that are not days) is listed whole, as one recursive listing. `bin_ids` keeps only
    those bins, and a requested bin that is not in the archive is a failure too (at the end of the stream).
    `by_day=False` lists any archive whole (fewer requests for a full pass on object storage; the whole listing in
    memory). Folders named in `exclude` are left out (counted in the log). A bin whose files have an extension in
    another case (`.ADC`) is a failure: IFCB readers, the Dashboard's among them, take only `.hdr`, `.adc`, `.roi`.
    Files with one of those extensions whose name is not a bin id are counted in a warning.

    The archive's root is listed before this returns: FileNotFoundError when it does not exist.
    """
    fs, root = open_archive(url, storage_options)
    wanted = {parse_bin_id(text).id for text in bin_ids} if bin_ids is not None else None
    start, end = _utc(start), _utc(end)
    days = {parse_bin_id(text).time.date() for text in wanted} if wanted is not None else None
    label = f"listing {redact_url(url)}"
    top = _listed(fs, root, label)
    if top is None:
        raise FileNotFoundError(f"archive not found: {redact_url(url)}")
    exclude = frozenset(exclude)
    folders = _day_folders(fs, top, _Days.of(start, end, days), exclude, label) if by_day else None
    window = _Window(root, wanted, start, end, exclude)
    return fs, _stream(fs, folders, window, redact_url(url), label)


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
    complete: list[BinFiles] = []
    failures: list[BinFailure] = []
    for item in stream:
        (failures if isinstance(item, BinFailure) else complete).append(item)
    complete.sort(key=lambda files: (files.bin.time, files.bin.id))
    failures.sort(key=lambda failure: failure.bin)
    return fs, complete, failures


def _listed(fs: fsspec.AbstractFileSystem, path: str, label: str) -> dict[str, dict[str, Any]] | None:
    """One folder's entries by path (one request per thousand on object storage); None when it does not exist."""

    def listing() -> dict[str, dict[str, Any]] | None:
        try:
            return {str(entry["name"]).rstrip("/"): entry for entry in fs.ls(path, detail=True, refresh=True)}
        except FileNotFoundError:
            return None

    return with_retries(listing, label)


def _subfolders(entries: dict[str, dict[str, Any]], exclude: frozenset[str]) -> tuple[list[str], bool]:
    """(folders among a listing's entries, less those named in `exclude`, whether it holds bin files itself)."""
    folders = [name for name, entry in entries.items() if entry.get("type") == "directory"]
    for name in folders:
        if posixpath.basename(name) in exclude:
            log.info("%s left out (an excluded folder)", name)
    folders = [name for name in folders if posixpath.basename(name) not in exclude]
    has_bins = any(
        entry.get("type") != "directory" and split_bin_filename(name) is not None for name, entry in entries.items()
    )
    return sorted(folders), has_bins


@dataclass(frozen=True)
class _Days:
    """The UTC days a request can touch: from `first` to `last` (None: open), and among `only` when given."""

    first: date | None
    last: date | None
    only: frozenset[date] | None

    @classmethod
    def of(cls, start: datetime | None, end: datetime | None, only: set[date] | None) -> _Days:
        first = start.astimezone(UTC).date() if start is not None else None
        last = (end.astimezone(UTC) - timedelta(microseconds=1)).date() if end is not None else None
        return cls(first, last, None if only is None else frozenset(only))

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


def _day_folders(
    fs: fsspec.AbstractFileSystem, top: dict[str, dict[str, Any]], days: _Days, exclude: frozenset[str], label: str
) -> list[tuple[date, str]] | None:
    """The day folders that can hold requested bins, by day, listing only the years that can; None when the archive
    is not laid out by day (then it is listed whole)."""
    folders, has_bins = _subfolders(top, exclude)
    years = [(_YEAR_FOLDER.fullmatch(posixpath.basename(path)), path) for path in folders]
    if has_bins or any(match is None for match, _ in years):
        return None
    chosen: list[tuple[date, str]] = []
    for match, year_path in years:
        assert match is not None
        year = int(match[1])
        if not days.meet_year(year):
            continue
        entries = _listed(fs, year_path, label) or {}
        folders, has_bins = _subfolders(entries, exclude)
        if has_bins:
            return None
        for folder in folders:
            day = folder_day(posixpath.basename(folder))
            if day is None or day.year != year:
                return None
            if days.holds(day):
                chosen.append((day, folder))
    chosen.sort()
    return chosen


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
class _LeftOut:
    """Files a listing did not take, for one log line per kind at its end."""

    excluded: int = 0
    outside: int = 0
    unnamed: list[str] = field(default_factory=list)

    def log(self, where: str, exclude: Collection[str]) -> None:
        if self.unnamed:
            examples = ", ".join(posixpath.basename(path) for path in sorted(self.unnamed)[:3])
            log.warning("%s: %d .hdr/.adc/.roi file(s) whose name is not a bin id were left out, e.g. %s",
                        where, len(self.unnamed), examples)  # fmt: skip
        if self.excluded:
            log.info("%s: %d file(s) in excluded folders (%s) left out", where, self.excluded, ", ".join(exclude))
        if self.outside:
            log.info("%s: %d bin file(s) outside the requested window or bins left out", where, self.outside)


def _stream(
    fs: fsspec.AbstractFileSystem, folders: list[tuple[date, str]] | None, window: _Window, where: str, label: str
) -> Iterator[BinFiles | BinFailure]:
    """Bins day by day (folders of one day together), or of the whole root when `folders` is None."""
    found: set[str] = set()  # only with `wanted`: which of them were seen
    left_out = _LeftOut()
    groups = (
        [[window.root]] if folders is None else [[p for _, p in same] for _, same in itertools.groupby(folders, _first)]
    )
    for paths in groups:
        listing: dict[str, Any] = {}
        for path in paths:
            listing.update(_found(fs, path, label))
        for item in _group(listing, window, left_out):
            if window.wanted is not None:
                found.add(item.bin if isinstance(item, BinFailure) else item.bin.id)
            yield item
    left_out.log(where, sorted(window.exclude))
    for bin_text in sorted((window.wanted or set()) - found):
        yield BinFailure(bin_text, "files", NOT_IN_ARCHIVE)


def _first(pair: tuple[date, str]) -> date:
    return pair[0]


def _found(fs: fsspec.AbstractFileSystem, path: str, label: str) -> dict[str, Any]:
    """Every file under `path` with its details (one paginated listing on object storage)."""

    def find() -> dict[str, Any]:
        try:
            return fs.find(path, detail=True)
        except FileNotFoundError:  # removed since its parent was listed
            return {}

    return with_retries(find, label)


def _group(listing: dict[str, Any], window: _Window, left_out: _LeftOut) -> list[BinFiles | BinFailure]:
    """A listing's files grouped by bin: complete bins by time, then failures for bins that lack a file, have files
    in several places or extensions in capitals."""
    found: dict[str, dict[str, str]] = {}
    bin_of: dict[str, BinId] = {}
    duplicates: dict[str, set[str]] = {}
    miscased: dict[str, list[str]] = {}
    for path in listing:
        if window.exclude and in_excluded_folder(path, window.root, window.exclude):
            left_out.excluded += 1
            continue
        parsed = split_bin_filename(path)
        if parsed is None:
            _note_other_file(path, miscased, left_out.unnamed)
            continue
        bin_id, ext = parsed
        if not window.takes(bin_id):
            left_out.outside += 1
            continue
        bin_of[bin_id.id] = bin_id
        files = found.setdefault(bin_id.id, {})
        if ext in files:
            duplicates.setdefault(bin_id.id, set()).update((files[ext], path))
        files[ext] = path
    complete: list[BinFiles] = []
    failures: list[BinFailure] = []
    for bin_text, paths in sorted(miscased.items()):
        if window.takes(parse_bin_id(bin_text)):
            found.pop(bin_text, None)
            names = ", ".join(sorted(posixpath.basename(path) for path in paths))
            reason = f"extension not in lower case: {names} (rename to .hdr, .adc, .roi)"
            failures.append(BinFailure(bin_text, "files", reason))
    for bin_text, files in found.items():
        listed = [listing[files[ext]].get("size") for ext in EXTENSIONS] if len(files) == 3 else [None]
        # an HTTP directory listing gives no sizes: unknown (None), never 0, which would read as empty files
        sizes = None if None in listed else tuple(int(size) for size in listed)
        stamp = file_stamp([listing[files[ext]] for ext in EXTENSIONS]) if len(files) == 3 else ""
        entry = BinFiles(bin_of[bin_text], files.get("hdr"), files.get("adc"), files.get("roi"), sizes, stamp)
        if bin_text in duplicates:
            places = ", ".join(sorted(duplicates[bin_text]))
            failures.append(BinFailure(bin_text, "files", f"files found in several places: {places}"))
        elif entry.missing:
            failures.append(BinFailure(bin_text, "files", f"missing {' and '.join(entry.missing)}"))
        else:
            complete.append(entry)
    complete.sort(key=lambda files: (files.bin.time, files.bin.id))
    return [*complete, *sorted(failures, key=lambda failure: failure.bin)]


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


def in_excluded_folder(path: str, root: str, exclude: Collection[str]) -> bool:
    """Whether `path` lies in a folder (below `root`, at any depth) whose name is in `exclude`."""
    relative = path[len(root) :] if path.startswith(root) else path
    return any(folder in exclude for folder in relative.strip("/").split("/")[:-1])


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


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _in_range(bin_id: BinId, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or bin_id.time >= start) and (end is None or bin_id.time < end)
