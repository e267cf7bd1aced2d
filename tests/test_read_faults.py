"""Faults on the read side that are not the bin's: a server that ignores HTTP Range requests (a configuration error
that stops the run, never a bad bin), and a bin copied while the instrument was still writing it (its header's
`roiCount` above what its `.adc` lists: left incomplete, read again by the next run).

Every archive is made of the real bins in `../shared/data/ifcb`, copied into a temporary folder; HTTP archives are
served from loopback by a plain `http.server` (tests/faulty_proxy.py), the runs go through the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest
from classify_support import make_bundle
from faulty_proxy import archive_server
from typer.testing import CliRunner

from pipeline.cli import exit_codes
from pipeline.cli.app import app
from pipeline.faults import ConfigurationError, TransientError, fault_kind
from pipeline.ifcb.archive import bin_files_at, list_bins
from pipeline.ifcb.bins import read_bin_images, read_bin_meta, read_many_bin_meta
from pipeline.ifcb.errors import BinFailure, BinNotFinished, IfcbFormatError
from pipeline.ifcb.roi import check_range_answer, image_span
from pipeline.results.store import ResultStore

NEW, OLD = "D20130526T095207_IFCB013", "IFCB5_2012_028_081515"
#: ROIs with an image of the real newer bin (pyifcb's reading, ../shared/data/ifcb/SOURCES.md).
NEW_ROIS = 19
#: ROIs with an image in the copy of the newer bin taken mid-write.
WRITTEN = 9


def _copy(ifcb_data: Path, folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        for ext in ("hdr", "adc", "roi"):
            shutil.copy(ifcb_data / "bins" / f"{name}.{ext}", folder / f"{name}.{ext}")
            (folder / f"{name}.{ext}").chmod(0o644)
    return folder


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("bundle") / "bundle.zip")
    make_bundle(path)
    return path


def _classify(archive: str, bundle: str, out: Path, cluster: str, *extra: str):
    args = ["classify", archive, "--model", bundle, "--out", str(out), "--cluster", cluster, "--json", *extra]
    return CliRunner().invoke(app, args)


# --- 1. a server that ignores Range ---------------------------------------------------------------------------------
def test_a_ranged_read_answered_with_the_whole_file_names_the_server(ifcb_data: Path, tmp_path: Path) -> None:
    """Reader level: Python's own `http.server` ignores Range and answers 200 with the whole `.roi`; the reader
    refuses it as the server's fault. The same archive behind a server that honours Range reads as the local one,
    although an HTTP listing gives no sizes."""
    root = _copy(ifcb_data, tmp_path / "archive", NEW, OLD)
    local_fs, local_bins, _ = list_bins(str(root))
    local = {files.bin.id: read_bin_images(local_fs, read_bin_meta(local_fs, files)) for files in local_bins}
    with archive_server(root, honour_range=False) as server:
        fs, bins, failures = list_bins(server.url)
        assert not failures and [files.bin.id for files in bins] == [OLD, NEW]
        old = read_bin_meta(fs, bins[0])
        assert image_span(old.adc)[0] == 1  # the older bin's images start after its pad byte
        with pytest.raises(ConfigurationError, match=r"ignores HTTP Range requests .* the whole file") as refused:
            read_bin_images(fs, old)
        assert server.url.rstrip("/") in str(refused.value) and "honours Range" in str(refused.value)
        assert fault_kind(refused.value, "object") == "configuration"
        assert server.ranges[-1] == "bytes=1-71081"  # asked for a range, got the file
    with archive_server(root, honour_range=True) as server:
        fs, bins, _ = list_bins(server.url)
        assert bins[0].sizes is None  # the listing knows no sizes
        for files in bins:
            meta = read_bin_meta(fs, files)
            assert meta.roi_file_size is None  # the listing's 0 is not taken for the .roi's size
            images = read_bin_images(fs, meta)
            assert [number for number, _ in images] == [number for number, _ in local[files.bin.id]]
            for (_, mine), (_, theirs) in zip(images, local[files.bin.id], strict=True):
                np.testing.assert_array_equal(mine, theirs)


def test_a_short_answer_is_transient_unless_the_file_shrank(ifcb_data: Path, tmp_path: Path) -> None:
    root = _copy(ifcb_data, tmp_path, OLD)
    fs = fsspec.filesystem("file")
    path = str(root / f"{OLD}.roi")
    start, end = 1, 71082
    block = fs.cat_file(path, start=start, end=end)
    check_range_answer(fs, path, block, start, end)  # the bytes asked for: nothing to say
    with pytest.raises(TransientError, match="stopped short"):
        check_range_answer(fs, path, block[:-10], start, end)
    Path(path).write_bytes(Path(path).read_bytes()[:-10])  # the file is shorter now than the images need
    with pytest.raises(IfcbFormatError, match="truncated") as shrank:
        check_range_answer(fs, path, block[:-10], start, end)
    assert shrank.value.stage == "roi"


def test_classify_over_a_server_that_ignores_range_stops_once_and_records_no_bad_bin(
    ifcb_data: Path, bundle: str, dask_client, tmp_path: Path
) -> None:
    root = _copy(ifcb_data, tmp_path / "archive", NEW, OLD)
    out = tmp_path / "store.zarr"
    with archive_server(root, honour_range=False) as server:
        result = _classify(server.url, bundle, out, dask_client.scheduler.address)
        assert result.exit_code == exit_codes.USAGE, result.output
        assert "ignores HTTP Range requests" in result.output and "Traceback" not in result.output
        assert result.output.count("error:") == 1
        ledger = ResultStore(str(out)).ledger()
        assert ledger.failures == {}  # a fault of the server is no bin's
        assert OLD not in ledger.complete
    with archive_server(root, honour_range=True) as server:  # the same archive behind a server that honours Range
        again = _classify(server.url, bundle, out, dask_client.scheduler.address)
    assert again.exit_code == exit_codes.OK, again.output
    ledger = ResultStore(str(out)).ledger()
    assert ledger.complete == {NEW, OLD} and ledger.failures == {}
    assert ledger.bins[NEW].n_rois == NEW_ROIS and ledger.bins[OLD].n_rois == 5  # the old bin's pair stitched


# --- 2. a bin still being written -----------------------------------------------------------------------------------
def _with_roi_count(stem: Path, count: int) -> None:
    """Add `roiCount: <count>` to the header, as newer acquisition software writes it at the end of a sample."""
    hdr = stem.with_suffix(".hdr")
    lines = hdr.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("inhibitTime:")) + 1
    hdr.write_text("".join([*lines[:at], f"roiCount: {count}\n", *lines[at:]]))


def _cut_after_image(stem: Path, images: int) -> tuple[bytes, bytes]:
    """Cut the `.adc` after the line of its `images`-th image and the `.roi` after that image's bytes (a copy taken
    while the instrument was writing); returns the whole files' bytes."""
    adc, roi = stem.with_suffix(".adc"), stem.with_suffix(".roi")
    whole = adc.read_bytes(), roi.read_bytes()
    fs, files = bin_files_at(str(stem))
    table = read_bin_meta(fs, files).adc
    row = int(table.roi_numbers[images - 1]) - 1
    lines = whole[0].splitlines(keepends=True)
    adc.write_bytes(b"".join(lines[: row + 1]))
    roi.write_bytes(whole[1][: int(table.start_byte[row] + table.width[row] * table.height[row])])
    return whole


def test_the_header_roi_count_read_with_the_whole_files_is_no_warning(ifcb_data: Path, tmp_path: Path) -> None:
    stem = _copy(ifcb_data, tmp_path, NEW) / NEW
    _with_roi_count(stem, NEW_ROIS)
    fs, files = bin_files_at(str(stem))
    meta = read_bin_meta(fs, files)
    assert meta.header.roi_count == NEW_ROIS and meta.n_rois == NEW_ROIS and meta.warnings == []
    assert len(read_bin_images(fs, meta)) == NEW_ROIS


def test_fewer_images_than_the_header_counts_is_a_bin_still_being_written(ifcb_data: Path, tmp_path: Path) -> None:
    stem = _copy(ifcb_data, tmp_path, NEW) / NEW
    _with_roi_count(stem, NEW_ROIS)
    _cut_after_image(stem, WRITTEN)
    fs, files = bin_files_at(str(stem))
    reason = f"the header says {NEW_ROIS} ROIs, the .adc lists {WRITTEN}: the bin is still being written"
    with pytest.raises(BinNotFinished) as raised:
        read_bin_meta(fs, files)
    assert str(raised.value) == reason and raised.value.stage == "adc"
    assert fault_kind(raised.value, "object") == "transient"
    (failure,) = read_many_bin_meta(fs, [files])  # how `ls` and scans see it
    assert failure == BinFailure(NEW, "adc", reason, kind="transient")


def test_more_images_than_the_header_counts_is_read_with_a_warning(ifcb_data: Path, tmp_path: Path) -> None:
    stem = _copy(ifcb_data, tmp_path, NEW) / NEW
    _with_roi_count(stem, 17)
    fs, files = bin_files_at(str(stem))
    meta = read_bin_meta(fs, files)
    assert meta.n_rois == NEW_ROIS
    assert meta.warnings == [f"the header says 17 ROIs, the .adc lists {NEW_ROIS}: the .adc's are read"]


def test_a_bin_copied_mid_write_is_left_incomplete_and_done_whole_by_the_next_run(
    ifcb_data: Path, bundle: str, dask_client, tmp_path: Path
) -> None:
    root = _copy(ifcb_data, tmp_path / "archive", NEW)
    stem = root / NEW
    _with_roi_count(stem, NEW_ROIS)
    adc, roi = _cut_after_image(stem, WRITTEN)
    out = tmp_path / "store.zarr"
    first = _classify(str(root), bundle, out, dask_client.scheduler.address)
    assert first.exit_code == exit_codes.NOT_COMPLETE, first.output
    summary = json.loads(first.stdout)
    assert summary["bins_incomplete"] == 1 and summary["bins_failed"] == 0 and summary["bins_done"] == 0
    assert summary["incomplete"][0]["bin"] == NEW
    assert f"the header says {NEW_ROIS} ROIs, the .adc lists {WRITTEN}" in summary["incomplete"][0]["reason"]
    ledger = ResultStore(str(out)).ledger()
    assert NEW not in ledger.complete and NEW not in ledger.failures

    stem.with_suffix(".adc").write_bytes(adc)  # the instrument has finished writing
    stem.with_suffix(".roi").write_bytes(roi)
    second = _classify(str(root), bundle, out, dask_client.scheduler.address)
    assert second.exit_code == exit_codes.OK, second.output
    assert json.loads(second.stdout)["bins_done"] == 1
    ledger = ResultStore(str(out)).ledger()
    assert NEW in ledger.complete and ledger.bins[NEW].n_rois == NEW_ROIS and not ledger.bins[NEW].warnings


def test_a_complete_bin_whose_files_grew_since_is_reported_and_classified_again(
    ifcb_data: Path, bundle: str, dask_client, tmp_path: Path
) -> None:
    """A header without `roiCount` cannot tell a copy taken mid-write: it is classified with what it holds. The
    store keeps the fingerprint of the files it was read from (their sizes), so when the whole files arrive the next
    run reports the bin as changed and classifies it again; a third run has nothing to do."""
    root = _copy(ifcb_data, tmp_path / "archive", NEW)
    stem = root / NEW
    adc, roi = _cut_after_image(stem, WRITTEN)
    out = tmp_path / "store.zarr"
    first = _classify(str(root), bundle, out, dask_client.scheduler.address)
    assert first.exit_code == exit_codes.OK, first.output
    assert ResultStore(str(out)).ledger().bins[NEW].n_rois == WRITTEN

    stem.with_suffix(".adc").write_bytes(adc)
    stem.with_suffix(".roi").write_bytes(roi)
    second = _classify(str(root), bundle, out, dask_client.scheduler.address)
    assert second.exit_code == exit_codes.OK, second.output
    summary = json.loads(second.stdout)
    assert summary["bins_changed"] == 1 and summary["bins_done"] == 1
    ledger = ResultStore(str(out)).ledger()
    assert ledger.bins[NEW].n_rois == NEW_ROIS and len(ledger.complete) == 1
    numbers, _ = ResultStore(str(out)).read_bin(NEW)
    assert len(numbers) == NEW_ROIS

    third = json.loads(_classify(str(root), bundle, out, dask_client.scheduler.address).stdout)
    assert third["bins_changed"] == 0 and third["bins_done"] == 0 and third["bins_already_complete"] == 1
