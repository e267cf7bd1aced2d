"""Requests per bin to object storage: every HTTP request between ifcbflow and a real S3 API (a moto server in its
own process), counted by a recording proxy on the way (`tests/faulty_proxy.py`, with no faults).

Archive, bundle and store all live in the moto server; a 2-worker LocalCluster classifies the archive. Printed, per
bin: the first run (archive: listing, .hdr, .adc, .roi; store: PUT, GET, HEAD, LIST, DELETE) and a rerun with nothing
to do. Then planning at archive scale: an archive of `--scale-bins` bins (empty files: planning reads none) whose
bins are all complete in a store; the rerun's planning time, its requests, and the client's memory while planning.

    .venv/bin/python bench/bench_store_requests.py [--bins 200] [--rois 20] [--scale-bins 100000]
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from urllib.request import urlopen

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the recording proxy, the small bundle

import model as _quiet_tensorflow  # noqa: F401  (first: it keeps TensorFlow's start-up lines quiet)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    """A moto S3 server in its own process, so that the client's memory is the client's."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urlopen(f"{endpoint}/moto-api/", timeout=1)
            return server, endpoint
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the moto server did not start")


def count(requests: list[tuple[str, str]], bucket: str, areas: dict[str, str]) -> Counter[tuple[str, str]]:
    """(area, method) -> requests; `areas` maps a name to its key prefix in `bucket` (a listing belongs to the area
    of its `prefix=` parameter)."""
    counts: Counter[tuple[str, str]] = Counter()
    for method, target in requests:
        parts = urlsplit(target)
        params = parse_qs(parts.query)
        path = unquote(parts.path).lstrip("/")
        key = path[len(bucket) + 1 :] if path.startswith(f"{bucket}/") else params.get("prefix", [""])[0]
        area = next((name for name, prefix in areas.items() if key.startswith(prefix)), "other")
        listing = method == "GET" and ("list-type" in params or path.rstrip("/") == bucket)
        counts[(area, "LIST" if listing else method)] += 1
    return counts


def per_bin(counts: Counter[tuple[str, str]], area: str, bins: int) -> str:
    methods = sorted({method for (a, method) in counts if a == area})
    parts = [f"{counts[(area, m)] / bins:.2f} {m}" for m in methods]
    total = sum(counts[(area, m)] for m in methods) / bins
    return f"{' + '.join(parts) or '0'} = **{total:.2f}**"


class RssSampler:
    """This process's resident memory, sampled every 20 ms from now until `stop`: (at the start, the peak)."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def stop(self) -> tuple[int, int]:
        self._done.set()
        self._thread.join()
        return self.start, max(self.peak, self._process.memory_info().rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=200)
    parser.add_argument("--rois", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scale-bins", type=int, default=100_000)
    parser.add_argument("--scale-only-local", action="store_true", help="Only the planning at scale, on local disk.")
    args = parser.parse_args()
    if args.scale_only_local:
        scale_local(args.scale_bins)
        return
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.ERROR)

    import s3fs
    from classify_support import make_bundle
    from distributed import Client, LocalCluster
    from faulty_proxy import faulty_proxy

    from pipeline.ifcb.synth import write_synthetic_archive
    from pipeline.job.run import ClassifyRequest, run_classification

    server, endpoint = start_moto()
    try:
        direct = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": endpoint}}
        fs = s3fs.S3FileSystem(**direct)
        bucket = "bench"
        fs.mkdir(bucket)
        archive, bundle, store = f"s3://{bucket}/archive", f"s3://{bucket}/bundle.zip", f"s3://{bucket}/store.zarr"
        write_synthetic_archive(archive, bins=args.bins, rois=args.rois, classes=3, seed=0, storage_options=direct)
        make_bundle(bundle, direct)
        rows = []
        with (
            faulty_proxy(endpoint, "none", 0.0) as proxy,
            LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            options = {**direct, "client_kwargs": {"endpoint_url": proxy.endpoint_url}}
            request = ClassifyRequest(archive, bundle, store, options)
            for label in ("first run", "rerun, nothing to do"):
                proxy.requests.clear()
                summary = run_classification(client, request)
                counts = count(proxy.requests, bucket, {"archive": "archive/", "store": "store.zarr",
                                                         "bundle": "bundle"})  # fmt: skip
                bundle_requests = sum(n for (area, _), n in counts.items() if area == "bundle")
                rows.append((label, per_bin(counts, "archive", args.bins), per_bin(counts, "store", args.bins),
                             bundle_requests, summary.partitions))  # fmt: skip
            print(f"\n{args.bins} bins x {args.rois} ROIs; archive, bundle and store on a moto S3 server; "
                  f"{args.workers} workers; requests per bin\n")  # fmt: skip
            print("| run | archive | store | bundle (in all) | partitions |\n|---|---|---|---:|---:|")
            for row in rows:
                print("| " + " | ".join(str(cell) for cell in row) + " |")
            scale(args.scale_bins, fs, bucket, options, proxy)
    finally:
        server.terminate()
        server.wait()


SCALE_START = datetime(2020, 1, 1, tzinfo=UTC)


def scale_ids(n_bins: int) -> list[str]:
    return [f"D{SCALE_START + timedelta(minutes=20 * i):%Y%m%dT%H%M%S}_IFCB999" for i in range(n_bins)]


def complete_store(url: str, options: dict, ids: list[str]) -> None:
    """A store in which every bin of `ids` is complete (with no ROIs: the ledger is what planning reads)."""
    import numpy as np

    from pipeline.results.partitions import partition_id
    from pipeline.results.records import BinResult
    from pipeline.results.store import ResultStore

    store = ResultStore(url, options)
    store.prepare(bundle_info={"classes": ["a", "b"], "content_hash": "scale"}, bundle_url="b", archive_url="a")
    ledger = store.ledger()
    for first in range(0, len(ids), 1000):
        chunk = ids[first : first + 1000]
        results = [BinResult(b, SCALE_START + timedelta(minutes=20 * (first + i)), np.zeros(0, np.int64),
                             np.zeros((0, 2), np.float32), 1.0) for i, b in enumerate(chunk)]  # fmt: skip
        ledger.add(store.commit_partition(partition_id(chunk, "scale"), results, ["a", "b"]))
    store.consolidate(ledger)


def scale(n_bins: int, fs, bucket: str, options: dict, proxy) -> None:
    """A rerun's planning over an archive of `n_bins` bins that are all complete in the store."""
    ids = scale_ids(n_bins)
    root = f"{bucket}/scale-archive"
    made = time.perf_counter()
    for first in range(0, n_bins, 5000):  # empty files: planning lists them, it never reads them
        fs.pipe({f"{root}/{b}.{ext}": b"" for b in ids[first : first + 5000] for ext in ("hdr", "adc", "roi")})
    complete_store(f"s3://{bucket}/scale-store.zarr", options, ids)
    print(f"\nscale: {n_bins:,} bins in an archive, all complete in a store (set up in "
          f"{time.perf_counter() - made:.0f} s)")  # fmt: skip

    proxy.requests.clear()
    listing, ledger_s, todo, before, peak = plan_rerun(f"s3://{root}", f"s3://{bucket}/scale-store.zarr", options)
    counts = count(proxy.requests, bucket, {"archive": "scale-archive/", "store": "scale-store.zarr"})
    archive_requests = sum(n for (area, _), n in counts.items() if area == "archive")
    store_requests = sum(n for (area, _), n in counts.items() if area == "store")
    print(f"rerun planning on S3: listing the archive {listing:.1f} s ({archive_requests} requests), the ledger "
          f"{ledger_s:.2f} s ({store_requests} store requests, {store_requests / n_bins:.5f} per complete bin); "
          f"{todo} bins to do; client RSS {before / 2**20:.0f} MiB before, {peak / 2**20:.0f} MiB at most while "
          f"planning (+{(peak - before) / 2**20:.0f} MiB)")  # fmt: skip


def plan_rerun(archive: str, store_url: str, options: dict) -> tuple[float, float, int, int, int]:
    """What a rerun does before it submits anything: list the archive, take the lease, read the ledger.

    Returns (listing seconds, ledger seconds, bins to do, client RSS before, peak client RSS)."""
    from pipeline.ifcb.archive import list_bins
    from pipeline.results.store import ResultStore

    store = ResultStore(store_url, options)
    sampler = RssSampler()
    started = time.perf_counter()
    _, bins, _ = list_bins(archive, options)
    listed = time.perf_counter()
    with store.lease("bench"):
        complete = store.ledger(clean=True).complete
    todo = [files for files in bins if files.bin.id not in complete]
    done = time.perf_counter()
    before, peak = sampler.stop()
    return listed - started, done - listed, len(todo), before, peak


def scale_local(n_bins: int) -> None:
    """The same rerun planning with archive and store on a local disk: the client's own cost, no server's."""
    ids = scale_ids(n_bins)
    work = Path(tempfile.mkdtemp(prefix="ifcbflow-scale-"))
    archive = work / "archive"
    archive.mkdir()
    for bin_id in ids:
        for ext in ("hdr", "adc", "roi"):
            (archive / f"{bin_id}.{ext}").touch()
    complete_store(str(work / "store.zarr"), {}, ids)
    listing, ledger_s, todo, before, peak = plan_rerun(str(archive), str(work / "store.zarr"), {})
    print(
        f"rerun planning on a local disk, {n_bins:,} complete bins: listing {listing:.1f} s, the ledger "
        f"{ledger_s:.2f} s, {todo} bins to do; client RSS +{(peak - before) / 2**20:.0f} MiB while planning"
    )


if __name__ == "__main__":
    main()
