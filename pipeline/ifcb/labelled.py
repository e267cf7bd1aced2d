"""Labelled training images read straight from an IFCB archive: a labels CSV (roi_id,class) + the bins it names.

The images come from THE bin reader (`pipeline.ifcb.bins`), the same one classification uses, so a model is trained on
exactly the pixels it will later see. Bins are read in parallel (Dask tasks when a training set is prepared,
`model.training.prepared`; threads when a set is loaded into memory for evaluation), each labelled bin's files once.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import fsspec
import numpy as np

from model.training.data import LabelledImages
from model.training.prepared import LabelledSource, LabelledUnit
from pipeline.ifcb.archive import list_bins
from pipeline.ifcb.bins import read_bin_images, read_bin_meta
from pipeline.ifcb.errors import IfcbFormatError
from pipeline.ifcb.identifiers import parse_roi_id, roi_id

log = logging.getLogger(__name__)

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


def _read_bin(fs: Any, unit: LabelledUnit) -> list[np.ndarray]:
    """A labelled bin's images in the unit's order: its `.hdr` and `.adc` read once, its `.roi` in one ranged read."""
    files, numbers = unit.where
    images = dict(read_bin_images(fs, read_bin_meta(fs, files)))
    missing = sorted(set(numbers) - set(images))
    if missing:
        listed = _listing([str(n) for n in missing])
        raise IfcbFormatError(f"bin {files.bin.id} has no image for labelled ROI numbers {listed}")
    return [images[number] for number in numbers]


def labels_stamp(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """The version of the labels CSV at `url`: its size and ETag or modification time (one request)."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    info = fs.info(path)
    version = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified") or ""
    return f"{info.get('size')}:{version}"


def labelled_archive_source(
    url: str, labels_csv_url: str, storage_options: dict[str, Any] | None = None
) -> LabelledSource:
    """The labelled bins of the archive at `url` as a labelled source: one unit per bin (group = bin id, ids = ROI
    ids), ordered by bin time then ROI number; the labels CSV is read and the bins are listed now, their images
    when a unit is read (`.hdr`/`.adc` once, the `.roi` in one ranged read).

    Every labelled bin must be complete in the archive and every labelled ROI must have an image: training on a
    silently smaller set than the labels describe would be a quiet error, so a gap raises `IfcbFormatError` (a
    missing bin now, a missing image when its bin is read).
    """
    stamp = labels_stamp(labels_csv_url, storage_options)
    labels = read_labels_csv(labels_csv_url, storage_options)
    fs, bins, failures = list_bins(url, storage_options, bin_ids=labels.keys())
    if failures:
        raise IfcbFormatError(
            f"{len(failures)} labelled bin(s) unusable in {url}: "
            + _listing([f"{failure.bin} ({failure.reason})" for failure in failures])
        )
    units = []
    for files in bins:
        wanted = labels[files.bin.id]
        numbers = sorted(wanted)
        units.append(LabelledUnit(
            group=files.bin.id, ids=tuple(roi_id(files.bin.id, n) for n in numbers),
            labels=tuple(wanted[n] for n in numbers), where=(files, tuple(numbers)),
        ))  # fmt: skip

    def read(chosen: Sequence[LabelledUnit]) -> Iterator[list[np.ndarray]]:
        for unit in chosen:
            yield _read_bin(fs, unit)

    source = LabelledSource(name=f"{url} (labels {labels_csv_url})", stamp=stamp, units=units, read=read)
    log.info("listed %d labelled ROIs of %d classes in %d bins", source.n_rois, len(source.classes), len(bins))
    return source


def labelled_images_from_archive(
    url: str, labels_csv_url: str, storage_options: dict[str, Any] | None = None
) -> LabelledImages:
    """The labelled ROIs of the archive at `url` in memory (`labelled_archive_source`, read whole in parallel)."""
    return LabelledImages.read(labelled_archive_source(url, labels_csv_url, storage_options))
