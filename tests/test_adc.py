"""`.adc` parsing: both schemas, v2 files with fewer or more columns, and every kind of malformed file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from pipeline.ifcb.adc import AdcSchemaV1, AdcSchemaV2, parse_adc
from pipeline.ifcb.errors import IfcbFormatError

V2_ROW = "1,0.047,0.8,0.02,0.001,0.01,3.5,0.26,0.01,0.01,-999.0,0.047,0.094,1060,161,88,34,0,-999.0,0,0,0,0.0967,0.0008"


def _csv_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_v1_drops_the_trailing_comma(ifcb_data: Path) -> None:
    path = ifcb_data / "bins" / "IFCB5_2012_028_081515.adc"
    table = parse_adc(path.read_bytes(), "v1")
    rows = _csv_rows(path)
    assert table.schema is AdcSchemaV1
    assert table.n_rows == len(rows) == 7
    assert table.n_columns == 15 and rows[0][-1] == ""
    assert table.width.tolist() == [int(r[AdcSchemaV1.ROI_WIDTH]) for r in rows]
    assert table.start_byte.tolist() == [int(r[AdcSchemaV1.START_BYTE]) for r in rows]
    assert table.roi_numbers.tolist() == [1, 2, 3, 4, 5, 6]  # row 7 has width 0: no image


def test_v2_columns_by_position(ifcb_data: Path) -> None:
    path = ifcb_data / "bins" / "D20130526T095207_IFCB013.adc"
    table = parse_adc(path.read_bytes(), "v2")
    rows = _csv_rows(path)
    assert table.schema is AdcSchemaV2
    assert (table.n_rows, table.n_columns) == (118, 24)
    assert table.column(AdcSchemaV2.INHIBIT_TIME)[-1] == pytest.approx(float(rows[-1][23]))
    with_image = [i + 1 for i, r in enumerate(rows) if int(r[15]) * int(r[16]) > 0]
    assert table.roi_numbers.tolist() == with_image
    assert table.roi_numbers[:3].tolist() == [7, 11, 13]
    assert table.roi_numbers.dtype == np.int64


@pytest.mark.parametrize("n_columns", [18, 22, 26])
def test_v2_with_fewer_or_more_columns(n_columns: int) -> None:
    cells = V2_ROW.split(",")
    row = ",".join((cells + ["7"] * 2)[:n_columns])
    table = parse_adc(f"{row}\n{row}\n", "v2")
    assert table.n_columns == n_columns
    assert table.has(AdcSchemaV2.INHIBIT_TIME) == (n_columns >= 24)
    assert table.width.tolist() == [88, 88]


@pytest.mark.parametrize("data", [b"", b"\n", b"  \r\n"])
def test_empty_adc_has_no_rows(data: bytes) -> None:
    table = parse_adc(data, "v2")
    assert table.n_rows == 0 and table.roi_numbers.size == 0


def test_crlf_line_endings() -> None:
    assert parse_adc(f"{V2_ROW}\r\n{V2_ROW}\r\n".encode(), "v2").n_rows == 2


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (f"{V2_ROW}\n{V2_ROW.replace('1060', 'abc')}\n", "line 2, column 13: not a number: 'abc'"),
        (f"{V2_ROW}\n{V2_ROW}\n{V2_ROW},5\n", "line 3: 25 columns, line 1 has 24"),
        (f"{V2_ROW}\n\n{V2_ROW}\n", "line 2: blank line"),
        (f"{V2_ROW}\n{V2_ROW.replace(',88,34,', ',-88,34,')}\n", "line 2: ROI width is -88"),
        (f"{V2_ROW.replace(',88,34,0,', ',88,34,-5,')}\n", "line 1: start byte is -5"),
        (f"{V2_ROW.replace(',88,34,', ',88,3.5,')}\n", "line 1: ROI height is 3.5"),
        (f"{V2_ROW.replace(',88,34,', ',nan,34,')}\n", "line 1: ROI width is nan"),
        ("1,2,3\n", "3 columns, the v2 schema needs at least 18"),
    ],
)
def test_malformed_adc_names_the_line(text: str, why: str) -> None:
    with pytest.raises(IfcbFormatError, match=why.replace("(", r"\(")) as info:
        parse_adc(text.encode(), "v2")
    assert info.value.stage == "adc"


def test_v1_rows_without_trailing_comma_read_too() -> None:
    row = "1,.31,.06,-.61,-.17,-3.6,-.29,0,.25,202,673,96,45,1,-.27"
    table = parse_adc(f"{row},\n{row}\n", "v1")
    assert table.n_columns == 15 and table.n_rows == 2
