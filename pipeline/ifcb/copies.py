"""One bin found in several folders: which copy is read, and when the copies are a conflict.

Archives gather copies of a bin: a folder copied twice over a sync, a backup beside the day folders, a link to a
day folder. pyifcb's `DataDirectory` and the Dashboard look for a bin's three files in one folder, so a bin is the
three files of one folder. The rule here: copies whose files are byte-identical are one bin (the copy in the bin's
own day folder is read, else the first by path, and the others are reported); copies that differ are a conflict,
recorded as the bin's failure, because no reader can know which one the instrument wrote; files split over folders
with no folder holding all three are a failure naming where each one is.

Comparing costs no read where the listing already knows: two paths to one file (the same device and inode, as a hard
link or a link to a folder gives), two equal plain ETags (an object store's MD5 of a single-part upload), or two
sizes that differ. Otherwise both files are read through in blocks (bounded memory), only for bins with copies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fsspec import AbstractFileSystem

from pipeline.faults import TransientError, with_retries
from pipeline.ifcb.errors import BinFailure
from pipeline.ifcb.identifiers import BinId, day_folder

EXTENSIONS = ("hdr", "adc", "roi")
#: Bytes read from each of two files at a time while comparing them.
BLOCK = 1 << 20

Copy = dict[str, str]  # extension -> path, the files of one bin in one folder


def choose_copy(
    fs: AbstractFileSystem, bin_id: BinId, copies: Mapping[str, Copy], listing: Mapping[str, dict[str, Any]]
) -> tuple[Copy, list[Copy]] | BinFailure:
    """The copy to read of a bin found in several folders (`copies`: folder -> its files) and the identical copies
    left aside, or the bin's failure: copies that differ, or no folder with all three files. `listing`: the
    listing's entries by path (sizes, ETags, inodes)."""
    whole = sorted((folder for folder, files in copies.items() if len(files) == len(EXTENSIONS)), key=_rank(bin_id))
    if not whole:
        places = "; ".join(f"{folder}: {', '.join(sorted(files))}" for folder, files in sorted(copies.items()))
        return BinFailure(bin_id.id, "files", f"files in several folders, none with all three: {places}")
    chosen = copies[whole[0]]
    others = [files for folder, files in sorted(copies.items()) if folder != whole[0]]
    for files in others:
        for ext, path in files.items():
            try:
                same = same_file(fs, chosen[ext], path, listing)
            except TransientError as err:
                return BinFailure(bin_id.id, "files", f"comparing its copies: {err}", kind="transient")
            if not same:
                return BinFailure(
                    bin_id.id, "files", f"copies that differ: {chosen[ext]} and {path} (remove or rename one)"
                )
    return chosen, others


def _rank(bin_id: BinId) -> Callable[[str], tuple[bool, str]]:
    """Sort key of folders: the bin's own day folder first (`identifiers.day_folder`), then by path."""
    own = day_folder(bin_id)
    return lambda folder: (not folder.rstrip("/").endswith(own), folder)


def same_file(fs: AbstractFileSystem, a: str, b: str, listing: Mapping[str, dict[str, Any]]) -> bool:
    """Whether files `a` and `b` hold the same bytes: from the listing where it tells, else read through."""
    first, second = listing.get(a, {}), listing.get(b, {})
    if first.get("ino") and first.get("ino") == second.get("ino") and first.get("dev", 0) == second.get("dev", 0):
        return True
    if first.get("size") is not None and second.get("size") is not None and first["size"] != second["size"]:
        return False
    tags = [str(entry.get("ETag") or entry.get("etag") or "").strip('"') for entry in (first, second)]
    if all(tags) and "-" not in "".join(tags):  # plain MD5s of whole objects
        return tags[0] == tags[1]
    return with_retries(lambda: _same_bytes(fs, a, b), f"comparing {a} with {b}")


def _same_bytes(fs: AbstractFileSystem, a: str, b: str) -> bool:
    with fs.open(a, "rb") as first, fs.open(b, "rb") as second:
        while True:
            block = first.read(BLOCK)
            if block != second.read(BLOCK):
                return False
            if not block:
                return True
