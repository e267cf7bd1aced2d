"""Volume analysed: the reference values of the real bins, and each rule of IFCB-FORMAT.md on small tables
whose expected volume is worked out by hand in the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.ifcb.adc import AdcSchemaV1, AdcSchemaV2, AdcTable, parse_adc
from pipeline.ifcb.hdr import parse_header
from pipeline.ifcb.identifiers import parse_bin_id
from pipeline.ifcb.volume import ml_analyzed

V2_BIN = parse_bin_id("D20200101T000000_IFCB100")
HEADER = parse_header(b"softwareVersion: test\nrunTime: 100.0\ninhibitTime: 10.0\n")
NO_TIMES = parse_header(b"softwareVersion: test\n")


def _v2(adc_time: list[float], run: list[float], inh: list[float], n_columns: int = 24) -> AdcTable:
    s = AdcSchemaV2
    values = np.zeros((len(adc_time), s.N_COLUMNS))
    values[:, s.ADC_TIME], values[:, s.RUN_TIME], values[:, s.INHIBIT_TIME] = adc_time, run, inh
    return AdcTable(s, values[:, :n_columns])


def _v1(open_time: list[float], grab_time: list[float], trigger: list[int] | None = None) -> AdcTable:
    s = AdcSchemaV1
    values = np.zeros((len(open_time), s.N_COLUMNS))
    values[:, s.TRIGGER] = trigger if trigger is not None else np.arange(1, len(open_time) + 1)
    values[:, s.TRIGGER_OPEN_TIME], values[:, s.FRAME_GRAB_TIME] = open_time, grab_time
    return AdcTable(s, values)


def _ml(bin_dir: Path, name: str) -> float | None:
    bin_id = parse_bin_id(name)
    header = parse_header((bin_dir / f"{name}.hdr").read_bytes())
    return ml_analyzed(bin_id, header, parse_adc((bin_dir / f"{name}.adc").read_bytes(), bin_id.schema))


def test_reference_values_of_the_real_bins(ifcb_data: Path) -> None:
    v1 = _ml(ifcb_data / "bins", "IFCB5_2012_028_081515")
    v2 = _ml(ifcb_data / "bins", "D20130526T095207_IFCB013")
    assert v1 == pytest.approx(0.0033915, abs=5e-8)  # the reference, as published (5 significant digits)
    # worked by hand from the .adc: last frame grab 1.251953 s, five processing times raised to 0.073 s
    assert v1 == pytest.approx((1.251953 - 5 * 0.073 - 0.073) / 240, rel=1e-12)
    assert v2 == pytest.approx(4.8850699, rel=1e-7)


def test_real_empty_bins_have_no_volume(ifcb_data: Path) -> None:
    assert _ml(ifcb_data / "empty", "D20150411T205456_IFCB012") is None
    assert _ml(ifcb_data / "empty", "IFCB5_2017_001_033645") is None


def test_v2_all_rows_good() -> None:
    table = _v2([1, 2, 3, 4], [1.05, 2.05, 3.05, 4.05], [0.1, 0.2, 0.3, 0.4])
    assert ml_analyzed(V2_BIN, HEADER, table) == pytest.approx(0.25 * (4.05 - 0.4) / 60)


def test_v2_bad_last_row_is_replaced_by_the_step() -> None:
    table = _v2([1, 2, 3, 4, 5], [1.05, 2.05, 3.05, 4.05, 5.05], [0.1, 0.2, 0.3, 0.4, 9.9])
    assert ml_analyzed(V2_BIN, HEADER, table) == pytest.approx(0.25 * (5.05 - (0.4 + 0.1)) / 60)


def test_v2_step_tie_takes_the_smallest() -> None:
    table = _v2([1, 2, 3, 4], [1.05, 2.05, 3.05, 4.05], [0.1, 0.2, 0.4, 9.9])
    assert ml_analyzed(V2_BIN, HEADER, table) == pytest.approx(0.25 * (4.05 - (0.4 + 0.1)) / 60)


def test_v2_run_and_inhibit_offsets() -> None:
    table = _v2([1, 2, 3, 4], [21, 22, 23, 24], [0.1, 0.2, 0.3, 0.4])
    # run offset 20; inhibit offset inh[1] + 2 * step = 0.4
    assert ml_analyzed(V2_BIN, HEADER, table) == pytest.approx(0.25 * ((24 - 20) - (0.4 - 0.4)) / 60)


def test_v2_second_run_estimate_when_the_last_run_time_jumps() -> None:
    table = _v2([1, 2, 3, 4], [1.05, 2.05, 3.05, 9.0], [0.1, 0.2, 0.3, 0.4])
    assert ml_analyzed(V2_BIN, HEADER, table) == pytest.approx(0.25 * ((4 + 0.05) - 0.4) / 60)


def test_v2_without_inhibit_column_or_with_one_row_uses_the_header() -> None:
    expected = 0.25 * (100.0 - 10.0) / 60
    assert ml_analyzed(V2_BIN, HEADER, _v2([1, 2], [1, 2], [0.1, 0.2], n_columns=22)) == pytest.approx(expected)
    assert ml_analyzed(V2_BIN, HEADER, _v2([1], [1.05], [0.1])) == pytest.approx(expected)
    assert ml_analyzed(V2_BIN, NO_TIMES, _v2([1], [1.05], [0.1])) is None


def test_v2_undefined_volumes_are_none() -> None:
    assert ml_analyzed(V2_BIN, HEADER, _v2([], [], [])) is None
    assert ml_analyzed(V2_BIN, HEADER, _v2([1, 2, 3], [1, 2, 3], [0, 0, 0])) is None


def test_v1_first_row_per_trigger_and_processing_time() -> None:
    table = _v1([0, 1.0, 1.0, 2.0], [0.5, 1.5, 1.6, 2.5], trigger=[1, 2, 2, 3])
    bin_id = parse_bin_id("IFCB5_2012_028_081515")
    assert ml_analyzed(bin_id, NO_TIMES, table) == pytest.approx((2.5 - (0.5 + 0.5) - 0.073) / 240)


def test_v1_bins_spanning_midnight() -> None:
    table = _v1([0, 1.0, 2.0 - 86400], [0.5, 1.5, 2.5 - 86400])
    bin_id = parse_bin_id("IFCB1_2012_028_235959")
    assert ml_analyzed(bin_id, NO_TIMES, table) == pytest.approx((2.5 - (0.5 + 0.5) - 0.073) / 240)


@pytest.mark.parametrize(
    ("bin_id", "min_proc"),
    [("IFCB5_2015_151_000000", 0.073), ("IFCB5_2015_152_000000", 0.05), ("IFCB6_2016_001_000000", 0.073)],
)
def test_v1_minimum_processing_time(bin_id: str, min_proc: float) -> None:
    table = _v1([0, 0.52], [0.5, 1.0])  # processing time 0.02 s, below either minimum
    assert ml_analyzed(parse_bin_id(bin_id), NO_TIMES, table) == pytest.approx((1.0 - 2 * min_proc) / 240)
