"""The one bin reader on the real bins: ROI numbers, sizes and pixels checked against the file bytes directly."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest

from pipeline.ifcb.bins import BinFiles, read_bin_images, read_bin_meta
from pipeline.ifcb.errors import BinNotFinished, IfcbFormatError
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


# --- a row with an unreadable field costs only its own ROI ------------------------------------------------------------
NEW = "D20130526T095207_IFCB013"
OLD = "IFCB5_2012_028_081515"
#: WHOI's ifcbkit (`src/ifcbkit/adc.py` @ b66492cc, `parse_adc_bytes`) on the real newer bin with line 49's ROI width
#: blank: the other 18 ROIs, with their numbers.
IFCBKIT_WITHOUT_49 = [7, 11, 13, 21, 32, 33, 47, 54, 61, 66, 68, 73, 78, 80, 92, 99, 102, 114]


def _damaged(ifcb_data: Path, folder: Path, name: str, line: int, column: int, value: str) -> BinFiles:
    """A copy of a real bin with one `.adc` field (1-based line, 0-based column) replaced by `value`."""
    for ext in ("hdr", "adc", "roi"):
        shutil.copy(ifcb_data / "bins" / f"{name}.{ext}", folder)
    adc = folder / f"{name}.adc"
    rows = [text.split(",") for text in adc.read_text().splitlines()]
    rows[line - 1][column] = value
    adc.write_text("\n".join(",".join(row) for row in rows) + "\n")
    return _files(folder, name)


@pytest.mark.parametrize("value", ["", "NaN", "wide", "-72", "7.5"])
def test_real_bin_with_one_unreadable_width_keeps_its_other_rois(ifcb_data: Path, tmp_path: Path, value: str) -> None:
    fs = fsspec.filesystem("file")
    meta = read_bin_meta(fs, _damaged(ifcb_data, tmp_path, NEW, 49, 15, value))
    clean = read_bin_meta(fs, _files(ifcb_data / "bins", NEW))
    assert clean.n_rois == 19 and 49 in clean.roi_numbers
    assert meta.roi_numbers.tolist() == IFCBKIT_WITHOUT_49 and meta.n_rois == 18
    assert meta.adc.n_rows == 118 and meta.adc.left_out.tolist() == [49]
    assert meta.ml_analyzed == pytest.approx(4.8850699, rel=1e-7)  # the times of line 49 still count
    assert len(meta.warnings) == 1 and meta.warnings[0].startswith(".adc: 1 row left out (no ROI): line 49, column 15")
    ours = dict(read_bin_images(fs, meta))
    theirs = dict(read_bin_images(fs, clean))
    assert sorted(ours) == IFCBKIT_WITHOUT_49
    for number, image in ours.items():
        np.testing.assert_array_equal(image, theirs[number])


@pytest.mark.parametrize(
    ("line", "column", "ml"),
    [
        (60, 23, 4.8850699),  # an inhibit time in the middle: the cumulative times of the rows around it give it all
        (118, 22, 0.25 * (1165.139559 - 11.521176) / 60),  # the last run time: the volume up to line 117
    ],
)
def test_real_bin_with_an_unreadable_time_keeps_every_roi(
    ifcb_data: Path, tmp_path: Path, line: int, column: int, ml: float
) -> None:
    meta = read_bin_meta(fsspec.filesystem("file"), _damaged(ifcb_data, tmp_path, NEW, line, column, ""))
    assert meta.n_rois == 19 and meta.adc.left_out.size == 0
    assert meta.ml_analyzed == pytest.approx(ml, rel=1e-7)
    name = {22: "run time", 23: "inhibit time"}[column]
    assert meta.warnings == [
        f".adc: 1 row not counted in the volume analysed: line {line}, column {column} ({name}): blank"
    ]


@pytest.mark.parametrize(
    ("line", "numbers", "shapes"),
    [  # ifcbkit (`src/ifcbkit/stitching.py`, `bin_images`) on the real older bin with that line's width blank
        (2, [1, 3, 5, 6], {3: (86, 263)}),  # the pair 3 + 4 still stitched
        (3, [1, 2, 4, 5, 6], {4: (45, 113)}),  # the pair broken: row 4's own image, under its own number
        (4, [1, 2, 3, 5, 6], {3: (86, 180)}),  # row 3's own image
    ],
)
def test_real_older_bin_with_an_unreadable_row_stitches_the_rest(
    ifcb_data: Path, tmp_path: Path, line: int, numbers: list[int], shapes: dict[int, tuple[int, int]]
) -> None:
    fs = fsspec.filesystem("file")
    meta = read_bin_meta(fs, _damaged(ifcb_data, tmp_path, OLD, line, 11, ""))
    assert meta.roi_numbers.tolist() == numbers and meta.adc.left_out.tolist() == [line]
    images = dict(read_bin_images(fs, meta))
    assert sorted(images) == numbers
    assert {number: images[number].shape for number in shapes} == shapes
    assert meta.ml_analyzed == pytest.approx(0.0033915, abs=5e-8)  # the times of the row still count


@pytest.mark.parametrize(("count", "finished"), [(19, True), (18, True), (20, False)])
def test_rows_left_out_may_hold_the_images_the_header_counts(
    ifcb_data: Path, tmp_path: Path, count: int, finished: bool
) -> None:
    """`roiCount` 19 over 18 readable images and 1 row left out: the row explains the gap, not a bin still written."""
    files = _damaged(ifcb_data, tmp_path, NEW, 49, 15, "")
    hdr = tmp_path / f"{NEW}.hdr"
    hdr.write_text(hdr.read_text() + f"roiCount: {count}\n")
    fs = fsspec.filesystem("file")
    if finished:
        assert read_bin_meta(fs, files).n_rois == 18
        return
    with pytest.raises(BinNotFinished, match=r"the \.adc lists 18 \(and 1 row\(s\) left out\): the bin is still"):
        read_bin_meta(fs, files)


def test_an_adc_with_no_readable_image_fails_the_bin(ifcb_data: Path, tmp_path: Path) -> None:
    for ext in ("hdr", "adc", "roi"):
        shutil.copy(ifcb_data / "bins" / f"{NEW}.{ext}", tmp_path)
    adc = tmp_path / f"{NEW}.adc"
    rows = [text.split(",") for text in adc.read_text().splitlines()]
    for row in rows:
        row[17] = "?"  # every start byte
    adc.write_text("\n".join(",".join(row) for row in rows) + "\n")
    with pytest.raises(IfcbFormatError, match=r"^\.adc: no image can be read: 19 rows left out \(no ROI\)") as info:
        read_bin_meta(fsspec.filesystem("file"), _files(tmp_path, NEW))
    assert info.value.stage == "adc"
