"""The one bin reader on the real bins: ROI numbers, sizes and pixels checked against the file bytes directly."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest

from pipeline.ifcb.bins import BinFiles, read_bin_images, read_bin_meta
from pipeline.ifcb.errors import IfcbFormatError
from pipeline.ifcb.identifiers import parse_bin_id
from pipeline.ifcb.roi import read_images

REAL = {
    # bin id: (width column, height column, start byte column, first image (height, width))
    "IFCB5_2012_028_081515": (11, 12, 13, (45, 96)),
    "D20130526T095207_IFCB013": (15, 16, 17, (34, 88)),
}


def _files(folder: Path, name: str) -> BinFiles:
    def present(ext: str) -> str | None:
        path = folder / f"{name}.{ext}"
        return str(path) if path.exists() else None

    return BinFiles(parse_bin_id(name), present("hdr"), present("adc"), present("roi"))


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_bin_matches_the_file_bytes(ifcb_data: Path, name: str) -> None:
    width_col, height_col, start_col, first_shape = REAL[name]
    folder = ifcb_data / "bins"
    fs = fsspec.filesystem("file")
    meta = read_bin_meta(fs, _files(folder, name))
    images = read_images(fs, meta.files.roi, meta.adc)  # every row's image as written, before any stitching
    with (folder / f"{name}.adc").open(newline="") as f:
        rows = list(csv.reader(f))
    roi_bytes = (folder / f"{name}.roi").read_bytes()
    expected = [
        (number, int(r[width_col]), int(r[height_col]), int(r[start_col]))
        for number, r in enumerate(rows, start=1)
        if int(r[width_col]) * int(r[height_col]) > 0
    ]
    assert meta.adc.roi_numbers.size == len(images) == len(expected)
    assert meta.adc.n_rows == len(rows)
    assert images[0][1].shape == first_shape
    for (number, image), (exp_number, width, height, start) in zip(images, expected, strict=True):
        assert number == exp_number
        assert image.dtype == np.uint8 and image.shape == (height, width)
        assert image.tobytes() == roi_bytes[start : start + width * height]
    assert meta.roi_bytes == sum(w * h for _, w, h, _ in expected)
    assert meta.n_rois == len(read_bin_images(fs, meta)) == {"IFCB5_2012_028_081515": 5}.get(name, len(expected))


def test_newer_bin_roi_numbers_skip_rows_without_image(ifcb_data: Path) -> None:
    meta = read_bin_meta(fsspec.filesystem("file"), _files(ifcb_data / "bins", "D20130526T095207_IFCB013"))
    assert meta.adc.n_rows == 118 and meta.n_rois == 19
    assert meta.roi_numbers[:3].tolist() == [7, 11, 13]
    assert meta.ml_analyzed == pytest.approx(4.8850699, rel=1e-7)


@pytest.mark.parametrize("name", ["D20150411T205456_IFCB012", "IFCB5_2017_001_033645"])
def test_real_empty_bins(ifcb_data: Path, name: str) -> None:
    fs = fsspec.filesystem("file")
    meta = read_bin_meta(fs, _files(ifcb_data / "empty", name))
    assert meta.n_rois == 0 and meta.adc.n_rows == 0 and meta.ml_analyzed is None
    assert read_bin_images(fs, meta) == []


def test_partial_bin_missing_roi(ifcb_data: Path) -> None:
    fs = fsspec.filesystem("file")
    files = _files(ifcb_data / "partial", "IFCB5_2012_028_081515")
    assert files.roi is None and files.missing == [".roi"]
    meta = read_bin_meta(fs, files)  # metadata alone needs no .roi
    assert meta.n_rois == 5  # 6 rows with an image, two of them stitched
    with pytest.raises(IfcbFormatError, match=r"missing \.roi"):
        read_bin_images(fs, meta)


def test_missing_hdr_or_adc(ifcb_data: Path, tmp_path: Path) -> None:
    fs = fsspec.filesystem("file")
    name = "D20130526T095207_IFCB013"
    shutil.copy(ifcb_data / "bins" / f"{name}.adc", tmp_path)
    with pytest.raises(IfcbFormatError, match=r"missing \.hdr") as info:
        read_bin_meta(fs, _files(tmp_path, name))
    assert info.value.stage == "files"
    files = BinFiles(parse_bin_id(name), str(ifcb_data / "bins" / f"{name}.hdr"), str(tmp_path / "gone.adc"), None)
    with pytest.raises(IfcbFormatError, match=r"missing \.adc"):
        read_bin_meta(fs, files)


def test_truncated_roi(ifcb_data: Path, tmp_path: Path) -> None:
    name = "D20130526T095207_IFCB013"
    for ext in ("hdr", "adc"):
        shutil.copy(ifcb_data / "bins" / f"{name}.{ext}", tmp_path)
    (tmp_path / f"{name}.roi").write_bytes((ifcb_data / "bins" / f"{name}.roi").read_bytes()[:-100])
    fs = fsspec.filesystem("file")
    meta = read_bin_meta(fs, _files(tmp_path, name))
    with pytest.raises(IfcbFormatError, match="truncated"):
        read_bin_images(fs, meta)
