"""The published rules of NASA's SeaBASS file format, checked line by line (seabass.gsfc.nasa.gov/wiki/metadataheaders,
/wiki/stdfields, plankton and particles imagery): for the tests of the writer and of `ifcbflow export --seabass`."""

from __future__ import annotations

import re
from datetime import datetime

#: Headers every SeaBASS file must have (metadataheaders; header_template.txt), and those the plankton and particles
#: imagery page adds.
REQUIRED_HEADERS = (
    "investigators", "affiliations", "contact", "experiment", "cruise", "station", "data_file_name", "documents",
    "calibration_files", "data_type", "data_status", "start_date", "end_date", "start_time", "end_time",
    "north_latitude", "south_latitude", "east_longitude", "west_longitude", "water_depth", "missing", "delimiter",
    "fields", "units",
)  # fmt: skip
IMAGERY_HEADERS = ("volume_sampled_ml", "volume_imaged_ml", "pixel_per_um", "length_representation_instrument_varname",
                   "width_representation_instrument_varname")  # fmt: skip
#: The standard fields (and SeaBASS units) an IFCB Level 1b file uses (SeaBASS standard fields list).
STANDARD_FIELDS = {
    "associatedMedia": "none", "data_provider_category_automated": "none", "scientificName_automated": "none",
    "scientificNameID_automated": "none", "prediction_score_automated_category": "none", "biovolume": "um^3",
    "area_cross_section": "um^2", "length_representation": "um", "width_representation": "um",
    "equivalent_spherical_diameter": "um", "area_based_diameter": "um",
}  # fmt: skip
DELIMITERS = {"comma": ",", "space": " ", "tab": "\t"}
def check_published_rules(text: str, file_name: str) -> tuple[dict[str, str], list[list[str]]]:
    """Assert each published rule line by line; return the headers and the rows' cells."""
    assert text.isascii(), "SeaBASS files are US-ASCII"
    assert "\r" not in text, "LF line ends only"
    assert text.endswith("\n") and not text.endswith("\n\n"), "the last line ends with one EOL"
    lines = text.split("\n")[:-1]
    assert lines[0] == "/begin_header", "the header starts with /begin_header"
    end = lines.index("/end_header")
    headers: dict[str, str] = {}
    for line in lines[1:end]:
        assert line, "no blank lines"
        if line.startswith("!"):
            continue  # comments are the only header lines that may hold whitespace
        assert line.startswith("/"), f"a header line is /keyword=value or a ! comment: {line!r}"
        assert not re.search(r"\s", line), f"no whitespace in headers: {line!r}"
        key, sep, value = line[1:].partition("=")
        assert sep and key and value, f"keyword=value with a value (NA when unknown): {line!r}"
        assert key not in headers, f"header {key} twice"
        if "[" in value:
            assert key.endswith(("_time", "_latitude", "_longitude")), f"bracketed units only on time/position: {line}"
        headers[key] = value
    for key in (*REQUIRED_HEADERS, *IMAGERY_HEADERS):
        assert key in headers, f"required header /{key} is missing"
    assert headers["data_file_name"] == file_name
    assert headers["data_status"] in ("preliminary", "final")
    for key in ("start_date", "end_date"):
        datetime.strptime(headers[key], "%Y%m%d")  # yyyymmdd, a real date
        assert re.fullmatch(r"\d{8}", headers[key])
    for key in ("start_time", "end_time"):
        assert re.fullmatch(r"\d\d:\d\d:\d\d\[GMT\]", headers[key]), headers[key]
        datetime.strptime(headers[key][:8], "%H:%M:%S")  # seconds <= 59 and so on
    assert (headers["start_date"], headers["start_time"]) <= (headers["end_date"], headers["end_time"])
    bounds = {}
    for key, limit in (("north_latitude", 90), ("south_latitude", 90), ("east_longitude", 180),
                       ("west_longitude", 180)):  # fmt: skip
        if headers[key] != "NA":
            assert headers[key].endswith("[DEG]"), f"{key} in decimal degrees[DEG]"
            bounds[key] = float(headers[key][: -len("[DEG]")])
            assert -limit <= bounds[key] <= limit, f"{key} {bounds[key]} out of range"
    if len(bounds) == 4:
        assert bounds["north_latitude"] >= bounds["south_latitude"]
        assert bounds["east_longitude"] >= bounds["west_longitude"]
    for key in ("water_depth", "measurement_depth", "volume_sampled_ml", "volume_imaged_ml", "pixel_per_um"):
        if headers.get(key, "NA") != "NA":
            assert float(headers[key]) >= 0, key
    missing = headers["missing"]
    float(missing)  # a numeric missing value
    assert headers["delimiter"] in DELIMITERS
    delimiter = DELIMITERS[headers["delimiter"]]
    fields, units = headers["fields"].split(","), headers["units"].split(",")
    assert len(fields) == len(units), "as many /units as /fields"
    assert len(set(fields)) == len(fields), "each field once"
    for name, unit in zip(fields, units, strict=True):
        assert STANDARD_FIELDS.get(name) == unit, f"field {name} with unit {unit} is not a SeaBASS standard field"
    rows = []
    for line in lines[end + 1 :]:
        assert line, "no blank lines in the data"
        cells = line.split(delimiter)
        assert len(cells) == len(fields), f"one value per field: {line!r}"
        assert all(cell and cell == cell.strip() for cell in cells), f"no empty values: {line!r}"
        assert "NA" not in cells, "the data use the /missing value, never NA"
        for name, cell in zip(fields, cells, strict=True):
            if STANDARD_FIELDS[name] != "none" or name == "prediction_score_automated_category":
                value = float(cell)
                assert value == float(missing) or value >= 0, f"{name} {cell}"
        rows.append(cells)
    return headers, rows
