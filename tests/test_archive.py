"""Archives: layouts, grouping, filters, and mixed good and bad bins where every good bin is still read."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.ifcb.archive import bin_files_at, list_bins, scan_archive, split_bin_filename
from pipeline.ifcb.bins import BinMeta, read_bin_images
from pipeline.ifcb.errors import BinFailure, IfcbFormatError

NEW, OLD = "D20130526T095207_IFCB013", "IFCB5_2012_028_081515"
EMPTY_NEW, EMPTY_OLD = "D20150411T205456_IFCB012", "IFCB5_2017_001_033645"


def _copy(src: Path, name: str, dest: Path, as_name: str | None = None, exts=("hdr", "adc", "roi")) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for ext in exts:
        shutil.copy(src / f"{name}.{ext}", dest / f"{as_name or name}.{ext}")


def _nested_archive(ifcb: Path, root: Path) -> Path:
    """The real bins in both nested layouts, a bin without .roi, and unrelated files."""
    _copy(ifcb / "bins", NEW, root / "D2013" / "D20130526")
    _copy(ifcb / "bins", OLD, root / "2012" / "IFCB5_2012_028")
    _copy(ifcb / "empty", EMPTY_NEW, root / "D2015" / "D20150411")
    _copy(ifcb / "empty", EMPTY_OLD, root / "2017" / "IFCB5_2017_001")
    _copy(ifcb / "partial", OLD, root / "2012" / "IFCB5_2012_029", "IFCB5_2012_029_081515", exts=("hdr", "adc"))
    (root / "labels.csv").write_text("roi_id,class\n")
    (root / "README").write_text("notes")
    (root / "D2013" / "D20130526" / f"{NEW}_class.h5").write_bytes(b"\x89HDF")
    (root / "D2013" / "D20130526" / f"{NEW}.png").write_bytes(b"png")
    (root / "D2013" / f"{NEW}.adc.bak").write_bytes(b"old")
    return root


def test_split_bin_filename() -> None:
    bin_id, ext = split_bin_filename(f"bucket/D2013/{NEW}.roi")
    assert (bin_id.id, ext) == (NEW, "roi")
    for name in ("labels.csv", f"{NEW}_class.h5", f"{NEW}.adc.bak", "README", f"{NEW}_00007.png", "x.adc"):
        assert split_bin_filename(name) is None


def test_nested_layouts_sorted_with_missing_file_failure(ifcb_data: Path, tmp_path: Path) -> None:
    root = _nested_archive(ifcb_data, tmp_path / "archive")
    _, bins, failures = list_bins(str(root))
    assert [b.bin.id for b in bins] == [OLD, NEW, EMPTY_NEW, EMPTY_OLD]  # by time
    assert all(b.hdr and b.adc and b.roi for b in bins)
    assert bins[1].roi.endswith(f"D2013/D20130526/{NEW}.roi")
    assert failures == [BinFailure("IFCB5_2012_029_081515", "files", "missing .roi")]


def test_flat_layout_and_file_url(ifcb_data: Path, tmp_path: Path) -> None:
    _copy(ifcb_data / "bins", NEW, tmp_path)
    _copy(ifcb_data / "bins", OLD, tmp_path)
    for url in (str(tmp_path), f"file://{tmp_path}", f"{tmp_path}/"):
        _, bins, failures = list_bins(url)
        assert [b.bin.id for b in bins] == [OLD, NEW] and failures == []


def test_date_range_start_inclusive_end_exclusive(ifcb_data: Path, tmp_path: Path) -> None:
    root = str(_nested_archive(ifcb_data, tmp_path / "archive"))
    t_new = datetime(2013, 5, 26, 9, 52, 7, tzinfo=UTC)
    assert [b.bin.id for b in list_bins(root, start=t_new)[1]] == [NEW, EMPTY_NEW, EMPTY_OLD]
    assert [b.bin.id for b in list_bins(root, end=t_new)[1]] == [OLD]
    _, bins, failures = list_bins(root, start=datetime(2013, 1, 1), end=datetime(2016, 1, 1))  # naive = UTC
    assert [b.bin.id for b in bins] == [NEW, EMPTY_NEW] and failures == []


def test_bin_id_filter(ifcb_data: Path, tmp_path: Path) -> None:
    root = str(_nested_archive(ifcb_data, tmp_path / "archive"))
    _, bins, failures = list_bins(root, bin_ids=[NEW, "D20990101T000000_IFCB001"])
    assert [b.bin.id for b in bins] == [NEW]
    assert failures == [BinFailure("D20990101T000000_IFCB001", "files", "not found in the archive")]
    with pytest.raises(IfcbFormatError, match="not an IFCB bin id"):
        list_bins(root, bin_ids=["nonsense"])


def test_missing_archive_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="archive not found"):
        list_bins(str(tmp_path / "nowhere"))
    assert list_bins(str(tmp_path))[1:] == ([], [])  # an existing empty folder is an empty archive


def test_same_bin_in_two_places_is_a_failure(ifcb_data: Path, tmp_path: Path) -> None:
    _copy(ifcb_data / "bins", NEW, tmp_path / "a")
    _copy(ifcb_data / "bins", NEW, tmp_path / "b")
    _, bins, failures = list_bins(str(tmp_path))
    assert bins == [] and len(failures) == 1
    assert failures[0].stage == "files" and "several places" in failures[0].reason


def test_mixed_good_and_bad_bins_lose_no_good_bin(ifcb_data: Path, tmp_path: Path) -> None:
    root = _nested_archive(ifcb_data, tmp_path / "archive")
    bad = root / "bad"
    src = ifcb_data / "bins"
    _copy(src, NEW, bad, "D20130527T000000_IFCB013")  # truncated .roi
    roi = bad / "D20130527T000000_IFCB013.roi"
    roi.write_bytes(roi.read_bytes()[:5000])
    _copy(src, NEW, bad, "D20130528T000000_IFCB013")  # malformed .adc
    adc = bad / "D20130528T000000_IFCB013.adc"
    adc.write_text(adc.read_text().replace("-999.000000", "oops", 1))
    _copy(src, NEW, bad, "D20130529T000000_IFCB013", exts=("adc", "roi"))  # missing .hdr
    _copy(src, NEW, bad, "D20130530T000000_IFCB013")  # unreadable .hdr
    (bad / "D20130530T000000_IFCB013.hdr").write_bytes(b"\x00\xff\x13 not a header")
    _copy(src, NEW, bad, "D20130531T000000_IFCB013")  # negative width
    adc = bad / "D20130531T000000_IFCB013.adc"
    adc.write_text(adc.read_text().replace(",1060,161,88,34,", ",1060,161,-88,34,"))

    results = list(scan_archive(str(root)))
    failures = {r.bin: r for r in results if isinstance(r, BinFailure)}
    metas = [r for r in results if isinstance(r, BinMeta)]
    assert {m.bin.id: m.n_rois for m in metas} == {OLD: 5, NEW: 19, EMPTY_NEW: 0, EMPTY_OLD: 0}
    assert failures["IFCB5_2012_029_081515"].reason == "missing .roi"
    assert failures["D20130529T000000_IFCB013"] == BinFailure("D20130529T000000_IFCB013", "files", "missing .hdr")
    assert failures["D20130528T000000_IFCB013"].stage == "adc"
    assert "line 1, column 18: not a number: 'oops'" in failures["D20130528T000000_IFCB013"].reason
    assert failures["D20130530T000000_IFCB013"].stage == "hdr"
    assert failures["D20130531T000000_IFCB013"].stage == "adc"
    assert "line 7: ROI width is -88" in failures["D20130531T000000_IFCB013"].reason
    # the listing's size of the .roi already shows it short: found with the metadata, before any pixel is read
    truncated = failures["D20130527T000000_IFCB013"]
    assert truncated.stage == "roi" and truncated.reason.startswith(".roi is truncated: images need bytes up to")
    assert len(failures) == 6

    fs = list_bins(str(root))[0]
    read = {meta.bin.id: len(read_bin_images(fs, meta)) for meta in metas}
    assert read == {OLD: 5, NEW: 19, EMPTY_NEW: 0, EMPTY_OLD: 0}


@pytest.mark.parametrize("suffix", ["", ".hdr", ".adc", ".roi"])
def test_bin_files_at(ifcb_data: Path, suffix: str) -> None:
    _, files = bin_files_at(str(ifcb_data / "bins" / NEW) + suffix)
    assert files.bin.id == NEW and files.missing == []
    assert files.roi.endswith(f"bins/{NEW}.roi")


def test_bin_files_at_partial_and_bad_names(ifcb_data: Path) -> None:
    _, files = bin_files_at(str(ifcb_data / "partial" / OLD))
    assert files.missing == [".roi"]
    with pytest.raises(IfcbFormatError, match="not an IFCB bin id"):
        bin_files_at(str(ifcb_data / "SOURCES.md"))
