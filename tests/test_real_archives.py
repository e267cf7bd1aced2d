"""Real archives as they are: old-style bins stitched, header and folder quirks, damaged files, known-bad bins.

Every input is built from the real bins in `../shared/data/ifcb` (copied and edited in a temporary folder); the
expected values come from the reference reader (pyifcb) or are worked out by hand in the test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.ifcb.archive import bin_files_at
from pipeline.ifcb.bins import read_bin_images, read_bin_meta
from pipeline.ifcb.identifiers import day_folder, parse_bin_id, parse_roi_id, roi_id
from pipeline.results.export import dashboard_path

runner = CliRunner()
NEW, OLD = "D20130526T095207_IFCB013", "IFCB5_2012_028_081515"
#: pyifcb's own test facts for the real old-style bin (`ifcb/data/tests/fileset_info.py`): ROI numbers after
#: stitching, the stitched ROI's shape, the corners (top left, top right, bottom left, bottom right) of every image.
STITCHED_NUMBERS = [1, 2, 3, 5, 6]
STITCHED_SHAPE = (86, 263)
CORNERS = {1: [208, 204, 205, 205], 2: [205, 199, 203, 197], 3: [210, 203, 207, 203], 5: [210, 209, 212, 209],
           6: [212, 206, 209, 208]}  # fmt: skip


def _copy_bin(source: Path, name: str, folder: Path, new_name: str | None = None) -> Path:
    """Copy the three files of a real bin into `folder` (under `new_name`); returns the bin's path stem."""
    folder.mkdir(parents=True, exist_ok=True)
    for ext in ("hdr", "adc", "roi"):
        shutil.copy(source / f"{name}.{ext}", folder / f"{new_name or name}.{ext}")
    return folder / (new_name or name)


def _meta(stem: Path):
    fs, files = bin_files_at(str(stem))
    return fs, read_bin_meta(fs, files)


def _ls(archive: Path, *extra: str) -> dict[str, dict]:
    result = runner.invoke(app, ["ls", str(archive), "--json", *extra])
    assert result.exit_code == 0, result.output
    return {record["bin"]: record for record in map(json.loads, result.stdout.splitlines())}


# --- 1. old-style bins are stitched ---------------------------------------------------------------------------------
def test_old_style_pair_is_one_roi_numbered_by_its_first_row(ifcb_data: Path) -> None:
    fs, meta = _meta(ifcb_data / "bins" / OLD)
    assert meta.adc.n_rows == 7 and meta.adc.roi_numbers.tolist() == [1, 2, 3, 4, 5, 6]  # rows 3 and 4: trigger 3
    assert meta.roi_numbers.tolist() == STITCHED_NUMBERS and meta.n_rois == 5
    images = dict(read_bin_images(fs, meta))
    assert list(images) == STITCHED_NUMBERS
    stitched = images[3]
    assert stitched.shape == STITCHED_SHAPE and stitched.dtype == np.uint8
    for number, image in images.items():
        assert [image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]] == CORNERS[number]
    # pyifcb's raw stitch at rows 23:27, columns 177:183 (0 = gap); the gap here is infilled with 203, the rounded
    # mean of the real pixels bordering it
    raw = np.array([[205, 204, 205, 0, 0, 0], [202, 203, 206, 0, 0, 0],
                    [205, 206, 205, 204, 202, 202], [204, 202, 205, 203, 202, 204]])  # fmt: skip
    np.testing.assert_array_equal(stitched[23:27, 177:183], np.where(raw == 0, 203, raw))
    # row 3's own pixels sit at the top left of the union box, row 4's (written last) at x 360-210, y 457-432
    roi = (ifcb_data / "bins" / f"{OLD}.roi").read_bytes()
    row4 = np.frombuffer(roi[52407 : 52407 + 113 * 45], np.uint8).reshape(45, 113)
    np.testing.assert_array_equal(stitched[25:70, 150:263], row4)
    assert meta.ml_analyzed == pytest.approx(0.0033915, abs=5e-8)  # first row per trigger: unchanged


def test_new_style_bins_are_never_stitched(ifcb_data: Path, tmp_path: Path) -> None:
    """The same touching pair (same trigger, overlapping boxes) in a newer bin stays two ROIs."""
    stem = _copy_bin(ifcb_data / "bins", NEW, tmp_path)
    rows = [line.split(",") for line in stem.with_suffix(".adc").read_text().splitlines()]
    first, second = 6, 10  # rows of ROI 7 and ROI 11
    rows[second][0] = rows[first][0]
    rows[second][13], rows[second][14] = rows[first][13], rows[first][14]
    rows.insert(first + 1, rows.pop(second))  # make them consecutive: ROI 7 and ROI 8 now
    stem.with_suffix(".adc").write_text("\n".join(",".join(row) for row in rows) + "\n")
    _, meta = _meta(stem)
    assert meta.n_rois == 19 and meta.roi_numbers[:2].tolist() == [7, 8] and not meta.stitching.pairs


# --- 2. Dashboard files of old-style bins go where the Dashboard looks ----------------------------------------------
def test_dashboard_path_folders_occur_in_the_bin_id() -> None:
    assert dashboard_path(OLD) == "2012/IFCB5_2012_028/IFCB5_2012_028_081515_class.h5"
    assert dashboard_path(NEW) == "D2013/D20130526/D20130526T095207_IFCB013_class.h5"
    for bin_id in (OLD, NEW, "IFCB10_2012_366_235959"):
        folders = day_folder(parse_bin_id(bin_id)).split("/")
        assert all(folder in bin_id for folder in folders)  # the Dashboard's reader rule (pyifcb validate_path)


# --- 3. header keys in any letter case --------------------------------------------------------------------------
def _one_row_bin(ifcb_data: Path, folder: Path, header_edit) -> Path:
    """The real newer bin cut to its first row (so its volume comes from the header), header edited."""
    stem = _copy_bin(ifcb_data / "bins", NEW, folder)
    adc = stem.with_suffix(".adc")
    adc.write_text(adc.read_text().splitlines()[0] + "\n")
    hdr = stem.with_suffix(".hdr")
    hdr.write_text(header_edit(hdr.read_text()))
    return stem


def test_header_keys_in_another_case_keep_the_volume(ifcb_data: Path, tmp_path: Path) -> None:
    def recase(text: str) -> str:
        return text.replace("runTime:", "RunTime:").replace("inhibitTime:", "InhibitTime:")

    stem = _one_row_bin(ifcb_data, tmp_path / "a", recase)
    assert "RunTime: 1231.024861" in stem.with_suffix(".hdr").read_text()
    _, meta = _meta(stem)
    assert meta.ml_analyzed == pytest.approx(0.25 * (1231.024861 - 11.622980) / 60, rel=1e-12)
    assert meta.ml_analyzed == pytest.approx(5.0808412, rel=1e-7)
    assert _ls(tmp_path / "a")[NEW]["ml_analyzed"] == pytest.approx(5.0808412, rel=1e-7)


# --- 4. a look time <= 0 is no volume -------------------------------------------------------------------------------
@pytest.mark.parametrize("run_time", ["11.622980", "5.0"])  # equal to inhibitTime, and below it
def test_non_positive_look_time_is_no_volume(ifcb_data: Path, tmp_path: Path, run_time: str) -> None:
    def lower(text: str) -> str:
        return text.replace("runTime: 1231.024861", f"runTime: {run_time}")

    stem = _one_row_bin(ifcb_data, tmp_path / "a", lower)
    _, meta = _meta(stem)
    assert meta.ml_analyzed is None  # was 0.0 (equal) and -0.0276 (below)
    assert _ls(tmp_path / "a")[NEW]["ml_analyzed"] is None
    # in the store, the report and the CSV: no volume, counted as such
    from pipeline.results.export import export_csv
    from pipeline.results.partitions import partition_id
    from pipeline.results.records import BinResult
    from pipeline.results.report import store_report
    from pipeline.results.store import ResultStore

    store = ResultStore(str(tmp_path / "out.zarr"))
    store.prepare(bundle_info={"classes": ["a", "b"], "content_hash": "h"}, bundle_url="b.zip", archive_url="a")
    result = BinResult(NEW, meta.bin.time, meta.roi_numbers[:1], np.array([[0.9, 0.1]], np.float32), meta.ml_analyzed)
    ledger = store.ledger()
    ledger.add(store.commit_partition(partition_id([NEW], "r"), [result], ["a", "b"]))
    store.consolidate(ledger)
    assert store_report(store)["bins_without_volume"] == 1
    export_csv(store, str(tmp_path / "bins.csv"))
    header, row = (tmp_path / "bins.csv").read_text().splitlines()[:2]
    assert dict(zip(header.split(","), row.split(","), strict=True))["ml_analyzed"] == ""


# --- 6. ROI numbers of six digits -----------------------------------------------------------------------------------
def test_roi_ids_beyond_five_digits() -> None:
    assert roi_id(NEW, 100000) == f"{NEW}_100000"
    assert roi_id(NEW, 7) == f"{NEW}_00007"
    assert parse_roi_id(f"{OLD}_100000") == (parse_bin_id(OLD), 100000)
    for bad in (f"{NEW}_000007", f"{NEW}_0100000"):  # padding beyond 5 digits is not how ids are written
        with pytest.raises(ValueError, match="not an IFCB ROI id"):
            parse_roi_id(bad)


def test_extract_roi_number_100000(ifcb_data: Path, tmp_path: Path) -> None:
    """The real newer bin with 99,999 image-less rows put before its first row: its ROIs are numbered from 100,000."""
    stem = _copy_bin(ifcb_data / "bins", NEW, tmp_path / "bins")
    adc = stem.with_suffix(".adc")
    lines = adc.read_text().splitlines()
    blank = lines[0].split(",")
    for column in (13, 14, 15, 16, 17):
        blank[column] = "0"
    adc.write_text("\n".join([",".join(blank)] * 99_999 + lines) + "\n")
    out = tmp_path / "png"
    result = runner.invoke(app, ["extract", str(stem), str(out)])
    assert result.exit_code == 0, result.output
    names = sorted(path.name for path in out.iterdir())
    assert len(names) == 19 and names[0] == f"{NEW}_100006.png"  # row 7 of the file, now row 100,006
    fs, meta = _meta(ifcb_data / "bins" / NEW)
    first = read_bin_images(fs, meta)[0][1]
    with Image.open(out / names[0]) as png:
        np.testing.assert_array_equal(np.asarray(png), first)


# --- 5. skip/ and beads/ are not data ---------------------------------------------------------------------------------
@pytest.fixture
def with_set_aside(ifcb_data: Path, tmp_path: Path) -> Path:
    """Both real bins in day folders, a set-aside copy of the old one under skip/, a bead run under beads/."""
    root = tmp_path / "archive"
    _copy_bin(ifcb_data / "bins", OLD, root / "2012" / "IFCB5_2012_028")
    _copy_bin(ifcb_data / "bins", NEW, root / "D2013" / "D20130526")
    _copy_bin(ifcb_data / "bins", OLD, root / "skip")
    _copy_bin(ifcb_data / "bins", NEW, root / "D2013" / "beads", "D20130526T120000_IFCB013")
    return root


def test_skip_and_beads_folders_are_left_out(with_set_aside: Path) -> None:
    listed = _ls(with_set_aside)
    assert sorted(listed) == [NEW, OLD] and {r["status"] for r in listed.values()} == {"ok"}
    everything = _ls(with_set_aside, "--exclude-folders", "")
    assert everything["D20130526T120000_IFCB013"]["status"] == "ok"  # the bead run, read as data
    assert everything[OLD]["status"] == "ok"  # its set-aside copy is byte-identical: one bin
    only_skip = _ls(with_set_aside, "--exclude-folders", "skip")
    assert sorted(only_skip) == [NEW, "D20130526T120000_IFCB013", OLD] and only_skip[OLD]["status"] == "ok"


def test_excluded_folders_in_the_python_api(with_set_aside: Path) -> None:
    from pipeline.ifcb.archive import list_bins

    _, bins, failures = list_bins(str(with_set_aside))
    assert [files.bin.id for files in bins] == [OLD, NEW] and failures == []
    _, bins, failures = list_bins(str(with_set_aside), exclude=("beads",))  # skip/ read: OLD is there twice, alike
    assert [(files.bin.id, Path(files.roi).parent.name) for files in bins] == [(OLD, "IFCB5_2012_028"),
                                                                               (NEW, "D20130526")]  # fmt: skip
    assert failures == []
    (with_set_aside / "skip" / f"{OLD}.hdr").write_text("softwareVersion: another copy\n")  # now they differ
    _, bins, failures = list_bins(str(with_set_aside), exclude=())
    assert [files.bin.id for files in bins] == [NEW, "D20130526T120000_IFCB013"]
    assert [failure.bin for failure in failures] == [OLD] and failures[0].reason.startswith("copies that differ")


# --- 8. nothing in an archive disappears without a word -----------------------------------------------------------
def test_files_the_listing_cannot_take_are_failures_or_counted(ifcb_data: Path, tmp_path: Path, caplog) -> None:
    from pipeline.ifcb.archive import iter_bins, list_bins

    root = tmp_path / "archive"
    _copy_bin(ifcb_data / "bins", NEW, root)
    upper = _copy_bin(ifcb_data / "bins", OLD, root)
    for ext in ("adc", "roi"):
        upper.with_suffix(f".{ext}").rename(upper.with_suffix(f".{ext.upper()}"))
    shutil.copy(ifcb_data / "bins" / f"{NEW}.adc", root / "D20130526T095207_IFCB13.adc")  # 2-digit instrument
    shutil.copy(ifcb_data / "bins" / f"{NEW}.hdr", root / "._D20130526T095207_IFCB013.hdr")  # a macOS shadow file
    empty_hdr = _copy_bin(ifcb_data / "bins", NEW, root, "D20130527T000000_IFCB013")
    empty_hdr.with_suffix(".hdr").write_bytes(b"")
    empty_roi = _copy_bin(ifcb_data / "bins", NEW, root, "D20130528T000000_IFCB013")
    empty_roi.with_suffix(".roi").write_bytes(b"")
    _copy_bin(ifcb_data / "bins", NEW, root, "D20200101T000000_IFCB013")  # outside the window below

    listed = _ls(root, "--end", "2014-01-01")
    assert listed[NEW]["status"] == "ok"
    assert listed[OLD]["reason"] == (
        f"files: extension not in lower case: {OLD}.ADC, {OLD}.ROI (rename to .hdr, .adc, .roi)"
    )
    assert listed["D20130527T000000_IFCB013"]["reason"] == "hdr: .hdr is empty"
    assert listed["D20130528T000000_IFCB013"]["reason"].startswith("roi: .roi is truncated")
    assert len(listed) == 4
    _, bins, failures = list_bins(str(root), bin_ids=[OLD])  # asked for by id: the same one failure
    assert bins == [] and [(f.bin, f.reason[:29]) for f in failures] == [(OLD, "extension not in lower case: ")]
    caplog.set_level("INFO", logger="pipeline")
    _, stream = iter_bins(str(root), end=parse_bin_id("D20140101T000000_IFCB013").time)
    list(stream)
    assert stream.left_out.lines() == [
        "left out (hidden files, such as macOS's ._ resource forks): 1 file: ._D20130526T095207_IFCB013.hdr",
        "left out (.hdr/.adc/.roi files whose name is not a bin id): 1 file: D20130526T095207_IFCB13.adc",
    ]
    messages = [record.getMessage() for record in caplog.records]
    assert any("3 bin file(s) outside the requested window or bins left out" in message for message in messages)


# --- 11. class names the Dashboard cannot decode are refused ---------------------------------------------------------
@pytest.mark.slow  # TensorFlow is imported before the labels are read
def test_non_ascii_class_names_are_refused_at_train_time(ifcb_data: Path, tmp_path: Path) -> None:
    """Labels of real ROIs of the real newer bin, one class with an accent: refused before any training."""
    labels = tmp_path / "labels.csv"
    labels.write_text(f"roi_id,class\n{NEW}_00007,Diatomée\n{NEW}_00011,Ciliate\n", encoding="utf-8")
    out = tmp_path / "m.zip"
    result = runner.invoke(app, ["train", str(ifcb_data / "bins"), "--labels", str(labels), "--out", str(out),
                                 "--arch", "small-cnn", "--epochs", "1"])  # fmt: skip
    assert result.exit_code == 2
    assert "class names must be ASCII (the IFCB Dashboard reads class_labels as ASCII): Diatomée" in " ".join(
        result.output.split()
    )
    assert not out.exists()


@pytest.mark.slow  # Keras start-up
def test_non_ascii_class_names_are_refused_at_import_time(tmp_path: Path) -> None:
    import keras

    from model.architectures import build
    from model.bundle import BundleError
    from model.convert.imported import imported_bundle

    model = build("small-cnn", 2, 32)
    with pytest.raises(BundleError, match=r"must be ASCII .*: Ceratium µ"):
        imported_bundle(model, ["Ceratium µ", "Ciliate"], None, kind="keras3", source={})
    path = tmp_path / "m.keras"
    keras.saving.save_model(model, path)
    result = runner.invoke(app, ["model", "import", str(path), "--classes", "Ceratium µ,Ciliate",
                                 "--out", str(tmp_path / "m.zip")])  # fmt: skip
    assert result.exit_code == 2 and "must be ASCII" in result.output and "Ceratium µ" in result.output
    assert not (tmp_path / "m.zip").exists()


# --- 7. a cut-off last .adc line keeps the intact rows ---------------------------------------------------------------
def _cut_last_line(stem: Path, keep: int = 40) -> None:
    """Cut the `.adc` in the middle of its last line (the first `keep` characters of it), as an interrupted write."""
    adc = stem.with_suffix(".adc")
    lines = adc.read_text().splitlines()
    adc.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:keep])


def test_cut_off_last_adc_line_keeps_the_intact_rows(ifcb_data: Path, tmp_path: Path) -> None:
    stem = _copy_bin(ifcb_data / "bins", NEW, tmp_path / "cut")
    _cut_last_line(stem)
    intact = _copy_bin(ifcb_data / "bins", NEW, tmp_path / "intact")  # the same 117 rows, nothing cut
    adc = intact.with_suffix(".adc")
    adc.write_text("\n".join(adc.read_text().splitlines()[:-1]) + "\n")
    _, meta = _meta(stem)
    _, reference = _meta(intact)
    assert meta.adc.n_rows == 118 and meta.adc.left_out.tolist() == [118] and meta.n_rois == 19
    # row 117 of the file: run time 1165.139559 s, inhibit time 11.521176 s (every row good: no offsets, no steps)
    assert meta.ml_analyzed == reference.ml_analyzed == pytest.approx(0.25 * (1165.139559 - 11.521176) / 60)
    warning = ".adc: 1 row left out (no ROI): line 118: 6 columns, the file's rows have 24"
    assert meta.warnings == [warning]
    record = _ls(tmp_path / "cut")[NEW]
    assert record["status"] == "ok" and record["rois"] == 19 and record["warnings"] == [warning]
    lines = runner.invoke(app, ["ls", str(tmp_path / "cut")]).stdout.splitlines()
    assert lines[1].endswith(f"ok; warning: {warning}")
    extracted = runner.invoke(app, ["extract", str(stem), str(tmp_path / "png")])
    assert extracted.exit_code == 0 and f"warning: {NEW}: {warning}" in extracted.stderr
    assert len(list((tmp_path / "png").iterdir())) == 19


def test_a_bad_line_before_the_last_is_left_out_in_its_place(ifcb_data: Path, tmp_path: Path) -> None:
    stem = _copy_bin(ifcb_data / "bins", NEW, tmp_path)
    adc = stem.with_suffix(".adc")
    lines = adc.read_text().splitlines()
    lines[50] = lines[50][:40]
    adc.write_text("\n".join(lines) + "\n")
    record = _ls(tmp_path)[NEW]
    assert record["status"] == "ok" and record["rois"] == 19  # line 51 had no image (width and height 0)
    assert record["warnings"] == [".adc: 1 row left out (no ROI): line 51: 6 columns, the file's rows have 24"]


# --- 10. the header's column names place the .adc columns ------------------------------------------------------------
def _reorder_columns(stem: Path, order: list[int], names: list[str] | None = None) -> None:
    """Write the bin's `.adc` columns in `order` and its header's ADCFileFormat to match (or to `names`)."""
    adc = stem.with_suffix(".adc")
    rows = [line.split(",") for line in adc.read_text().splitlines()]
    adc.write_text("\n".join(",".join(row[i] for i in order) for row in rows) + "\n")
    hdr = stem.with_suffix(".hdr")
    text = hdr.read_text()
    old = next(line for line in text.splitlines() if line.startswith("ADCFileFormat:"))
    declared = [name.strip() for name in old.split(":", 1)[1].split(",")]
    hdr.write_text(text.replace(old, "ADCFileFormat: " + ", ".join(names or [declared[i] for i in order])))


def test_adc_columns_are_placed_by_the_header_names(ifcb_data: Path, tmp_path: Path) -> None:
    """The real newer bin with its image columns (13-17) moved to the front: by position this cut wrong images."""
    stem = _copy_bin(ifcb_data / "bins", NEW, tmp_path)
    order = [13, 14, 15, 16, 17, *range(13), *range(18, 24)]
    _reorder_columns(stem, order)
    fs, meta = _meta(stem)
    _, original = _meta(ifcb_data / "bins" / NEW)
    assert meta.roi_numbers.tolist() == original.roi_numbers.tolist()
    assert meta.ml_analyzed == pytest.approx(4.8850699, rel=1e-7)
    ours = read_bin_images(fs, meta)
    theirs = read_bin_images(fs, original)
    assert [number for number, _ in ours] == [number for number, _ in theirs]
    for (_, a), (_, b) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_layout_the_reader_cannot_place_is_refused(ifcb_data: Path, tmp_path: Path) -> None:
    stem = _copy_bin(ifcb_data / "bins", NEW, tmp_path)
    text = stem.with_suffix(".hdr").read_text().replace("ROIwidth", "ROIbreadth")
    stem.with_suffix(".hdr").write_text(text)
    assert _ls(tmp_path)[NEW]["reason"].startswith("adc: .hdr ADCFileFormat names no column for roiwidth")


# --- the whole job on real bins: 1 (every command agrees on a stitched bin), 2, 7 (store and report), 9 ------------
BAD = "D20130601T000000_IFCB013"  # the real newer bin with a header that is not text: bad data
CUT = "D20130602T000000_IFCB013"  # the real newer bin with its last .adc line cut off


@pytest.mark.slow
def test_job_on_real_bins_stitched_warned_and_known_bad(ifcb_data: Path, tmp_path: Path, dask_client) -> None:
    import csv

    import h5py
    from classify_support import classify_json, make_bundle

    from pipeline.results.store import COMMITS, ResultStore

    archive = tmp_path / "archive"
    _copy_bin(ifcb_data / "bins", OLD, archive / "2012" / "IFCB5_2012_028")
    _copy_bin(ifcb_data / "bins", NEW, archive / "D2013" / "D20130601", BAD).with_suffix(".hdr").write_bytes(
        b"\x00\x01 not a header"
    )
    _cut_last_line(_copy_bin(ifcb_data / "bins", NEW, archive / "D2013" / "D20130602", CUT))
    bundle, store = str(tmp_path / "m.zip"), tmp_path / "out.zarr"
    make_bundle(bundle)

    def classify(*extra: str) -> tuple[int, dict]:
        return classify_json(archive, bundle, store, dask_client.scheduler.address, *extra)

    code, first = classify()
    assert code == 1 and (first["bins_done"], first["bins_failed"], first["bins_known_bad"]) == (2, 1, 0)
    assert first["failures"][0]["bin"] == BAD and first["failures"][0]["stage"] == "hdr"

    # 1. ls, extract, the store, report and both exports agree: 5 ROIs, numbered 1, 2, 3, 5, 6
    assert _ls(archive)[OLD]["rois"] == 5
    out = tmp_path / "png"
    assert runner.invoke(app, ["extract", str(archive / "2012" / "IFCB5_2012_028" / OLD), str(out)]).exit_code == 0
    assert sorted(path.name for path in out.iterdir()) == [f"{roi_id(OLD, n)}.png" for n in STITCHED_NUMBERS]
    numbers, scores = ResultStore(str(store)).read_bin(OLD)
    assert numbers.tolist() == STITCHED_NUMBERS and scores.shape == (5, 3)
    report = json.loads(runner.invoke(app, ["report", str(store), "--json"]).stdout)
    assert report["rois"] == 5 + 19 and report["bins_failed"] == 1
    # 7. the cut-off bin is complete, with its warning kept in the store and shown by the report
    assert report["warnings"] == [{"bin": CUT, "warning": _meta(archive / "D2013" / "D20130602" / CUT)[1].warnings[0]}]
    dashboard, table = tmp_path / "dash", tmp_path / "bins.csv"
    result = runner.invoke(app, ["export", str(store), "--dashboard", str(dashboard), "--csv", str(table)])
    assert result.exit_code == 0, result.output
    # 2. where the Dashboard's reader finds it
    with h5py.File(dashboard / "2012" / "IFCB5_2012_028" / f"{OLD}_class.h5") as f:
        assert f["roi_numbers"][...].tolist() == STITCHED_NUMBERS and f["output_scores"].shape == (5, 3)
    rows = {row["bin"]: row for row in csv.DictReader(table.open())}
    assert int(rows[OLD]["n_rois"]) == 5 and int(rows[CUT]["n_rois"]) == 19

    # 9. a rerun does not read the bad bin again (its files are unchanged), and still says it failed
    commits = sorted(path.name for path in (store / COMMITS).iterdir())
    code, rerun = classify()
    assert code == 1 and (rerun["bins_planned"], rerun["bins_failed"], rerun["bins_known_bad"]) == (0, 1, 1)
    assert rerun["failures"][0]["bin"] == BAD and rerun["failures"][0]["reason"] == first["failures"][0]["reason"]
    assert sorted(path.name for path in (store / COMMITS).iterdir()) == commits  # nothing read, nothing written
    code, retried = classify("--retry-failed")
    assert code == 1 and (retried["bins_planned"], retried["bins_failed"], retried["bins_known_bad"]) == (1, 1, 0)
    assert len(list((store / COMMITS).iterdir())) == len(commits) + 1  # it was read again
    shutil.copy(ifcb_data / "bins" / f"{NEW}.hdr", archive / "D2013" / "D20130601" / f"{BAD}.hdr")  # repaired
    code, repaired = classify()
    assert code == 0 and (repaired["bins_done"], repaired["bins_failed"]) == (1, 0)


def test_images_the_adc_does_not_describe_are_a_warning(ifcb_data: Path, tmp_path: Path) -> None:
    """A bin whose `.adc` is empty beside the real newer bin's full `.roi`: 98,472 bytes no row describes."""
    stem = _copy_bin(ifcb_data / "bins", NEW, tmp_path / "a")
    stem.with_suffix(".adc").write_bytes(b"")
    shutil.copytree(ifcb_data / "empty", tmp_path / "a" / "empty")  # real empty bins (0- and 2-byte .roi): clean
    listed = _ls(tmp_path / "a")
    assert listed[NEW]["rois"] == 0
    assert listed[NEW]["warnings"] == [".adc lists no image but the .roi holds 98472 bytes: they are not read"]
    assert listed["IFCB5_2017_001_033645"]["warnings"] == listed["D20150411T205456_IFCB012"]["warnings"] == []


# --- issue 27, item 6: one unreadable .adc field costs only its own ROI ----------------------------------------------
DAMAGED = "D20130603T000000_IFCB013"  # the real newer bin, line 49 (ROI 49, 72 x 49 pixels) damaged
UNREADABLE = "D20130604T000000_IFCB013"  # the real newer bin, every start byte unreadable


def _damage(stem: Path, line: int, edit) -> None:
    """Replace `.adc` line `line` (1-based) by `edit(its fields)`, a list of fields or a whole line of text."""
    adc = stem.with_suffix(".adc")
    lines = adc.read_text().splitlines()
    edited = edit(lines[line - 1].split(","))
    lines[line - 1] = edited if isinstance(edited, str) else ",".join(edited)
    adc.write_text("\n".join(lines) + "\n")


def _field(column: int, value: str):
    return lambda fields: [*fields[:column], value, *fields[column + 1 :]]


#: Damage to line 49 of the real newer bin, and the reason its warning gives. WHOI's ifcbkit (`src/ifcbkit/adc.py`
#: @ b66492cc, `_parse_fields`; `roi.py`, `extract_roi_images`) run on each keeps the other 18 ROIs with their numbers,
#: except the negative width, which it passes to PIL, which refuses the whole bin ("Width and height must be >= 0").
LINE_49 = {
    "blank width": (_field(15, ""), "line 49, column 15 (ROI width): blank"),
    "NaN width": (_field(15, "NaN"), "line 49, column 15 (ROI width): not a number: 'NaN'"),
    "word in height": (_field(16, "n/a"), "line 49, column 16 (ROI height): not a number: 'n/a'"),
    "negative width": (_field(15, "-72"), "line 49, column 15 (ROI width): -72, below 0"),
    "fractional start byte": (_field(17, "30000.5"), "line 49, column 17 (start byte): 30000.5, not a whole number"),
    "word in x": (_field(13, "?"), "line 49, column 13 (ROI x): not a number: '?'"),
    "cut short": (lambda fields: ",".join(fields)[:40], "line 49: 6 columns, the file's rows have 24"),
    "blank line": (lambda fields: "", "line 49: blank line"),
}


@pytest.mark.parametrize("case", sorted(LINE_49))
def test_ls_and_extract_keep_the_readable_rois_of_a_bin_with_one_bad_row(
    ifcb_data: Path, tmp_path: Path, case: str
) -> None:
    edit, why = LINE_49[case]
    stem = _copy_bin(ifcb_data / "bins", NEW, tmp_path / "a", DAMAGED)
    _damage(stem, 49, edit)
    warning = f".adc: 1 row left out (no ROI): {why}"
    record = _ls(tmp_path / "a")[DAMAGED]
    assert (record["status"], record["rois"], record["warnings"]) == ("ok", 18, [warning])
    # pyifcb's volume of the undamaged bin: line 49's times, where lost with the line, are cumulative (lines 50 on)
    assert record["ml_analyzed"] == pytest.approx(4.8850699, rel=1e-7)
    assert runner.invoke(app, ["ls", str(tmp_path / "a")]).stdout.splitlines()[1].endswith(f"ok; warning: {warning}")
    out = tmp_path / "png"
    extracted = runner.invoke(app, ["extract", str(stem), str(out)])
    assert extracted.exit_code == 0, extracted.output
    assert f"warning: {DAMAGED}: {warning}" in extracted.stderr
    _, clean = _meta(ifcb_data / "bins" / NEW)
    kept = [int(n) for n in clean.roi_numbers if n != 49]
    assert len(kept) == 18 and sorted(path.name for path in out.iterdir()) == [
        f"{roi_id(DAMAGED, n)}.png" for n in kept
    ]


def test_ls_and_extract_of_an_older_bin_with_one_bad_row_stitch_the_rest(ifcb_data: Path, tmp_path: Path) -> None:
    """Line 4 (the second half of the stitched pair 3 + 4) with its width blank: ROI 3 is row 3's own image, as
    ifcbkit's `bin_images` (`src/ifcbkit/stitching.py`) gives it: 180 x 86, no pair."""
    stem = _copy_bin(ifcb_data / "bins", OLD, tmp_path / "a")
    _damage(stem, 4, _field(11, ""))
    record = _ls(tmp_path / "a")[OLD]
    assert (record["status"], record["rois"]) == ("ok", 5)
    assert record["warnings"] == [".adc: 1 row left out (no ROI): line 4, column 11 (ROI width): blank"]
    assert record["ml_analyzed"] == pytest.approx(0.0033915, abs=5e-8)
    out = tmp_path / "png"
    assert runner.invoke(app, ["extract", str(stem), str(out)]).exit_code == 0
    assert sorted(path.name for path in out.iterdir()) == [f"{roi_id(OLD, n)}.png" for n in STITCHED_NUMBERS]
    roi = (ifcb_data / "bins" / f"{OLD}.roi").read_bytes()
    with Image.open(out / f"{roi_id(OLD, 3)}.png") as png:
        np.testing.assert_array_equal(
            np.asarray(png), np.frombuffer(roi[36927 : 36927 + 180 * 86], np.uint8).reshape(86, 180)
        )


def test_ls_fails_a_bin_whose_adc_has_no_readable_image(ifcb_data: Path, tmp_path: Path) -> None:
    stem = _copy_bin(ifcb_data / "bins", NEW, tmp_path / "a", UNREADABLE)
    for line in range(1, 119):
        _damage(stem, line, _field(17, "?"))
    record = _ls(tmp_path / "a")[UNREADABLE]
    assert record["status"] == "failed"
    assert record["reason"].startswith(
        "adc: .adc: no image can be read: 19 rows left out (no ROI), no other row has one: line 7, column 17 (start "
        "byte): not a number: '?'"
    )


@pytest.mark.slow
def test_classify_and_report_count_the_rows_left_out(ifcb_data: Path, tmp_path: Path, dask_client) -> None:
    """The real newer bin with line 49's width blank, the real older bin with line 4's, and a bin with no readable
    image: classify keeps 18 + 5 ROIs and fails the third; the store, report and exports agree."""
    import csv

    import h5py
    from classify_support import classify_json, make_bundle

    from pipeline.results.store import ResultStore

    archive = tmp_path / "archive"
    _damage(_copy_bin(ifcb_data / "bins", NEW, archive / "D2013" / "D20130603", DAMAGED), 49, _field(15, ""))
    _damage(_copy_bin(ifcb_data / "bins", OLD, archive / "2012" / "IFCB5_2012_028"), 4, _field(11, ""))
    unreadable = _copy_bin(ifcb_data / "bins", NEW, archive / "D2013" / "D20130604", UNREADABLE)
    for line in range(1, 119):
        _damage(unreadable, line, _field(17, "?"))
    bundle, store = str(tmp_path / "m.zip"), tmp_path / "out.zarr"
    make_bundle(bundle)
    code, summary = classify_json(archive, bundle, store, dask_client.scheduler.address)
    assert code == 1 and (summary["bins_done"], summary["bins_failed"]) == (2, 1)
    assert summary["failures"][0]["bin"] == UNREADABLE and summary["failures"][0]["stage"] == "adc"

    report = json.loads(runner.invoke(app, ["report", str(store), "--json"]).stdout)
    assert (report["rois"], report["adc_rows_left_out"], report["bins_failed"]) == (18 + 5, 2, 1)
    assert report["warnings"] == [
        {"bin": DAMAGED, "warning": ".adc: 1 row left out (no ROI): line 49, column 15 (ROI width): blank"},
        {"bin": OLD, "warning": ".adc: 1 row left out (no ROI): line 4, column 11 (ROI width): blank"},
    ]
    _, clean = _meta(ifcb_data / "bins" / NEW)
    kept = [int(n) for n in clean.roi_numbers if n != 49]
    numbers, _ = ResultStore(str(store)).read_bin(DAMAGED)
    assert numbers.tolist() == kept
    assert ResultStore(str(store)).read_bin(OLD)[0].tolist() == STITCHED_NUMBERS
    dashboard, table = tmp_path / "dash", tmp_path / "bins.csv"
    exported = runner.invoke(app, ["export", str(store), "--dashboard", str(dashboard), "--csv", str(table)])
    assert exported.exit_code == 0, exported.output
    with h5py.File(dashboard / "D2013" / "D20130603" / f"{DAMAGED}_class.h5") as f:
        assert f["roi_numbers"][...].tolist() == kept
    rows = {row["bin"]: row for row in csv.DictReader(table.open())}
    assert int(rows[DAMAGED]["n_rois"]) == 18 and float(rows[DAMAGED]["ml_analyzed"]) == pytest.approx(4.8850699)
