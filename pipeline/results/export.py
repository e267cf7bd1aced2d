"""Exports of a store: IFCB Dashboard v3 class files and a per-bin CSV table.

The Dashboard (and R tools such as iRfcb) read `{bin}_class.h5` with `output_scores` (ROIs x classes),
`class_labels` (the column order) and `roi_numbers`; files sit in `D{YYYY}/D{YYYYMMDD}/` folders like the raw data.
Each file is built in memory and written with one PUT, so the target may be any fsspec URL.
"""

from __future__ import annotations

import csv
import io
import logging
import posixpath
from typing import Any

import h5py
import numpy as np
from fsspec.core import url_to_fs

from model.decision import winners
from pipeline.ifcb.identifiers import day_folder, parse_bin_id
from pipeline.results.store import ResultStore

log = logging.getLogger(__name__)


def dashboard_path(bin_id: str) -> str:
    """`D2024/D20240101/<bin>_class.h5`, relative to the export folder."""
    return f"{day_folder(parse_bin_id(bin_id))}/{bin_id}_class.h5"


def class_file_bytes(
    roi_numbers: np.ndarray, scores: np.ndarray, classes: list[str], *, classifier_name: str, model_hash: str
) -> bytes:
    """One bin's Dashboard v3 class file, as bytes."""
    buffer = io.BytesIO()
    text = h5py.string_dtype()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("output_scores", data=np.asarray(scores, dtype=np.float32))
        f.create_dataset("class_labels", data=np.asarray(classes, dtype=object), dtype=text)
        f.create_dataset("roi_numbers", data=np.asarray(roi_numbers, dtype=np.uint32))
        names = [classes[i] for i in winners(scores)]
        f.create_dataset("class_name_auto", data=np.asarray(names, dtype=object), dtype=text)
        f.create_dataset("classifier_name", data=np.asarray([classifier_name], dtype=object), dtype=text)
        f.create_dataset("model_hash", data=np.asarray([model_hash], dtype=object), dtype=text)
        f.attrs["classifier_name"] = classifier_name
        f.attrs["model_hash"] = model_hash
    return buffer.getvalue()


def export_dashboard(store: ResultStore, out_url: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Write a `{bin}_class.h5` per complete bin under `out_url`; returns the paths written."""
    info = store.info() or {}
    classes = list(info.get("classes", []))
    model_hash = info.get("bundle_hash", "")
    classifier_name = f"ifcbflow {info.get('bundle_arch', 'model')} {model_hash[:12]}"
    fs, root = url_to_fs(out_url, **(storage_options or {}))
    written = []
    for record, roi_numbers, scores in store.iter_bins():
        bin_id = record.bin
        path = posixpath.join(root, dashboard_path(bin_id))
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        fs.pipe_file(
            path, class_file_bytes(roi_numbers, scores, classes, classifier_name=classifier_name, model_hash=model_hash)
        )
        written.append(path)
    log.info("wrote %d dashboard class files to %s", len(written), out_url)
    return written


def export_csv(store: ResultStore, out_url: str, storage_options: dict[str, Any] | None = None) -> int:
    """The per-bin table: bin, time, ml_analyzed, n_rois, then `<class>_count` and `<class>_per_ml` per class."""
    summary = store.summary()
    classes = [str(c) for c in summary["class"].values]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["bin", "time", "ml_analyzed", "n_rois", *(f"{c}_count" for c in classes), *(f"{c}_per_ml" for c in classes)]
    )
    for i in range(summary.sizes["bin"]):
        volume = float(summary.ml_analyzed.values[i])
        writer.writerow(
            [
                str(summary.bin.values[i]),
                np.datetime_as_string(summary.time.values[i], unit="s") + "Z",
                "" if np.isnan(volume) else repr(volume),
                int(summary.n_rois.values[i]),
                *(int(v) for v in summary.counts.values[i]),
                *("" if np.isnan(v) else repr(float(v)) for v in summary.concentration.values[i]),
            ]
        )
    fs, path = url_to_fs(out_url, **(storage_options or {}))
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, buffer.getvalue().encode())
    return summary.sizes["bin"]
