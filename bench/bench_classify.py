"""Benchmark of the classification job: how close the whole pipeline gets to the model's own speed.

Measured in one run, on one synthetic archive, with one (untrained) bundle:
- end-to-end ROIs/s of `run_classification` (plan, ranged reads, predict, write, consolidate) on 1 and 2 local
  workers, after a warm-up run (model loaded, TensorFlow started);
- model-only ROIs/s on the same workers: `Bundle.predict` (preprocessing + network) on images already in memory,
  all workers at once; the headline is the ratio end-to-end / model-only (1.0 = I/O and bookkeeping fully hidden);
- the worker's peak resident memory after 10 bins and after a further N bins (it must stay flat: partitions bound it);
- a serial loop as peers write it (read a bin, preprocess + predict, write, next bin) in one worker process, on the
  same data, interleaved with the other measures so that all see the same machine load.

    .venv/bin/python bench/bench_classify.py [--bins 120] [--rois 40] [--arch small-cnn] [--size 64]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

WARMUP_BINS = 2
MEMORY_FIRST_BINS = 10
REPEATS = 2


def model_only_rate(archive: str, bundle_url: str, bundle_hash: str, seconds: float) -> tuple[int, float]:
    """Task on one worker: predict the first bins' images (already decoded) repeatedly for `seconds`."""
    from pipeline.ifcb.archive import list_bins
    from pipeline.ifcb.bins import read_bin_images, read_bin_meta
    from pipeline.job.worker import get_bundle

    bundle = get_bundle(bundle_url, None, bundle_hash)
    fs, bins, _ = list_bins(archive)
    images = [image for files in bins[:4] for _, image in read_bin_images(fs, read_bin_meta(fs, files))]
    bundle.predict(images[:8])
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        bundle.predict(images)
        done += len(images)
    return done, time.perf_counter() - started


def cluster_model_only(client, archive: str, bundle_url: str, bundle_hash: str, seconds: float = 5.0) -> float:
    """All workers predicting at once, each pinned to its own task: the cluster's model-only ROIs/s."""
    workers = list(client.scheduler_info(n_workers=-1)["workers"])
    futures = [
        client.submit(model_only_rate, archive, bundle_url, bundle_hash, seconds, workers=[w], pure=False)
        for w in workers
    ]
    return sum(n / s for n, s in client.gather(futures))


def peak_rss_mib(client) -> float:
    from pipeline.job.worker import peak_rss_bytes

    return max(client.run(peak_rss_bytes).values()) / 2**20


def cluster_runs(n_workers: int, archive: str, bundle_url: str, bundle_hash: str, work: Path, ids: list[str]) -> dict:
    """On one cluster: warm up, (1 worker: 10 bins for the memory baseline), then timed full runs and model-only."""
    from pipeline.cluster.client import open_client
    from pipeline.job.run import ClassifyRequest, run_classification

    out: dict[str, float] = {}
    with open_client("local", workers=n_workers, dashboard_address=None) as client:
        warm = ClassifyRequest(archive, bundle_url, str(work / f"warm-{n_workers}.zarr"), bin_ids=ids[:WARMUP_BINS])
        run_classification(client, warm)
        if n_workers == 1:
            first = ClassifyRequest(archive, bundle_url, str(work / "memory.zarr"), bin_ids=ids[:MEMORY_FIRST_BINS])
            run_classification(client, first)
            out["rss_first"] = peak_rss_mib(client)
        e2e, model, serial = [], [], []
        for repeat in range(REPEATS):  # interleaved, best of each: the machine may be shared
            store = str(work / f"e2e-{n_workers}-{repeat}.zarr")
            summary = run_classification(client, ClassifyRequest(archive, bundle_url, store))
            e2e.append(summary.rois / summary.seconds)
            out.setdefault("rss_all", peak_rss_mib(client))  # before the model-only and serial measures run here
            model.append(cluster_model_only(client, archive, bundle_url, bundle_hash))
            serial_store = str(work / f"serial-{n_workers}-{repeat}.zarr")
            serial.append(
                client.submit(serial_loop, archive, bundle_url, bundle_hash, serial_store, pure=False).result()
            )
        out["e2e"], out["model"], out["serial"] = max(e2e), max(model), max(serial)
    return out


def serial_loop(archive: str, bundle_url: str, bundle_hash: str, store_url: str) -> float:
    """Task: the usual script, one bin after another with nothing overlapped (read, predict, write, next bin)."""
    import numpy as np

    from model.bundle import read_bundle_info
    from pipeline.ifcb.archive import list_bins
    from pipeline.ifcb.bins import read_bin_images, read_bin_meta
    from pipeline.job.worker import get_bundle
    from pipeline.results.store import BinResult, ResultStore

    bundle = get_bundle(bundle_url, None, bundle_hash)
    store = ResultStore(store_url)
    store.prepare(bundle_info=read_bundle_info(bundle_url), bundle_url=bundle_url, archive_url=archive)
    fs, bins, _ = list_bins(archive)
    rois, started = 0, time.perf_counter()
    for files in bins:
        meta = read_bin_meta(fs, files)
        images = read_bin_images(fs, meta)
        scores = bundle.predict([image for _, image in images])
        numbers = np.array([n for n, _ in images], dtype=np.int64)
        store.write_bin(BinResult(files.bin.id, files.bin.time, numbers, scores, meta.ml_analyzed), bundle.classes)
        rois += len(images)
    return rois / (time.perf_counter() - started)


def build_bundle(url: str, arch: str, size: int) -> str:
    import keras

    from model.architectures import build
    from model.bundle import Bundle, save_bundle
    from model.preprocess import PreprocessConfig
    from pipeline.ifcb.synth import SYNTH_CLASSES

    keras.utils.set_random_seed(0)
    classes = SYNTH_CLASSES[:4]
    model = build(arch, len(classes), size)
    return save_bundle(Bundle(model, classes, PreprocessConfig(size=size), arch), url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=120, help="Bins in the archive (the memory test's 'many').")
    parser.add_argument("--rois", type=int, default=40, help="ROIs per bin.")
    parser.add_argument("--arch", default="small-cnn")
    parser.add_argument("--size", type=int, default=64, help="Model input size.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.ERROR)

    from pipeline.cluster.local import cores
    from pipeline.ifcb.synth import write_synthetic_archive

    with tempfile.TemporaryDirectory(prefix="bench-classify-") as tmp:
        work = Path(tmp)
        archive = str(work / "archive")
        ids = write_synthetic_archive(archive, bins=args.bins, rois=args.rois, classes=4, seed=0)
        bundle_url = str(work / "bundle.zip")
        bundle_hash = build_bundle(bundle_url, args.arch, args.size)
        runs = {n: cluster_runs(n, archive, bundle_url, bundle_hash, work, ids) for n in (1, 2)}

    one, two = runs[1], runs[2]
    print(
        f"\n{args.bins} bins x {args.rois} ROIs, {args.arch} at {args.size}x{args.size}, {cores()} cores, "
        f"CPU TensorFlow; ROIs/s after a warm-up run, best of {REPEATS}\n"
    )
    print("| measure | 1 worker | 2 workers |")
    print("|---|---:|---:|")
    print(f"| end-to-end ROIs/s (plan + read + predict + write + consolidate) | {one['e2e']:.0f} | {two['e2e']:.0f} |")
    print(
        f"| model-only ROIs/s, same workers (`Bundle.predict` on decoded images) | {one['model']:.0f} "
        f"| {two['model']:.0f} |"
    )
    print(
        f"| **end-to-end / model-only** | **{one['e2e'] / one['model']:.2f}** | **{two['e2e'] / two['model']:.2f}** |"
    )
    print(
        f"| serial loop ROIs/s (read, predict, write, next bin; one worker process) | {one['serial']:.0f} "
        f"| {two['serial']:.0f} |"
    )
    print(f"| end-to-end / serial loop | {one['e2e'] / one['serial']:.2f} | {two['e2e'] / two['serial']:.2f} |")
    print(f"| worker peak RSS after {MEMORY_FIRST_BINS} bins (MiB) | {one['rss_first']:.0f} | |")
    print(
        f"| worker peak RSS after {MEMORY_FIRST_BINS} + {args.bins} bins (MiB) | {one['rss_all']:.0f} "
        f"| {two['rss_all']:.0f} |"
    )


if __name__ == "__main__":
    main()
