"""The output store on its own: partition commits (commit last, identical bytes), the ledger, the summary, the lease,
the model guard, the old layout, and the xarray views."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from classify_support import tree_digests

from pipeline.ifcb.errors import BinFailure
from pipeline.results.lease import StoreBusyError
from pipeline.results.partitions import partition_id
from pipeline.results.records import BinResult
from pipeline.results.rois import open_rois
from pipeline.results.store import (
    ABANDONED_AFTER_S,
    COMMITS,
    PARTS,
    ResultStore,
    StoreLayoutError,
    StoreMismatchError,
    open_summary,
)

CLASSES = ["a", "b", "c"]
INFO = {"classes": CLASSES, "content_hash": "hash-1", "arch": "small-cnn"}
BIN_A = "D20240101T000000_IFCB999"
BIN_B = "D20240101T012000_IFCB999"
BIN_C = "D20240101T004000_IFCB999"


def _result(bin_id: str, n: int, ml: float | None, seed: int = 0) -> BinResult:
    rng = np.random.default_rng(seed)
    time = datetime.strptime(bin_id[1:16], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    scores = rng.random((n, len(CLASSES)), dtype=np.float32)
    return BinResult(bin_id, time, np.arange(1, 2 * n + 1, 2, dtype=np.int64), scores, ml)


def _commit(
    store: ResultStore, results: list[BinResult], failures: tuple[BinFailure, ...] = (), run: str = "run-1"
) -> str:
    part = partition_id([r.bin for r in results] + [f.bin for f in failures], run)
    store.commit_partition(part, results, CLASSES, failures)
    return part


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    results = ResultStore(str(tmp_path / "out.zarr"))
    results.prepare(bundle_info=INFO, bundle_url="bundle.zip", archive_url="archive")
    return results


def test_partition_round_trip_and_bin_records(store: ResultStore) -> None:
    a, c = _result(BIN_A, 5, 2.0), _result(BIN_C, 3, 1.0, seed=1)
    part = _commit(store, [a, c])
    ledger = store.ledger()
    assert sorted(ledger.bins) == [BIN_A, BIN_C]
    record = ledger.bins[BIN_C]
    assert (record.part, record.roi_offset, record.n_rois) == (part, 5, 3)
    assert record.counts == np.bincount(c.scores.argmax(1), minlength=3).tolist()
    assert ledger.bins[BIN_A].time == "2024-01-01T00:00:00Z"
    numbers, scores = store.read_bin(BIN_C, ledger)
    np.testing.assert_array_equal(numbers, c.roi_numbers)
    np.testing.assert_array_equal(scores, c.scores)


def test_a_partition_without_its_commit_is_not_complete_and_is_cleaned(store: ResultStore, tmp_path: Path) -> None:
    part = _commit(store, [_result(BIN_A, 3, 1.0)])
    shutil.rmtree(tmp_path / "out.zarr" / COMMITS / part)  # as if the writer died before its last write
    assert store.ledger().bins == {}
    assert (tmp_path / "out.zarr" / PARTS / part).exists()  # a reader never deletes
    with store.lease("next"):
        store.ledger(clean=True)  # nor does the next run while the partition may still be being written
    assert (tmp_path / "out.zarr" / PARTS / part).exists()
    old = time.time() - ABANDONED_AFTER_S - 1
    for path in (tmp_path / "out.zarr" / PARTS / part).rglob("*"):
        os.utime(path, (old, old))  # its last write an hour before the next run's lease
    with store.lease("next"):
        store.ledger(clean=True)  # the next run (holding the lease) deletes it
    assert not (tmp_path / "out.zarr" / PARTS / part).exists()


def test_recommitting_a_partition_writes_identical_bytes(store: ResultStore, tmp_path: Path) -> None:
    results = [_result(BIN_A, 4, 1.5), _result(BIN_C, 0, 1.0)]
    failure = (BinFailure(BIN_B, "roi", "truncated"),)
    _commit(store, results, failure)
    before = tree_digests(tmp_path / "out.zarr")
    _commit(store, results, failure)  # what a task that Dask retries does
    assert tree_digests(tmp_path / "out.zarr") == before


def test_failures_are_read_without_the_complete_bins_records(store: ResultStore, monkeypatch) -> None:
    _commit(store, [_result(BIN_A, 4, 1.5)], (BinFailure(BIN_B, "roi", "truncated"),))
    store.consolidate(store.ledger())
    _commit(store, [], (BinFailure(BIN_C, "adc", "bad"),), run="again")  # pending: not in the summary yet

    def records_read(self: ResultStore, *_: object) -> None:
        raise AssertionError("a rerun that only compares failures read every bin record")

    monkeypatch.setattr(ResultStore, "_consolidated_records", records_read)
    ledger = store.ledger()
    assert ledger.failures == {BIN_B: BinFailure(BIN_B, "roi", "truncated"), BIN_C: BinFailure(BIN_C, "adc", "bad")}
    assert ledger.complete == {BIN_A}


def test_failures_are_kept_until_the_bin_succeeds(store: ResultStore) -> None:
    _commit(store, [], (BinFailure(BIN_A, "roi", "truncated"),))
    assert store.ledger().failures == {BIN_A: BinFailure(BIN_A, "roi", "truncated")}
    store.consolidate(store.ledger())
    assert store.ledger().failures == {BIN_A: BinFailure(BIN_A, "roi", "truncated")}  # read back from the ledger
    _commit(store, [_result(BIN_A, 2, 1.0)], run="run-2")  # the next run retries the failed bin
    ledger = store.ledger()
    assert ledger.failures == {} and BIN_A in ledger.bins


def test_summary_equals_the_complete_bins_after_every_consolidation(store: ResultStore) -> None:
    _commit(store, [_result(BIN_B, 4, None, seed=1)])  # committed first, sorted by time in the summary
    assert store.consolidate(store.ledger()) == 1
    _commit(store, [_result(BIN_A, 6, 3.0), _result(BIN_C, 0, 1.0)])  # an empty bin too
    assert store.consolidate(store.ledger()) == 3
    summary = open_summary(store.url).load()
    assert list(summary.bin.values) == [BIN_A, BIN_C, BIN_B]
    assert list(summary["class"].values) == CLASSES
    assert summary.time.values[0] == np.datetime64("2024-01-01T00:00:00")
    np.testing.assert_allclose(summary.concentration.values[0], summary.counts.values[0] / 3.0)
    assert np.isnan(summary.concentration.values[2]).all() and np.isnan(summary.ml_analyzed.values[2])
    assert summary.counts.values[1].sum() == 0 and summary.n_rois.values.tolist() == [6, 0, 4]


def test_a_rerun_reads_the_summary_not_every_commit(store: ResultStore, tmp_path: Path) -> None:
    _commit(store, [_result(BIN_A, 2, 1.0)])
    store.consolidate(store.ledger())
    for commit in (tmp_path / "out.zarr" / COMMITS).iterdir():  # a consolidated commit is not read again ...
        if commit.is_dir():
            (commit / "zarr.json").write_text("not json")
    assert sorted(store.ledger().bins) == [BIN_A]  # ... so its content does not matter any more


def test_another_bundle_is_refused(store: ResultStore) -> None:
    with pytest.raises(StoreMismatchError, match=r"holds results of another model \(model hash-1"):
        store.prepare(bundle_info={**INFO, "content_hash": "hash-2"}, bundle_url="other.zip", archive_url="archive")
    info = store.prepare(bundle_info=INFO, bundle_url="bundle.zip", archive_url="archive-2")
    assert info["archive_urls"] == ["archive", "archive-2"]


def test_urls_are_recorded_without_credentials(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path / "out.zarr"))
    secret = "https://user:hunter2@host/b.zip?X-Amz-Signature=abcdef&X-Amz-Credential=AKIA1"
    info = store.prepare(bundle_info=INFO, bundle_url=secret, archive_url="s3://bucket/a?token=zzz")
    written = (tmp_path / "out.zarr" / "zarr.json").read_text()
    for leaked in ("hunter2", "abcdef", "AKIA1", "zzz"):
        assert leaked not in written and leaked not in json.dumps(info)
    assert "host/b.zip" in written


def test_a_folder_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    with pytest.raises(StoreMismatchError, match="not an ifcbflow store"):
        ResultStore(str(tmp_path / "data")).prepare(bundle_info=INFO, bundle_url="b", archive_url="a")


def test_a_second_run_is_refused_while_the_first_holds_the_lease(store: ResultStore) -> None:
    other = ResultStore(store.url)
    busy = pytest.raises(StoreBusyError, match="being written by another run")
    with store.lease("run-1"), busy, other.lease("run-2"):
        pass
    with other.lease("run-2"):  # released at the end of the first run
        pass


def test_the_lease_of_a_killed_run_expires(store: ResultStore) -> None:
    lease = Path(store.root, "lease.json")
    holder = {"owner": "killed", "host": "node7", "pid": 4242, "since": 0}
    lease.write_text(json.dumps({**holder, "expires": time.time() + 60}))  # still live: refused, saying who holds it
    with pytest.raises(StoreBusyError, match="process 4242 on node7"), store.lease("run-3"):
        pass
    lease.write_text(json.dumps({**holder, "expires": time.time() - 1, "ttl_s": 0.3}))  # unchanged for 0.3 s here
    with store.lease("run-3"):
        assert json.loads(lease.read_text())["owner"] == "run-3"
    assert not lease.exists()


def test_store_of_the_first_layout_is_refused_and_migrated(tmp_path: Path) -> None:
    old = _write_first_layout(tmp_path / "old.zarr")
    store = ResultStore(str(old))
    with pytest.raises(StoreLayoutError, match="ifcbflow migrate"):
        store.prepare(bundle_info=INFO, bundle_url="b.zip", archive_url="a")
    with pytest.raises(StoreLayoutError):
        store.ledger()
    from pipeline.results.migrate import migrate_store

    assert migrate_store(str(old)) == 2
    ledger = store.ledger()
    assert sorted(ledger.bins) == [BIN_A, BIN_B] and ledger.failures == {BIN_C: BinFailure(BIN_C, "roi", "cut")}
    numbers, scores = store.read_bin(BIN_B, ledger)
    np.testing.assert_array_equal(scores, _result(BIN_B, 3, 1.0, seed=5).scores)
    np.testing.assert_array_equal(numbers, [1, 3, 5])
    assert not (old / "bins").exists() and migrate_store(str(old)) == 0
    store.prepare(bundle_info=INFO, bundle_url="b.zip", archive_url="a")  # usable again


def _write_first_layout(root: Path) -> Path:
    """A store as ifcbflow 0.1 wrote it: one zarr group per bin, `complete` last, failures as groups."""
    import zarr

    attrs = {"layout": "ifcbflow-store/1", "classes": CLASSES, "bundle_hash": "hash-1", "bundle_arch": "small-cnn"}
    group = zarr.open_group(str(root), mode="w", zarr_format=3, attributes=attrs)
    for bin_id, n, seed in ((BIN_A, 2, 4), (BIN_B, 3, 5)):
        result = _result(bin_id, n, 1.0, seed=seed)
        one = group.create_group(f"bins/{bin_id}")
        one.create_array("scores", data=result.scores, dimension_names=("roi", "class"))
        one.create_array("roi", data=result.roi_numbers, dimension_names=("roi",))
        one.attrs.update({"bin": bin_id, "time": f"{bin_id[1:5]}-{bin_id[5:7]}-{bin_id[7:9]}T{bin_id[10:12]}:"
                          f"{bin_id[12:14]}:{bin_id[14:16]}Z", "n_rois": n, "ml_analyzed": 1.0,
                          "counts": [0, 0, 0], "complete": True})  # fmt: skip
    group.create_group(f"failures/{BIN_C}", attributes={"bin": BIN_C, "stage": "roi", "reason": "cut"})
    return root


def test_rois_of_the_store_in_one_xarray_expression(store: ResultStore) -> None:
    a, c, b = _result(BIN_A, 5, 2.0), _result(BIN_C, 3, 1.0, seed=1), _result(BIN_B, 4, 1.0, seed=2)
    _commit(store, [a, c])
    _commit(store, [b])
    rois = open_rois(store.url)
    assert rois.sizes == {"roi": 12, "class": 3} and list(rois["class"].values) == CLASSES
    sure = rois.isel(roi=(rois.scores.sel({"class": "b"}) > 0.5).values)
    want = [(r.bin, int(n)) for r in (a, c, b) for n, s in zip(r.roi_numbers, r.scores[:, 1], strict=True) if s > 0.5]
    assert list(zip(sure.bin.values.tolist(), sure.roi_number.values.tolist(), strict=True)) == want
    window = open_rois(store.url, start="2024-01-01T00:30", end="2024-01-01T01:00")
    assert set(window.bin.values.tolist()) == {BIN_C} and window.sizes["roi"] == 3
    assert (window.time.values == np.datetime64("2024-01-01T00:40:00")).all()
    one = xr.open_zarr(store.url, group=f"{PARTS}/{partition_id([BIN_B], 'run-1')}", consolidated=False)
    assert one.scores.dims == ("roi", "class") and one.roi_number.values.tolist() == [1, 3, 5, 7]
