"""What a listing of an archive leaves out, and why: the rules, and the report `ls` and `classify` print.

The rule the listing keeps: nothing that looks like part of an archive is dropped without a word. Every file under
an archive's root that has a bin's name or one of a bin's extensions (`.hdr`, `.adc`, `.roi`), in any letter case,
through any link, in any folder, is either listed or counted here under the reason it was left out, with a few of
its paths as examples. Whole folders the listing does not open (an excluded folder beside the day folders) are
counted as folders.

Folders left out:
- the field's set-aside and staging folders, `bad`, `skip`, `beads`, `temp` and `data_temp`: WHOI's `ifcb-inference`
  walks archives with exactly this blacklist (`src/ifcb_infer/cli.py`, `argparse_runtime_args`, `_DIR_BLACKLIST`,
  passed to pyifcb's `ifcb/data/files.py` `list_data_dirs`, which compares whole folder names); pyifcb's own
  `DataDirectory`, which the IFCB Dashboard lists archives with, leaves out `skip` and `beads`. `--exclude-folders`
  replaces the list;
- recycle bins, trash and hidden folders, which no `--exclude-folders` brings back: they hold deleted or private
  copies, never an instrument's output. Hidden: a name starting with `.` (the freedesktop trash `.Trash-1000`,
  macOS's `.Trashes`, `.snapshot` on NetApp filers); recycle bins by the names file servers give them: Synology
  DSM's per-share `#recycle` (and `#snapshot`, `@eaDir` metadata), QNAP's `@Recycle`, Windows' `$RECYCLE.BIN` and
  `RECYCLER`, compared without regard to case.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

#: Folders left out of every listing unless `--exclude-folders` says otherwise (WHOI's `ifcb-inference` blacklist).
EXCLUDED_FOLDERS: tuple[str, ...] = ("bad", "skip", "beads", "temp", "data_temp")
#: Recycle-bin folder names of file servers and desktops (compared in lower case); hidden folders are left out too.
RECYCLE_FOLDERS = frozenset({"#recycle", "#snapshot", "@eadir", "@recycle", "$recycle.bin", "recycler"})
#: How many paths each reason keeps as examples.
EXAMPLES = 3

#: The reasons, as the report words them.
EXCLUDED = "in excluded folders: {names}; --exclude-folders changes the list"
RECYCLED = "in recycle bins, trash or hidden folders"
HIDDEN_FILE = "hidden files, such as macOS's ._ resource forks"
NOT_A_BIN_ID = ".hdr/.adc/.roi files whose name is not a bin id"
NOT_A_BIN_FILE = "files named after a bin that are none of its .hdr, .adc, .roi"
LINK_LOOP = "folder links that lead back into the archive (listed once, where they point)"
BROKEN_LINK = "links that lead nowhere"
SAME_COPY = "byte-identical copies of bins listed from another folder"
MISFILED = "bins filed under another day's folder"

#: A bin id anywhere in a file's name, in any letter case (`pipeline.ifcb.identifiers` gives the two schemes).
_BIN_ID_IN_NAME = re.compile(r"D\d{8}T\d{6}_IFCB\d{3}|IFCB\d+_\d{4}_\d{3}_\d{6}", re.IGNORECASE | re.ASCII)


def folder_reason(name: str, exclude: Collection[str]) -> str | None:
    """Why a folder named `name` is not part of the archive (a reason of this module), or None when it is."""
    if name.startswith(".") or name.casefold() in RECYCLE_FOLDERS:
        return RECYCLED
    if name in exclude:
        return EXCLUDED
    return None


def path_reason(relative: str, exclude: Collection[str]) -> str | None:
    """The reason of the first folder of `relative` (a file's path below the root, `/`-separated) that is not part
    of the archive, or None."""
    for folder in relative.strip("/").split("/")[:-1]:
        if (reason := folder_reason(folder, exclude)) is not None:
            return reason
    return None


def file_reason(name: str) -> str | None:
    """Why a file that is none of a bin's three files still looks like part of the archive: a hidden file, a
    bin-file extension on a name that is no bin id, a bin's name on another kind of file; None for other files."""
    _, dot, ext = name.rpartition(".")
    bin_extension = bool(dot) and ext.lower() in ("hdr", "adc", "roi")
    if name.startswith(".") and (bin_extension or _BIN_ID_IN_NAME.search(name)):
        return HIDDEN_FILE
    if bin_extension:
        return NOT_A_BIN_ID
    if _BIN_ID_IN_NAME.search(name):
        return NOT_A_BIN_FILE
    return None


@dataclass
class LeftOut:
    """What one listing left out: files and folders by reason, with up to `EXAMPLES` paths each, and the folder
    names `exclude` held. Its size is bounded by the number of reasons, not of files."""

    exclude: tuple[str, ...] = ()
    files: dict[str, int] = field(default_factory=dict)
    folders: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def file(self, reason: str, path: str, example: str | None = None) -> None:
        """Count one file left out for `reason` (`example`: how to show it, default its path)."""
        self.files[reason] = self.files.get(reason, 0) + 1
        self._example(reason, example or path)

    def folder(self, reason: str, path: str) -> None:
        """Count one folder left out whole (not opened) for `reason`."""
        self.folders[reason] = self.folders.get(reason, 0) + 1
        self._example(reason, path.rstrip("/") + "/")

    def merge(self, other: LeftOut) -> None:
        """Add what `other` counted."""
        for reason, count in other.files.items():
            self.files[reason] = self.files.get(reason, 0) + count
        for reason, count in other.folders.items():
            self.folders[reason] = self.folders.get(reason, 0) + count
        for reason, examples in other.examples.items():
            for example in examples:
                self._example(reason, example)

    def _example(self, reason: str, text: str) -> None:
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES:
            examples.append(text)

    def lines(self) -> list[str]:
        """One line per reason, e.g. `left out (in recycle bins, trash or hidden folders): 1 folder and 6 files:
        #recycle/, ...`; bins listed with a note (`MISFILED`) say `listed` instead."""
        lines = []
        for reason in dict.fromkeys([*self.folders, *self.files]):
            amounts = [_amount(self.folders.get(reason, 0), "folder"), _amount(self.files.get(reason, 0), "file")]
            amount = " and ".join(part for part in amounts if part)
            if reason == MISFILED:
                amount = _amount(self.files[reason], "bin")
            shown = ", ".join(self.examples.get(reason, []))
            total = self.folders.get(reason, 0) + self.files.get(reason, 0)
            more = f" ({len(self.examples.get(reason, []))} of {total} shown)" if total > EXAMPLES else ""
            verb = "listed" if reason == MISFILED else "left out"
            lines.append(f"{verb} ({self._worded(reason)}): {amount}: {shown}{more}")
        return lines

    def to_dict(self) -> dict[str, dict[str, object]]:
        """The report as JSON: reason -> {files, folders, examples}."""
        reasons = dict.fromkeys([*self.folders, *self.files])
        return {
            self._worded(reason): {
                "files": self.files.get(reason, 0),
                "folders": self.folders.get(reason, 0),
                "examples": list(self.examples.get(reason, [])),
            }
            for reason in reasons
        }

    def _worded(self, reason: str) -> str:
        return reason.format(names=", ".join(self.exclude) or "none") if reason == EXCLUDED else reason


def _amount(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}" if count else ""


def relative_path(path: str, root: str) -> str:
    """`path` below `root`, without a leading `/` (the path itself when it is not below `root`)."""
    return path[len(root) :].lstrip("/") if path.startswith(root) else path.lstrip("/")
