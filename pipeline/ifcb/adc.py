"""The `.adc` file: one CSV row per trigger, no header row; row k (1-based) is ROI number k.

One small class per schema names every column index, so the code reads like the format's documentation table.
Where a newer bin's header names its columns (`ADCFileFormat`), the names place them instead (`named_schema`), and a
list that lacks a column the reader needs is refused rather than read by position into wrong images.

Parsing goes through numpy in one call, which keeps thousands of bins fast; only when that fails does a slower pass
find the first bad line, so the error can name it. A last line cut off mid-write (an acquisition interrupted) is
the one bad line that is forgiven: the intact rows are kept and the table carries a warning saying so.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

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


AdcSchema = type[AdcSchemaV1] | type[AdcSchemaV2]
SCHEMAS: dict[str, AdcSchema] = {"v1": AdcSchemaV1, "v2": AdcSchemaV2}

#: The columns the reader uses, by the names `ADCFileFormat` gives them (compared in lower case without spaces or
#: punctuation: `trigger#`, `ADC_time`, `ROIx`, `start_byte`, `runTime` ...). Without the required ones no image
#: can be cut; without the optional ones the volume comes from the header.
_REQUIRED_NAMES = {"TRIGGER": "trigger", "ROI_X": "roix", "ROI_Y": "roiy", "ROI_WIDTH": "roiwidth",
                   "ROI_HEIGHT": "roiheight", "START_BYTE": "startbyte"}  # fmt: skip
_OPTIONAL_NAMES = {"ADC_TIME": "adctime", "RUN_TIME": "runtime", "INHIBIT_TIME": "inhibittime"}
MISSING = -1  # the index of a column the file does not have


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
    """The rows of one `.adc` as float64 (n_rows, n_columns), with the schema that names the columns, and any
    warning about rows left out (a cut-off last line)."""

    schema: AdcSchema
    values: np.ndarray
    warnings: tuple[str, ...] = ()

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

    @property
    def width(self) -> np.ndarray:
        return self.values[:, self.schema.ROI_WIDTH].astype(np.int64)

    @property
    def height(self) -> np.ndarray:
        return self.values[:, self.schema.ROI_HEIGHT].astype(np.int64)

    @property
    def start_byte(self) -> np.ndarray:
        return self.values[:, self.schema.START_BYTE].astype(np.int64)

    @property
    def roi_numbers(self) -> np.ndarray:
        """1-based ROI numbers of the rows that have an image (width x height > 0), ascending."""
        return np.flatnonzero((self.width * self.height) > 0).astype(np.int64) + 1


def parse_adc(data: bytes | str, schema: Schema, columns: Sequence[str] | None = None) -> AdcTable:
    """Parse the bytes of an `.adc` file; raise `IfcbFormatError` naming the first bad line.

    `columns`: the column names the header declares (`ADCFileFormat`, newer bins): they place the columns, and a
    list without a column the reader needs, or naming columns the file does not have, is refused. A cut-off last
    line is dropped with a warning in the table (`AdcTable.warnings`) when every line before it is intact.
    """
    schema_cls = named_schema(tuple(columns)) if columns and schema == "v2" else SCHEMAS[schema]
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return AdcTable(schema_cls, np.empty((0, schema_cls.N_COLUMNS), dtype=np.float64))
    lines = [line.rstrip().removesuffix(",") for line in lines]  # v1 rows end in a trailing comma
    warnings: tuple[str, ...] = ()
    try:
        values = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2, comments=None)
    except ValueError as err:
        bad = _first_bad_line(lines)
        if bad is None:
            raise IfcbFormatError(f".adc: {err}", stage="adc") from None
        number, problem, cut = bad
        if not cut or number < len(lines) or number == 1:
            raise IfcbFormatError(problem, stage="adc") from None
        warnings = (f"{problem}: the last line is cut off; the {number - 1} intact rows before it are kept",)
        lines = lines[:-1]
        values = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2, comments=None)
    if values.shape[0] != len(lines):  # numpy skips blank lines, which would shift every later ROI number
        blank = next(number for number, line in enumerate(lines, start=1) if not line.strip())
        raise IfcbFormatError(f".adc line {blank}: blank line inside the file", stage="adc")
    _check_columns(values, schema_cls, schema, columns)
    _check_geometry(values, schema_cls)
    return AdcTable(schema_cls, values, warnings)


def _check_columns(values: np.ndarray, schema_cls: AdcSchema, schema: Schema, columns: Sequence[str] | None) -> None:
    """The file must have every column the reader cuts images with, where the header or the schema puts it."""
    s = schema_cls
    required = max(s.TRIGGER, s.ROI_X, s.ROI_Y, s.ROI_WIDTH, s.ROI_HEIGHT, s.START_BYTE) + 1
    if values.shape[1] >= required:
        return
    if columns and schema == "v2":
        raise IfcbFormatError(
            f".adc line 1: {values.shape[1]} columns, but the header's ADCFileFormat puts the image columns up to "
            f"column {required}: the header does not describe this file",
            stage="adc",
        )
    raise IfcbFormatError(
        f".adc line 1: {values.shape[1]} columns, the {schema} schema needs at least {required}", stage="adc"
    )


def _first_bad_line(lines: list[str]) -> tuple[int, str, bool] | None:
    """The first line (1-based) with a column count unlike line 1 or a field that is not a number, what is wrong
    with it, and whether it looks cut off (fewer columns, or only its last field unreadable); None when every line
    is fine."""
    expected = lines[0].count(",") + 1
    for number, line in enumerate(lines, start=1):
        cells = line.split(",")
        if len(cells) != expected:
            return number, f".adc line {number}: {len(cells)} columns, line 1 has {expected}", len(cells) < expected
        for index, cell in enumerate(cells):
            try:
                float(cell)
            except ValueError:
                problem = f".adc line {number}, column {index}: not a number: {cell.strip()[:40]!r}"
                return number, problem, index == len(cells) - 1
    return None


def _check_geometry(values: np.ndarray, schema: AdcSchema) -> None:
    """Widths, heights and start bytes must be whole, non-negative numbers: they address bytes of the `.roi`."""
    geometry = values[:, [schema.ROI_WIDTH, schema.ROI_HEIGHT, schema.START_BYTE]]
    bad = ~np.isfinite(geometry) | (geometry < 0) | (geometry != np.floor(geometry))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        name = ("ROI width", "ROI height", "start byte")[col]
        raise IfcbFormatError(
            f".adc line {row + 1}: {name} is {float(geometry[row, col]):g}, expected a whole number >= 0", stage="adc"
        )
