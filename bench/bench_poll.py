"""What a `watch` poll with a few new bins and a rerun with some new bins cost when the store holds every other bin.

Two settings, each printed as a table:

- local disk (`--bins N`, default a million): the archive of `bench_scale.py` (laid out by day, 72 bins a day,
  hard links to one real bin; reused when built) and a store in which every one of its bins is complete (built once,
  then copied for each measurement). A `Watcher` on an embedded cluster (`--workers`, a near-zero-cost model) is
  started (its ledger read), makes its first poll (a full pass), then `--new` bins are added to the newest day folder
  and polled twice (the first poll sees them, the second finds them settled and classifies them), then once more
  with nothing new. Then `--rerun-new` more bins are added and a plain rerun over the whole archive classifies them
  (its planning, the ledger then the streamed listing, timed on its own first). Per step: wall seconds, the client's
  resident memory before and at most during it (sampled every 20 ms).
- S3 (`--s3-store-bins 10000,100000`): per store size, a store of that many complete bins, the archive's newest two
  days (real bin files) and the bundle on a moto S3 server, every request counted by the recording proxy of
  `bench_store_requests.py`; the same steps, with the store's and the archive's requests by kind (GET, PUT, LIST,
  HEAD, DELETE). The archive there is only the newest days (a poll lists nothing older; a rerun's listing grows with
  the archive, see `bench_store_requests.py --scale-bins`): the store's size is what varies.

Cluster start-up and the workers' first model load (once per watch: a one-bin run into a scratch store) are
outside every figure. A local archive whose marker says built but whose day folders were partly removed since is
completed first. `--show-requests` prints every S3 request of each step.

    nice -n 10 .venv/bin/python bench/bench_poll.py --bins 1000000 --work /tmp/ifcbflow-scale
    nice -n 10 .venv/bin/python bench/bench_poll.py --skip-local --s3-store-bins 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench_scale import LINKS_PER_SOURCE, REAL_BIN, REAL_BINS, build_archive
from bench_store_requests import SCALE_START, RssSampler, count, scale_ids, start_moto

BIN_FILES = {ext: (REAL_BINS / f"{REAL_BIN}.{ext}").read_bytes() for ext in ("hdr", "adc", "roi")}
METHODS = ("GET", "PUT", "LIST", "HEAD", "DELETE", "POST")


@dataclass
class Step:
    """One measured step: its label, wall seconds, client RSS before and at most during (MiB), what it did, and
    the requests it sent by (area, method) (empty on a local disk), and those requests themselves."""

    label: str
    seconds: float
    rss_before: float
    rss_peak: float
    result: str
    requests: Counter[tuple[str, str]]
    raw: list[tuple[str, str]]


def bin_day_folder(root: str, bin_id: str) -> str:
    """`root/D2020/D20200101` for a bin of that day."""
    return f"{root}/D{bin_id[1:5]}/{bin_id[:9]}"


def ensure_archive(root: Path, ids: list[str]) -> int:
    """`bench_scale.build_archive`, then every day folder found missing since (a marker that outlived part of its
    archive) linked again to fresh copies of the real bin; returns the bins restored."""
    build_archive(root, ids)
    missing = [b for i, b in enumerate(ids) if i % 72 == 0 and not Path(bin_day_folder(str(root), b)).is_dir()]
    days = set(missing)
    restore = [b for i, b in enumerate(ids) if ids[i - i % 72] in days]
    sources = root.parent / f"{root.name}-restored"
    for i, bin_id in enumerate(restore):
        copy = sources / str(i // LINKS_PER_SOURCE)
        if i % LINKS_PER_SOURCE == 0:
            shutil.rmtree(copy, ignore_errors=True)
            copy.mkdir(parents=True)
            for ext, data in BIN_FILES.items():
                (copy / f"bin.{ext}").write_bytes(data)
        folder = Path(bin_day_folder(str(root), bin_id))
        folder.mkdir(parents=True, exist_ok=True)
        for ext in BIN_FILES:
            os.link(copy / f"bin.{ext}", folder / f"{bin_id}.{ext}")
    return len(restore)


def zero_cost_bundle(url: str, storage_options: dict[str, Any] | None = None) -> str:
    """A near-zero-cost model (a mean and one dense layer) saved as a bundle at `url` (kept when there)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if fs.exists(path):
        return url
    import keras

    from model.bundle import Bundle, save_bundle
    from model.preprocess import PreprocessConfig
    from pipeline.ifcb.synth import SYNTH_CLASSES

    keras.utils.set_random_seed(0)
    classes, size = SYNTH_CLASSES[:4], 32
    inputs = keras.Input((size, size, 1), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255, name="to_float")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="mean")(x)
    outputs = keras.layers.Dense(len(classes), activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="zero_cost")
    save_bundle(Bundle(model, classes, PreprocessConfig(size=size), "zero-cost"), url, storage_options)
    return url


def complete_store(url: str, options: dict[str, Any], ids: list[str], bundle_url: str) -> None:
    """A store of the bundle's model in which every bin of `ids` is complete (no ROIs), in partitions of 1000."""
    import numpy as np

    from model.bundle import read_bundle_info
    from pipeline.results.partitions import partition_id
    from pipeline.results.records import BinResult
    from pipeline.results.store import ResultStore

    info = read_bundle_info(bundle_url, options)
    classes = list(info["classes"])
    store = ResultStore(url, options)
    store.prepare(bundle_info=info, bundle_url=bundle_url, archive_url="archive")
    ledger = store.ledger()
    for first in range(0, len(ids), 1000):
        chunk = ids[first : first + 1000]
        results = [BinResult(b, SCALE_START + timedelta(minutes=20 * (first + i)), np.zeros(0, np.int64),
                             np.zeros((0, len(classes)), np.float32), 1.0) for i, b in enumerate(chunk)]  # fmt: skip
        ledger.add(store.commit_partition(partition_id(chunk, "scale"), results, classes))
    store.consolidate(ledger)


def add_bins(fs: Any, root: str, ids: list[str]) -> None:
    """The bins `ids` written into their day folders under `root` (real bin bytes)."""
    for bin_id in ids:
        folder = bin_day_folder(root, bin_id)
        fs.makedirs(folder, exist_ok=True)
        fs.pipe({f"{folder}/{bin_id}.{ext}": data for ext, data in BIN_FILES.items()})


def remove_bins(fs: Any, root: str, ids: list[str]) -> None:
    """The bins `ids` removed, with the day folders they leave empty (a local disk's)."""
    fs.rm([f"{bin_day_folder(root, b)}/{b}.{ext}" for b in ids for ext in BIN_FILES])
    for folder in {bin_day_folder(root, b) for b in ids}:
        if fs.isdir(folder) and not fs.ls(folder):
            fs.rmdir(folder)


class Recorder:
    """Times a step, samples the client's memory and counts the requests a proxy saw meanwhile."""

    def __init__(self, proxy: Any = None, bucket: str = "", areas: dict[str, str] | None = None) -> None:
        self.proxy, self.bucket, self.areas = proxy, bucket, areas or {}
        self.steps: list[Step] = []

    def measure(self, label: str, function: Callable[[], Any], describe: Callable[[Any], str] = str) -> Any:
        if self.proxy is not None:
            self.proxy.requests.clear()
        sampler = RssSampler()
        started = time.perf_counter()
        result = function()
        seconds = time.perf_counter() - started
        before, peak = sampler.stop()
        raw = list(self.proxy.requests) if self.proxy is not None else []
        requests = count(raw, self.bucket, self.areas)
        step = Step(label, seconds, before / 2**20, peak / 2**20, describe(result), requests, raw)
        self.steps.append(step)
        print(f"  {label}: {seconds:.2f} s, RSS {step.rss_before:.0f} -> {step.rss_peak:.0f} MiB, {step.result}"
              + (f"; {by_kind(requests, 'store')} | archive {by_kind(requests, 'archive')}" if self.proxy else ""),
              flush=True)  # fmt: skip
        return result


def by_kind(requests: Counter[tuple[str, str]], area: str) -> str:
    """`3 GET + 1 LIST = 4` for one area."""
    parts = [f"{requests[(area, m)]} {m}" for m in METHODS if requests[(area, m)]]
    total = sum(n for (a, _), n in requests.items() if a == area)
    return f"{' + '.join(parts) or '0'} = **{total}**"


def describe_poll(poll: Any) -> str:
    classified = len(poll.classified) if poll.classified is not None else 0
    run = f" (its run {poll.run.seconds:.2f} s)" if poll.run is not None else ""
    return f"waiting {poll.waiting}, classified {classified}{run}, store {poll.store_bins:,} bins"


def describe_run(run: Any) -> str:
    return f"listed {run.bins_listed:,}, classified {run.bins_done} in {run.partitions} partition(s)"


def plan_only(archive: str, store_url: str, options: dict[str, Any]) -> str:
    """A rerun's planning alone: the lease, the ledger, then the streamed listing's bins not complete."""
    from pipeline.ifcb.archive import iter_bins
    from pipeline.job.run import Selection
    from pipeline.results.store import ResultStore

    store = ResultStore(store_url, options)
    with store.lease("bench"):
        started = time.perf_counter()
        selection = Selection(store.ledger(clean=True))
        ledger_s = time.perf_counter() - started
        todo = sum(1 for _ in selection.todo(iter_bins(archive, options)[1]))
    return f"ledger {ledger_s:.2f} s, {selection.complete:,} bins listed, {todo} to do"


@contextmanager
def embedded_cluster(workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        yield client


def warm_up(client: Any, fs: Any, root: str, bundle: str, options: dict[str, Any]) -> None:
    """One bin classified into a scratch store under `root`: the workers import TensorFlow and load the model once
    per watch, like the cluster's start (outside the figures)."""
    from pipeline.job.run import ClassifyRequest, run_classification

    archive, store = f"{root}/warm-up-archive", f"{root}/warm-up-store.zarr"
    add_bins(fs, archive, scale_ids(1))
    run_classification(client, ClassifyRequest(archive, bundle, store, options))
    fs.rm([archive, store], recursive=True)


def watch_steps(recorder: Recorder, client: Any, request: Any, fs: Any, new_ids: list[str]) -> None:
    """A watch's start, its first poll (a full pass), two polls of `new_ids` (added to the archive), an idle poll."""
    from pipeline.job.watch import Watcher

    watcher = recorder.measure("watch start (reads the store's ledger)", lambda: Watcher(client, request),
                               lambda w: f"{w.bins_in_store:,} bins in store")  # fmt: skip
    recorder.measure("first poll (a full pass)", watcher.poll, describe_poll)
    add_bins(fs, request.archive_url, new_ids)
    recorder.measure(f"poll: {len(new_ids)} new bins seen", watcher.poll, describe_poll)
    recorder.measure(f"poll: {len(new_ids)} new bins settled, classified", watcher.poll, describe_poll)
    recorder.measure("poll: nothing new", watcher.poll, describe_poll)


def rerun_steps(recorder: Recorder, client: Any, request: Any, fs: Any, new_ids: list[str]) -> None:
    """`new_ids` added to the archive, a rerun's planning alone, then the rerun over the whole archive."""
    from pipeline.job.run import run_classification

    add_bins(fs, request.archive_url, new_ids)
    archive, store, options = request.archive_url, request.store_url, request.storage_options
    recorder.measure(f"rerun planning alone ({len(new_ids)} new bins)", lambda: plan_only(archive, store, options))
    recorder.measure(f"rerun: {len(new_ids)} new bins", lambda: run_classification(client, request), describe_run)


def local_case(args: argparse.Namespace) -> list[Step]:
    """Archive and store on the local disk: times and memory at `args.bins` bins, the rerun then the watch each in
    a fresh process (its memory its own) on a fresh copy of the store."""
    work = Path(args.work)
    ids = scale_ids(args.bins + args.new + args.rerun_new)
    archive = work / f"archive-{args.bins}"
    restored = ensure_archive(archive, ids[: args.bins])
    if restored:
        print(f"{restored:,} bins of the archive were missing: restored", flush=True)
    bundle = zero_cost_bundle(str(work / "zero-cost.zip"))
    base = work / f"store-poll-{args.bins}.zarr"
    if not (base / ".built").exists():
        shutil.rmtree(base, ignore_errors=True)
        started = time.perf_counter()
        complete_store(str(base), {}, ids[: args.bins], bundle)
        (base / ".built").write_text(str(args.bins))
        print(f"store of {args.bins:,} complete bins built in {time.perf_counter() - started:.0f} s", flush=True)
    print(f"local disk: {args.bins:,} bins, all complete in the store; {args.workers} worker(s)", flush=True)
    context = multiprocessing.get_context("spawn")
    steps = []
    for kind, new_ids in (("rerun", ids[args.bins + args.new :]), ("watch", ids[args.bins : args.bins + args.new])):
        with ProcessPoolExecutor(1, mp_context=context) as pool:  # not daemonic: it may start the cluster's workers
            steps += pool.submit(local_steps, kind, str(archive), str(base), bundle, args.workers, new_ids).result()
    return steps


def local_steps(kind: str, archive: str, base: str, bundle: str, workers: int, new_ids: list[str]) -> list[Step]:
    """The `kind` steps ("watch" or "rerun") on a copy of the store `base`; the bins added are removed after."""
    import fsspec

    from pipeline.job.run import ClassifyRequest

    logging.getLogger("distributed").setLevel(logging.ERROR)
    fs = fsspec.filesystem("file")
    store = f"{base.removesuffix('.zarr')}-{kind}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(base, store)
    recorder = Recorder()
    try:
        with embedded_cluster(workers) as client:
            warm_up(client, fs, str(Path(archive).parent), bundle, {})
            print(f"{kind}: load average {os.getloadavg()[0]:.1f}", flush=True)
            steps = watch_steps if kind == "watch" else rerun_steps
            steps(recorder, client, ClassifyRequest(archive, bundle, store, {}), fs, new_ids)
    finally:
        remove_bins(fs, archive, new_ids)
        shutil.rmtree(store, ignore_errors=True)
    return recorder.steps


def s3_case(args: argparse.Namespace, store_bins: int, endpoint: str, client: Any) -> list[Step]:
    """Store of `store_bins` complete bins, the archive's newest two days and the bundle on the moto server."""
    import s3fs
    from faulty_proxy import faulty_proxy

    from pipeline.job.run import ClassifyRequest
    from pipeline.results import consolidation as consolidation_module

    direct = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": endpoint}}
    fs = s3fs.S3FileSystem(**direct)
    bucket = f"poll-{store_bins}"
    fs.mkdir(bucket)
    ids = scale_ids(store_bins + args.new + args.rerun_new)
    existing = ids[:store_bins]
    new_ids, rerun_ids = ids[store_bins : store_bins + args.new], ids[store_bins + args.new :]
    archive, store, bundle = f"s3://{bucket}/archive", f"s3://{bucket}/store.zarr", f"s3://{bucket}/bundle.zip"
    started = time.perf_counter()
    zero_cost_bundle(bundle, direct)
    add_bins(fs, archive, existing[-144:])
    complete_store(store, direct, existing, bundle)
    consolidation_module.CONSOLIDATED.clear()  # the watch starts as a new process would: knowing nothing of the store
    print(f"S3: store of {store_bins:,} complete bins, archive of its newest 144 (set up in "
          f"{time.perf_counter() - started:.0f} s); load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    with faulty_proxy(endpoint, "none", 0.0) as proxy:
        options = {**direct, "client_kwargs": {"endpoint_url": proxy.endpoint_url}}
        recorder = Recorder(proxy, bucket, {"archive": "archive/", "store": "store.zarr", "bundle": "bundle"})
        request = ClassifyRequest(archive, bundle, store, options)
        warm_up(client, fs, f"s3://{bucket}", bundle, options)
        try:
            watch_steps(recorder, client, request, fs, new_ids)
            rerun_steps(recorder, client, request, fs, rerun_ids)
        finally:
            remove_bins(fs, archive, new_ids + rerun_ids)
    return recorder.steps


def print_local(bins: int, steps: list[Step]) -> None:
    print(f"\n| {bins:,} bins, local disk | seconds | client RSS before / peak (MiB) | result |\n|---|---:|---:|---|")
    for step in steps:
        print(f"| {step.label} | {step.seconds:.2f} | {step.rss_before:.0f} / {step.rss_peak:.0f} | {step.result} |")


def print_s3(results: dict[int, list[Step]]) -> None:
    sizes = list(results)
    header = " | ".join(f"{n:,} complete bins: seconds; store requests; archive requests" for n in sizes)
    print(f"\n| on S3 (moto) | {header} |\n|---|" + "---|" * len(sizes))
    for i, step in enumerate(results[sizes[0]]):
        cells = []
        for n in sizes:
            s = results[n][i]
            cells.append(f"{s.seconds:.2f} s; {by_kind(s.requests, 'store')}; {by_kind(s.requests, 'archive')}")
        print(f"| {step.label} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bins", type=int, default=1_000_000, help="Bins in the local archive, all complete.")
    parser.add_argument("--work", default="/tmp/ifcbflow-scale")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--new", type=int, default=3, help="New bins a watch poll finds.")
    parser.add_argument("--rerun-new", type=int, default=100, help="New bins a rerun finds.")
    parser.add_argument("--s3-store-bins", default="", help="Store sizes on S3, comma-separated (none: skipped).")
    parser.add_argument("--skip-local", action="store_true", help="Only the S3 measurements.")
    parser.add_argument("--show-requests", action="store_true", help="Print every request of each S3 step.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.skip_local:
        print_local(args.bins, local_case(args))
    sizes = [int(n) for n in args.s3_store_bins.split(",") if n]
    if sizes:
        results = {}
        server, endpoint = start_moto()
        try:
            with embedded_cluster(args.workers) as client:
                for n in sizes:
                    results[n] = s3_case(args, n, endpoint, client)
        finally:
            server.terminate()
            server.wait()
        print_s3(results)
        if args.show_requests:
            for n, steps in results.items():
                for step in steps:
                    print(f"\n{n:,} complete bins, {step.label}:")
                    print("\n".join(f"  {method} {target}" for method, target in step.raw))


if __name__ == "__main__":
    main()
