"""A summary and ledger that grow by what is added: a consolidation after k new bins writes O(k) keys whatever the
store's size, equals a full rebuild, and a consolidation killed at any write is redone without a torn summary."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline.ifcb.errors import BinFailure
from pipeline.results import consolidation as consolidation_module
from pipeline.results import encoding as encoding_module
from pipeline.results.partitions import partition_id
from pipeline.results.records import BinResult, Commit, StoreTotals
from pipeline.results.store import LEDGER, ROWS, SUMMARY, ResultStore, open_summary

CLASSES = ["a", "b", "c"]
INFO = {"classes": CLASSES, "content_hash": "hash-1", "arch": "small-cnn"}
START = datetime(2024, 1, 1, tzinfo=UTC)
CHUNK_ROWS = 1000  # small chunks (the store's are 65536 and 4096 rows), so that a small store has several
N_BINS = 2 * CHUNK_ROWS + 500  # three chunks per array: a full rewrite writes them all, an append the last


@pytest.fixture(autouse=True)
def small_chunks():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(encoding_module, "CHUNK_ROWS", CHUNK_ROWS)
        patch.setattr(encoding_module, "CHUNK_ROWS_2D", CHUNK_ROWS)
        yield


def _ids(first: int, n: int) -> list[str]:
    return [f"D{START + timedelta(minutes=20 * i):%Y%m%dT%H%M%S}_IFCB999" for i in range(first, first + n)]


def _results(ids: list[str], first: int) -> list[BinResult]:
    rng = np.random.default_rng(first)
    return [
        BinResult(b, START + timedelta(minutes=20 * (first + i)), np.array([1, 3]), rng.random((2, 3), np.float32),
                  None if i % 7 == 0 else 1.5, ("cut-off .adc line",) if i % 11 == 0 else ())
        for i, b in enumerate(ids)
    ]  # fmt: skip


def _commit(store: ResultStore, first: int, n: int, run: str = "run-1", failures: tuple = ()) -> list[str]:
    ids = _ids(first, n)
    store.commit_partition(partition_id(ids or [f.bin for f in failures], run), _results(ids, first), CLASSES, failures)
    return ids


class Recorder:
    """Every key zarr's local store writes, reads and deletes (what a recording proxy counts on object storage)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sets: list[str] = []
        self.gets: list[str] = []
        self.deletes: list[str] = []
        store_class = zarr.storage.LocalStore
        original_set, original_get, original_delete = store_class.set, store_class.get, store_class.delete

        async def recorded_set(store, key, value):  # type: ignore[no-untyped-def]
            self.sets.append(key)
            return await original_set(store, key, value)

        async def recorded_get(store, key, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.gets.append(key)
            return await original_get(store, key, *args, **kwargs)

        async def recorded_delete(store, key):  # type: ignore[no-untyped-def]
            self.deletes.append(key)
            return await original_delete(store, key)

        monkeypatch.setattr(store_class, "set", recorded_set)
        monkeypatch.setattr(store_class, "get", recorded_get)
        monkeypatch.setattr(store_class, "delete", recorded_delete)

    def clear(self) -> None:
        self.sets.clear(), self.gets.clear(), self.deletes.clear()


@pytest.fixture
def big(tmp_path: Path) -> ResultStore:
    """A consolidated store of `N_BINS` bins (partitions of 500), a failed bin among them."""
    store = ResultStore(str(tmp_path / "out.zarr"))
    store.prepare(bundle_info=INFO, bundle_url="bundle.zip", archive_url="archive")
    for first in range(0, N_BINS, 500):
        _commit(store, first, min(500, N_BINS - first))
    _commit(store, 0, 0, failures=(BinFailure(_ids(N_BINS + 50, 1)[0], "roi", "truncated"),))
    store.consolidate(store.ledger())
    return store


def _tables(store: ResultStore) -> tuple[xr.Dataset, xr.Dataset]:
    summary = open_summary(store.url).load()
    tables = xr.open_zarr(store.url, group=LEDGER, consolidated=False).load()
    rows = summary.attrs[ROWS]
    tables = tables.isel(part=slice(0, rows["part"]), warned=slice(0, rows["warned"])).drop_dims("failed")
    parts = np.sort(np.array(tables.consolidated_part.values.tolist()))
    order = np.lexsort((np.array(tables.warning.values.tolist()), np.array(tables.warned_bin.values.tolist())))
    tables = tables.isel(warned=order).drop_vars("consolidated_part").assign(consolidated_part=("part", parts))
    return summary.drop_attrs(), tables


def _assert_equals_a_full_rebuild(store: ResultStore) -> None:
    """The appended summary and ledger equal a full rebuild; so do the failures they say (the failure table grows
    by appending: a bin's later row over its earlier ones, none of a bin complete since)."""
    appended, failures = _tables(store), store.ledger().failures
    store.consolidate(store.ledger(), full=True)
    rebuilt = _tables(store)
    for mine, theirs in zip(appended, rebuilt, strict=True):
        xr.testing.assert_identical(mine, theirs)
    assert store.ledger().failures == failures


def test_a_run_of_k_new_bins_writes_o_of_k_keys_and_reads_no_record(
    big: ResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(monkeypatch)
    ledger = big.ledger()
    reads_to_plan = len(recorder.gets)
    new = _commit(big, N_BINS, 3, run="run-2")  # what a run's tasks write: not counted below
    _commit(big, N_BINS + 3, 0, run="run-2", failures=(BinFailure(_ids(N_BINS + 60, 1)[0], "adc", "bad"),))
    for part in big.children("commits"):
        if part not in ledger.parts:
            ledger.add(Commit.from_attributes(big.read_document(f"commits/{part}/zarr.json")["attributes"]))

    def records_read(self: ResultStore, *_: object) -> None:
        raise AssertionError("an append read every bin record")

    monkeypatch.setattr(ResultStore, "_consolidated_records", records_read)
    recorder.clear()
    assert big.consolidate(ledger) == N_BINS + 3
    appended = {"sets": len(recorder.sets), "gets": len(recorder.gets), "deletes": len(recorder.deletes)}
    chunks = {key for key in recorder.sets + recorder.gets if key.startswith(SUMMARY) and "/c/" in key}
    monkeypatch.undo()
    # per array its last chunk and its metadata, and the summary's attributes: not every chunk of N_BINS rows
    arrays = len(list(zarr.open_group(big.zarr_store, path=SUMMARY, mode="r").arrays()))
    arrays += len(list(zarr.open_group(big.zarr_store, path=LEDGER, mode="r").arrays()))
    assert appended["sets"] <= 2 * arrays + 1 and appended["gets"] <= 5 * arrays, appended
    last = (N_BINS - 1) // CHUNK_ROWS  # the only chunk of the summary read or written: the last one
    assert {key.split("/c/")[1].split("/")[0] for key in chunks} == {str(last)}
    assert reads_to_plan <= 12
    assert set(new) <= set(big.ledger().complete) and len(big.ledger().complete) == N_BINS + 3

    recorder = Recorder(monkeypatch)
    big.consolidate(big.ledger(), full=True)
    written = {key for key in recorder.sets if "/c/" in key}  # chunks of fill values only are never written
    stored = [key for folder in (SUMMARY, LEDGER) for key in big.fs.find(f"{big.root}/{folder}") if "/c/" in key]
    assert len(written) == len(stored) > len(chunks)  # what every consolidation cost before: every chunk of every array
    monkeypatch.undo()
    _commit(big, N_BINS + 10, 2, run="run-3")
    big.consolidate(big.ledger())
    _assert_equals_a_full_rebuild(big)


def test_a_poll_after_its_own_consolidation_reads_no_bin_list_until_another_writer_appends(
    big: ResultStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What this process consolidated last is its ledger while the summary's attributes (row counts) say the store
    is unchanged: a `watch` poll reads no chunk of the bin list. Another process's append changes them: read again."""
    recorder = Recorder(monkeypatch)
    ledger = ResultStore(big.url).ledger()  # a new store object, as each run makes
    assert len(ledger.complete) == N_BINS and not [key for key in recorder.gets if "/c/" in key]
    monkeypatch.undo()
    other = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_summary_append import _commit, ResultStore
store = ResultStore({big.url!r})
_commit(store, {N_BINS + 100}, 3, run="other")
store.consolidate(store.ledger())
"""
    subprocess.run([sys.executable, "-c", other], check=True, timeout=120)
    recorder = Recorder(monkeypatch)
    ledger = ResultStore(big.url).ledger()
    assert set(_ids(N_BINS + 100, 3)) <= ledger.complete and len(ledger.complete) == N_BINS + 3
    assert [key for key in recorder.gets if key.startswith(f"{SUMMARY}/bin/c/")]  # read from the store


def test_a_remembered_ledger_spares_the_next_runs_the_bin_list(
    big: ResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `watch` reads the ledger at its start with `remember`: its first poll's run then reads no bin list. A plain
    read (a one-shot run) keeps nothing."""
    consolidation_module.CONSOLIDATED.clear()  # as in a process that has not consolidated this store
    recorder = Recorder(monkeypatch)
    ResultStore(big.url).ledger()
    ResultStore(big.url).ledger(remember=True)
    bin_list = [key for key in recorder.gets if key.startswith(f"{SUMMARY}/bin/c/")]
    assert len(bin_list) == 2 * (1 + (N_BINS - 1) // CHUNK_ROWS)  # each read every chunk: the first kept nothing
    recorder.clear()
    ledger = ResultStore(big.url).ledger()
    assert len(ledger.complete) == N_BINS and not [key for key in recorder.gets if "/c/" in key]


def test_store_totals_read_two_summary_arrays_and_the_pending_commits(
    big: ResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `watch` reads at its start and at each full pass: bins, ROIs and the newest time, without the records."""
    newest = START + timedelta(minutes=20 * (N_BINS - 1))
    assert big.totals(big.ledger()) == StoreTotals(N_BINS, 2 * N_BINS, newest)  # two ROIs a bin (`_results`)
    _commit(big, N_BINS, 3, run="run-2")  # committed, not yet in the summary
    ledger = big.ledger()

    def records_read(self: ResultStore, *_: object) -> None:
        raise AssertionError("the totals read every bin record")

    recorder = Recorder(monkeypatch)
    monkeypatch.setattr(ResultStore, "_consolidated_records", records_read)
    totals = big.totals(ledger)
    arrays = {key.split("/")[1] for key in recorder.gets if key.startswith(f"{SUMMARY}/") and "/c/" in key}
    monkeypatch.undo()
    assert arrays == {"time", "n_rois"}
    assert totals == StoreTotals(N_BINS + 3, 2 * (N_BINS + 3), newest + timedelta(minutes=20 * 3))
    records = big.ledger().bins.values()
    assert totals.rois == sum(record.n_rois for record in records) and totals.bins == len(records)


def test_a_failure_that_became_complete_is_no_failure_and_reads_no_record(
    big: ResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = _ids(N_BINS + 50, 1)[0]
    assert failed in big.ledger().failures
    monkeypatch.setattr(ResultStore, "_consolidated_records", lambda self, *_: pytest.fail("records read"))
    _commit(big, N_BINS + 50, 1, run="retried")
    ledger = big.ledger()
    big.consolidate(ledger)
    monkeypatch.undo()
    again = big.ledger()
    assert again.failures == {} and failed in again.complete and len(again.bins) == N_BINS + 1
    _assert_equals_a_full_rebuild(big)


@pytest.mark.parametrize("cut", ["after the chunks", "between the shapes", "before the counts"])
def test_a_consolidation_killed_mid_way_is_redone_and_never_torn(
    big: ResultStore, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    before = open_summary(big.url).load()
    new = _commit(big, N_BINS, 5, run="run-2")
    write_documents = ResultStore.write_documents

    def killed(self: ResultStore, documents: dict[str, bytes]) -> None:
        shapes = [key for key in documents if key.endswith("/zarr.json") and key.count("/") == 2]
        if cut == "after the chunks" and shapes:
            raise KeyboardInterrupt  # killed: the new chunks are written, no shape and no count
        if cut == "between the shapes" and shapes:
            write_documents(self, {key: documents[key] for key in shapes[: len(shapes) // 2]})
            raise KeyboardInterrupt  # half the arrays are longer than the others
        if cut == "before the counts" and f"{SUMMARY}/zarr.json" in documents:
            raise KeyboardInterrupt  # every array is longer, the counts are not
        write_documents(self, documents)

    monkeypatch.setattr(ResultStore, "write_documents", killed)
    with pytest.raises(KeyboardInterrupt):
        big.consolidate(big.ledger())
    monkeypatch.undo()
    # readers see the summary as it was (its counts), and the new bins through their commits
    xr.testing.assert_identical(open_summary(big.url).load(), before)
    assert set(new) <= big.ledger().complete and len(big.ledger().bins) == N_BINS + 5
    # the next run redoes the append over the rows past the counts: no bin twice, nothing torn
    more = _commit(big, N_BINS + 5, 2, run="run-3")
    big.consolidate(big.ledger())
    summary = open_summary(big.url).load()
    assert summary.sizes["bin"] == N_BINS + 7 and len(set(summary.bin.values.tolist())) == N_BINS + 7
    assert set(new + more) <= set(summary.bin.values.tolist())
    raw = xr.open_zarr(big.url, group=SUMMARY, consolidated=False)  # what any zarr reader sees: one length
    assert raw.sizes["bin"] == N_BINS + 7
    _assert_equals_a_full_rebuild(big)


def test_a_full_rewrite_killed_mid_way_leaves_readers_the_commits(
    big: ResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = big.ledger().bins
    write_documents = ResultStore.write_documents
    calls = []

    def killed(self: ResultStore, documents: dict[str, bytes]) -> None:
        calls.append(len(documents))
        if len(calls) == 2:  # the counts set to zero, then killed while the arrays are written
            write_documents(self, dict(list(documents.items())[: len(documents) // 2]))
            raise KeyboardInterrupt
        write_documents(self, documents)

    monkeypatch.setattr(ResultStore, "write_documents", killed)
    with pytest.raises(KeyboardInterrupt):
        big.consolidate(big.ledger(), full=True)
    monkeypatch.undo()
    assert open_summary(big.url).sizes["bin"] == 0  # not torn: empty, and the ledger reads the commits
    assert big.ledger().bins == expected
    big.consolidate(big.ledger())  # the next run rewrites it
    assert open_summary(big.url).sizes["bin"] == N_BINS
    _assert_equals_a_full_rebuild(big)


def test_a_summary_of_the_older_layout_is_rewritten_once_then_appended(
    big: ResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    attributes = big._summary_attributes()
    del attributes[ROWS]  # as a store consolidated before the counts existed
    from pipeline.results.store import group_document

    big.write_documents({f"{SUMMARY}/zarr.json": group_document(attributes)})
    assert len(big.ledger().complete) == N_BINS  # read whole
    _commit(big, N_BINS, 1, run="run-2")
    recorder = Recorder(monkeypatch)
    big.consolidate(big.ledger())
    rewrite = [key for key in recorder.sets if "/c/" in key]  # chunks (of fill values only: never written)
    monkeypatch.undo()
    _commit(big, N_BINS + 1, 1, run="run-3")
    recorder = Recorder(monkeypatch)
    big.consolidate(big.ledger())
    assert len([key for key in recorder.sets if "/c/" in key]) < len(rewrite) / 2
    monkeypatch.undo()
    _assert_equals_a_full_rebuild(big)


def test_arrays_first_written_empty_grow_with_their_type(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path / "out.zarr"))
    store.prepare(bundle_info=INFO, bundle_url="bundle.zip", archive_url="archive")
    _commit(store, 0, 0, failures=(BinFailure(_ids(0, 1)[0], "roi", "truncated"),))
    store.consolidate(store.ledger())  # no bin, no warning: arrays of no type
    _commit(store, 0, 12, run="run-2")  # the failed bin complete, and warnings
    store.consolidate(store.ledger())
    assert open_summary(store.url).sizes["bin"] == 12 and store.ledger().failures == {}
    assert len(store.ledger().bins[_ids(0, 1)[0]].warnings or ()) == 1
    _assert_equals_a_full_rebuild(store)
