"""The store's commit protocol against Icechunk's transactions: store requests and seconds for the same writes.

Issue 30 asks whether a transactional engine for zarr (Icechunk: ACID commits by a compare-and-swap of a branch
reference, chunks under new keys, conflict detection) should replace the hand-written protocol of
`pipeline.results` (a commit document per partition attempt, derived tables behind one commit point, a lease for
one writer at a time). Both are driven here through the same operations, with the same bytes, on a real S3 API (a
moto server in its own process) through a recording proxy (`tests/faulty_proxy.py`, no faults):

1. first run: the store created, `--bins` bins committed in partitions of `--partition-bins` by two writers at once
   (as two workers do), then consolidated (the summary and the ledger written whole);
2. a poll: 3 new bins in one partition, then appended to the summary;
3. a rerun with nothing to do: the ledger read (what planning reads: the summary's bins and fingerprints, the
   consolidated partitions, the commits not yet consolidated).

Today's protocol is `ResultStore` itself (lease included, as a run holds it). Icechunk is given the very documents
`ResultStore` writes (`partition_documents`, the commit documents, `summary_dataset` / `ledger_dataset` encoded by
`zarr_contents`, an append by `grow_rows`), each partition one transaction rebased over concurrent ones, each
consolidation one transaction; it needs no lease (a stale writer's commit fails its compare-and-swap).

    .venv/bin/pip install icechunk==1.1.21   # not a dependency of ifcbflow: only this comparison needs it
    .venv/bin/python bench/bench_icechunk.py [--bins 200] [--rois 20] [--partition-bins 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the recording proxy
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the moto server and the request counts

from bench_store_requests import count, start_moto

from pipeline.results.consolidation import CONSOLIDATED
from pipeline.results.encoding import as_bytes, group_document, grow_rows, partition_documents, zarr_contents
from pipeline.results.layout import COMMITS, LEDGER, PARTS, ROWS, SUMMARY
from pipeline.results.partitions import attempt_id, partition_id
from pipeline.results.records import BinResult, Commit
from pipeline.results.store import ResultStore
from pipeline.results.summary import ledger_dataset, summary_dataset

CLASSES = [f"class_{i}" for i in range(10)]
INFO = {"classes": CLASSES, "content_hash": "bench", "model_hash": "bench-model", "arch": "bench"}
START = datetime(2024, 1, 1, tzinfo=UTC)
BUCKET = "bench"


def results(first: int, n: int, rois: int) -> list[BinResult]:
    """Bins first..first+n-1, `rois` ROIs each, scores of their own."""
    out = []
    for i in range(first, first + n):
        when = START + timedelta(minutes=20 * i)
        scores = np.random.default_rng(i).random((rois, len(CLASSES)), np.float32)
        out.append(BinResult(f"D{when:%Y%m%dT%H%M%S}_IFCB999", when, np.arange(1, rois + 1), scores, 5.0,
                             files_digest=1000 + i))  # fmt: skip
    return out


def partitions(n_bins: int, size: int, rois: int, first: int = 0) -> list[list[BinResult]]:
    return [results(first + start, min(size, n_bins - start), rois) for start in range(0, n_bins, size)]


class Today:
    """`ResultStore` on S3 through the proxy, as a run drives it (its lease held across a run's writes)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.url, self.options = f"s3://{BUCKET}/today.zarr", options

    def store(self) -> ResultStore:
        CONSOLIDATED.clear()  # each step as a new process: nothing remembered of the store
        return ResultStore(self.url, self.options)

    def first_run(self, parts: list[list[BinResult]]) -> None:
        store = self.store()
        with store.lease("bench-1"):
            store.prepare(bundle_info=INFO, bundle_url="bundle.zip", archive_url="archive")
            self._commit_all(store, parts, "run-1")
            store.consolidate(store.ledger(clean=True))

    def poll(self, part: list[BinResult]) -> None:
        store = self.store()
        with store.lease("bench-2"):
            store.prepare(bundle_info=INFO, bundle_url="bundle.zip", archive_url="archive")
            ledger = store.ledger(clean=True)
            self._commit_all(store, [part], "run-2")
            store.consolidate(store.ledger())
        assert len(ledger.complete) > 0

    def noop(self) -> int:
        store = self.store()
        with store.lease("bench-3"):
            return len(store.ledger(clean=True).complete)

    def _commit_all(self, store: ResultStore, parts: list[list[BinResult]], run: str) -> None:
        def commit(part: list[BinResult]) -> None:
            plan = partition_id([r.bin for r in part], run)
            ResultStore(self.url, self.options).commit_partition(attempt_id(plan), part, CLASSES)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(commit, parts))


class Icechunk:
    """The same documents in an Icechunk repository on S3 through the proxy: one transaction per partition (rebased
    over concurrent ones), one per consolidation."""

    def __init__(self, endpoint: str) -> None:
        import icechunk

        self.icechunk = icechunk
        self.storage = lambda: icechunk.s3_storage(
            bucket=BUCKET, prefix="icechunk", endpoint_url=endpoint, allow_http=True, region="us-east-1",
            access_key_id="k", secret_access_key="s", force_path_style=True,
        )  # fmt: skip

    def repo(self) -> Any:
        return self.icechunk.Repository.open(self.storage())

    def first_run(self, parts: list[list[BinResult]]) -> None:
        repo = self.icechunk.Repository.create(self.storage())
        session = repo.writable_session("main")
        self._set(session.store, {"zarr.json": group_document({**INFO, "layout": "bench"})} |
                  {f"{folder}/zarr.json": group_document({}) for folder in (PARTS, COMMITS)})  # fmt: skip
        session.commit("prepare")
        self._commit_all(parts, "run-1")
        self._consolidate(rewrite=True)

    def poll(self, part: list[BinResult]) -> None:
        self._ledger(self.repo().readonly_session(branch="main").store)
        self._commit_all([part], "run-2")
        self._consolidate(rewrite=False)

    def noop(self) -> int:
        complete, pending = self._ledger(self.repo().readonly_session(branch="main").store)
        assert not pending
        return len(complete)

    def _commit_all(self, parts: list[list[BinResult]], run: str) -> None:
        def commit(part: list[BinResult]) -> None:
            session = self.repo().writable_session("main")
            name = attempt_id(partition_id([r.bin for r in part], run))
            document = _commit_document(name, part)
            self._set(session.store, partition_documents(name, part, len(CLASSES)) |
                      {f"{COMMITS}/{name}/zarr.json": group_document(document)})  # fmt: skip
            session.commit(f"commit {name}", rebase_with=self.icechunk.ConflictDetector())

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(commit, parts))

    def _ledger(self, store: Any) -> tuple[set[str], list[Commit]]:
        """What planning reads: the summary's bins and fingerprints, the consolidated partitions, new commits."""
        import zarr

        root = zarr.open_group(store, mode="r", zarr_format=3)
        complete: set[str] = set()
        parts: set[str] = set()
        if SUMMARY in root:
            rows = root[SUMMARY].attrs[ROWS]
            complete = {str(b) for b in root[f"{SUMMARY}/bin"][: rows["bin"]]}
            root[f"{SUMMARY}/files_digest"][: rows["bin"]]
            parts = {str(p) for p in root[f"{LEDGER}/consolidated_part"][: rows["part"]]}
        pending = [Commit.from_attributes(dict(group.attrs)) for name, group in root[COMMITS].groups()
                   if name not in parts]  # fmt: skip
        return complete, pending

    def _consolidate(self, *, rewrite: bool) -> None:
        import zarr

        session = self.repo().writable_session("main")
        store = session.store
        root = zarr.open_group(store, mode="r", zarr_format=3)
        commits = [Commit.from_attributes(dict(group.attrs)) for _, group in root[COMMITS].groups()]
        if rewrite:
            records = [record for commit in commits for record in commit.bins]
            summary = summary_dataset(records, INFO)
            tables = ledger_dataset([c.part for c in commits], (), records)
            rows = {dim: tables.sizes[dim] for dim in ("part", "warned", "failed")} | {"bin": summary.sizes["bin"]}
            summary.attrs[ROWS] = rows
            documents = {f"{SUMMARY}/{k}": as_bytes(v) for k, v in zarr_contents(summary).items()}
            documents |= {f"{LEDGER}/{k}": as_bytes(v) for k, v in zarr_contents(tables).items()}
            self._set(store, documents)
        else:
            rows = dict(root[SUMMARY].attrs[ROWS])
            known = {str(p) for p in root[f"{LEDGER}/consolidated_part"][: rows["part"]]}
            new = [c for c in commits if c.part not in known]
            records = [record for commit in new for record in commit.bins]
            added = {SUMMARY: summary_dataset(records, INFO), LEDGER: ledger_dataset([c.part for c in new], (), [])}
            metadata = {}
            for group_path, dataset in added.items():
                encoded = zarr.open_group(zarr.storage.MemoryStore(zarr_contents(dataset)), mode="r", zarr_format=3)
                stored = zarr.open_group(store, path=group_path, mode="r+", zarr_format=3)
                for name, values in encoded.arrays():
                    dims = values.metadata.dimension_names or ()
                    if dims and dims[0] in ("bin", "part") and name in stored:
                        metadata[f"{group_path}/{name}/zarr.json"] = grow_rows(stored[name], rows[dims[0]], values)
            self._set(store, metadata)
            rows = {**rows, "bin": rows["bin"] + len(records), "part": rows["part"] + len(new)}
            attributes = {**dict(zarr.open_group(store, path=SUMMARY, mode="r").attrs), ROWS: rows}
            self._set(store, {f"{SUMMARY}/zarr.json": group_document(attributes)})
        session.commit("consolidate")

    @staticmethod
    def _set(store: Any, documents: dict[str, bytes]) -> None:
        import asyncio

        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        prototype = default_buffer_prototype()

        async def write_all() -> None:
            # group and array documents first: Icechunk checks that a chunk's array exists
            metadata = sorted(key for key in documents if key.endswith("zarr.json"))
            for key in sorted(metadata, key=lambda key: key.count("/")):
                await store.set(key, prototype.buffer.from_bytes(documents[key]))
            chunks = [key for key in documents if not key.endswith("zarr.json")]
            await asyncio.gather(*(store.set(key, prototype.buffer.from_bytes(documents[key])) for key in chunks))

        sync(write_all())


def _commit_document(part: str, results_: list[BinResult]) -> dict[str, Any]:
    """The commit document of a partition, as `ResultStore.commit_partition` makes it (written to memory here)."""
    return ResultStore(f"memory://bench-commits/{part}").commit_partition(part, results_, CLASSES).to_attributes()


def objects(fs: Any, area: str) -> dict[str, tuple[str, int]]:
    """key -> (ETag, size) of every object under `area`."""
    found = fs.find(f"{BUCKET}/{area}", detail=True, refresh=True)
    return {key: (entry.get("ETag", ""), int(entry["size"])) for key, entry in found.items()}


def measure(step: Callable[[], Any], proxy: Any, fs: Any, area: str) -> tuple[int, float, int, Any]:
    """(store requests, seconds, bytes of the objects the step wrote or rewrote, the step's answer)."""
    before = objects(fs, area)
    proxy.requests.clear()
    started = time.perf_counter()
    answer = step()
    seconds = time.perf_counter() - started
    counts = count(proxy.requests, BUCKET, {area: area})
    written = sum(size for key, (etag, size) in objects(fs, area).items() if before.get(key, ("", 0))[0] != etag)
    return sum(n for (where, _), n in counts.items() if where == area), seconds, written, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=200)
    parser.add_argument("--rois", type=int, default=20)
    parser.add_argument("--partition-bins", type=int, default=20)
    args = parser.parse_args()
    try:
        import icechunk
    except ImportError:
        sys.exit("this comparison needs Icechunk: .venv/bin/pip install icechunk==1.1.21")

    import s3fs
    from faulty_proxy import faulty_proxy

    server, endpoint = start_moto()
    try:
        fs = s3fs.S3FileSystem(key="k", secret="s", client_kwargs={"endpoint_url": endpoint})
        fs.mkdir(BUCKET)
        with faulty_proxy(endpoint, "none", 0.0) as proxy:
            options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": proxy.endpoint_url}}
            engines = {"today (ResultStore)": (Today(options), "today.zarr"),
                       f"Icechunk {icechunk.__version__}": (Icechunk(proxy.endpoint_url), "icechunk")}  # fmt: skip
            first = partitions(args.bins, args.partition_bins, args.rois)
            new = results(args.bins, 3, args.rois)
            table = []
            for name, (engine, area) in engines.items():
                a = measure(lambda engine=engine: engine.first_run(first), proxy, fs, area)
                b = measure(lambda engine=engine: engine.poll(new), proxy, fs, area)
                c = measure(engine.noop, proxy, fs, area)
                assert c[3] == args.bins + 3, (name, c[3])
                table.append((name, a, b, c))
    finally:
        server.terminate()
        server.wait()
    print(f"\n{args.bins} bins x {args.rois} ROIs, {len(CLASSES)} classes, partitions of {args.partition_bins} "
          f"bins by 2 writers at once; moto S3 server; store requests (per bin written), seconds, bytes "
          "written\n")  # fmt: skip
    print("| engine | first run | poll, 3 new bins | rerun, nothing to do |\n|---|---:|---:|---:|")
    for name, a, b, c in table:
        print(f"| {name} | {a[0]} ({a[0] / args.bins:.2f}/bin), {a[1]:.2f} s, {a[2] / 1024:.0f} KiB "
              f"| {b[0]} ({b[0] / 3:.1f}/bin), {b[1]:.2f} s, {b[2] / 1024:.0f} KiB "
              f"| {c[0]} ({c[0] / (args.bins + 3):.2f}/bin), {c[1]:.2f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
