"""The `.adc` file: one CSV row per trigger, no header row; row k (1-based) is ROI number k.

One small class per schema names every column index, so the code reads like the format's documentation table.
Parsing goes through numpy in one call, which keeps thousands of bins fast; only when that fails does a slower pass
find the first bad line, so the error can name it.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class AdcTable:
    """The rows of one `.adc` as float64 (n_rows, n_columns), with the schema that names the columns."""

    schema: AdcSchema
    values: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_columns(self) -> int:
        return int(self.values.shape[1])

    def has(self, column: int) -> bool:
        """Whether this file has the column (some v2 instruments write fewer columns)."""
        return column < self.n_columns

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


def parse_adc(data: bytes | str, schema: Schema) -> AdcTable:
    """Parse the bytes of an `.adc` file; raise `IfcbFormatError` naming the first bad line."""
    schema_cls = SCHEMAS[schema]
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        return AdcTable(schema_cls, np.empty((0, schema_cls.N_COLUMNS), dtype=np.float64))
    lines = [line.rstrip().removesuffix(",") for line in lines]  # v1 rows end in a trailing comma
    try:
        values = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2, comments=None)
    except ValueError as err:
        _raise_first_bad_line(lines)
        raise IfcbFormatError(f".adc: {err}", stage="adc") from None
    if values.shape[0] != len(lines):  # numpy skips blank lines, which would shift every later ROI number
        blank = next(number for number, line in enumerate(lines, start=1) if not line.strip())
        raise IfcbFormatError(f".adc line {blank}: blank line inside the file", stage="adc")
    required = schema_cls.START_BYTE + 1
    if values.shape[1] < required:
        raise IfcbFormatError(
            f".adc line 1: {values.shape[1]} columns, the {schema} schema needs at least {required}", stage="adc"
        )
    _check_geometry(values, schema_cls)
    return AdcTable(schema_cls, values)


def _raise_first_bad_line(lines: list[str]) -> None:
    """Find the first line with a column count unlike line 1 or a field that is not a number, and raise for it."""
    expected = lines[0].count(",") + 1
    for number, line in enumerate(lines, start=1):
        cells = line.split(",")
        if len(cells) != expected:
            raise IfcbFormatError(f".adc line {number}: {len(cells)} columns, line 1 has {expected}", stage="adc")
        for index, cell in enumerate(cells):
            try:
                float(cell)
            except ValueError:
                raise IfcbFormatError(
                    f".adc line {number}, column {index}: not a number: {cell.strip()[:40]!r}", stage="adc"
                ) from None


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
