"""SeaBASS files of automated classifications: every header line and data row checked against NASA's published
format rules (seabass.gsfc.nasa.gov/wiki/metadataheaders, /wiki/stdfields, plankton and particles imagery), the
metadata file's validation, and NASA's FCHECK where a local copy is given.

FCHECK itself is not distributed for local use: NASA runs it by email or on its SFTP server for registered submitters
(seabass.gsfc.nasa.gov/wiki/FCHECK), so `check_published_rules` below checks the rules it enforces. A local FCHECK
(a Perl script, `IFCBFLOW_FCHECK=/path/to/fcheck`) is run on the file where one is given."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from seabass_support import check_published_rules

from pipeline.results.seabass import (
    FIELDS,
    METADATA_KEYS,
    SeabassBin,
    load_metadata,
    parse_metadata,
    seabass_file_name,
    seabass_text,
    write_seabass,
)
from pipeline.results.taxa import read_taxon_table

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "docs" / "examples"

UTOPIA_CLASSES = ["Chloro", "Cilliate", "Crypto", "Diatom", "Dictyo", "Dinoflagellate", "Eugleno", "Other",
                  "Prymnesio", "null"]  # fmt: skip


@pytest.fixture(scope="module")
def metadata():
    return load_metadata(EXAMPLES / "seabass-metadata.yaml")


@pytest.fixture(scope="module")
def taxa():
    return read_taxon_table(EXAMPLES / "utopia-taxa.csv", classes=UTOPIA_CLASSES)


def _morphology(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    major = rng.uniform(5, 80, n)
    minor = major * rng.uniform(0.2, 1.0, n)
    area = np.pi / 4 * major * minor
    return {"Biovolume": np.pi / 6 * major * minor**2, "Area": area, "MajorAxisLength": major,
            "MinorAxisLength": minor, "EquivDiameter": np.sqrt(4 * area / np.pi)}  # fmt: skip


def _bin(**changes) -> SeabassBin:
    values = dict(
        bin_id="D20230810T113059_IFCB134",
        roi_numbers=np.array([2, 3, 7, 8]),
        class_names=["Diatom", "null", "Dinoflagellate", "Other"],
        scores=np.array([0.91, 0.55, 0.703, 0.4]),
        morphology=_morphology(4),
        latitude=58.25983722,
        longitude=11.43537362,
        ml_analyzed=4.8850699,
    )
    values.update(changes)
    return SeabassBin(**values)


def test_file_follows_the_published_rules(metadata, taxa):
    sample = _bin()
    text = seabass_text(sample, metadata, taxa, classifier="ifcbflow utopia-b3 0123456789ab")
    name = seabass_file_name(sample.bin_id, metadata)
    headers, rows = check_published_rules(text, name)
    assert headers["start_date"] == headers["end_date"] == "20230810"
    assert headers["start_time"] == "11:30:59[GMT]"
    assert headers["north_latitude"] == headers["south_latitude"] == "58.259837[DEG]"
    assert headers["east_longitude"] == "11.435374[DEG]"
    assert headers["eventID"] == sample.bin_id
    assert headers["instrument_model"] == "Imaging_FlowCytobot_IFCB134"
    assert headers["volume_imaged_ml"] == "4.88507" and headers["pixel_per_um"] == "2.77"
    assert headers["investigators"] == "Jane_Doe,John_Smith"
    assert headers["fields"].split(",") == [name for name, _ in FIELDS]
    assert [row[0] for row in rows] == [f"{sample.bin_id}_{roi:05d}" for roi in (2, 3, 7, 8)]
    diatom, null, dino, other = rows
    assert diatom[1:4] == ["Diatom", "Bacillariophyceae", "urn:lsid:marinespecies.org:taxname:148899"]
    assert null[1:4] == ["null", "-9999", "-9999"]
    assert dino[1:5] == ["Dinoflagellate", "Dinophyceae", "urn:lsid:marinespecies.org:taxname:19542", "0.7030"]
    assert other[2:4] == ["Biota", "urn:lsid:marinespecies.org:taxname:1"]
    morphology = sample.morphology
    assert float(diatom[5]) == pytest.approx(morphology["Biovolume"][0], abs=5e-4)
    assert float(diatom[6]) == pytest.approx(morphology["Area"][0], abs=5e-4)
    assert float(diatom[9]) == pytest.approx((6 * morphology["Biovolume"][0] / np.pi) ** (1 / 3), abs=5e-4)
    assert float(diatom[10]) == pytest.approx(morphology["EquivDiameter"][0], abs=5e-4)
    assert "! Classifier: ifcbflow utopia-b3 0123456789ab" in text.splitlines()


def test_real_morphology_in_microns(metadata, taxa, utopia_data):
    """Sizes of real labelled ROIs, from the project's morphology in µm, land in the rows unchanged but rounded."""
    from PIL import Image

    from pipeline.morphology import morphology_table, to_microns

    paths = sorted((utopia_data / "labelled" / "diatoms").glob("*.png"))[:3]
    images = [np.asarray(Image.open(path).convert("L")) for path in paths]
    table = to_microns(morphology_table(images), 2.77)
    sample = _bin(roi_numbers=np.arange(1, 4), class_names=["Diatom"] * 3, scores=np.full(3, 0.8), morphology=table)
    _, rows = check_published_rules(seabass_text(sample, metadata, taxa), seabass_file_name(sample.bin_id, metadata))
    for row, expected in zip(rows, table, strict=True):
        assert float(row[5]) == pytest.approx(expected["Biovolume"], abs=5e-4)
        assert float(row[7]) == pytest.approx(expected["MajorAxisLength"], abs=5e-4)


def test_position_from_header_else_metadata_else_na(metadata, taxa):
    fixed = parse_metadata(_metadata_dict(latitude=41.325, longitude=-70.5667))
    header_position = seabass_text(_bin(), fixed, taxa)
    assert "/north_latitude=58.259837[DEG]" in header_position  # the bin's header wins
    fallback = seabass_text(_bin(latitude=None, longitude=None), fixed, taxa)
    assert "/north_latitude=41.325[DEG]" in fallback and "/west_longitude=-70.5667[DEG]" in fallback
    check_published_rules(fallback, seabass_file_name(_bin().bin_id, fixed))
    unknown = seabass_text(_bin(latitude=None, longitude=None, ml_analyzed=None), metadata, taxa)
    headers, _ = check_published_rules(unknown, seabass_file_name(_bin().bin_id, metadata))
    assert headers["north_latitude"] == headers["east_longitude"] == "NA" and headers["volume_imaged_ml"] == "NA"
    with pytest.raises(ValueError, match=r"latitude 95\.0 is outside"):
        seabass_text(_bin(latitude=95.0), metadata, taxa)


def test_missing_values_and_older_bins(metadata, taxa):
    morphology = _morphology(4)
    morphology["Biovolume"][1] = np.nan
    sample = _bin(bin_id="IFCB5_2012_028_081515", morphology=morphology, scores=np.array([0.9, np.nan, 0.5, 0.4]),
                  time=datetime(2012, 1, 28, 8, 15, 15, tzinfo=UTC))  # fmt: skip
    headers, rows = check_published_rules(
        seabass_text(sample, metadata, taxa), seabass_file_name(sample.bin_id, metadata)
    )
    assert rows[1][4] == rows[1][5] == rows[1][9] == "-9999"
    assert headers["start_date"] == "20120128" and headers["instrument_model"] == "Imaging_FlowCytobot_IFCB5"


def test_url_patterns(taxa):
    meta = parse_metadata(_metadata_dict(associated_media="https://ifcb.example.org/EX/{bin}_{roi:05d}.png",
                                         associated_media_source="https://ifcb.example.org/EX/{bin}.html"))  # fmt: skip
    text = seabass_text(_bin(), meta, taxa)
    assert "/associatedMedia_source=https://ifcb.example.org/EX/D20230810T113059_IFCB134.html" in text
    _, rows = check_published_rules(text, seabass_file_name(_bin().bin_id, meta))
    assert rows[0][0] == "https://ifcb.example.org/EX/D20230810T113059_IFCB134_00002.png"


def test_bad_bins(metadata, taxa):
    with pytest.raises(ValueError, match="per-ROI arrays differ in length"):
        seabass_text(_bin(scores=np.array([0.5])), metadata, taxa)
    with pytest.raises(ValueError, match=r"classes \['unclassified'\] have no row in the taxon table"):
        seabass_text(_bin(class_names=["Diatom", "null", "unclassified", "Other"]), metadata, taxa)
    with pytest.raises(ValueError, match="has no column 'EquivDiameter'"):
        seabass_text(_bin(morphology={k: v for k, v in _morphology(4).items() if k != "EquivDiameter"}), metadata,
                     taxa)  # fmt: skip


def test_write_one_file_per_bin(tmp_path, metadata, taxa):
    second = _bin(bin_id="D20230810T120000_IFCB134")
    written = write_seabass([_bin(), second], metadata, taxa, str(tmp_path / "sb"))
    assert [Path(path).name for path in written] == [
        "EXAMPLE-EXPERIMENT_EX2401_IFCB_plankton_and_particles_D20230810T113059_IFCB134_R1.sb",
        "EXAMPLE-EXPERIMENT_EX2401_IFCB_plankton_and_particles_D20230810T120000_IFCB134_R1.sb",
    ]
    for path in written:
        check_published_rules(Path(path).read_bytes().decode("ascii"), Path(path).name)


def _metadata_dict(**changes) -> dict:
    values = {
        "investigators": ["Jane Doe"], "affiliations": "Example Institution", "contact": "jane@example.org",
        "experiment": "EXP", "cruise": "C1", "documents": ["protocol.pdf", "checklist.txt"], "data_type": "flow_thru",
        "data_status": "final", "pixel_per_um": 3.4,
    }  # fmt: skip
    values.update(changes)
    return values


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"investigator": "x"}, r"unknown keys \['investigator'\]"),
        ({"contact": None}, r"missing required keys \['contact'\]"),
        ({"pixel_per_um": "2.77"}, "pixel_per_um must be a number"),
        ({"pixel_per_um": 0}, "pixel_per_um must be > 0"),
        ({"data_status": "draft"}, "data_status 'draft' is not one of"),
        ({"contact": "nobody"}, "is not an email address"),
        ({"documents": ["a,b.pdf"]}, "holds a comma"),
        ({"latitude": 41.0}, "latitude and longitude go together"),
        ({"latitude": 100.0, "longitude": 0.0}, "latitude 100.0 is outside"),
        ({"water_depth": -5}, "water_depth must be >= 0"),
        ({"associated_media": "{bin}_{number}"}, "associated_media pattern .* does not format"),
        ({"associated_media": "{bin} {roi}"}, "makes values with whitespace"),
        ({"cruise": "Straße"}, "is not ASCII"),
    ],
)
def test_metadata_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        parse_metadata(_metadata_dict(**changes), source="crafted.yaml")


def test_metadata_file_forms(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("investigators: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML or JSON"):
        load_metadata(bad)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a mapping"):
        load_metadata(listed)
    as_json = tmp_path / "meta.json"
    as_json.write_text('{"investigators": "Jane Doe", "affiliations": "X", "contact": "j@x.org", "experiment": "E",'
                       ' "cruise": "C", "documents": "p.pdf", "data_type": "bottle", "data_status": "Final",'
                       ' "pixel_per_um": 2.77, "water_depth": "NA"}')  # fmt: skip
    meta = load_metadata(as_json)
    assert meta.data_status == "final" and meta.water_depth is None and meta.investigators == "Jane_Doe"
    assert set(METADATA_KEYS) >= {"investigators", "pixel_per_um", "associated_media"}


def test_fcheck_when_available(tmp_path, metadata, taxa):
    script = os.environ.get("IFCBFLOW_FCHECK")
    if not script or not Path(script).is_file():
        pytest.skip("NASA FCHECK is not distributed for local runs (SeaBASS runs it by email/SFTP for registered "
                    "submitters); set IFCBFLOW_FCHECK=/path/to/fcheck to run a local copy")  # fmt: skip
    perl = shutil.which("perl")
    if perl is None:
        pytest.skip("perl is not installed, and FCHECK is a Perl script")
    sample = _bin()
    path = tmp_path / seabass_file_name(sample.bin_id, metadata)
    path.write_text(seabass_text(sample, metadata, taxa))
    result = subprocess.run([perl, script, str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("/end_header\n", "/end_header\n\n"),  # a blank line
        ("/units=none,", "/units="),  # fewer units than fields
        ("/station=NA", "/station=Main Pier"),  # whitespace in a header
        ("/start_time=11:30:59[GMT]", "/start_time=11:30:60[GMT]"),  # no such second
        ("/start_date=20230810", "/start_date=2023-08-10"),  # not yyyymmdd
        ("/north_latitude=58.259837[DEG]", "/north_latitude=98.259837[DEG]"),  # no place on Earth
        ("/delimiter=comma", "/delimiter=semicolon"),
        (",0.9100,", ",NA,"),  # NA in the data
        ("/water_depth=NA", "/water_depth=10[m]"),  # bracketed units outside time and position
    ],
)
def test_the_rule_check_catches_violations(old, new, metadata, taxa):
    text = seabass_text(_bin(), metadata, taxa)
    assert old in text
    with pytest.raises((AssertionError, ValueError)):
        check_published_rules(text.replace(old, new, 1), seabass_file_name(_bin().bin_id, metadata))
