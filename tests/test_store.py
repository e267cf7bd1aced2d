"""The output store on its own: commit order, identical bytes on rewrite, the model guard, xarray views."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from classify_support import tree_digests

from pipeline.ifcb.errors import BinFailure
from pipeline.results.store import BinResult, ResultStore, StoreMismatchError, open_summary

CLASSES = ["a", "b", "c"]
INFO = {"classes": CLASSES, "content_hash": "hash-1", "arch": "small-cnn"}
BIN_A = "D20240101T000000_IFCB999"
BIN_B = "D20240101T012000_IFCB999"


def _result(bin_id: str, n: int, ml: float | None, seed: int = 0) -> BinResult:
    rng = np.random.default_rng(seed)
    time = datetime.strptime(bin_id[1:16], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    scores = rng.random((n, len(CLASSES)), dtype=np.float32)
    return BinResult(bin_id, time, np.arange(1, 2 * n + 1, 2, dtype=np.int64), scores, ml)


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    results = ResultStore(str(tmp_path / "out.zarr"))
    results.prepare(bundle_info=INFO, bundle_url="bundle.zip", archive_url="archive")
    return results


def test_bin_round_trip_and_commit_marker_last(store: ResultStore, tmp_path: Path) -> None:
    result = _result(BIN_A, 5, 2.0)
    store.write_bin(result, CLASSES)
    numbers, scores = store.read_bin(BIN_A)
    np.testing.assert_array_equal(numbers, result.roi_numbers)
    np.testing.assert_array_equal(scores, result.scores)
    attrs = store.bin_index()[BIN_A]
    assert list(attrs)[-1] == "complete" and attrs["complete"] is True
    assert attrs["counts"] == np.bincount(result.scores.argmax(1), minlength=3).tolist()
    assert attrs["time"] == "2024-01-01T00:00:00Z"
    assert store.is_complete(BIN_A) and not store.is_complete(BIN_B)


def test_a_group_without_the_marker_is_not_complete(store: ResultStore, tmp_path: Path) -> None:
    store.write_bin(_result(BIN_A, 3, 1.0), CLASSES)
    meta_path = tmp_path / "out.zarr" / "bins" / BIN_A / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["complete"] = False  # as if the writer died before its last write
    meta_path.write_text(json.dumps(meta))
    assert BIN_A not in store.bin_index()
    assert not store.is_complete(BIN_A)


def test_rewriting_a_bin_writes_identical_bytes(store: ResultStore, tmp_path: Path) -> None:
    store.write_bin(_result(BIN_A, 4, 1.5), CLASSES)
    before = tree_digests(tmp_path / "out.zarr" / "bins")
    store.write_bin(_result(BIN_A, 4, 1.5), CLASSES)
    assert tree_digests(tmp_path / "out.zarr" / "bins") == before


def test_failure_record_removed_when_the_bin_succeeds(store: ResultStore) -> None:
    store.write_failure(BinFailure(BIN_A, "roi", "truncated"))
    assert store.failures() == [BinFailure(BIN_A, "roi", "truncated")]
    store.write_bin(_result(BIN_A, 2, 1.0), CLASSES)
    assert store.failures() == []


def test_another_bundle_is_refused(store: ResultStore) -> None:
    with pytest.raises(StoreMismatchError, match="holds results of model bundle hash-1"):
        store.prepare(bundle_info={**INFO, "content_hash": "hash-2"}, bundle_url="other.zip", archive_url="archive")
    # the same bundle is welcome, and another archive is remembered
    info = store.prepare(bundle_info=INFO, bundle_url="bundle.zip", archive_url="archive-2")
    assert info["archive_urls"] == ["archive", "archive-2"]


def test_a_folder_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(StoreMismatchError, match="not an ifcbflow store"):
        ResultStore(str(tmp_path / "data")).prepare(bundle_info=INFO, bundle_url="b", archive_url="a")


def test_summary_readable_with_xarray(store: ResultStore, tmp_path: Path) -> None:
    store.write_bin(_result(BIN_B, 4, None, seed=1), CLASSES)  # written first, sorted by time in the summary
    store.write_bin(_result(BIN_A, 6, 3.0), CLASSES)
    store.write_bin(_result("D20240101T004000_IFCB999", 0, 1.0), CLASSES)  # an empty bin
    assert store.consolidate() == 3
    summary = open_summary(store.url).load()
    assert list(summary.bin.values) == [BIN_A, "D20240101T004000_IFCB999", BIN_B]
    assert list(summary["class"].values) == CLASSES
    assert summary.time.values[0] == np.datetime64("2024-01-01T00:00:00")
    np.testing.assert_allclose(summary.concentration.values[0], summary.counts.values[0] / 3.0)
    assert np.isnan(summary.concentration.values[2]).all() and np.isnan(summary.ml_analyzed.values[2])
    assert summary.counts.values[1].sum() == 0
    one = xr.open_zarr(store.url, group=f"bins/{BIN_A}", consolidated=False)
    assert one.scores.dims == ("roi", "class")
    assert one.scores.sel(roi=3).shape == (3,)
