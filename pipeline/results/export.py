"""Exports of a store: IFCB Dashboard v3 class files, a per-bin CSV table, and SeaBASS files.

The Dashboard (and R tools such as iRfcb) read `{bin}_class.h5` with `output_scores` (ROIs x classes),
`class_labels` (the column order) and `roi_numbers`; files sit in the raw data's day folders (`D{YYYY}/D{YYYYMMDD}/`;
`{YYYY}/IFCBn_{YYYY}_{DDD}/` for old-style bins: `pipeline.ifcb.identifiers.day_folder`).
As in the files of classifiers with thresholds (iRfcb's), `class_name` is each ROI's class by the decision rule
(`unclassified` below its class threshold), `class_name_auto` its argmax class, and `thresholds` the per-class
thresholds. Scores stay raw whatever the remap; a remap renames `class_name` and `class_name_auto` and is recorded
in the file's `remap` attribute. Each file is built in memory and written with one PUT, so the target may be any
fsspec URL.

The CSV has one row per bin with its sample metadata (run type, sample type, bead run, position), argmax counts and
concentrations, then the thresholded ones where the store has them; a JSON sidecar (`<csv>.json`) records the store,
model, thresholds and remap it came from.

SeaBASS files (`export_seabass`, `pipeline.results.seabass`): one per complete bin of a store that measures
(`classify --morphology`), each ROI with its class by the store's decision (as `class_name` of the class files), the
score of that class (of its argmax class for an unclassified ROI), and its morphology in µm by the calibration the
store measured with, which is the one the files' `pixel_per_um` states.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import h5py
import numpy as np
from fsspec.core import url_to_fs

from model.decision import threshold_array, winner_names, winners
from pipeline.ifcb.identifiers import day_folder, parse_bin_id
from pipeline.morphology.columns import COLUMNS, DTYPE
from pipeline.morphology.units import pixels_per_micron, to_microns
from pipeline.redact import redact_url
from pipeline.results.biomass import Sizing
from pipeline.results.remap import ClassMap, remap_winners
from pipeline.results.report import BIOMASS_COLUMNS, THRESHOLDED, biomass_table, class_table, count_sets
from pipeline.results.seabass import SeabassBin, SeabassMetadata, write_seabass
from pipeline.results.store import ResultStore
from pipeline.results.taxa import TaxonTable

log = logging.getLogger(__name__)


def dashboard_path(bin_id: str) -> str:
    """`D2024/D20240101/<bin>_class.h5`, relative to the export folder."""
    return f"{day_folder(parse_bin_id(bin_id))}/{bin_id}_class.h5"


def class_file_bytes(
    roi_numbers: np.ndarray,
    scores: np.ndarray,
    classes: Sequence[str],
    *,
    classifier_name: str,
    model_hash: str,
    thresholds: np.ndarray | None = None,
    class_map: ClassMap | None = None,
) -> bytes:
    """One bin's Dashboard v3 class file, as bytes."""
    buffer = io.BytesIO()
    text = h5py.string_dtype()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("output_scores", data=np.asarray(scores, dtype=np.float32))
        f.create_dataset("class_labels", data=np.asarray(classes, dtype=object), dtype=text)
        f.create_dataset("roi_numbers", data=np.asarray(roi_numbers, dtype=np.uint32))
        for name, rule in (("class_name", thresholds), ("class_name_auto", None)):
            names = _names(winners(scores, rule), classes, class_map)
            f.create_dataset(name, data=np.asarray(names, dtype=object), dtype=text)
        if thresholds is not None:
            f.create_dataset("thresholds", data=np.asarray(thresholds, dtype=np.float64))
        f.create_dataset("classifier_name", data=np.asarray([classifier_name], dtype=object), dtype=text)
        f.create_dataset("model_hash", data=np.asarray([model_hash], dtype=object), dtype=text)
        f.attrs["classifier_name"] = classifier_name
        f.attrs["model_hash"] = model_hash
        if class_map is not None:
            f.attrs["remap"] = class_map.description
    return buffer.getvalue()


def _names(won: np.ndarray, classes: Sequence[str], class_map: ClassMap | None) -> list[str]:
    if class_map is None:
        return winner_names(won, classes)
    return winner_names(remap_winners(won, class_map), class_map.target)


def export_dashboard(
    store: ResultStore,
    out_url: str,
    storage_options: dict[str, Any] | None = None,
    class_map: ClassMap | None = None,
) -> list[str]:
    """Write a `{bin}_class.h5` per complete bin under `out_url`; returns the paths written."""
    info = store.info() or {}
    classes = list(info.get("classes", []))
    thresholds = threshold_array(info.get("thresholds"), classes)
    model_hash = info.get("bundle_hash", "")
    classifier_name = f"ifcbflow {info.get('bundle_arch', 'model')} {model_hash[:12]}"
    fs, root = url_to_fs(out_url, **(storage_options or {}))
    written = []
    for record, roi_numbers, scores in store.iter_bins():
        bin_id = record.bin
        path = posixpath.join(root, dashboard_path(bin_id))
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        data = class_file_bytes(
            roi_numbers, scores, classes, classifier_name=classifier_name, model_hash=model_hash,
            thresholds=thresholds, class_map=class_map,
        )  # fmt: skip
        fs.pipe_file(path, data)
        written.append(path)
    log.info("wrote %d dashboard class files to %s", len(written), out_url)
    return written


def export_seabass(
    store: ResultStore,
    out_url: str,
    metadata: SeabassMetadata,
    taxa: TaxonTable,
    storage_options: dict[str, Any] | None = None,
    class_map: ClassMap | None = None,
) -> list[str]:
    """Write a SeaBASS file per complete bin under `out_url`; returns the paths written.

    Each file's `pixel_per_um` is the calibration the store measured its bin's instrument with. Raises ValueError
    when the store does not measure its bins, when the metadata gives a `pixel_per_um` that is not that calibration,
    or when the taxon table lacks a class the files name."""
    info = store.info() or {}
    sizing = Sizing.from_attributes(info.get("morphology"))
    if sizing is None:
        raise ValueError(
            f"{redact_url(store.url)} holds no morphology: SeaBASS files need each ROI's size; classify into a store "
            "with --morphology"
        )
    classes = list(info.get("classes", []))
    taxa.check_classes(class_map.target if class_map is not None else classes)
    thresholds = threshold_array(info.get("thresholds"), classes)
    classifier = f"ifcbflow {info.get('bundle_arch', 'model')} {info.get('bundle_hash', '')[:12]}"

    def samples() -> Iterator[tuple[SeabassBin, SeabassMetadata]]:
        for record, numbers, scores, morphology in store.iter_measured_bins():
            if record.biovolume is None or morphology is None:
                log.warning("bin %s was classified before the store measured: no SeaBASS file", record.bin)
                continue
            scale = pixels_per_micron(sizing.calibration, parse_bin_id(record.bin).instrument_number)
            if metadata.pixel_per_um is not None and not np.isclose(metadata.pixel_per_um, scale):
                raise ValueError(
                    f"the SeaBASS metadata ({metadata.source}) says pixel_per_um {metadata.pixel_per_um}, but the "
                    f"store measured bin {record.bin} at {scale} pixels per µm: give that calibration"
                )
            won = winners(scores, thresholds)  # argmax, or unclassified below its class's threshold
            table = np.zeros(len(numbers), DTYPE)
            for i, name in enumerate(COLUMNS):
                table[name] = morphology[:, i]
            sample = SeabassBin(
                record.bin, numbers, _names(won, classes, class_map), scores.max(axis=1, initial=0.0),
                to_microns(table, scale), latitude=record.latitude, longitude=record.longitude,
                ml_analyzed=record.ml_analyzed,
            )  # fmt: skip
            yield sample, replace(metadata, pixel_per_um=scale)

    written = []
    for sample, meta in samples():
        written += write_seabass([sample], meta, taxa, out_url, classifier=classifier, storage_options=storage_options)
    log.info("wrote %d SeaBASS files to %s", len(written), out_url)
    return written


#: The CSV's columns of the bins' sample metadata (`pipeline.ifcb.sample`), in the summary's terms.
SAMPLE_COLUMNS = ("run_type", "sample_type", "bead_run", "latitude", "longitude")


def _sample_cells(summary: Any, row: int) -> list[str]:
    """The sample metadata of one bin as CSV cells: texts as they are, `bead_run` as true/false, degrees in full
    precision; "" where unknown."""
    latitude, longitude = (float(summary[name].values[row]) for name in ("latitude", "longitude"))
    return [
        str(summary.run_type.values[row]),
        str(summary.sample_type.values[row]),
        "true" if summary.bead_run.values[row] else "false",
        "" if np.isnan(latitude) else repr(latitude),
        "" if np.isnan(longitude) else repr(longitude),
    ]


def export_csv(
    store: ResultStore,
    out_url: str,
    storage_options: dict[str, Any] | None = None,
    class_map: ClassMap | None = None,
    remap: dict[str, Any] | None = None,
) -> int:
    """The per-bin table and its JSON sidecar; returns the number of bins.

    Columns: bin, time, ml_analyzed, n_rois, what the header says of the sample (`SAMPLE_COLUMNS`: run_type,
    sample_type, bead_run, latitude, longitude; empty where it does not say, as in stores written before they were
    kept), `<class>_count` and `<class>_per_ml` by argmax, then (stores with thresholds)
    `<class>_count_thresholded` and `<class>_per_ml_thresholded` for the classes and `unclassified`, then (stores
    that measure: `classify --morphology`) `<class>_biovolume_um3_per_ml` and, with a class-to-taxon table,
    `<class>_carbon_ug_per_l` (µg C L⁻¹), by argmax; empty for a bin not measured.
    """
    summary = store.summary()
    header = ["bin", "time", "ml_analyzed", "n_rois", *SAMPLE_COLUMNS]
    blocks = []
    for counts in count_sets(summary):
        suffix = "_thresholded" if counts == THRESHOLDED else ""
        names, number, per_ml = class_table(summary, counts, class_map)
        header += [f"{c}_count{suffix}" for c in names] + [f"{c}_per_ml{suffix}" for c in names]
        blocks.append((number, per_ml))
    sums = []
    for name, unit, _ in BIOMASS_COLUMNS:
        if name in summary:
            names, values = biomass_table(summary, name, class_map)
            header += [f"{c}_{unit}" for c in names]
            sums.append(values)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for i in range(summary.sizes["bin"]):
        volume = float(summary.ml_analyzed.values[i])
        row = [
            str(summary.bin.values[i]),
            np.datetime_as_string(summary.time.values[i], unit="s") + "Z",
            "" if np.isnan(volume) else repr(volume),
            int(summary.n_rois.values[i]),
            *_sample_cells(summary, i),
        ]
        for number, per_ml in blocks:
            row += [int(v) for v in number[i]] + ["" if np.isnan(v) else repr(float(v)) for v in per_ml[i]]
        for values in sums:
            row += ["" if np.isnan(v) else repr(float(v)) for v in values[i]]
        writer.writerow(row)
    info = store.info() or {}
    sidecar = {
        "store": redact_url(store.url),
        "bundle_hash": info.get("bundle_hash"),
        "bundle_arch": info.get("bundle_arch"),
        "model_hash": info.get("model_hash"),
        "thresholds": info.get("thresholds"),
        "thresholds_sha256": info.get("thresholds_sha256"),
        "count_sets": count_sets(summary),
        "remap": remap,
    }
    fs, path = url_to_fs(out_url, **(storage_options or {}))
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, buffer.getvalue().encode())
    fs.pipe_file(f"{path}.json", json.dumps(sidecar, indent=2).encode())
    return summary.sizes["bin"]
