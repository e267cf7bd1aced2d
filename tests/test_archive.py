"""Archives: layouts, grouping, filters, and mixed good and bad bins where every good bin is still read."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.ifcb.archive import bin_files_at, iter_bins, list_bins, scan_archive, split_bin_filename
from pipeline.ifcb.bins import BinMeta, read_bin_images
from pipeline.ifcb.errors import BinFailure, IfcbFormatError
from pipeline.ifcb.left_out import SAME_COPY

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


def test_a_bin_in_two_places_is_one_bin_when_identical_and_a_failure_when_not(ifcb_data: Path, tmp_path: Path) -> None:
    _copy(ifcb_data / "bins", NEW, tmp_path / "a")
    _copy(ifcb_data / "bins", NEW, tmp_path / "b")
    _, stream = iter_bins(str(tmp_path))
    items = list(stream)
    assert [(item.bin.id, Path(item.roi).parent.name) for item in items] == [(NEW, "a")]  # the first by path
    assert stream.left_out.files == {SAME_COPY: 3}
    assert stream.left_out.examples[SAME_COPY][0] == f"b/{NEW}.adc (same as a/{NEW}.adc)"
    roi = tmp_path / "b" / f"{NEW}.roi"
    roi.write_bytes(roi.read_bytes()[:-1] + b"\x00")  # one byte differs: the same size, other bytes
    _, bins, failures = list_bins(str(tmp_path))
    assert bins == [] and len(failures) == 1
    assert failures[0].stage == "files" and failures[0].reason == (
        f"copies that differ: {tmp_path}/a/{NEW}.roi and {roi} (remove or rename one)"
    )


def test_mixed_good_and_bad_bins_lose_no_good_bin(ifcb_data: Path, tmp_path: Path) -> None:
    root = _nested_archive(ifcb_data, tmp_path / "archive")
    bad = root / "damaged"
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
    metas = {r.bin.id: r for r in results if isinstance(r, BinMeta)}
    # one bad field costs at most its own row's ROI (WHOI ifcbkit's rule, `pipeline.ifcb.adc`)
    assert {bin_id: m.n_rois for bin_id, m in metas.items()} == {
        OLD: 5, NEW: 19, EMPTY_NEW: 0, EMPTY_OLD: 0, "D20130528T000000_IFCB013": 19, "D20130531T000000_IFCB013": 18
    }  # fmt: skip
    assert "line 1, column 18: not a number: 'oops'" in metas["D20130528T000000_IFCB013"].warnings[0]
    assert "line 7, column 15 (ROI width): -88" in metas["D20130531T000000_IFCB013"].warnings[0]
    assert failures["IFCB5_2012_029_081515"].reason == "missing .roi"
    assert failures["D20130529T000000_IFCB013"] == BinFailure("D20130529T000000_IFCB013", "files", "missing .hdr")
    assert failures["D20130530T000000_IFCB013"].stage == "hdr"
    # the listing's size of the .roi already shows it short: found with the metadata, before any pixel is read
    truncated = failures["D20130527T000000_IFCB013"]
    assert truncated.stage == "roi" and truncated.reason.startswith(".roi is truncated: images need bytes up to")
    assert len(failures) == 4

    fs = list_bins(str(root))[0]
    read = {bin_id: len(read_bin_images(fs, meta)) for bin_id, meta in metas.items()}
    assert read == {bin_id: meta.n_rois for bin_id, meta in metas.items()}


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


def _days_archive(ifcb: Path, root: Path) -> None:
    """Both day layouts over two years each: a bin a day, named for its day (hard links of two real bins)."""
    for year in (2019, 2020):
        for day in range(1, 6):
            name = f"D{year}01{day:02d}T000000_IFCB013"
            _link(ifcb / "bins" / NEW, root / f"D{year}" / f"D{year}01{day:02d}", name)
    for year in (2011, 2012):
        for doy in range(27, 31):
            _link(ifcb / "bins" / OLD, root / str(year) / f"IFCB5_{year}_{doy:03d}", f"IFCB5_{year}_{doy:03d}_081515")


def _link(source: Path, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for ext in ("hdr", "adc", "roi"):
        try:
            (folder / f"{name}.{ext}").hardlink_to(f"{source}.{ext}")
        except OSError:  # another filesystem, or links not allowed here
            shutil.copy(f"{source}.{ext}", folder / f"{name}.{ext}")


@pytest.fixture
def listing_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every `ls` and `find` the listing asks of the local filesystem (not those `find` makes itself), as (method,
    path): on object storage, each is one request per thousand entries."""
    import fsspec

    fs = fsspec.filesystem("file")
    calls: list[tuple[str, str]] = []
    depth = [0]
    for method in ("ls", "find"):
        real = getattr(fs, method)

        def recorded(path: str, *args: object, _real=real, _method=method, **kwargs: object) -> object:
            if not depth[0]:
                calls.append((_method, str(path)))
            depth[0] += 1
            try:
                return _real(path, *args, **kwargs)
            finally:
                depth[0] -= 1

        monkeypatch.setattr(fs, method, recorded)
    return calls


@pytest.mark.parametrize(
    ("start", "end", "expected", "listed"),
    [
        (datetime(2020, 1, 2), datetime(2020, 1, 4), ["D20200102T000000_IFCB013", "D20200103T000000_IFCB013"],
         ["D2020", "D2020/D20200101", "D2020/D20200102", "D2020/D20200103", "D2020/D20200104"]),
        (datetime(2012, 1, 29, 8), datetime(2012, 1, 29, 9), ["IFCB5_2012_029_081515"],
         ["2012", "2012/IFCB5_2012_028", "2012/IFCB5_2012_029", "2012/IFCB5_2012_030"]),
        (datetime(2012, 1, 30), datetime(2019, 1, 2), ["IFCB5_2012_030_081515", "D20190101T000000_IFCB013"],
         ["2012", "D2019", "2012/IFCB5_2012_029", "2012/IFCB5_2012_030", "D2019/D20190101", "D2019/D20190102"]),
    ],
)  # fmt: skip
def test_a_window_lists_only_the_day_folders_that_can_hold_it(
    ifcb_data: Path, tmp_path: Path, listing_calls: list[tuple[str, str]], start, end, expected, listed
) -> None:
    root = tmp_path / "archive"
    _days_archive(ifcb_data, root)
    _, bins, failures = list_bins(str(root), start=start, end=end)
    assert [b.bin.id for b in bins] == expected and failures == []
    relative = [(method, str(Path(path).relative_to(root))) for method, path in listing_calls]
    years, days = [p for p in listed if "/" not in p], [p for p in listed if "/" in p]
    assert relative == [("ls", "."), *[("ls", p) for p in years], *[("find", p) for p in days]]


def test_bins_asked_for_list_only_their_days_and_a_full_pass_streams_in_time_order(
    ifcb_data: Path, tmp_path: Path, listing_calls: list[tuple[str, str]]
) -> None:
    root = tmp_path / "archive"
    _days_archive(ifcb_data, root)
    wanted = ["D20190103T000000_IFCB013", "IFCB5_2011_028_081515", "D20190103T120000_IFCB013"]
    _, bins, failures = list_bins(str(root), bin_ids=wanted)
    assert [b.bin.id for b in bins] == wanted[1::-1]
    assert failures == [BinFailure("D20190103T120000_IFCB013", "files", "not found in the archive")]
    assert sorted(path for method, path in listing_calls if method == "find") == [
        str(root / folder) for folder in ("2011/IFCB5_2011_027", "2011/IFCB5_2011_028", "2011/IFCB5_2011_029",
                                          "D2019/D20190102", "D2019/D20190103", "D2019/D20190104")
    ]  # fmt: skip  (each bin's day folder and the days either side: folders are often named by local date)
    listing_calls.clear()
    _, stream = iter_bins(str(root))
    assert len(listing_calls) == 5  # the root and its four years; no day is listed before it is asked for
    first = next(stream)  # its day is whole once the folder of the day after is listed: 027, 028, 029
    assert first.bin.id == "IFCB5_2011_027_081515" and len(listing_calls) == 8
    rest = [item.bin.id for item in stream]
    assert len(rest) == 17 and rest == [b.bin.id for b in list_bins(str(root))[1]][1:]


def test_other_layouts_are_listed_whole(ifcb_data: Path, tmp_path: Path, listing_calls: list[tuple[str, str]]) -> None:
    root = tmp_path / "archive"
    _days_archive(ifcb_data, root)
    _copy(ifcb_data / "bins", NEW, root / "extra")  # a folder that is not a year
    _, bins, _ = list_bins(str(root), start=datetime(2013, 5, 26), end=datetime(2013, 5, 27))
    assert [b.bin.id for b in bins] == [NEW]
    assert [call for call in listing_calls if call[0] == "find"] == [("find", str(root))]
    listing_calls.clear()
    _copy(ifcb_data / "bins", NEW, root / "D2020" / "extra", "D20200102T010000_IFCB013")  # a folder that is no day
    (root / "extra").rename(tmp_path / "aside")
    _, bins, _ = list_bins(str(root), start=datetime(2020, 1, 2), end=datetime(2020, 1, 3))
    assert [b.bin.id for b in bins] == ["D20200102T000000_IFCB013", "D20200102T010000_IFCB013"]
    assert [call for call in listing_calls if call[0] == "find"] == [("find", str(root))]
