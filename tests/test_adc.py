"""`.adc` parsing: both schemas, v2 files with fewer or more columns, rows with unreadable fields left out in their
place (WHOI's ifcbkit's rule), and files with nothing readable."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from pipeline.ifcb.adc import AdcSchemaV1, AdcSchemaV2, AdcTable, parse_adc, rows_left_out
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


def _three_rows(middle: str) -> AdcTable:
    """Three v2 rows with an image each, back to back in the `.roi`, the middle one given as `middle`."""
    first, last = (V2_ROW.replace(",88,34,0,", f",88,34,{start},") for start in (0, 2 * 88 * 34))
    return parse_adc(f"{first}\n{middle}\n{last}\n", "v2")


MIDDLE = V2_ROW.replace(",88,34,0,", ",88,34,2992,")  # the second image, at byte 88 x 34


def _with_field(row: str, column: int, value: str) -> str:
    cells = row.split(",")
    cells[column] = value
    return ",".join(cells)


#: One damaged field or line in the middle of three rows, and what the warning says of it. The rule is WHOI's
#: ifcbkit's (`src/ifcbkit/adc.py`, `_parse_fields`: trigger, x, y, width, height and start byte must read as whole
#: numbers, else the line is skipped and the next is still numbered by its line); run on these rows it keeps ROIs 1
#: and 3. A negative width it would pass to PIL, which fails the whole bin; a longer line it reads by position.
FIELD_CASES = [  # (column, field, value, what is wrong)
    (15, "ROI width", "", "blank"),
    (15, "ROI width", "NaN", "not a number: 'NaN'"),
    (15, "ROI width", "-88", "-88, below 0"),
    (16, "ROI height", "abc", "not a number: 'abc'"),
    (16, "ROI height", "3.5", "3.5, not a whole number"),
    (17, "start byte", "inf", "not a number: 'inf'"),
    (17, "start byte", "-5", "-5, below 0"),
    (17, "start byte", "2_992", "not a number: '2_992'"),
    (13, "ROI x", "x1060", "not a number: 'x1060'"),
    (14, "ROI y", "16.5", "16.5, not a whole number"),
    (0, "trigger number", " ", "blank"),
]
LEFT_OUT_CASES = {
    **{f"{field} {value!r}": (_with_field(MIDDLE, column, value), f"line 2, column {column} ({field}): {why}")
       for column, field, value, why in FIELD_CASES},
    "too few fields": (MIDDLE[:40], "line 2: 9 columns, the file's rows have 24"),
    "too many fields": (f"{MIDDLE},5", "line 2: 25 columns, the file's rows have 24"),
    "blank line": ("", "line 2: blank line"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(LEFT_OUT_CASES))
def test_a_row_with_an_unreadable_roi_field_is_left_out_in_its_place(case: str) -> None:
    middle, why = LEFT_OUT_CASES[case]
    table = _three_rows(middle)
    assert table.n_rows == 3 and table.roi_numbers.tolist() == [1, 3]  # ROI 3 keeps its number
    assert table.left_out.tolist() == [2]
    assert table.warnings == (f".adc: 1 row left out (no ROI): {why}",)
    assert rows_left_out(table.warnings) == 1
    assert table.width.tolist() == [88, 0, 88] and table.start_byte.tolist() == [0, 0, 5984]
    whole = middle.count(",") != MIDDLE.count(",")  # the whole line unreadable: not in the volume either
    assert table.in_volume().tolist() == [True, not whole, True]


def test_the_rows_around_a_bad_one_read_as_in_a_clean_file() -> None:
    clean = _three_rows(MIDDLE)
    damaged = _three_rows(_with_field(MIDDLE, 16, "abc"))
    assert clean.warnings == () and clean.placed is None and clean.left_out.size == 0
    np.testing.assert_array_equal(damaged.values[[0, 2]], clean.values[[0, 2]])  # the line-by-line pass: same values


def test_a_trigger_without_an_image_is_not_left_out() -> None:
    """Width 0 says the row has no image whatever its box says: no ROI lost (ifcbkit skips it either way)."""
    table = _three_rows(_with_field(_with_field(MIDDLE, 13, ""), 15, "0"))
    assert table.roi_numbers.tolist() == [1, 3] and table.left_out.size == 0 and rows_left_out(table.warnings) == 0
    assert table.warnings == (
        ".adc: 1 row kept despite an unreadable field nothing reads: line 2, column 13 (ROI x): blank",
    )


def test_an_unreadable_field_nothing_reads_keeps_the_row() -> None:
    table = _three_rows(_with_field(MIDDLE, 2, "oops"))  # PMT A
    assert table.roi_numbers.tolist() == [1, 2, 3] and table.in_volume().all()
    assert table.warnings == (
        ".adc: 1 row kept despite an unreadable field nothing reads: line 2, column 2: not a number: 'oops'",
    )
    assert rows_left_out(table.warnings) == 0


@pytest.mark.parametrize(("column", "name"), [(1, "ADC time"), (22, "run time"), (23, "inhibit time")])
def test_an_unreadable_time_keeps_the_roi_out_of_the_volume(column: int, name: str) -> None:
    table = _three_rows(_with_field(MIDDLE, column, ""))
    assert table.roi_numbers.tolist() == [1, 2, 3] and table.in_volume().tolist() == [True, False, True]
    assert table.warnings == (
        f".adc: 1 row not counted in the volume analysed: line 2, column {column} ({name}): blank",
    )
    volume = table.volume_table()
    assert volume.n_rows == 2 and np.isfinite(volume.values[:, [1, 22, 23]]).all()
    assert _three_rows(MIDDLE).volume_table().n_rows == 3


def test_a_v1_row_with_an_unreadable_time_or_trigger() -> None:
    row = "1,.31,.06,-.61,-.17,-3.6,-.29,0,.25,202,673,96,45,1,-.27"
    bad_time = row.replace(",0,.25,", ",,.25,")
    table = parse_adc(f"{row},\n{bad_time},\n", "v1")
    assert table.roi_numbers.tolist() == [1, 2] and table.in_volume().tolist() == [True, False]
    assert table.warnings == (
        ".adc: 1 row not counted in the volume analysed: line 2, column 7 (trigger open time): blank",
    )
    bad_trigger = parse_adc(f"{row},\n{row.replace('1,', 'one,', 1)},\n", "v1")  # no ROI, and not in the volume
    assert bad_trigger.roi_numbers.tolist() == [1] and bad_trigger.in_volume().tolist() == [True, False]
    assert rows_left_out(bad_trigger.warnings) == 1


def test_many_bad_rows_are_one_warning_of_bounded_length() -> None:
    bad = V2_ROW.replace(",88,34,", ",,34,")
    table = parse_adc("\n".join([V2_ROW, *[bad] * 5000]) + "\n", "v2")
    assert table.roi_numbers.tolist() == [1] and table.left_out.tolist() == list(range(2, 5002))
    (warning,) = table.warnings
    assert warning == (
        ".adc: 5000 rows left out (no ROI): line 2, column 15 (ROI width): blank; line 3, column 15 (ROI width): "
        "blank; line 4, column 15 (ROI width): blank; and 4997 more"
    )
    assert rows_left_out([warning, "the header says 3 ROIs, the .adc lists 4: the .adc's are read"]) == 5000


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (f"{_with_field(V2_ROW, 15, '')}\n",
         r"\.adc: no image can be read: 1 row left out \(no ROI\), no other row has one: line 1, column 15 \(ROI wi"),
        (f"{V2_ROW.replace(',88,34,', ',-88,34,')}\n{V2_ROW.replace(',88,34,', ',88,0,')}\n", "no image can be read"),
        ("1,2,3\n", "its rows have 3 columns, the v2 schema needs at least 18"),
        ("\x00\x01\x02 binary\n\xff\xfe,\x13\n\x07\n", "its rows have 1 columns, the v2 schema needs at least 18"),
    ],
)  # fmt: skip
def test_an_adc_with_nothing_readable_fails_the_bin(text: str, why: str) -> None:
    with pytest.raises(IfcbFormatError, match=why) as info:
        parse_adc(text.encode("latin-1"), "v2")
    assert info.value.stage == "adc"


def test_v1_rows_without_trailing_comma_read_too() -> None:
    row = "1,.31,.06,-.61,-.17,-3.6,-.29,0,.25,202,673,96,45,1,-.27"
    table = parse_adc(f"{row},\n{row}\n", "v1")
    assert table.n_columns == 15 and table.n_rows == 2
