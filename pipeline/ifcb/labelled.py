"""Labelled training images read straight from an IFCB archive: a labels CSV (roi_id,class) + the bins it names.

The images come from THE bin reader (`pipeline.ifcb.bins`), the same one classification uses, so a model is trained on
exactly the pixels it will later see. Bins are read in parallel threads (I/O bound on object storage).
"""

from __future__ import annotations

import csv
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import numpy as np

from model.data import LabelledImages
from pipeline.ifcb.archive import list_bins
from pipeline.ifcb.bins import BinFiles, read_bin_images, read_bin_meta
from pipeline.ifcb.errors import IfcbFormatError
from pipeline.ifcb.identifiers import parse_roi_id, roi_id

log = logging.getLogger(__name__)

READ_THREADS = 8
_MAX_LISTED = 10  # names shown in an error message before "and N more"


def _listing(items: list[str]) -> str:
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def read_labels_csv(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, dict[int, str]]:
    """`roi_id,class` CSV (header row; other columns ignored) -> {bin id: {ROI number: class}}."""
    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        text = f.read().decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"roi_id", "class"} <= {name.strip() for name in reader.fieldnames}:
        raise IfcbFormatError(f"{url}: a labels CSV needs a header with columns roi_id and class")
    labels: dict[str, dict[int, str]] = {}
    for line, row in enumerate(reader, start=2):
        row = {key.strip(): (value or "").strip() for key, value in row.items() if key}
        if not row["roi_id"] and not row["class"]:
            continue
        if not row["class"]:
            raise IfcbFormatError(f"{url} line {line}: ROI {row['roi_id']!r} has no class")
        bin_id, number = parse_roi_id(row["roi_id"])
        known = labels.setdefault(bin_id.id, {})
        if known.get(number, row["class"]) != row["class"]:
            raise IfcbFormatError(f"{url} line {line}: ROI {row['roi_id']} is labelled twice with different classes")
        known[number] = row["class"]
    if not labels:
        raise IfcbFormatError(f"{url}: the labels CSV has no rows")
    return labels


def _read_bin(fs: Any, files: BinFiles, wanted: dict[int, str]) -> list[tuple[int, np.ndarray, str]]:
    images = dict(read_bin_images(fs, read_bin_meta(fs, files)))
    missing = sorted(set(wanted) - set(images))
    if missing:
        numbers = _listing([str(n) for n in missing])
        raise IfcbFormatError(f"bin {files.bin.id} has no image for labelled ROI numbers {numbers}")
    return [(number, images[number], wanted[number]) for number in sorted(wanted)]


def labelled_images_from_archive(
    url: str, labels_csv_url: str, storage_options: dict[str, Any] | None = None
) -> LabelledImages:
    """The labelled ROIs of the archive at `url` (groups = bin ids, ids = ROI ids), ordered by bin time then ROI.

    Every labelled bin must be complete in the archive and every labelled ROI must have an image: training on a
    silently smaller set than the labels describe would be a quiet error, so any gap raises `IfcbFormatError`.
    """
    labels = read_labels_csv(labels_csv_url, storage_options)
    fs, bins, failures = list_bins(url, storage_options, bin_ids=labels.keys())
    if failures:
        raise IfcbFormatError(
            f"{len(failures)} labelled bin(s) unusable in {url}: "
            + _listing([f"{failure.bin} ({failure.reason})" for failure in failures])
        )
    with ThreadPoolExecutor(READ_THREADS) as pool:
        per_bin = list(pool.map(lambda files: _read_bin(fs, files, labels[files.bin.id]), bins))
    data = LabelledImages(images=[], labels=[], groups=[], ids=[])
    for files, rois in zip(bins, per_bin, strict=True):
        for number, image, label in rois:
            data.images.append(image)
            data.labels.append(label)
            data.groups.append(files.bin.id)
            data.ids.append(roi_id(files.bin.id, number))
    log.info("read %d labelled ROIs of %d classes from %d bins", len(data), len(data.classes), len(bins))
    return data
