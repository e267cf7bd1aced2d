"""The `.hdr` file: instrument settings of one bin, as text.

Three variants exist: newer `key: value` lines (first line `softwareVersion:`), older quoted free text ending in a
row of column names and a row of quoted values, and a transitional one (`... version 2.0; May 2010` then
`Sample Date ...`) with `run time = <s> s  inhibit time = <s>` on one line. All are reduced to one
`Header` with the keys the rest of the code needs under the newer names (`runTime`, `inhibitTime`, `ADCFileFormat`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pipeline.ifcb.errors import IfcbFormatError

Variant = Literal["keyvalue", "quoted", "runtime-line"]

_TRANSITIONAL_FIRST_LINE = "Imaging FlowCytobot Acquisition Software version 2.0; May 2010"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RUN_INHIBIT = re.compile(rf"run time\s*=\s*(?P<run>{_NUMBER})\s*s?\s+inhibit time\s*=\s*(?P<inhibit>{_NUMBER})", re.I)


@dataclass(frozen=True)
class Header:
    """A parsed header: its variant and its `key -> value` text (values stripped of padding and quotes).

    Keys are matched without regard to case (`runTime`, `RunTime`, `RUNTIME`): versions of the acquisition software
    differ in how they spell them, and a volume or column list must not be lost to a capital letter.
    """

    variant: Variant
    values: dict[str, str] = field(default_factory=dict)
    _folded: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        folded: dict[str, str] = {}
        for key, value in self.values.items():
            folded.setdefault(key.casefold(), value)  # the first spelling wins, as in the file
        object.__setattr__(self, "_folded", folded)

    def get(self, key: str) -> str | None:
        """The text of `key` in any letter case; None when absent."""
        return self._folded.get(key.casefold())

    def get_float(self, key: str) -> float | None:
        """The value of `key` as a number; None when absent; `IfcbFormatError` when present but not a number."""
        text = self.get(key)
        if text is None or text == "":
            return None
        try:
            return float(text)
        except ValueError:
            raise IfcbFormatError(f".hdr value of {key} is not a number: {text!r}", stage="hdr") from None

    @property
    def run_time(self) -> float | None:
        """Seconds the sample ran (`runTime`)."""
        return self.get_float("runTime")

    @property
    def inhibit_time(self) -> float | None:
        """Seconds the instrument was busy and could not trigger (`inhibitTime`)."""
        return self.get_float("inhibitTime")

    @property
    def roi_count(self) -> int | None:
        """How many ROIs with an image the instrument wrote (`roiCount`), where the header says; None otherwise.

        Newer acquisition software writes `triggerCount` and `roiCount` into the `.hdr` when a sample ends (real
        headers of IFCB134, e.g. `D20220522T003051_IFCB134.hdr`: `triggerCount: 3`, `roiCount: 2` over an `.adc`
        of 3 rows, 2 of them with an image; EuropeanIFCBGroup/iRfcb @ 9efb5011defa,
        `tests/testthat/test_data/test_data.zip`). iRfcb's QC check reads the two keys so
        (`R/ifcb_qc_sample.R`, `ifcb_qc_sample`): `roiCount` equals the `.adc` rows with an image, and
        `triggerCount` is no count of rows (one trigger can yield several ROIs), so only `roiCount` is read here.
        Older headers have neither. `IfcbFormatError` (stage "hdr") when it is present but not a whole number >= 0.
        """
        text = self.get("roiCount")
        if text is None or text == "":
            return None
        if not (text.isascii() and text.isdigit()):
            raise IfcbFormatError(f".hdr value of roiCount is not a whole number: {text!r}", stage="hdr")
        return int(text)

    @property
    def adc_columns(self) -> list[str] | None:
        """The `.adc` column names the instrument declares (`ADCFileFormat`), when it does."""
        text = self.get("ADCFileFormat")
        return [name.strip() for name in text.split(",")] if text else None


def parse_header(data: bytes | str) -> Header:
    """Parse the bytes (or text) of a `.hdr` file; raise `IfcbFormatError` when it is none of the known variants."""
    text = _decode(data)
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise IfcbFormatError(".hdr is empty", stage="hdr")
    first = lines[0].strip()
    if first.lower().startswith("softwareversion:"):
        return Header("keyvalue", _key_values(lines))
    if first == _TRANSITIONAL_FIRST_LINE and len(lines) > 1 and lines[1].startswith("Sample Date"):
        return Header("runtime-line", _runtime_line(lines))
    if first.startswith('"') and len(lines) >= 2:
        return Header("quoted", _quoted(lines))
    raise IfcbFormatError(f".hdr is not a known IFCB header variant; first line: {first[:80]!r}", stage="hdr")


def _decode(data: bytes | str) -> str:
    """Text of the header; the acquisition software wrote ASCII, so NUL bytes mean the file is not a header."""
    if isinstance(data, str):
        return data
    if b"\x00" in data:
        raise IfcbFormatError(".hdr contains binary data (NUL bytes): not a text header", stage="hdr")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # older Windows software; every byte maps to a character


def _key_values(lines: list[str]) -> dict[str, str]:
    """`key: value` lines; lines without a colon (firmware notes) carry no setting and are skipped."""
    values: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _quoted(lines: list[str]) -> dict[str, str]:
    """The older variant: the last two lines are column names and their quoted, comma-separated values."""
    names = lines[-2].strip().strip('"').split()
    cells = [cell.strip().strip('"').strip() for cell in lines[-1].split(",")]
    if len(names) != len(cells):
        raise IfcbFormatError(
            f".hdr (older variant): {len(names)} column names but {len(cells)} values on the last line", stage="hdr"
        )
    values = dict(zip(names, cells, strict=True))
    values["context"] = "\n".join(line.strip().strip('"') for line in lines[:-2])
    return values


def _runtime_line(lines: list[str]) -> dict[str, str]:
    """The transitional variant: settings as `key: value` where present, times from the `run time = ...` line."""
    values = _key_values(lines[1:])
    for line in lines:
        if (match := _RUN_INHIBIT.search(line)) is not None:
            values["runTime"], values["inhibitTime"] = match["run"], match["inhibit"]
            break
    else:
        raise IfcbFormatError(".hdr (2010 variant) has no 'run time = ... inhibit time = ...' line", stage="hdr")
    return values
