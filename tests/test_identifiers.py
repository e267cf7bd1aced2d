"""Bin and ROI identifiers: both naming schemes, UTC times, and clear rejection of anything else."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.ifcb.errors import IfcbFormatError
from pipeline.ifcb.identifiers import parse_bin_id, parse_roi_id, roi_id


def test_newer_scheme() -> None:
    b = parse_bin_id("D20130526T095207_IFCB013")
    assert (b.id, b.instrument, b.schema, b.instrument_number) == ("D20130526T095207_IFCB013", "IFCB013", "v2", 13)
    assert b.time == datetime(2013, 5, 26, 9, 52, 7, tzinfo=UTC)
    assert str(b) == b.id


def test_older_scheme_uses_day_of_year() -> None:
    b = parse_bin_id("IFCB5_2012_028_081515")
    assert (b.instrument, b.schema, b.instrument_number) == ("IFCB5", "v1", 5)
    assert b.time == datetime(2012, 1, 28, 8, 15, 15, tzinfo=UTC)
    assert parse_bin_id("IFCB10_2012_366_235959").time == datetime(2012, 12, 31, 23, 59, 59, tzinfo=UTC)  # leap year


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("D20131326T095207_IFCB013", "impossible"),  # month 13
        ("D20130526T256207_IFCB013", "impossible"),  # hour 25
        ("IFCB5_2013_366_081515", "outside year 2013"),
        ("IFCB5_2012_000_081515", "outside year 2012"),
        ("IFCB5_2012_028_086015", "impossible"),  # 60 minutes
        ("D20130526T095207_IFCB13", "expected"),  # instrument needs 3 digits
        ("D20130526T095207_IFCB013.adc", "expected"),  # an extension is not part of the id
        ("d20130526t095207_ifcb013", "expected"),
        ("labels", "expected"),
        ("", "expected"),
    ],
)
def test_rejects_anything_else(text: str, why: str) -> None:
    with pytest.raises(IfcbFormatError, match=why):
        parse_bin_id(text)


def test_roi_ids() -> None:
    assert roi_id("D20130526T095207_IFCB013", 7) == "D20130526T095207_IFCB013_00007"
    b, n = parse_roi_id("D20130526T095207_IFCB013_00007")
    assert (b.id, n) == ("D20130526T095207_IFCB013", 7)
    b, n = parse_roi_id("IFCB5_2012_028_081515_12345")
    assert (b.id, n) == ("IFCB5_2012_028_081515", 12345)


@pytest.mark.parametrize("number", [0, -1])
def test_roi_number_out_of_range(number: int) -> None:
    with pytest.raises(IfcbFormatError, match="out of range"):
        roi_id("D20130526T095207_IFCB013", number)


@pytest.mark.parametrize(
    "text",
    [
        "D20130526T095207_IFCB013_7",
        "D20130526T095207_IFCB013_00000",
        "D20130526T095207_IFCB013_0000a",
        "D20130526T095207_IFCB013",
        "00007",
        "X_00007",
    ],
)
def test_rejects_bad_roi_ids(text: str) -> None:
    with pytest.raises(IfcbFormatError):
        parse_roi_id(text)
