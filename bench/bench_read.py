"""Read throughput of the bin reader: a synthetic archive from local disk and from S3 (moto on loopback).

Prints a markdown table of ROIs/s, MB/s of pixels and HTTP requests per bin, for the metadata scan (`.hdr` +
`.adc`) and the image reads (one ranged `.roi` GET per bin), sequential and with a thread pool. moto runs in its
own process so that its work does not share the benchmark's GIL; loopback measures the request pattern and the
client's overhead, not a real object store's bandwidth or latency.

    .venv/bin/python bench/bench_read.py --bins 200 --rois 100
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import s3fs

from pipeline.ifcb.archive import open_archive, scan_archive
from pipeline.ifcb.bins import BinMeta, read_bin_images
from pipeline.ifcb.synth import write_synthetic_archive


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server in a child process on a free loopback port; yields its endpoint URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto server did not start")
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


class RequestCounter:
    """Counts the HTTP requests an s3fs filesystem sends (botocore's before-send event)."""

    def __init__(self, fs: s3fs.S3FileSystem) -> None:
        self.count = 0
        fs.s3.meta.events.register("before-send.s3", self._count)

    def _count(self, **_: Any) -> None:
        self.count += 1


def timed(step: Callable[[], Any]) -> tuple[Any, float]:
    began = time.perf_counter()
    result = step()
    return result, time.perf_counter() - began


def measure(url: str, options: dict[str, Any], threads: int, counter: RequestCounter | None) -> list[dict[str, Any]]:
    """Rows of the table for one archive: scan, then image reads sequentially and with `threads` threads."""
    rows = []
    before = counter.count if counter else 0
    metas, seconds = timed(lambda: [m for m in scan_archive(url, options) if isinstance(m, BinMeta)])
    fs = open_archive(url, options)[0]
    n_bins, n_rois = len(metas), sum(m.n_rois for m in metas)
    pixel_bytes = sum(m.roi_bytes for m in metas)
    requests = (counter.count - before) if counter else None
    rows.append(dict(phase="scan .hdr+.adc", bins=n_bins, rois=n_rois, mb=0.0, s=seconds, requests=requests))
    for workers in (1, threads):
        before = counter.count if counter else 0
        with ThreadPoolExecutor(workers) as pool:
            counts, seconds = timed(
                lambda pool=pool: sum(len(i) for i in pool.map(lambda m: read_bin_images(fs, m), metas))
            )
        assert counts == n_rois
        requests = (counter.count - before) if counter else None
        rows.append(
            dict(phase=f"read .roi ({workers} thread{'s' if workers > 1 else ''})", bins=n_bins, rois=n_rois,
                 mb=pixel_bytes / 1e6, s=seconds, requests=requests)
        )  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=200, help="bins in the synthetic archive")
    parser.add_argument("--rois", type=int, default=100, help="ROIs per bin")
    parser.add_argument("--classes", type=int, default=10, help="shape kinds")
    parser.add_argument("--threads", type=int, default=8, help="threads for the concurrent image reads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    results: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        local = f"{tmp}/archive"
        _, synth_s = timed(
            lambda: write_synthetic_archive(local, bins=args.bins, rois=args.rois, classes=args.classes, seed=args.seed)
        )
        print(f"synthesised {args.bins} bins x {args.rois} ROIs in {synth_s:.1f} s", file=sys.stderr)
        results += [("local disk", row) for row in measure(local, {}, args.threads, None)]

        options = {
            "key": "bench",
            "secret": "bench",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        fs = s3fs.S3FileSystem(**options)  # fsspec's instance cache hands this same instance to the reader
        fs.call_s3("create_bucket", Bucket="bench")
        _, upload_s = timed(lambda: fs.put(f"{local}/", "bench/archive/", recursive=True))
        print(f"uploaded to moto in {upload_s:.1f} s", file=sys.stderr)
        counter = RequestCounter(fs)
        results += [
            ("S3 (moto, loopback)", row) for row in measure("s3://bench/archive", options, args.threads, counter)
        ]

    print("| source | phase | bins | ROIs | pixel MB | seconds | ROIs/s | MB/s | requests/bin |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for source, row in results:
        per_bin = "-" if row["requests"] is None else f"{row['requests'] / row['bins']:.2f}"
        mb_s = f"{row['mb'] / row['s']:.1f}" if row["mb"] else "-"
        mb = f"{row['mb']:.1f}" if row["mb"] else "-"
        print(
            f"| {source} | {row['phase']} | {row['bins']} | {row['rois']} | {mb} | {row['s']:.2f} | "
            f"{row['rois'] / row['s']:,.0f} | {mb_s} | {per_bin} |"
        )


if __name__ == "__main__":
    main()
