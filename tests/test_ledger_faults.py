"""The ledger never lies: a writer killed at any write of a commit, a consolidation, a `rethreshold` or a compaction,
two attempts of one partition, a commit of thresholds the store no longer has, and a lease of another PID
namespace never leave a bin called complete with other ROIs, scores or counts than its own, nor a store that will
not open; the next run finishes the rest.

Kills are driven by a hook on the store's writes (`KillSwitch`: from the n-th key written or file removed on, every
write fails, as after the death of the process), for every n up to the operation's number of writes, on a local
store and on a moto S3 server: nothing waits on time, so no case can lose a race. After each kill the test reads
the store afresh, as a new process would.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from fsspec.implementations.local import LocalFileSystem

from model.decision import class_counts, threshold_array
from pipeline.ifcb.errors import BinFailure
from pipeline.results import consolidation as consolidation_module
from pipeline.results import encoding as encoding_module
from pipeline.results import store as store_module
from pipeline.results.compact import compact_store
from pipeline.results.lease import LEASE_TTL_S, StoreBusyError
from pipeline.results.partitions import attempt_id, partition_id
from pipeline.results.records import BinResult
from pipeline.results.store import (
    COMMITS,
    LEASE,
    ResultStore,
    StoreLayoutError,
    open_summary,
)

CLASSES = ["a", "b", "c"]
T1 = {"a": 0.5, "b": 0.5, "c": 0.5}
T2 = {"a": 0.9, "b": 0.2, "c": 0.7}
INFO = {"classes": CLASSES, "content_hash": "hash-1", "model_hash": "model-1", "arch": "small-cnn", "thresholds": T1}
START = datetime(2024, 1, 1, tzinfo=UTC)
ROIS = [5, 3, 4, 0, 6, 2, 5, 1, 3, 4, 2, 5]  # bins 0-8 consolidated in three partitions, 9-11 new
FAILED_BEFORE, FAILED_NOW = 12, 13  # a bin that failed in the first run and completes now; a new failure


class Killed(Exception):
    """The writer died here (raised by `KillSwitch` at and after its n-th write)."""


class KillSwitch:
    """Counts the writes of this process to the store (zarr keys set, files removed); from the `at`-th on, every
    write raises Killed, as if the process had died after `at - 1` of them. `at=None` only counts.

    Writes are also grouped in steps: the keys one call writes together (concurrent PUTs, one `sync` of zarr's
    event loop), or one removal. `steps()` names a kill point before each step and one in its middle: what can
    differ between two kills inside one step is only which of its keys (written in any order) landed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int | None = None) -> None:
        self.at, self.writes = at, 0
        self.step, self._steps_of_writes = 0, []
        import zarr.core.array
        import zarr.core.group

        for module in (store_module, zarr.core.array, zarr.core.group):
            original_sync = module.sync

            def counted_sync(*args: Any, _original: Any = original_sync, **kwargs: Any) -> Any:
                self.step += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(module, "sync", counted_sync)
        for store_class in (zarr.storage.LocalStore, zarr.storage.FsspecStore):
            original = store_class.set

            async def counted_set(store: Any, key: str, value: Any, _original: Any = original) -> None:
                self._write()
                await _original(store, key, value)

            monkeypatch.setattr(store_class, "set", counted_set)
        import s3fs

        for fs_class in (LocalFileSystem, s3fs.S3FileSystem):
            for name in ("rm", "rm_file"):
                original_rm = getattr(fs_class, name)

                def counted_rm(fs: Any, *args: Any, _original: Any = original_rm, **kwargs: Any) -> Any:
                    self.step += 1
                    self._write()
                    return _original(fs, *args, **kwargs)

                monkeypatch.setattr(fs_class, name, counted_rm)

    def steps(self) -> list[int]:
        """Kill points (write numbers, from 1) at the start and in the middle of every step."""
        points: set[int] = set()
        for step in sorted(set(self._steps_of_writes)):
            members = [n for n, of in enumerate(self._steps_of_writes, start=1) if of == step]
            points.update({members[0], members[len(members) // 2]})
        return sorted(points)

    def _write(self) -> None:
        self._steps_of_writes.append(self.step)
        self.writes += 1
        if self.at is not None and self.writes >= self.at:
            raise Killed(f"killed at write {self.at}")


def _ids(first: int, n: int) -> list[str]:
    return [f"D{START + timedelta(minutes=20 * i):%Y%m%dT%H%M%S}_IFCB999" for i in range(first, first + n)]


def _result(i: int, seed: int = 0) -> BinResult:
    """Bin i's result: ROIs numbered from 1, scores of its own (an attempt's `seed` gives other, equally valid ones)."""
    rng = np.random.default_rng(1000 * seed + i)
    n = ROIS[i] if i < len(ROIS) else 1
    return BinResult(
        _ids(i, 1)[0], START + timedelta(minutes=20 * i), np.arange(1, n + 1), rng.random((n, 3), np.float32), 1.5,
        files_digest=100 + i,
    )  # fmt: skip


def _failure(i: int, reason: str = "truncated") -> BinFailure:
    return BinFailure(_ids(i, 1)[0], "roi", reason)


@dataclass
class Workload:
    """A store of bins 0-8 (three consolidated partitions, a failed bin) and the new commits of a second run."""

    url: str
    options: dict[str, Any]

    def store(self) -> ResultStore:
        consolidation_module.CONSOLIDATED.clear()  # a new process: it remembers nothing of the store
        return ResultStore(self.url, self.options)


def _first_run(store: ResultStore) -> None:
    store.prepare(bundle_info=INFO, bundle_url="bundle.zip", archive_url="archive")
    thresholds = threshold_array(T1, CLASSES)
    for first in (0, 3, 6):
        bins = [_result(i) for i in range(first, first + 3)]
        failures = [_failure(FAILED_BEFORE)] if first == 6 else []
        plan = partition_id([r.bin for r in bins], "run-1")
        store.commit_partition(attempt_id(plan), bins, CLASSES, failures, thresholds=thresholds)
    store.consolidate(store.ledger())


def _second_run_commits(store: ResultStore) -> None:
    """Bins 9-11 and the bin that failed before complete; another bin fails."""
    bins = [_result(i) for i in (9, 10, 11, FAILED_BEFORE)]
    plan = partition_id([r.bin for r in bins], "run-2")
    store.commit_partition(
        attempt_id(plan), bins, CLASSES, [_failure(FAILED_NOW)], thresholds=threshold_array(T1, CLASSES)
    )


def _expected(bins: range | list[int]) -> dict[str, BinResult]:
    return {_ids(i, 1)[0]: _result(i) for i in bins}


def check_store(store: ResultStore, expected: dict[str, BinResult], *, seeds: tuple[int, ...] = (0,)) -> None:
    """What must hold after any fault: the store opens; every bin it calls complete is a bin of `expected` with
    exactly its ROIs and scores (of one attempt: `seeds`) and the fingerprint of its files, counts by argmax and by
    the store's current thresholds that follow those scores, in the ledger and in the summary; failures only of bins
    not complete."""
    info = store.info()
    assert info is not None
    ledger = store.ledger()
    thresholds = threshold_array(info.get("thresholds"), CLASSES)
    assert set(ledger.bins) == ledger.complete
    for record, numbers, scores in store.iter_bins(ledger.bins.values()):
        bin_id = record.bin
        assert bin_id in expected, f"{bin_id} is complete but was never committed"
        i = _ids(0, 20).index(bin_id)
        attempts = [_result(i, seed) for seed in seeds]
        assert any(np.array_equal(numbers, a.roi_numbers) and np.array_equal(scores, a.scores) for a in attempts), (
            f"{bin_id}: ROIs or scores not its own"
        )
        assert record.n_rois == len(numbers) and record.counts == class_counts(scores).tolist()
        assert record.files_digest == ledger.digests.get(bin_id) == expected[bin_id].files_digest, "fingerprint lost"
        assert record.counts_thresholded == class_counts(scores, thresholds).tolist(), f"{bin_id}: stale counts"
    assert not set(ledger.failures) & ledger.complete
    summary = open_summary(store.url, store.storage_options or None)
    for row, bin_id in enumerate(summary.bin.values.tolist()):
        record = ledger.bins[str(bin_id)]
        assert summary.counts.values[row].tolist() == record.counts
        assert summary.counts_thresholded.values[row].tolist() == record.counts_thresholded


def check_finished(store: ResultStore, expected: dict[str, BinResult], failed: set[str]) -> None:
    """After the recovery: exactly the expected bins are complete (and consistent), exactly `failed` failed."""
    check_store(store, expected)
    ledger = store.ledger()
    assert ledger.complete == set(expected)
    assert set(ledger.failures) == failed
    summary = open_summary(store.url, store.storage_options or None)
    assert sorted(summary.bin.values.tolist()) == sorted(expected)


# --- the operations a kill interrupts, and how the next run recovers --------------------------------------------
def _commit(work: Workload, client: Any) -> None:
    _second_run_commits(work.store())


def _recover_commit(work: Workload, client: Any) -> None:
    store = work.store()
    with store.lease(uuid.uuid4().hex):
        _second_run_commits(store)  # the next run commits its bins again, under a new attempt
        store.consolidate(store.ledger(clean=True))


def _append(work: Workload, client: Any) -> None:
    store = work.store()
    store.consolidate(store.ledger())


def _rewrite(work: Workload, client: Any) -> None:
    store = work.store()
    store.consolidate(store.ledger(), full=True)


def _recover_consolidation(work: Workload, client: Any) -> None:
    store = work.store()
    with store.lease(uuid.uuid4().hex):
        store.consolidate(store.ledger(clean=True))


def _thresholds_file(work: Workload) -> str:
    url = f"{work.url.rstrip('/')}-T2.json"
    work.store().fs.pipe_file(url, json.dumps(T2).encode())
    return url


def _rethreshold(work: Workload, client: Any) -> None:
    from pipeline.job.rethreshold import rethreshold_store

    rethreshold_store(client, work.url, work.options, f"{work.url.rstrip('/')}-T2.json")


def _compact(work: Workload, client: Any) -> None:
    compact_store(work.store(), target_rois=1000)


def _recover_compaction(work: Workload, client: Any) -> None:
    _recover_consolidation(work, client)
    compact_store(work.store(), target_rois=1000)


@dataclass(frozen=True)
class Operation:
    name: str
    prepare: Callable[[ResultStore], None]  # what the store holds before it
    run: Callable[[Workload, Any], None]
    recover: Callable[[Workload, Any], None]
    thresholds: dict[str, float]  # the store's after recovery


def _with_pending(store: ResultStore) -> None:
    _first_run(store)
    _second_run_commits(store)


OPERATIONS = {
    "commit": Operation("commit", _first_run, _commit, _recover_commit, T1),
    "append": Operation("append", _with_pending, _append, _recover_consolidation, T1),
    "rewrite": Operation("rewrite", _with_pending, _rewrite, _recover_consolidation, T1),
    "rethreshold": Operation("rethreshold", _with_pending, _rethreshold, _rethreshold, T2),
    "compact": Operation("compact", _with_pending, _compact, _recover_compaction, T1),
}
EXPECTED = _expected([*range(12), FAILED_BEFORE])
FAILED = {_ids(FAILED_NOW, 1)[0]}


def _template(root: Path, operation: Operation) -> Path:
    template = root / f"{operation.name}-template.zarr"
    if not template.exists():
        store = ResultStore(str(template))
        operation.prepare(store)
        consolidation_module.CONSOLIDATED.clear()
    return template


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("templates")


def _local_copy(template: Path, destination: Path) -> Workload:
    shutil.copytree(template, destination)
    return Workload(str(destination), {})


def _sweep(
    operation: Operation,
    fresh: Callable[[str], Workload],
    client: Any,
    monkeypatch: pytest.MonkeyPatch,
    every_key: bool = False,
    at_most: int | None = None,
) -> int:
    """Kill `operation` at every write (`every_key`) or at the start and the middle of every step of its writes
    (`KillSwitch.steps`), or at `at_most` of those spread over the operation; after each kill check the store,
    recover, check the end state. Returns the number of kill points covered."""
    counting = fresh("count")
    if operation.name == "rethreshold":
        _thresholds_file(counting)
    with pytest.MonkeyPatch.context() as patch:
        switch = KillSwitch(patch)
        operation.run(counting, client)
    writes = switch.writes
    assert writes > 3, f"{operation.name} wrote {writes} times"
    points = list(range(1, writes + 1)) if every_key else switch.steps()
    if at_most is not None and len(points) > at_most:  # spread over the whole operation
        points = [points[round(i * (len(points) - 1) / (at_most - 1))] for i in range(at_most)]
    covered = 0
    for at in points:
        work = fresh(f"kill-{at}")
        if operation.name == "rethreshold":
            _thresholds_file(work)
        with pytest.MonkeyPatch.context() as patch:
            KillSwitch(patch, at)
            with pytest.raises(Killed):
                operation.run(work, client)
        _after_kill(work, operation)
        operation.recover(work, client)
        store = work.store()
        check_finished(store, EXPECTED, FAILED)
        assert (store.info() or {}).get("thresholds") == operation.thresholds
        covered += 1
    return covered


def _after_kill(work: Workload, operation: Operation) -> None:
    """The store right after the kill: it opens and says nothing wrong (a half-applied change of thresholds
    refuses readers, naming the command that finishes it)."""
    store = work.store()
    _release_lease(store)  # the killed writer's lease: the next run on this host takes it over at once
    try:
        check_store(store, EXPECTED)
    except StoreLayoutError as err:
        assert operation.name == "rethreshold" and "ifcbflow rethreshold" in str(err)


def _release_lease(store: ResultStore) -> None:
    """A killed writer's lease names a dead process of this host; rewrite it so (its real PID is this test's)."""
    path = f"{store.root}/{LEASE}"
    if store.fs.exists(path):
        holder = json.loads(store.fs.cat_file(path))
        store.fs.pipe_file(path, json.dumps({**holder, "pid": _dead_pid()}).encode())


def _dead_pid() -> int:
    pid = os.getpid()
    while True:
        pid += 7919
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_a_writer_killed_at_every_write_leaves_a_store_that_opens_and_never_lies(
    name: str, templates: Path, tmp_path: Path, dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    operation = OPERATIONS[name]
    template = _template(templates, operation)
    covered = _sweep(
        operation, lambda tag: _local_copy(template, tmp_path / f"{tag}.zarr"), dask_client, monkeypatch,
        every_key=name == "commit",
    )  # fmt: skip
    print(f"{name}: {covered} kill points on a local store")


@pytest.mark.parametrize("name", ["commit", "append"])
def test_a_writer_killed_on_s3_leaves_a_store_that_opens_and_never_lies(
    name: str, s3_server: Any, dask_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    operation = OPERATIONS[name]
    fs = s3_server.filesystem()
    bucket = s3_server.new_bucket()
    options = s3_server.storage_options
    template = f"s3://{bucket}/template.zarr"
    operation.prepare(ResultStore(template, options))
    consolidation_module.CONSOLIDATED.clear()

    def fresh(tag: str) -> Workload:
        url = f"s3://{bucket}/{tag}.zarr"
        fs.copy(f"{bucket}/template.zarr", f"{bucket}/{tag}.zarr", recursive=True)
        fs.invalidate_cache()
        return Workload(url, options)

    covered = _sweep(operation, fresh, dask_client, monkeypatch, at_most=6)  # a moto round trip per key: slow
    print(f"{name}: {covered} kill points on S3")
    assert covered > 1


# --- the six scenarios ---------------------------------------------------------------------------------------------
def test_two_attempts_of_a_partition_never_overwrite_each_other(tmp_path: Path) -> None:
    """A zombie attempt and its retry saw other transient faults: each commits only the bins its own arrays hold."""
    store = ResultStore(str(tmp_path / "out.zarr"))
    store.prepare(bundle_info=INFO, bundle_url="bundle.zip", archive_url="archive")
    thresholds = threshold_array(T1, CLASSES)
    x, y, z = (_result(i, seed=1) for i in (0, 1, 2))
    plan = partition_id([x.bin, y.bin, z.bin], "run-1")
    zombie, retry = attempt_id(plan), attempt_id(plan)
    assert zombie != retry and zombie.startswith(plan)
    y_lost = [{"bin": y.bin, "reason": "timeout"}]
    x_lost = [{"bin": x.bin, "reason": "timeout"}]
    store.commit_partition(retry, [y, replace(z, scores=_result(2, seed=2).scores)], CLASSES, (), x_lost, thresholds)
    store.commit_partition(zombie, [x, z], CLASSES, (), y_lost, thresholds)  # the zombie lands last
    store.consolidate(store.ledger())
    check_store(store, _expected([0, 1, 2]), seeds=(1, 2))
    ledger = store.ledger()
    assert ledger.complete == {x.bin, y.bin, z.bin}
    assert [ledger.bins[b.bin].n_rois for b in (x, y, z)] == [ROIS[0], ROIS[1], ROIS[2]]


def test_a_torn_failure_table_of_before_is_dropped_not_trusted(tmp_path: Path) -> None:
    """A store of before the failure table was counted, torn by a kill between its arrays' writes: it opens, the
    torn table is dropped (its bins read again), and the next consolidation writes a counted table."""
    store = ResultStore(str(tmp_path / "out.zarr"))
    _first_run(store)
    attributes = store._summary_attributes()
    rows = dict(attributes["consolidated_rows"])
    del rows["failed"]  # as a store consolidated before the table was counted
    counted_before = encoding_module.group_document({**attributes, "consolidated_rows": rows})
    store.write_documents({"summary/zarr.json": counted_before})
    ledger_group = zarr.open_group(store.zarr_store, path="ledger", mode="r+", zarr_format=3)
    ledger_group["failed_stage"][0] = ""  # a row of one write, the stage of another
    consolidation_module.CONSOLIDATED.clear()
    fresh = ResultStore(store.url)
    assert fresh.ledger().failures == {}  # not "unknown failure stage ''": dropped
    _second_run_commits(fresh)
    fresh.consolidate(fresh.ledger())
    consolidation_module.CONSOLIDATED.clear()
    assert set(ResultStore(store.url).ledger().failures) == FAILED
    check_store(ResultStore(store.url), EXPECTED)


def test_thresholded_counts_follow_the_store_after_a_rethreshold(tmp_path: Path, dask_client: Any) -> None:
    """(a) a summary rewrite killed after a rethreshold makes readers take the bins from commits counted with the
    old thresholds; (b) a task that started before the rethreshold commits after it: both are counted again."""
    from pipeline.job.rethreshold import rethreshold_store

    work = Workload(str(tmp_path / "out.zarr"), {})
    _first_run(work.store())
    rethreshold_store(dask_client, work.url, {}, _thresholds_file(work))
    _second_run_commits(work.store())  # (b) counted by T1, the thresholds its task carried
    store = work.store()
    assert store.info()["thresholds"] == T2
    check_store(store, EXPECTED)  # the pending commit counted again by T2
    with pytest.MonkeyPatch.context() as patch:
        KillSwitch(patch, at=2)  # (a) the counts set to zero, then killed
        with pytest.raises(Killed):
            store.consolidate(store.ledger(), full=True)
    store = work.store()
    assert open_summary(store.url).sizes["bin"] == 0
    check_store(store, EXPECTED)  # every bin from its commit, every commit counted by T1: counted again
    store.consolidate(store.ledger())
    check_finished(work.store(), EXPECTED, FAILED)


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}


@pytest.mark.parametrize("landed", ["one array", "every chunk, not its commit point", "everything"])
def test_a_consolidation_landing_after_a_newer_ones_is_never_trusted(
    tmp_path: Path, landed: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A run that passed its last lease check, then was paused past its lease (so another run took the store, committed
    and consolidated), lands its consolidation's writes afterwards: some of them, all but its commit point, or all.
    Its rows are of other bins than the newer run's at the same places (the newer run's bins are earlier in time), so
    a mix of the two would give a bin another's counts or ROIs. The store opens, every bin it calls complete is
    exactly its own, and the next consolidation rewrites what was torn."""
    store = ResultStore(str(tmp_path / "out.zarr"))
    _first_run(store)
    late = [_result(i) for i in (11, FAILED_BEFORE)]  # the paused run's bins
    store.commit_partition(attempt_id(partition_id([r.bin for r in late], "run-2")), late, CLASSES,
                           thresholds=threshold_array(T1, CLASSES))  # fmt: skip
    paused = tmp_path / "paused.zarr"  # the store as the paused run saw it; its consolidation, as it would write it
    shutil.copytree(tmp_path / "out.zarr", paused)
    before = _files(paused)
    consolidation_module.CONSOLIDATED.clear()
    ResultStore(str(paused)).consolidate(ResultStore(str(paused)).ledger())
    writes = {key: data for key, data in _files(paused).items() if before.get(key) != data and
              key.startswith(("summary/", "ledger/"))}  # fmt: skip
    assert "summary/bin/c/0" in writes and "summary/zarr.json" in writes

    newer = [_result(i) for i in (9, 10)]  # the run that took the store over: earlier bins, the same rows
    consolidation_module.CONSOLIDATED.clear()
    fresh = ResultStore(store.url)
    fresh.commit_partition(attempt_id(partition_id([r.bin for r in newer], "run-3")), newer, CLASSES,
                           thresholds=threshold_array(T1, CLASSES))  # fmt: skip
    fresh.consolidate(fresh.ledger())
    chosen = {
        "one array": [key for key in writes if key.startswith("summary/bin/")],
        "every chunk, not its commit point": [key for key in writes if key != "summary/zarr.json"],
        "everything": list(writes),
    }[landed]
    for key in chosen:  # the paused run's writes land now
        (tmp_path / "out.zarr" / key).write_bytes(writes[key])

    expected = _expected([*range(12), FAILED_BEFORE])
    consolidation_module.CONSOLIDATED.clear()
    check_store(ResultStore(store.url), expected)
    assert ResultStore(store.url).ledger().complete == set(expected)
    if landed != "everything":  # (all of it is a consistent, older summary: its commits not in it are pending)
        assert "does not hold the rows its commit point says" in caplog.text
    consolidation_module.CONSOLIDATED.clear()
    repaired = ResultStore(store.url)
    repaired.consolidate(repaired.ledger())
    consolidation_module.CONSOLIDATED.clear()
    caplog.clear()
    again = ResultStore(store.url)
    check_finished(again, expected, set())
    assert not again.torn and "does not hold" not in caplog.text


def test_a_live_lease_of_another_pid_namespace_is_not_taken(tmp_path: Path) -> None:
    """A holder on a host of the same name, in another PID namespace (another container), whose PID means nothing
    here: its lease is live until it stops renewing, as any other host's."""
    store = ResultStore(str(tmp_path / "out.zarr"))
    store.prepare(bundle_info=INFO, bundle_url="bundle.zip", archive_url="archive")
    holder = {
        "owner": "container-2", "host": socket.gethostname(), "pid": _dead_pid(), "since": 0.0, "ttl_s": LEASE_TTL_S,
        "expires": datetime.now(UTC).timestamp() + LEASE_TTL_S, "renewed": 1, "pid_namespace": "pid:[4026530000]",
        "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
    }  # fmt: skip
    store.fs.pipe_file(f"{store.root}/{LEASE}", json.dumps(holder).encode())
    with pytest.raises(StoreBusyError, match="being written by another run"), store.lease(uuid.uuid4().hex):
        pass
    own_namespace = {**holder, "pid_namespace": os.readlink("/proc/self/ns/pid")}
    store.fs.pipe_file(f"{store.root}/{LEASE}", json.dumps(own_namespace).encode())
    with store.lease(uuid.uuid4().hex):  # a dead process of this very namespace: taken at once
        pass


def test_abandoned_attempts_are_removed_and_committed_ones_kept(tmp_path: Path) -> None:
    """A killed attempt's arrays (no commit) go once they are old; the committed attempts of a plan stay."""
    store = ResultStore(str(tmp_path / "out.zarr"))
    _first_run(store)
    bins = [_result(i) for i in (9, 10)]
    plan = partition_id([r.bin for r in bins], "run-2")
    killed = attempt_id(plan)
    store.write_documents(encoding_module.partition_documents(killed, bins, len(CLASSES)))  # arrays, no commit
    old = datetime.now(UTC).timestamp() - 2 * store_module.ABANDONED_AFTER_S
    for path in (tmp_path / "out.zarr" / "parts" / killed).rglob("*"):
        os.utime(path, (old, old))
    committed = set(store.children(COMMITS))
    with store.lease(uuid.uuid4().hex):
        store.ledger(clean=True)
    assert killed not in store.children("parts")
    assert set(store.children("parts")) == committed


def test_a_first_run_writes_nothing_while_another_holds_the_new_stores_lease(tmp_path: Path, dask_client: Any) -> None:
    """Two first runs of different models on one new --out: the lease comes before the store's root, so the one that
    finds it taken writes nothing (before, both wrote `zarr.json`, the last one's model winning)."""
    from classify_support import make_bundle
    from typer.testing import CliRunner

    from pipeline.cli import exit_codes
    from pipeline.cli.app import app
    from pipeline.ifcb.synth import write_synthetic_archive

    archive, bundle, out = tmp_path / "archive", tmp_path / "bundle.zip", tmp_path / "new.zarr"
    write_synthetic_archive(str(archive), bins=2, rois=3, classes=3, seed=5)
    make_bundle(str(bundle))
    address = dask_client.scheduler.address
    args = ["classify", str(archive), "--model", str(bundle), "--out", str(out), "--cluster", address, "--json"]
    with ResultStore(str(out)).lease("a-first-run-of-another-model"):
        refused = CliRunner().invoke(app, args)
        assert refused.exit_code == exit_codes.USAGE, refused.output
        assert "being written by another run" in refused.output
        assert not (out / "zarr.json").exists()
    done = CliRunner().invoke(app, args)  # once the other run is gone, the store is made
    assert done.exit_code == exit_codes.OK, done.output
    assert ResultStore(str(out)).info()["model_hash"]


def test_a_lease_taken_over_is_seen_at_the_next_check_not_the_next_renewal(tmp_path: Path) -> None:
    """The renewer looks every quarter of the lifetime; a run about to write the summary asks afresh: a lease that
    another run holds now stops it at once."""
    store = ResultStore(str(tmp_path / "out.zarr"))
    store.prepare(bundle_info=INFO, bundle_url="bundle.zip", archive_url="archive")
    with pytest.raises(StoreBusyError, match="lost the store's lease"), store.lease("this-run") as lease:
        lease.check()  # held
        holder = json.loads(store.fs.cat_file(f"{store.root}/{LEASE}"))
        store.fs.pipe_file(f"{store.root}/{LEASE}", json.dumps({**holder, "owner": "another-run"}).encode())
        with pytest.raises(StoreBusyError, match="held by process"):
            lease.check()
