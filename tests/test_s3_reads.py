"""Reading over S3 (a moto server on loopback, through s3fs over HTTP): the same bytes as from disk, and few requests.

Requests are counted where s3fs sends them (botocore's `before-send` event on the s3fs client), so each HTTP
request - including retries - is seen, with its method and Range header.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
import s3fs
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.ifcb.archive import list_bins, scan_archive
from pipeline.ifcb.bins import BinMeta, read_bin_images, read_bin_meta
from pipeline.ifcb.errors import BinFailure, IfcbFormatError
from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.storage import fs_options

NEW, OLD = "D20130526T095207_IFCB013", "IFCB5_2012_028_081515"
EMPTY = ("D20150411T205456_IFCB012", "IFCB5_2017_001_033645")


class RequestLog:
    """Every HTTP request an s3fs filesystem sends: (method, path, Range header)."""

    def __init__(self, fs: s3fs.S3FileSystem) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        fs.s3.meta.events.register("before-send.s3", self._record)

    def _record(self, request: Any, **_: Any) -> None:
        range_header = request.headers.get("Range")
        self.requests.append(
            (request.method, urlparse(request.url).path, range_header.decode() if range_header else None)
        )

    def take(self) -> list[tuple[str, str, str | None]]:
        taken, self.requests = self.requests, []
        return taken


@pytest.fixture
def cached_options(s3_server) -> dict[str, Any]:
    """Storage options without `skip_instance_cache` and with the reader's own additions: `url_to_fs` inside the
    reader returns the counted instance."""
    options = {key: value for key, value in s3_server.storage_options.items() if key != "skip_instance_cache"}
    return fs_options("s3://", options)


@pytest.fixture
def real_archive(s3_server, ifcb_data: Path, tmp_path: Path) -> tuple[str, Path]:
    """The real bins, the empty bins and a bin without .roi, on disk and uploaded to a fresh bucket."""
    local = tmp_path / "archive"
    shutil.copytree(ifcb_data / "bins", local / "D2013" / "D20130526")
    shutil.copytree(ifcb_data / "empty", local / "empty")
    (local / "partial").mkdir()
    for ext in ("hdr", "adc"):
        shutil.copy(ifcb_data / "partial" / f"{OLD}.{ext}", local / "partial" / f"IFCB5_2012_029_081515.{ext}")
    (local / "labels.csv").write_text("roi_id,class\n")
    bucket = s3_server.new_bucket()
    s3_server.filesystem().put(str(local) + "/", f"{bucket}/archive/", recursive=True)
    return f"s3://{bucket}/archive", local


def test_real_bins_identical_with_one_get_per_file(s3_server, cached_options, real_archive) -> None:
    url, local = real_archive
    fs = s3fs.S3FileSystem(**cached_options)
    log = RequestLog(fs)
    s3_fs, s3_bins, s3_failures = list_bins(url, cached_options)
    assert s3_fs is fs
    listing = log.take()
    # the root's folders (not years and days: not laid out by day), then one ListObjectsV2 page for the whole tree
    assert len(listing) == 2 and all(method == "GET" for method, _, _ in listing)
    local_fs, local_bins, local_failures = list_bins(str(local))
    assert [b.bin.id for b in s3_bins] == [b.bin.id for b in local_bins] == [OLD, NEW, *EMPTY]
    assert s3_failures == local_failures == [BinFailure("IFCB5_2012_029_081515", "files", "missing .roi")]
    for s3_files, local_files in zip(s3_bins, local_bins, strict=True):
        s3_meta = read_bin_meta(fs, s3_files)
        assert [m for m, _, _ in log.take()] == ["GET", "GET"]  # .hdr and .adc, no HEAD
        s3_images = read_bin_images(fs, s3_meta)
        roi_requests = log.take()
        local_meta = read_bin_meta(local_fs, local_files)
        local_images = read_bin_images(local_fs, local_meta)
        np.testing.assert_array_equal(s3_meta.adc.values, local_meta.adc.values)
        np.testing.assert_array_equal(s3_meta.roi_numbers, local_meta.roi_numbers)
        assert s3_meta.ml_analyzed == local_meta.ml_analyzed
        assert s3_meta.header == local_meta.header
        assert len(s3_images) == len(local_images) == local_meta.n_rois
        for (n1, a1), (n2, a2) in zip(s3_images, local_images, strict=True):
            assert n1 == n2 and a1.tobytes() == a2.tobytes() and a1.shape == a2.shape
        if local_meta.n_rois:
            assert len(roi_requests) == 1  # one ranged GET for every image of the bin
            method, path, byte_range = roi_requests[0]
            assert method == "GET" and path.endswith(".roi") and byte_range is not None
        else:
            assert roi_requests == []


def test_scan_archive_requests(s3_server, cached_options, real_archive) -> None:
    url, _ = real_archive
    log = RequestLog(s3fs.S3FileSystem(**cached_options))
    results = list(scan_archive(url, cached_options))
    assert [r.bin for r in results if isinstance(r, BinFailure)] == ["IFCB5_2012_029_081515"]
    metas = [r for r in results if isinstance(r, BinMeta)]
    assert {m.bin.id: m.n_rois for m in metas} == {OLD: 5, NEW: 19, EMPTY[0]: 0, EMPTY[1]: 0}
    requests = log.take()
    assert len(requests) == 2 + 2 * len(metas)  # the root's folders, one listing, then the .hdr and .adc of each bin
    assert {m for m, _, _ in requests} == {"GET"}


def test_truncated_and_missing_roi_over_s3(s3_server, ifcb_data: Path) -> None:
    fs = s3_server.filesystem()
    bucket = s3_server.new_bucket()
    src = ifcb_data / "bins"
    roi = (src / f"{NEW}.roi").read_bytes()
    shorter = (("D20130527T000000_IFCB013", roi[:-10]), ("D20130528T000000_IFCB013", roi[:100]))
    for name, roi_bytes in (*shorter, ("D20130529T000000_IFCB013", b"")):
        fs.pipe({f"{bucket}/{name}.{ext}": (src / f"{NEW}.{ext}").read_bytes() for ext in ("hdr", "adc")})
        fs.pipe_file(f"{bucket}/{name}.roi", roi_bytes)
    fs.pipe_file(f"{bucket}/{OLD}.hdr", (src / f"{OLD}.hdr").read_bytes())
    fs.pipe_file(f"{bucket}/{OLD}.adc", (src / f"{OLD}.adc").read_bytes())
    s3_fs, bins, failures = list_bins(f"s3://{bucket}", s3_server.storage_options)
    assert failures == [BinFailure(OLD, "files", "missing .roi")]
    assert len(bins) == 3
    for files in bins:  # ends inside the last image, inside the first image, and before the range (HTTP 416)
        with pytest.raises(IfcbFormatError, match="truncated"):
            read_bin_images(s3_fs, read_bin_meta(s3_fs, files))


@pytest.mark.parametrize(("bins", "rois"), [(1, 3), (4, 30)])
def test_synthetic_roundtrip_local_and_s3(s3_server, cached_options, tmp_path: Path, bins: int, rois: int) -> None:
    bucket = s3_server.new_bucket()
    url = f"s3://{bucket}/synth"
    ids = write_synthetic_archive(url, bins=bins, rois=rois, classes=5, seed=11, storage_options=cached_options)
    assert ids == write_synthetic_archive(str(tmp_path), bins=bins, rois=rois, classes=5, seed=11)
    fs = s3fs.S3FileSystem(**cached_options)
    remote = {path.split("/synth/", 1)[1]: fs.cat_file(path) for path in fs.find(f"{bucket}/synth")}
    local = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert remote == local  # the same bytes wherever they are written
    log = RequestLog(fs)
    for meta in scan_archive(url, cached_options):
        assert isinstance(meta, BinMeta) and meta.n_rois == rois
        log.take()
        images = read_bin_images(fs, meta)
        assert len(log.take()) == 1 and len(images) == rois


def test_cli_ls_over_s3(s3_server, real_archive) -> None:
    url, _ = real_archive
    options = json.dumps(s3_server.storage_options)
    result = CliRunner().invoke(app, ["ls", url, "--json", "--storage-options", options])
    assert result.exit_code == 0, result.output
    records = {r["bin"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert records[NEW]["rois"] == 19 and records["IFCB5_2012_029_081515"]["status"] == "failed"
    assert "testing" not in result.output  # credentials never echoed
