"""Exports of a store: IFCB Dashboard v3 class files and a per-bin CSV table.

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
"""

from __future__ import annotations

import csv
import io
import json
import logging
import posixpath
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np
from fsspec.core import url_to_fs

from model.decision import winner_names, winners
from model.thresholds import threshold_array
from pipeline.ifcb.identifiers import day_folder, parse_bin_id
from pipeline.redact import redact_url
from pipeline.results.remap import ClassMap, remap_winners
from pipeline.results.report import THRESHOLDED, class_table, count_sets
from pipeline.results.store import ResultStore

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
    `<class>_count_thresholded` and `<class>_per_ml_thresholded` for the classes and `unclassified`.
    """
    summary = store.summary()
    header = ["bin", "time", "ml_analyzed", "n_rois", *SAMPLE_COLUMNS]
    blocks = []
    for counts in count_sets(summary):
        suffix = "_thresholded" if counts == THRESHOLDED else ""
        names, number, per_ml = class_table(summary, counts, class_map)
        header += [f"{c}_count{suffix}" for c in names] + [f"{c}_per_ml{suffix}" for c in names]
        blocks.append((number, per_ml))
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
