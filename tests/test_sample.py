"""The header's sample metadata (`pipeline.ifcb.sample`): run type, sample type, position, bead runs.

Inputs are the real headers in `../shared/data/ifcb/bins` with edited lines; each rule's reference is named in the
test (iRfcb `R/ifcb_qc_sample.R` for bead runs, the IFCB Dashboard's `accession.py` for positions, WHOI's
`IFCBxxx_readhdr.m` for the run type).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.ifcb.hdr import parse_header
from pipeline.ifcb.sample import SampleInfo, read_sample

NEW, OLD = "D20130526T095207_IFCB013", "IFCB5_2012_028_081515"


def _new_header(ifcb_data: Path, *lines: str, replace: tuple[str, str] = ("", "")) -> SampleInfo:
    """The sample metadata of the real newer header with `lines` added (as IFCBacquire 2 writes them)."""
    text = (ifcb_data / "bins" / f"{NEW}.hdr").read_text()
    if replace[0]:
        assert replace[0] in text
        text = text.replace(*replace)
    return read_sample(parse_header(text + "".join(f"{line}\r\n" for line in lines)))


def test_the_real_headers_as_they_are(ifcb_data: Path) -> None:
    assert _new_header(ifcb_data) == SampleInfo(run_type="NORMAL")  # `runType: NORMAL`, nothing else said
    old = read_sample(parse_header((ifcb_data / "bins" / f"{OLD}.hdr").read_bytes()))
    assert old == SampleInfo()  # quoted lines: none of the keys, no bead run


def test_run_type_alt_and_the_last_of_two_lines(ifcb_data: Path) -> None:
    assert _new_header(ifcb_data, replace=("runType: NORMAL", "runType: ALT")).run_type == "ALT"
    # IFCBxxx_readhdr.m takes the last `runType:` line ("2018 IFCB109 cases with two runType entries")
    assert _new_header(ifcb_data, "runType: ALT").run_type == "ALT"


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (["sampleType: Normal", "runBeads: True"], "runBeads: True"),  # IFCBacquire 2 spelling
        (["runBeads: true"], "runBeads: true"),
        (["RUNBEADS: TRUE"], "runBeads: TRUE"),  # keys in any case (`Header.get`)
        (["runBeads: 1"], "runBeads: 1"),
        (["sampleType: Beads", "runBeads: False"], "sampleType: Beads"),  # iRfcb: a sampleType containing "bead"
        (["sampleType: Bead"], "sampleType: Bead"),
        (["sampleType: bead calibration"], "sampleType: bead calibration"),
    ],
)
def test_bead_runs_by_irfcb_rule(ifcb_data: Path, lines: list[str], reason: str) -> None:
    sample = _new_header(ifcb_data, *lines)
    assert sample.bead_run and sample.bead_reason == f"bead run: the header says {reason}"


@pytest.mark.parametrize("lines", [["runBeads: False", "sampleType: Normal"], ["runBeads: 0"], ["runBeads: "], []])
def test_not_bead_runs(ifcb_data: Path, lines: list[str]) -> None:
    sample = _new_header(ifcb_data, *lines)
    assert not sample.bead_run and sample.bead_reason == ""


def test_a_bead_word_elsewhere_in_the_header_is_no_bead_run(ifcb_data: Path) -> None:
    """The real header names beads in settings (`NumberSyringesBetweenBeadsRun: 50`, `BeadsSampleVolume`): only
    `runBeads` and `sampleType` say what the sample is."""
    assert "NumberSyringesBetweenBeadsRun: 50" in (ifcb_data / "bins" / f"{NEW}.hdr").read_text()
    assert not _new_header(ifcb_data).bead_run


def test_gps_position_of_a_ship_borne_instrument(ifcb_data: Path) -> None:
    # the real values of iRfcb's test header D20230810T113059_IFCB134.hdr
    sample = _new_header(ifcb_data, "sampleType: Normal", "gpsLatitude: 58.25983722", "gpsLongitude: 11.43537362")
    assert (sample.latitude, sample.longitude, sample.sample_type) == (58.25983722, 11.43537362, "Normal")
    assert sample.has_position and sample.warnings == ()


def test_latitude_longitude_keys_win_over_the_gps_ones(ifcb_data: Path) -> None:
    """The Dashboard's `headers.get('latitude') or headers.get('gpsLatitude')`."""
    sample = _new_header(ifcb_data, "gpsLatitude: 58.2", "gpsLongitude: 11.4", "latitude: -41.5", "longitude: -70.25")
    assert (sample.latitude, sample.longitude) == (-41.5, -70.25)
    # a blank `latitude` says nothing: the GPS one is taken
    assert _new_header(ifcb_data, "latitude: ", "gpsLatitude: 58.2", "gpsLongitude: 11.4").latitude == 58.2


@pytest.mark.parametrize("value", ["", "NaN", "nan", "N/A"])
def test_unknown_coordinates_are_no_position_without_a_word(ifcb_data: Path, value: str) -> None:
    sample = _new_header(ifcb_data, f"gpsLatitude: {value}", "gpsLongitude: 11.4")
    assert (sample.latitude, sample.longitude, sample.warnings) == (None, None, ())


@pytest.mark.parametrize(
    ("lines", "refused"),
    [
        (["gpsLatitude: 91.5", "gpsLongitude: 11.4"], "gpsLatitude 91.5 is outside -90..90"),
        (["gpsLatitude: 58.2", "gpsLongitude: -180.5"], "gpsLongitude -180.5 is outside -180..180"),
        (["latitude: 4512.3456", "longitude: 11.4"], "latitude 4512.3456 is outside -90..90"),  # NMEA ddmm.mmmm
        (["gpsLatitude: inf", "gpsLongitude: 11.4"], "gpsLatitude inf is outside -90..90"),
        (["gpsLatitude: 58 15.59 N", "gpsLongitude: 11.4"], "gpsLatitude '58 15.59 N' is not a number"),
    ],
)
def test_coordinates_out_of_range_are_never_a_position(ifcb_data: Path, lines: list[str], refused: str) -> None:
    sample = _new_header(ifcb_data, *lines)
    assert (sample.latitude, sample.longitude) == (None, None)  # neither coordinate is kept alone
    assert sample.warnings == (f"the header's {refused}: the bin has no position",)


def test_one_coordinate_without_the_other_is_no_position(ifcb_data: Path) -> None:
    assert not _new_header(ifcb_data, "gpsLatitude: 58.2").has_position
    assert _new_header(ifcb_data, "gpsLatitude: 58.2").latitude is None


def test_edges_of_the_ranges_are_positions(ifcb_data: Path) -> None:
    sample = _new_header(ifcb_data, "latitude: -90", "longitude: 180")
    assert (sample.latitude, sample.longitude) == (-90.0, 180.0)
    assert _new_header(ifcb_data, "latitude: 0", "longitude: 0").has_position  # 0 is a place, not "none"
