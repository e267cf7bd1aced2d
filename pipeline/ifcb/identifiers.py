"""IFCB bin and ROI identifiers.

Two naming schemes exist; the scheme decides the `.adc` schema (newer `DYYYYMMDDTHHMMSS_IFCBnnn` -> "v2", older
`IFCBn_YYYY_DDD_HHMMSS` -> "v1"), never sniffing the file. Timestamps in identifiers are UTC.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pipeline.ifcb.errors import IfcbFormatError

Schema = Literal["v1", "v2"]

_NEWER = re.compile(r"D(?P<date>\d{8})T(?P<time>\d{6})_(?P<instrument>IFCB\d{3})", re.ASCII)
_OLDER = re.compile(r"(?P<instrument>IFCB\d+)_(?P<year>\d{4})_(?P<doy>\d{3})_(?P<time>\d{6})", re.ASCII)
_ROI_DIGITS = 5
_SCHEMES = (
    "DYYYYMMDDTHHMMSS_IFCBnnn (e.g. D20130526T095207_IFCB013) or IFCBn_YYYY_DDD_HHMMSS (e.g. IFCB5_2012_028_081515)"
)


@dataclass(frozen=True)
class BinId:
    """A parsed bin identifier: the id text, the instrument (as named in the id), the UTC sample time, the schema."""

    id: str
    instrument: str
    time: datetime
    schema: Schema

    def __str__(self) -> str:
        return self.id

    @property
    def instrument_number(self) -> int:
        """The instrument's serial number (`IFCB013` -> 13, `IFCB5` -> 5)."""
        return int(self.instrument[4:])


@functools.lru_cache(maxsize=65536)  # a listing names each bin three times, one file after the other
def parse_bin_id(text: str) -> BinId:
    """Parse a bin identifier (the whole text, no extension or folder); raise `IfcbFormatError` otherwise."""
    if (match := _NEWER.fullmatch(text)) is not None:
        day, clock = match["date"], match["time"]
        try:
            time = datetime(int(day[:4]), int(day[4:6]), int(day[6:]), int(clock[:2]), int(clock[2:4]),
                            int(clock[4:]), tzinfo=UTC)  # fmt: skip
        except ValueError as err:
            raise IfcbFormatError(f"bin id {text!r} has an impossible date or time: {err}") from None
        return BinId(id=text, instrument=match["instrument"], time=time, schema="v2")
    if (match := _OLDER.fullmatch(text)) is not None:
        year, doy = int(match["year"]), int(match["doy"])
        try:
            clock = datetime.strptime(match["time"], "%H%M%S")
            first = datetime(year, 1, 1, tzinfo=UTC)
        except ValueError as err:
            raise IfcbFormatError(f"bin id {text!r} has an impossible time: {err}") from None
        time = first + timedelta(days=doy - 1, hours=clock.hour, minutes=clock.minute, seconds=clock.second)
        if doy < 1 or time.year != year:
            raise IfcbFormatError(f"bin id {text!r} has day of year {doy:03d}, outside year {year}")
        return BinId(id=text, instrument=match["instrument"], time=time, schema="v1")
    raise IfcbFormatError(f"not an IFCB bin id: {text!r}; expected {_SCHEMES}")


def day_folder(bin_id: BinId) -> str:
    """The day folder archives and the Dashboard keep a bin in, by the bin's own naming scheme (UTC).

    Newer bins: `D2024/D20240101` (year, then day); older bins: `2012/IFCB5_2012_028` (year, then instrument, year and
    day of year). The Dashboard's reader descends only into folders whose names occur in the bin id (pyifcb,
    `ifcb/data/files.py`, `validate_path`), so each folder is a prefix of the id.
    """
    if bin_id.schema == "v1":
        return f"{bin_id.time:%Y}/{bin_id.id.rsplit('_', 1)[0]}"
    return f"D{bin_id.time:%Y}/D{bin_id.time:%Y%m%d}"


def roi_id(bin_id: str, roi_number: int) -> str:
    """The ROI id `<bin>_<ROI number, zero-padded to at least 5 digits>`; the ROI number is the 1-based `.adc` row.

    A bin can hold more than 99,999 triggers: their ids simply have more digits (`<bin>_100000`), as pyifcb writes
    them (`ifcb/data/identifiers.py`, the target number formatted `%05d`).
    """
    if roi_number < 1:
        raise IfcbFormatError(f"ROI number {roi_number} out of range: ROI numbers start at 1")
    return f"{bin_id}_{roi_number:0{_ROI_DIGITS}d}"


def parse_roi_id(text: str) -> tuple[BinId, int]:
    """Split a ROI id into its bin id and ROI number; raise `IfcbFormatError` for anything else.

    The number is written as `roi_id` writes it: at least 5 digits, zero-padded to 5, never more padding.
    """
    bin_part, sep, number = text.rpartition("_")
    if not sep or not number.isascii() or not number.isdigit() or int(number) == 0 or number != f"{int(number):05d}":
        raise IfcbFormatError(
            f"not an IFCB ROI id: {text!r}; expected <bin id>_<ROI number, from 00001, at least 5 digits>"
        )
    return parse_bin_id(bin_part), int(number)


def roi_group(stem: str) -> str:
    """The bin of an image file named by its ROI id (`<bin>_00042.png` -> `<bin>`), else the stem itself.

    Training splits by this group, so that ROIs of one bin never sit on both sides of a split.
    """
    try:
        return parse_roi_id(stem)[0].id
    except IfcbFormatError:
        return stem
