"""`.hdr` parsing: the three header variants and clear errors for anything that is not a header."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.ifcb.errors import IfcbFormatError
from pipeline.ifcb.hdr import parse_header

TRANSITIONAL = (
    "Imaging FlowCytobot Acquisition Software version 2.0; May 2010\r\n"
    "Sample Date: 2010/06/01 12:00:00\r\n"
    "PMT1hv: 0.6\r\n"
    "run time = 1200.25 s  inhibit time = 11.5 s\r\n"
)


def test_newer_key_value_header(ifcb_data: Path) -> None:
    header = parse_header((ifcb_data / "bins" / "D20130526T095207_IFCB013.hdr").read_bytes())
    assert header.variant == "keyvalue"
    assert header.run_time == pytest.approx(1231.024861)
    assert header.inhibit_time == pytest.approx(11.622980)
    assert header.values["sampleTime"] == "2013-05-26T09:52:07Z"
    assert header.values["imagerID"] == "13"  # tab padding stripped
    columns = header.adc_columns
    assert columns is not None and len(columns) == 24
    assert (columns[0], columns[17], columns[22], columns[23]) == ("trigger#", "start_byte", "runTime", "inhibitTime")


def test_older_quoted_header(ifcb_data: Path) -> None:
    header = parse_header((ifcb_data / "bins" / "IFCB5_2012_028_081515.hdr").read_bytes())
    assert header.variant == "quoted"
    assert header.values["Temp"] == "11.4799732421875"
    assert header.values["BlobSizeThresh"] == "10"
    assert header.get_float("PMT1hv(ssc)") == pytest.approx(0.675)
    assert "Woods Hole Oceanographic Institution" in header.values["context"]
    assert header.run_time is None and header.inhibit_time is None and header.adc_columns is None


def test_transitional_header_with_run_time_line() -> None:
    header = parse_header(TRANSITIONAL.encode())
    assert header.variant == "runtime-line"
    assert header.run_time == 1200.25
    assert header.inhibit_time == 11.5
    assert header.values["PMT1hv"] == "0.6"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"\x00\x01\x02binary", "binary"),
        (b"hello world\n", "not a known IFCB header"),
        (b'"text"\n"A B C"\n"1","2"\n', "3 column names but 2 values"),
        (TRANSITIONAL.replace("run time", "walk time").encode(), "no 'run time"),
    ],
)
def test_unreadable_headers(data: bytes, why: str) -> None:
    with pytest.raises(IfcbFormatError, match=why) as info:
        parse_header(data)
    assert info.value.stage == "hdr"


def test_non_numeric_time_is_an_error() -> None:
    header = parse_header(b"softwareVersion: x\nrunTime: soon\n")
    with pytest.raises(IfcbFormatError, match="runTime is not a number"):
        _ = header.run_time


def test_latin1_header_is_read() -> None:
    header = parse_header("softwareVersion: x\noperator: Jos\xe9\nrunTime: 5\n".encode("latin-1"))
    assert header.values["operator"] == "Jos\xe9"
    assert header.run_time == 5
