"""Requests per bin to object storage, counted by a real S3 API (a moto server in its own process, its recorder).

Archive, bundle and store all live in the moto server; a 2-worker LocalCluster classifies the archive, and the server
records every request it answers. Printed, per bin:
- the first run: archive requests (listing, .hdr, .adc, .roi) and store requests (PUT, GET, HEAD, LIST, DELETE);
- a rerun with nothing to do (store requests per complete bin);
- planning at archive scale: an archive of `--scale-bins` bins (empty files: planning reads none) whose bins are all
  complete in a store; the wall time of the rerun's planning and the client's peak memory while planning.

    .venv/bin/python bench/bench_store_requests.py [--bins 200] [--rois 20] [--scale-bins 100000]
"""

from __future__ import annotations

import argparse
import json
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
from urllib.parse import parse_qs, unquote
from urllib.request import Request, urlopen

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the test suite's small bundle maker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto(recording: Path) -> tuple[subprocess.Popen, str]:
    """A moto S3 server in its own process (so the client's memory is the client's), recording to `recording`."""
    port = free_port()
    env = {**os.environ, "MOTO_RECORDER_FILEPATH": str(recording)}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
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


def recorder(endpoint: str, action: str) -> str:
    with urlopen(Request(f"{endpoint}/moto-api/recorder/{action}", method="POST" if action != "download-recording"
                         else "GET"), timeout=60) as answer:  # fmt: skip
        return answer.read().decode()


def count(endpoint: str, bucket: str, areas: dict[str, str]) -> Counter[tuple[str, str]]:
    """(area, method) -> requests since the recording started; `areas` maps a name to its key prefix in `bucket`
    (a listing belongs to the area of its `prefix=` parameter)."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in recorder(endpoint, "download-recording").splitlines():
        entry = json.loads(line)
        path, _, query = entry["url"].split("://", 1)[-1].partition("/")[2].partition("?")
        params = parse_qs(query)
        key = unquote(path)[len(bucket) + 1 :] if unquote(path).startswith(f"{bucket}/") else params.get(
            "prefix", [""])[0]  # fmt: skip
        area = next((name for name, prefix in areas.items() if key.startswith(prefix)), "other")
        listing = entry["method"] == "GET" and ("list-type" in params or "prefix" in params or not key)
        counts[(area, "LIST" if listing else entry["method"])] += 1
    return counts


def per_bin(counts: Counter[tuple[str, str]], area: str, bins: int) -> str:
    methods = sorted({method for (a, method) in counts if a == area})
    parts = [f"{counts[(area, m)] / bins:.2f} {m}" for m in methods]
    total = sum(counts[(area, m)] for m in methods) / bins
    return f"{' + '.join(parts) or '0'} = {total:.2f}"


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
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from classify_support import make_bundle
    from distributed import Client, LocalCluster

    from pipeline.ifcb.synth import write_synthetic_archive
    from pipeline.job.run import ClassifyRequest, run_classification

    work = Path(tempfile.mkdtemp(prefix="ifcbflow-bench-"))
    server, endpoint = start_moto(work / "recording.jsonl")
    try:
        options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": endpoint}}
        import s3fs

        fs = s3fs.S3FileSystem(**options)
        bucket = "bench"
        fs.mkdir(bucket)
        archive, bundle, store = f"s3://{bucket}/archive", f"s3://{bucket}/bundle.zip", f"s3://{bucket}/store.zarr"
        write_synthetic_archive(archive, bins=args.bins, rois=args.rois, classes=3, seed=0, storage_options=options)
        make_bundle(bundle, options)
        rows = []
        with (
            LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            request = ClassifyRequest(archive, bundle, store, options)
            for label in ("first run", "rerun, nothing to do"):
                recorder(endpoint, "reset-recording")
                recorder(endpoint, "start-recording")
                summary = run_classification(client, request)
                recorder(endpoint, "stop-recording")
                counts = count(endpoint, bucket, {"archive": "archive/", "store": "store.zarr", "bundle": "bundle"})
                bins = args.bins
                rows.append((label, per_bin(counts, "archive", bins), per_bin(counts, "store", bins),
                             f"{sum(counts[k] for k in counts if k[0] == 'bundle')}", summary.partitions))  # fmt: skip
        print(f"\n{args.bins} bins x {args.rois} ROIs, archive, bundle and store on a moto S3 server, "
              f"{args.workers} workers; requests per bin\n")  # fmt: skip
        print("| run | archive | store | bundle (total) | partitions |\n|---|---|---|---:|---:|")
        for row in rows:
            print("| " + " | ".join(str(cell) for cell in row) + " |")
        scale(args.scale_bins, fs, bucket, options, endpoint)
    finally:
        server.terminate()
        server.wait()


def scale(n_bins: int, fs, bucket: str, options: dict, endpoint: str) -> None:
    """A rerun's planning over an archive of `n_bins` bins that are all complete in the store."""
    import numpy as np

    from pipeline.results.records import BinResult
    from pipeline.results.store import ResultStore, partition_id

    start = datetime(2020, 1, 1, tzinfo=UTC)
    ids = [f"D{start + timedelta(minutes=20 * i):%Y%m%dT%H%M%S}_IFCB999" for i in range(n_bins)]
    root = f"{bucket}/scale-archive"
    made = time.perf_counter()
    for first in range(0, n_bins, 5000):  # empty files: planning lists, it never reads them
        fs.pipe({f"{root}/{b}.{ext}": b"" for b in ids[first : first + 5000] for ext in ("hdr", "adc", "roi")})
    store_url = f"s3://{bucket}/scale-store.zarr"
    store = ResultStore(store_url, options)
    store.prepare(bundle_info={"classes": ["a", "b"], "content_hash": "scale"}, bundle_url="b", archive_url=root)
    ledger = store.ledger()
    for first in range(0, n_bins, 1000):
        chunk = ids[first : first + 1000]
        results = [BinResult(b, start + timedelta(minutes=20 * (first + i)), np.zeros(0, np.int64),
                             np.zeros((0, 2), np.float32), 1.0) for i, b in enumerate(chunk)]  # fmt: skip
        ledger.add(store.commit_partition(partition_id(chunk, "scale"), results, ["a", "b"]))
    store.consolidate(ledger)
    print(f"\nscale set-up: {n_bins:,} bins in the archive and complete in the store "
          f"({time.perf_counter() - made:.0f} s)")  # fmt: skip

    from pipeline.ifcb.archive import list_bins

    sampler = RssSampler()
    recorder(endpoint, "reset-recording")
    recorder(endpoint, "start-recording")
    started = time.perf_counter()
    _, bins, _ = list_bins(f"s3://{root}", options)
    with store.lease("bench"):
        complete = store.ledger(clean=True).bins
    todo = [files for files in bins if files.bin.id not in complete]
    seconds = time.perf_counter() - started
    before, peak = sampler.stop()
    recorder(endpoint, "stop-recording")
    counts = count(endpoint, bucket, {"archive": "scale-archive/", "store": "scale-store.zarr"})
    store_requests = sum(n for (area, _), n in counts.items() if area == "store")
    archive_requests = sum(n for (area, _), n in counts.items() if area == "archive")
    print(f"rerun planning over {n_bins:,} complete bins: {seconds:.1f} s, {len(todo)} bins to do, "
          f"{archive_requests} archive requests (listing), {store_requests} store requests "
          f"({store_requests / n_bins:.5f} per complete bin); client RSS {before / 2**20:.0f} MiB before, peak "
          f"{peak / 2**20:.0f} MiB while planning (+{(peak - before) / 2**20:.0f} MiB)")  # fmt: skip


if __name__ == "__main__":
    main()
