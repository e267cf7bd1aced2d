"""SeaBASS files of automated IFCB classifications: one `.sb` file per bin, one row per ROI, for submission to NASA's
SeaBASS archive as plankton and particles imagery (Level 1b: each ROI's automated class and size).

The format, as NASA publishes it (seabass.gsfc.nasa.gov/wiki/metadataheaders, /wiki/stdfields, and the plankton and
particles imagery page, after Neeley et al. 2021, doi:10.1575/1912/27377):

- the header is a block from `/begin_header` to `/end_header`; its lines are `/keyword=value` pairs or comments
  starting with `!`; no whitespace in keywords or values (spaces become underscores; several values are
  comma-separated without spaces); a required value that is unknown is `NA`; units in brackets only on the time and
  position headers (`[GMT]`, `[DEG]`);
- required headers: investigators, affiliations, contact, experiment, cruise, station, data_file_name, documents,
  calibration_files, data_type, data_status, start_date and end_date (yyyymmdd), start_time and end_time
  (hh:mm:ss[GMT]), north_latitude, south_latitude, east_longitude, west_longitude (decimal degrees[DEG], the bounds of
  the file), water_depth, missing, delimiter, fields, units;
- plankton and particles imagery adds volume_sampled_ml, volume_imaged_ml and pixel_per_um (required), and the
  names of the instrument's length and width variables; the IFCB submissions of WHOI (Sosik, NES-LTER and
  EXPORTS `IFCB_writesb_*` scripts) and of ifcbUTOPIA (utopia-pipeline-tools `MakeSeaBASS.compile_header`) also
  write eventID (the bin id), instrument_model (`Imaging_FlowCytobot_IFCB<n>`), instrument_manufacturer
  (`McLane_Research_Laboratories_Inc`), measurement_depth, and optionally associatedMedia_source and
  associated_archives / associated_archive_types, with `calibration_files=no_cal_files` when there are none;
- `/fields` and `/units` list the data columns and their units, as many of one as of the other; the rows follow
  `/end_header`, one line per ROI, no blank lines, the file's delimiter between values, the `/missing` value
  (-9999) where a value is unknown (never NA in the data).

The fields (`FIELDS`), with their SeaBASS units, are those the IFCB submissions above write, from the SeaBASS standard
fields list: associatedMedia (the ROI's image: its id `{bin}_{roi:05d}` or a URL built from a pattern),
data_provider_category_automated (the class name), scientificName_automated and scientificNameID_automated (the
class's WoRMS name and `urn:lsid:marinespecies.org:taxname:<AphiaID>`, from the class-to-taxon table,
`pipeline.results.taxa`; the missing value for a class that is no taxon), prediction_score_automated_category (the
score of the ROI's class), biovolume (um^3), area_cross_section (um^2), length_representation and
width_representation (um: MajorAxisLength and MinorAxisLength, named in the header), equivalent_spherical_diameter (um:
the diameter of the sphere of the ROI's biovolume, (6V/π)^(1/3), as WHOI's writer computes it), and
area_based_diameter (um: EquivDiameter, the diameter of the circle of the ROI's area; SeaBASS's standard field for it).
Sizes are the morphology in µm (`pipeline.morphology.to_microns`), rounded to 3 decimals as both writers do.

The fixed headers come from a metadata file (YAML or JSON) that the user writes: `load_metadata` reads and validates
it (`METADATA_KEYS` lists each key, its type and whether it is required), so a run fails at the start with one clear
message rather than midway. Per bin (`SeabassBin`): the bin id, its sample time (UTC; from the id when not given),
its position (from the bin's header where present, else the metadata file's `latitude`/`longitude`, else NA), the
volume analysed, and per-ROI arrays of ROI number, class name, score and the morphology in µm.

`seabass_text` builds one bin's file; `write_seabass` writes a file per bin under any fsspec URL.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fsspec
import numpy as np
import yaml
from fsspec.core import url_to_fs

from pipeline.ifcb.identifiers import parse_bin_id
from pipeline.results.taxa import TaxonTable

#: The data columns and their SeaBASS units, in file order.
FIELDS: tuple[tuple[str, str], ...] = (
    ("associatedMedia", "none"),
    ("data_provider_category_automated", "none"),
    ("scientificName_automated", "none"),
    ("scientificNameID_automated", "none"),
    ("prediction_score_automated_category", "none"),
    ("biovolume", "um^3"),
    ("area_cross_section", "um^2"),
    ("length_representation", "um"),
    ("width_representation", "um"),
    ("equivalent_spherical_diameter", "um"),
    ("area_based_diameter", "um"),
)
#: The morphology columns (µm) the rows read, as `pipeline.morphology` names them.
MORPHOLOGY_COLUMNS = ("Biovolume", "Area", "MajorAxisLength", "MinorAxisLength", "EquivDiameter")
LENGTH_VARNAME, WIDTH_VARNAME = "MajorAxisLength", "MinorAxisLength"
DATA_STATUS = ("preliminary", "final")
DEFAULT_MANUFACTURER = "McLane_Research_Laboratories_Inc"
DEFAULT_MEDIA = "{bin}_{roi:05d}"
DEFAULT_FILE_NAME = "{experiment}_{cruise}_IFCB_plankton_and_particles_{bin}_R1.sb"
NO_CALIBRATION_FILES = "no_cal_files"
DELIMITER = "comma"
MISSING = -9999
_NAME_SAFE = re.compile(r"\s+")
# A value the comma-delimited rows cannot hold: the delimiter, quotes, control characters.
_ROW_UNSAFE = re.compile(r'[,"\x00-\x1f\x7f]')


@dataclass(frozen=True)
class MetadataKey:
    """One key of the metadata file: its kind (`text`, `texts` (a list or one text), `number`, `number_or_na` (a
    number or NA), `pattern`, `comments` (a list of lines or one text)), whether it is required, and what it is."""

    kind: str
    required: bool
    help: str


#: The metadata file's keys. Texts have their spaces replaced by underscores (SeaBASS's rule); list items may not
#: hold commas; patterns are Python format strings with the fields `{bin}` and `{roi}` (and, for the file name,
#: `{experiment}`, `{cruise}`).
METADATA_KEYS: dict[str, MetadataKey] = {
    "investigators": MetadataKey("texts", True, "names, principal investigator first (John_Smith)"),
    "affiliations": MetadataKey("texts", True, "the investigators' institutions"),
    "contact": MetadataKey("text", True, "an email address for the file"),
    "experiment": MetadataKey("text", True, "the experiment's name in SeaBASS"),
    "cruise": MetadataKey("text", True, "the cruise (or deployment) name in SeaBASS"),
    "station": MetadataKey("text", False, "the station; NA when not given"),
    "documents": MetadataKey("texts", True, "protocol, checklist and other document file names"),
    "calibration_files": MetadataKey("texts", False, f"calibration file names; {NO_CALIBRATION_FILES} when none"),
    "data_type": MetadataKey("text", True, "SeaBASS data type, e.g. flow_thru (underway) or bottle (discrete)"),
    "data_status": MetadataKey("text", True, f"one of {list(DATA_STATUS)}"),
    "water_depth": MetadataKey("number_or_na", False, "bottom depth in m; NA when not given"),
    "measurement_depth": MetadataKey("number_or_na", False, "sample depth in m; NA when not given"),
    "volume_sampled_ml": MetadataKey("number_or_na", False, "volume of each sample collected (mL); NA when not given"),
    "pixel_per_um": MetadataKey(
        "number", False, "the instrument's calibration, pixels per µm (`export --seabass`: the store's, per bin)"
    ),
    "instrument_manufacturer": MetadataKey("text", False, f"default {DEFAULT_MANUFACTURER}"),
    "instrument_model": MetadataKey("text", False, "default Imaging_FlowCytobot_IFCB<n> from the bin id"),
    "latitude": MetadataKey("number_or_na", False, "fixed position (°N) for bins whose header has none"),
    "longitude": MetadataKey("number_or_na", False, "fixed position (°E) for bins whose header has none"),
    "associated_media": MetadataKey("pattern", False, f"each ROI's image id or URL; default {DEFAULT_MEDIA}"),
    "associated_media_source": MetadataKey("pattern", False, "where the bin's images are (a URL pattern)"),
    "associated_archives": MetadataKey("texts", False, "archive file names bundled with the submission"),
    "associated_archive_types": MetadataKey("texts", False, "their types (raw, ...)"),
    "data_file_name": MetadataKey("pattern", False, f"each file's name; default {DEFAULT_FILE_NAME}"),
    "comments": MetadataKey("comments", False, "free text lines written as ! comments in every header"),
}


@dataclass(frozen=True)
class SeabassMetadata:
    """The validated metadata file: the header values every file shares (texts already SeaBASS-safe)."""

    investigators: str
    affiliations: str
    contact: str
    experiment: str
    cruise: str
    documents: str
    data_type: str
    data_status: str
    pixel_per_um: float | None = None  # None: not given (a store's export gives each bin its own calibration)
    station: str = "NA"
    calibration_files: str = NO_CALIBRATION_FILES
    water_depth: float | None = None
    measurement_depth: float | None = None
    volume_sampled_ml: float | None = None
    instrument_manufacturer: str = DEFAULT_MANUFACTURER
    instrument_model: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    associated_media: str = DEFAULT_MEDIA
    associated_media_source: str | None = None
    associated_archives: str | None = None
    associated_archive_types: str | None = None
    data_file_name: str = DEFAULT_FILE_NAME
    comments: tuple[str, ...] = ()
    source: str = "<metadata>"


@dataclass(frozen=True)
class SeabassBin:
    """One bin's input: its id; per ROI (arrays of one length) the ROI numbers, class names (the decision's, as the
    taxon table names them), scores of those classes, and the morphology in µm (a structured array or a mapping with
    `MORPHOLOGY_COLUMNS`); the sample time (UTC; None: the bin id's), the header's position (None: not in the
    header), the volume analysed (mL) and the sample depth (m; None: the metadata's `measurement_depth`)."""

    bin_id: str
    roi_numbers: np.ndarray
    class_names: Sequence[str]
    scores: np.ndarray
    morphology: Any
    time: datetime | None = None
    latitude: float | None = None
    longitude: float | None = None
    ml_analyzed: float | None = None
    depth: float | None = None
    comments: tuple[str, ...] = field(default=())


def load_metadata(url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> SeabassMetadata:
    """Read and validate a metadata file (YAML, or JSON, which is YAML too) from a path or fsspec URL."""
    source = os.fspath(url)
    with fsspec.open(source, "rt", encoding="utf-8", **(storage_options or {})) as f:
        text = f.read()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"the SeaBASS metadata file {source} is not valid YAML or JSON: {err}") from None
    return parse_metadata(data, source=source)


def parse_metadata(data: Any, source: str = "<metadata>") -> SeabassMetadata:
    """Validate a metadata mapping against `METADATA_KEYS`; ValueError naming every key at fault."""
    if not isinstance(data, Mapping):
        raise ValueError(f"the SeaBASS metadata file {source} must be a mapping of keys to values, got {type(data)}")
    problems: list[str] = []
    unknown = sorted(str(key) for key in data if key not in METADATA_KEYS)
    if unknown:
        problems.append(f"unknown keys {unknown} (the keys are {sorted(METADATA_KEYS)})")
    missing = [key for key, spec in METADATA_KEYS.items() if spec.required and data.get(key) in (None, "", [])]
    if missing:
        problems.append(f"missing required keys {missing}")
    values: dict[str, Any] = {}
    for key, spec in METADATA_KEYS.items():
        if key in unknown or data.get(key) is None:
            continue
        try:
            values[key] = _metadata_value(key, spec, data[key])
        except ValueError as err:
            problems.append(str(err))
    if not problems:
        problems += _metadata_rules(values)
    if problems:
        raise ValueError(f"the SeaBASS metadata file {source} is invalid: " + "; ".join(problems))
    return SeabassMetadata(**values, source=source)


def _metadata_value(key: str, spec: MetadataKey, value: Any) -> Any:
    if spec.kind == "text":
        return _header_text(key, value)
    if spec.kind == "texts":
        items = value if isinstance(value, list) else [value]
        texts = [_header_text(key, item) for item in items]
        if not texts:
            raise ValueError(f"{key} is an empty list")
        for text in texts:
            if "," in text:
                raise ValueError(f"{key} item {text!r} holds a comma; give a list of items instead")
        return ",".join(texts)
    if spec.kind in ("number", "number_or_na"):
        if spec.kind == "number_or_na" and isinstance(value, str) and value.strip().upper() == "NA":
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{key} must be a number{' or NA' if spec.kind == 'number_or_na' else ''}, got {value!r}")
        return float(value)
    if spec.kind == "pattern":
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{key} must be a text pattern, got {value!r}")
        return value.strip()
    if spec.kind == "comments":
        items = value if isinstance(value, list) else [value]
        lines = []
        for item in items:
            if not isinstance(item, str | int | float) or isinstance(item, bool):
                raise ValueError(f"comments must be texts, got {item!r}")
            lines += str(item).splitlines() or [""]
        if not all(line.isascii() for line in lines):
            raise ValueError("comments must be ASCII text (SeaBASS files are US-ASCII)")
        return tuple(line.rstrip() for line in lines)
    raise AssertionError(spec.kind)


def _header_text(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{key} must be text, got {value!r}")
    text = _NAME_SAFE.sub("_", str(value).strip())
    if not text:
        raise ValueError(f"{key} is empty")
    if not text.isascii():
        raise ValueError(f"{key} {text!r} is not ASCII (SeaBASS files are US-ASCII)")
    if "=" in text or "\x00" in text:
        raise ValueError(f"{key} {text!r} holds '=', which SeaBASS header values cannot")
    return text


def _metadata_rules(values: dict[str, Any]) -> list[str]:
    """Checks across keys and of values' meaning."""
    problems = []
    if values["data_status"].lower() not in DATA_STATUS:
        problems.append(f"data_status {values['data_status']!r} is not one of {list(DATA_STATUS)}")
    else:
        values["data_status"] = values["data_status"].lower()
    if "@" not in values["contact"]:
        problems.append(f"contact {values['contact']!r} is not an email address")
    if values.get("pixel_per_um") is not None and values["pixel_per_um"] <= 0:
        problems.append(f"pixel_per_um must be > 0, got {values['pixel_per_um']}")
    latitude, longitude = values.get("latitude"), values.get("longitude")
    if (latitude is None) != (longitude is None):
        problems.append("latitude and longitude go together: give both or neither")
    if latitude is not None and not -90 <= latitude <= 90:
        problems.append(f"latitude {latitude} is outside -90..90")
    if longitude is not None and not -180 <= longitude <= 180:
        problems.append(f"longitude {longitude} is outside -180..180")
    for key in ("water_depth", "measurement_depth", "volume_sampled_ml"):
        if values.get(key) is not None and values[key] < 0:
            problems.append(f"{key} must be >= 0, got {values[key]}")
    sample = {"bin": "D20240101T000000_IFCB001", "roi": 1, "experiment": "x", "cruise": "x"}
    for key in ("associated_media", "associated_media_source", "data_file_name"):
        if key in values:
            try:
                formatted = values[key].format(**sample)
            except (KeyError, IndexError, ValueError) as err:
                problems.append(
                    f"{key} pattern {values[key]!r} does not format ({err!r}); its fields are "
                    f"{{bin}}, {{roi}}, {{experiment}}, {{cruise}}"
                )
                continue
            if _NAME_SAFE.search(formatted) or _ROW_UNSAFE.search(formatted):
                problems.append(f"{key} pattern {values[key]!r} makes values with whitespace, commas or quotes")
    return problems


def seabass_file_name(bin_id: str, metadata: SeabassMetadata) -> str:
    """The file's name (`data_file_name` pattern, by default `<experiment>_<cruise>_IFCB_plankton_and_particles_
    <bin>_R1.sb`)."""
    return metadata.data_file_name.format(bin=bin_id, roi=0, experiment=metadata.experiment, cruise=metadata.cruise)


def seabass_text(sample: SeabassBin, metadata: SeabassMetadata, taxa: TaxonTable, *, classifier: str = "") -> str:
    """One bin's SeaBASS file as text (LF line ends, ending with one). `classifier` (the model, its hash) is written
    as a comment. Raises ValueError for per-ROI arrays of unequal length, a class the taxon table lacks, a position out
    of range, or a text value the comma-delimited rows cannot hold."""
    bin_id = parse_bin_id(sample.bin_id)
    rows = _rows(sample, metadata, taxa)
    when = (sample.time or bin_id.time).astimezone(UTC)
    latitude, longitude = _position(sample, metadata)
    depth = metadata.measurement_depth if sample.depth is None else sample.depth
    model = metadata.instrument_model or f"Imaging_FlowCytobot_IFCB{bin_id.instrument_number}"
    date, clock = when.strftime("%Y%m%d"), when.strftime("%H:%M:%S") + "[GMT]"
    header: list[tuple[str, str]] = [
        ("investigators", metadata.investigators),
        ("affiliations", metadata.affiliations),
        ("contact", metadata.contact),
        ("experiment", metadata.experiment),
        ("cruise", metadata.cruise),
        ("station", metadata.station),
        ("data_file_name", seabass_file_name(sample.bin_id, metadata)),
        ("documents", metadata.documents),
        ("calibration_files", metadata.calibration_files),
        ("eventID", sample.bin_id),
        ("data_type", metadata.data_type),
        ("instrument_model", model),
        ("instrument_manufacturer", metadata.instrument_manufacturer),
        ("data_status", metadata.data_status),
        ("start_date", date),
        ("end_date", date),
        ("start_time", clock),
        ("end_time", clock),
        ("north_latitude", _degrees(latitude)),
        ("south_latitude", _degrees(latitude)),
        ("east_longitude", _degrees(longitude)),
        ("west_longitude", _degrees(longitude)),
        ("water_depth", _header_number(metadata.water_depth)),
        ("measurement_depth", _header_number(depth)),
        ("volume_sampled_ml", _header_number(metadata.volume_sampled_ml)),
        ("volume_imaged_ml", _header_number(sample.ml_analyzed)),
        ("pixel_per_um", _header_number(metadata.pixel_per_um)),
    ]
    if metadata.associated_media_source is not None:
        header.append(("associatedMedia_source", metadata.associated_media_source.format(bin=sample.bin_id, roi=0)))
    if metadata.associated_archives is not None:
        header.append(("associated_archives", metadata.associated_archives))
    if metadata.associated_archive_types is not None:
        header.append(("associated_archive_types", metadata.associated_archive_types))
    header += [
        ("length_representation_instrument_varname", LENGTH_VARNAME),
        ("width_representation_instrument_varname", WIDTH_VARNAME),
    ]
    comments = [
        "Automated classification of each ROI (the class of highest score, or below its class threshold",
        "unclassified); prediction_score_automated_category is the score of that class.",
        "equivalent_spherical_diameter: diameter of the sphere of the ROI's biovolume, (6*V/pi)^(1/3);",
        "area_based_diameter: diameter of the circle of the ROI's area (EquivDiameter).",
        f"A class with no WoRMS AphiaID has scientificNameID_automated {MISSING} (and scientificName_automated",
        f"{MISSING} unless the class-to-taxon table names it).",
    ]
    if classifier:
        comments.insert(0, f"Classifier: {classifier}")
    comments += [*metadata.comments, *sample.comments]
    lines = ["/begin_header"]
    lines += [f"/{key}={value}" for key, value in header]
    lines += ["!", *[f"! {text}" if text else "!" for text in comments], "!"]
    lines += [
        f"/missing={MISSING}",
        f"/delimiter={DELIMITER}",
        "/fields=" + ",".join(name for name, _ in FIELDS),
        "/units=" + ",".join(unit for _, unit in FIELDS),
        "/end_header",
    ]
    return "\n".join(lines + rows) + "\n"


def write_seabass(
    samples: Iterable[SeabassBin],
    metadata: SeabassMetadata,
    taxa: TaxonTable,
    out_url: str,
    *,
    classifier: str = "",
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """Write one SeaBASS file per bin under `out_url` (any fsspec URL), each with one PUT; returns the paths."""
    fs, root = url_to_fs(out_url, **(storage_options or {}))
    fs.makedirs(root, exist_ok=True)
    written = []
    for sample in samples:
        path = posixpath.join(root, seabass_file_name(sample.bin_id, metadata))
        fs.pipe_file(path, seabass_text(sample, metadata, taxa, classifier=classifier).encode("ascii"))
        written.append(path)
    return written


def _position(sample: SeabassBin, metadata: SeabassMetadata) -> tuple[float | None, float | None]:
    """The bin's header position where it has one, else the metadata's; each checked against its range."""
    if sample.latitude is not None and sample.longitude is not None:
        latitude, longitude = float(sample.latitude), float(sample.longitude)
        if not math.isfinite(latitude) or not math.isfinite(longitude):
            latitude, longitude = metadata.latitude, metadata.longitude
    else:
        latitude, longitude = metadata.latitude, metadata.longitude
    if latitude is not None and not -90 <= latitude <= 90:
        raise ValueError(f"bin {sample.bin_id}: latitude {latitude} is outside -90..90")
    if longitude is not None and not -180 <= longitude <= 180:
        raise ValueError(f"bin {sample.bin_id}: longitude {longitude} is outside -180..180")
    return latitude, longitude


def _rows(sample: SeabassBin, metadata: SeabassMetadata, taxa: TaxonTable) -> list[str]:
    roi = np.asarray(sample.roi_numbers, dtype=np.int64).reshape(-1)
    names = [str(name) for name in sample.class_names]
    scores = np.asarray(sample.scores, dtype=np.float64).reshape(-1)
    sizes = {column: _column(sample.morphology, column, sample.bin_id) for column in MORPHOLOGY_COLUMNS}
    lengths = {"roi_numbers": roi.size, "class_names": len(names), "scores": scores.size}
    lengths |= {f"morphology {column}": values.size for column, values in sizes.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"bin {sample.bin_id}: per-ROI arrays differ in length: {lengths}")
    unknown = sorted({name for name in names if name not in taxa})
    if unknown:
        raise ValueError(f"bin {sample.bin_id}: classes {unknown} have no row in the taxon table {taxa.source}")
    text_columns = {}
    for taxon in (taxa[name] for name in set(names)):
        cells = (taxon.class_name, taxon.scientific_name, taxon.scientific_name_id)
        text_columns[taxon.class_name] = tuple(_row_text(cell, sample.bin_id) for cell in cells)
    volume = sizes["Biovolume"]
    with np.errstate(invalid="ignore"):
        esd = np.cbrt(6.0 * volume / np.pi)
    numbers = np.column_stack([volume, sizes["Area"], sizes["MajorAxisLength"], sizes["MinorAxisLength"], esd,
                               sizes["EquivDiameter"]])  # fmt: skip
    rows = []
    for i in range(roi.size):
        media = _row_text(metadata.associated_media.format(bin=sample.bin_id, roi=int(roi[i])), sample.bin_id)
        cells = [media, *text_columns[names[i]], _value(scores[i], 4), *(_value(v, 3) for v in numbers[i])]
        rows.append(",".join(cells))
    return rows


def _column(morphology: Any, column: str, bin_id: str) -> np.ndarray:
    try:
        values = morphology[column]
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"bin {bin_id}: the morphology has no column {column!r} (µm, `to_microns`)") from None
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.any(values < 0):
        raise ValueError(f"bin {bin_id}: morphology {column} has negative values")
    return values


def _row_text(value: str | None, bin_id: str) -> str:
    if value is None or value == "":
        return str(MISSING)
    if _ROW_UNSAFE.search(value):
        raise ValueError(f"bin {bin_id}: value {value!r} holds a comma, quote or control character")
    if not value.isascii():
        raise ValueError(f"bin {bin_id}: value {value!r} is not ASCII")
    return value


def _value(number: float, decimals: int) -> str:
    if not math.isfinite(number):
        return str(MISSING)
    text = f"{number:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _header_number(number: float | None) -> str:
    """A header's number to 6 significant digits, never in exponent form; NA when unknown."""
    if number is None or not math.isfinite(number):
        return "NA"
    return np.format_float_positional(number, precision=6, unique=False, fractional=False, trim="-")


def _degrees(number: float | None) -> str:
    """Decimal degrees to 6 decimals (about 0.1 m), trailing zeros dropped, with SeaBASS's unit; NA when unknown."""
    return "NA" if number is None else f"{f'{number:.6f}'.rstrip('0').rstrip('.')}[DEG]"
