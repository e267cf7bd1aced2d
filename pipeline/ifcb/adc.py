"""The `.adc` file: one CSV row per trigger, no header row; row k (1-based) is ROI number k.

One small class per schema names every column index, so the code reads like the format's documentation table.
Where a newer bin's header names its columns (`ADCFileFormat`), the names place them instead (`named_schema`), and a
list that lacks a column the reader needs is refused rather than read by position into wrong images.

Parsing goes through numpy in one call, which keeps thousands of bins fast; only when that call fails (a field that
is not a number, a row of another length, a blank line) does a slower pass read the file line by line. Either way a
bad row costs only what it holds, and keeps its place, so every other row keeps its ROI number. The rule follows
WHOI's ifcbkit (`src/ifcbkit/adc.py` @ b66492cc: `_parse_fields`, `iter_adc_targets`): a line is a ROI only when its
trigger number, ROI x, y, width, height and start byte read as whole numbers and its box is not empty; a line that
does not read is skipped, and line i is still target i + 1. So in the real bin `D20130526T095207_IFCB013` with a
blank width on line 49, ifcbkit keeps the other 18 of its 19 ROIs, with their numbers. (pyifcb, `ifcb/data/adc.py`
`parse_adc_file`, has no rule for one row: pandas reads the whole file, a blank field becomes NaN and reading that
ROI fails, a word turns its whole column to text; a blank line is skipped and shifts every later ROI number.) Row by
row (`AdcTable`):

- A line with another number of fields than most lines of the file, or a blank line, is unreadable as a whole: no
  ROI, and not counted in the volume. (ifcbkit keeps a longer line by position; a comma lost or added moves every
  later field, so no field of such a line is taken.) A last line cut off mid-write is such a line.
- The ROI fields (trigger number, ROI x, y, width, height, start byte) must be whole numbers, and width, height and
  start byte not below 0; a row where one is not is left out (no ROI) unless its width or height reads 0 (a trigger
  without an image, whatever the rest says). ifcbkit takes the fields with `int()`, which refuses a blank, `NaN`,
  a word or `3.5`; a negative width it passes on, and PIL then refuses the whole bin (`Width and height must be >=
  0`): here that row alone is left out.
- The fields the volume analysed reads (`VOLUME_FIELDS`, `pipeline.ifcb.volume`) must be numbers: a row where one
  is not keeps its ROI and is left out of the volume (`AdcTable.volume_table`). The times are cumulative (run and
  inhibit time, or frame grab time, since the sample started), so the rows around it still give the volume.
- Any other field nothing reads: its row is kept as it is.

Each case is one warning of the table (`AdcTable.warnings`) that counts the rows and names the first few with what
is wrong; `rows_left_out` reads the count of rows left out back. A file with rows left out and no image left fails
the bin (a bin of 0 ROIs would say the water held none), and so does one whose lines mostly lack the columns of its
schema (binary garbage among them).
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from pipeline.ifcb.errors import IfcbFormatError
from pipeline.ifcb.identifiers import Schema


class AdcSchemaV1:
    """Older instruments (`IFCBn_YYYY_DDD_HHMMSS`): 15 columns, each row ending in a trailing comma."""

    name: Schema = "v1"
    TRIGGER = 0
    TRIGGER_OPEN_TIME = 7
    FRAME_GRAB_TIME = 8
    ROI_X = 9
    ROI_Y = 10
    ROI_WIDTH = 11
    ROI_HEIGHT = 12
    START_BYTE = 13
    N_COLUMNS = 15
    VOLUME_FIELDS = ("TRIGGER", "TRIGGER_OPEN_TIME", "FRAME_GRAB_TIME")


class AdcSchemaV2:
    """Newer instruments (`DYYYYMMDDTHHMMSS_IFCBnnn`): 24 columns as `ADCFileFormat` lists them.

    Some instruments write fewer columns (no run/inhibit time) or more; columns are read by position.
    """

    name: Schema = "v2"
    TRIGGER = 0
    ADC_TIME = 1
    PMT_A, PMT_B, PMT_C, PMT_D = 2, 3, 4, 5
    PEAK_A, PEAK_B, PEAK_C, PEAK_D = 6, 7, 8, 9
    TIME_OF_FLIGHT = 10
    GRAB_TIME_START = 11
    GRAB_TIME_END = 12
    ROI_X = 13
    ROI_Y = 14
    ROI_WIDTH = 15
    ROI_HEIGHT = 16
    START_BYTE = 17
    COMPARATOR_OUT = 18
    START_POINT = 19
    SIGNAL_LENGTH = 20
    STATUS = 21
    RUN_TIME = 22
    INHIBIT_TIME = 23
    N_COLUMNS = 24
    VOLUME_FIELDS = ("ADC_TIME", "RUN_TIME", "INHIBIT_TIME")


AdcSchema = type[AdcSchemaV1] | type[AdcSchemaV2]
SCHEMAS: dict[str, AdcSchema] = {"v1": AdcSchemaV1, "v2": AdcSchemaV2}

#: The columns the reader uses, by the names `ADCFileFormat` gives them (compared in lower case without spaces or
#: punctuation: `trigger#`, `ADC_time`, `ROIx`, `start_byte`, `runTime` ...). Without the required ones no image
#: can be cut; without the optional ones the volume comes from the header.
_REQUIRED_NAMES = {"TRIGGER": "trigger", "ROI_X": "roix", "ROI_Y": "roiy", "ROI_WIDTH": "roiwidth",
                   "ROI_HEIGHT": "roiheight", "START_BYTE": "startbyte"}  # fmt: skip
_OPTIONAL_NAMES = {"ADC_TIME": "adctime", "RUN_TIME": "runtime", "INHIBIT_TIME": "inhibittime"}
MISSING = -1  # the index of a column the file does not have

#: The fields that place a row's image (ifcbkit's `_parse_fields` reads the same six), and what warnings call them.
ROI_FIELDS = ("TRIGGER", "ROI_X", "ROI_Y", "ROI_WIDTH", "ROI_HEIGHT", "START_BYTE")
_SIZE_FIELDS = ("ROI_WIDTH", "ROI_HEIGHT", "START_BYTE")  # never below 0: they count pixels and bytes
_LABELS = {"TRIGGER": "trigger number", "ROI_X": "ROI x", "ROI_Y": "ROI y", "ROI_WIDTH": "ROI width",
           "ROI_HEIGHT": "ROI height", "START_BYTE": "start byte", "ADC_TIME": "ADC time", "RUN_TIME": "run time",
           "INHIBIT_TIME": "inhibit time", "TRIGGER_OPEN_TIME": "trigger open time",
           "FRAME_GRAB_TIME": "frame grab time"}  # fmt: skip
LISTED = 3  # rows a warning names; the rest are counted
LEFT_OUT = "left out (no ROI)"
_LEFT_OUT_COUNT = re.compile(r"\.adc: (\d+) rows? left out \(no ROI\)")


def _name_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


@functools.lru_cache(maxsize=64)  # an archive's bins share a handful of column lists
def named_schema(names: tuple[str, ...]) -> AdcSchema:
    """The v2 schema with the column indices that `names` (a header's `ADCFileFormat`) give; `IfcbFormatError`
    when a column the reader needs is not named."""
    index: dict[str, int] = {}
    for position, name in enumerate(names):
        index.setdefault(_name_key(name), position)
    lacking = [key for key in _REQUIRED_NAMES.values() if key not in index]
    if lacking:
        raise IfcbFormatError(
            f".hdr ADCFileFormat names no column for {', '.join(lacking)}: the images cannot be placed "
            f"(columns named: {', '.join(names)})",
            stage="adc",
        )
    columns = {attr: index[key] for attr, key in _REQUIRED_NAMES.items()}
    columns.update({attr: index.get(key, MISSING) for attr, key in _OPTIONAL_NAMES.items()})
    return type("AdcSchemaV2Named", (AdcSchemaV2,), {**columns, "N_COLUMNS": len(names)})


@dataclass(frozen=True)
class AdcTable:
    """The rows of one `.adc` as float64 (n_rows, n_columns), NaN where a field is not a number, with the schema that
    names the columns; `placed`: whether each row's ROI fields are sound (`_placed`; None: every row's), and the
    warnings about rows left out, in part or whole."""

    schema: AdcSchema
    values: np.ndarray
    warnings: tuple[str, ...] = ()
    placed: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_columns(self) -> int:
        return int(self.values.shape[1])

    def has(self, column: int) -> bool:
        """Whether this file has the column (some v2 instruments write fewer columns, or name fewer)."""
        return 0 <= column < self.n_columns

    def column(self, column: int) -> np.ndarray:
        return self.values[:, column]

    def _geometry(self, column: int) -> np.ndarray:
        """A ROI field as int64, 0 in the rows whose ROI fields are not sound: they have no image."""
        values = self.values[:, column]
        if self.placed is not None:
            values = np.where(self.placed, values, 0)
        return values.astype(np.int64)

    @property
    def width(self) -> np.ndarray:
        return self._geometry(self.schema.ROI_WIDTH)

    @property
    def height(self) -> np.ndarray:
        return self._geometry(self.schema.ROI_HEIGHT)

    @property
    def start_byte(self) -> np.ndarray:
        return self._geometry(self.schema.START_BYTE)

    @property
    def roi_numbers(self) -> np.ndarray:
        """1-based ROI numbers of the rows that have an image (width x height > 0), ascending."""
        return np.flatnonzero((self.width * self.height) > 0).astype(np.int64) + 1

    @property
    def left_out(self) -> np.ndarray:
        """1-based numbers of the rows left out: ROI fields not sound, and no width or height of 0 saying the row has
        no image anyway. Each may have been a ROI; none of them shifts the numbers of the rows after it."""
        if self.placed is None:
            return np.empty(0, dtype=np.int64)
        s = self.schema
        imageless = (self.values[:, s.ROI_WIDTH] == 0) | (self.values[:, s.ROI_HEIGHT] == 0)
        return np.flatnonzero(~self.placed & ~imageless).astype(np.int64) + 1

    @property
    def volume_columns(self) -> list[int]:
        """The columns the volume analysed reads from this file; none where it lacks one of them (a v2 file without
        run or inhibit times: the volume then comes from the header)."""
        columns = [getattr(self.schema, name) for name in self.schema.VOLUME_FIELDS]
        return columns if all(self.has(column) for column in columns) else []

    def in_volume(self) -> np.ndarray:
        """bool (n_rows,): whether each row's volume fields are numbers."""
        return np.isfinite(self.values[:, self.volume_columns]).all(axis=1)

    def volume_table(self) -> AdcTable:
        """The rows whose volume fields are numbers, for `pipeline.ifcb.volume.ml_analyzed` only: their positions are
        no ROI numbers. A bin read from them has the volume of the rows it could read, as one cut off mid-write."""
        rows = self.in_volume()
        return self if rows.all() else AdcTable(self.schema, self.values[rows])


def rows_left_out(warnings: Iterable[str]) -> int:
    """How many `.adc` rows a bin's warnings say were left out (`AdcTable.left_out`): the count `parse_adc` writes at
    the head of that warning, read back (the store keeps a bin's warnings as text)."""
    return sum(int(match[1]) for warning in warnings if (match := _LEFT_OUT_COUNT.match(warning)))


def parse_adc(data: bytes | str, schema: Schema, columns: Sequence[str] | None = None) -> AdcTable:
    """Parse the bytes of an `.adc` file, row by row as the module says; raise `IfcbFormatError` when rows are left
    out and none with an image remains, or the rows lack the columns of the schema.

    `columns`: the column names the header declares (`ADCFileFormat`, newer bins): they place the columns, and a
    list without a column the reader needs, or naming columns the file does not have, is refused.
    """
    schema_cls = named_schema(tuple(columns)) if columns and schema == "v2" else SCHEMAS[schema]
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return AdcTable(schema_cls, np.empty((0, schema_cls.N_COLUMNS), dtype=np.float64))
    lines = [line.rstrip() for line in lines]
    if schema == "v1":  # v1 rows end in a trailing comma; in a v2 row, one is an empty last field (inhibit time)
        lines = [line.removesuffix(",") for line in lines]
    values = _read(lines)
    _check_columns(values, schema_cls, schema, columns)
    placed = _placed(values, schema_cls)
    table = AdcTable(schema_cls, values, placed=None if placed.all() else placed)
    left_out = table.left_out - 1
    if left_out.size and table.roi_numbers.size == 0:  # nothing left to classify: no bin of 0 ROIs, as if empty
        listing = _listing(lines, values, left_out, _fields(table, ROI_FIELDS))
        raise IfcbFormatError(
            f".adc: no image can be read: {_rows(left_out.size)} {LEFT_OUT}, no other row has one: {listing}",
            stage="adc",
        )
    warnings = _warnings(lines, table)
    return replace(table, warnings=warnings) if warnings else table


def _read(lines: list[str]) -> np.ndarray:
    """The fields of every line as float64 (lines, fields): one numpy call, or where it fails, each line on its own
    (`_read_each`)."""
    try:
        values = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        return _read_each(lines)
    return values if values.shape[0] == len(lines) else _read_each(lines)  # numpy skips blank lines


def _read_each(lines: list[str]) -> np.ndarray:
    """The fields of every line, NaN for a field that is not a number and for every field of a line whose number of
    fields is not the file's: the number most non-blank lines have (the first seen among equals)."""
    length = Counter(line.count(",") + 1 for line in lines if line.strip()).most_common(1)[0][0]
    values = np.full((len(lines), length), np.nan)
    for row, line in enumerate(lines):
        cells = line.split(",")
        if len(cells) == length:
            values[row] = [_number(cell) for cell in cells]
    return values


def _number(cell: str) -> float:
    """A field as numpy reads it; NaN where it is not a number (numpy refuses `1_000`, which Python's float takes)."""
    try:
        return math.nan if "_" in cell else float(cell)
    except ValueError:
        return math.nan


def _check_columns(values: np.ndarray, schema_cls: AdcSchema, schema: Schema, columns: Sequence[str] | None) -> None:
    """The file must have every column the reader cuts images with, where the header or the schema puts it."""
    s = schema_cls
    required = max(s.TRIGGER, s.ROI_X, s.ROI_Y, s.ROI_WIDTH, s.ROI_HEIGHT, s.START_BYTE) + 1
    if values.shape[1] >= required:
        return
    if columns and schema == "v2":
        raise IfcbFormatError(
            f".adc: its rows have {values.shape[1]} columns, but the header's ADCFileFormat puts the image columns "
            f"up to column {required}: the header does not describe this file",
            stage="adc",
        )
    raise IfcbFormatError(
        f".adc: its rows have {values.shape[1]} columns, the {schema} schema needs at least {required}", stage="adc"
    )


def _placed(values: np.ndarray, schema: AdcSchema) -> np.ndarray:
    """bool (rows,): whether each row's ROI fields are sound: whole numbers, width, height and start byte >= 0."""
    fields = values[:, [getattr(schema, name) for name in ROI_FIELDS]]
    sizes = values[:, [getattr(schema, name) for name in _SIZE_FIELDS]]
    return (np.isfinite(fields) & (fields == np.floor(fields))).all(axis=1) & (sizes >= 0).all(axis=1)


def _warnings(lines: list[str], table: AdcTable) -> tuple[str, ...]:
    """One warning per kind of damaged row: left out (no ROI); not counted in the volume; kept despite an unreadable
    field nothing reads (`_listing` names the first rows of each)."""
    values, s = table.values, table.schema
    if table.placed is None and np.isfinite(values).all():
        return ()  # every field a number, every row placed: a clean file
    left_out = table.left_out - 1
    kept = np.ones(table.n_rows, dtype=bool)
    kept[left_out] = False
    used = {getattr(s, name) for name in ROI_FIELDS} | set(table.volume_columns)
    unused = [column for column in range(table.n_columns) if column not in used]
    placed = np.ones(table.n_rows, dtype=bool) if table.placed is None else table.placed
    odd = kept & (~placed | ~np.isfinite(values[:, unused]).all(axis=1))  # a trigger without an image counts here
    unreadable = np.isnan(values).all(axis=1)  # no field a number (a line of another length): named once, left out
    not_in_volume = np.flatnonzero(~table.in_volume() & ~unreadable)
    kinds = (
        (left_out, LEFT_OUT, _fields(table, ROI_FIELDS)),
        (not_in_volume, "not counted in the volume analysed", _fields(table, s.VOLUME_FIELDS)),
        (np.flatnonzero(odd), "kept despite an unreadable field nothing reads",
         sorted({*_fields(table, ROI_FIELDS), *((column, None) for column in unused)})),
    )  # fmt: skip
    return tuple(
        f".adc: {_rows(rows.size)} {what}: {_listing(lines, values, rows, fields)}"
        for rows, what, fields in kinds
        if rows.size
    )


def _fields(table: AdcTable, names: Iterable[str]) -> list[tuple[int, str | None]]:
    """(column, field name) of the named fields this file has, by column."""
    columns = {getattr(table.schema, name): name for name in names}
    return sorted((column, name) for column, name in columns.items() if table.has(column))


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _listing(lines: list[str], values: np.ndarray, rows: np.ndarray, fields: list[tuple[int, str | None]]) -> str:
    """What is wrong with the first `LISTED` of `rows` (0-based), looking at `fields`; the rest counted."""
    shown = "; ".join(_row_problem(int(row) + 1, lines[row], values[row], fields) for row in rows[:LISTED])
    return shown + (f"; and {rows.size - LISTED} more" if rows.size > LISTED else "")


def _row_problem(number: int, line: str, row: np.ndarray, fields: list[tuple[int, str | None]]) -> str:
    """What is wrong with line `number`: its number of fields, or the first of `fields` that is not sound."""
    cells = line.split(",")
    if not line.strip():
        return f"line {number}: blank line"
    if len(cells) != row.size:
        return f"line {number}: {len(cells)} columns, the file's rows have {row.size}"
    problems = (
        (column, name, problem)
        for column, name in fields
        if (problem := _field_problem(cells[column], float(row[column]), name)) is not None
    )
    column, name, problem = next(problems)
    return f"line {number}, column {column}{f' ({_LABELS[name]})' if name else ''}: {problem}"


def _field_problem(cell: str, value: float, name: str | None) -> str | None:
    """What is wrong with one field: not a number; a ROI field that is not whole, or a size below 0; None if sound."""
    if not math.isfinite(value):
        text = cell.strip()
        return f"not a number: {text[:40]!r}" if text else "blank"
    if name in ROI_FIELDS and value != math.floor(value):
        return f"{value:g}, not a whole number"
    if name in _SIZE_FIELDS and value < 0:
        return f"{value:g}, below 0"
    return None
