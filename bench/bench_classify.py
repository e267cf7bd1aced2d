"""Benchmark of the classification job: how close the whole pipeline gets to the bare model, and what it costs.

Measured in one run, on one synthetic archive, with one (untrained) bundle, on 1 and 2 local CPU workers:
- end-to-end ROIs/s of `run_classification` (list, read, decode, preprocess, predict, commit, consolidate), after a
  warm-up run (model loaded, TensorFlow started, functions compiled); with `--cli`, also the wall clock of the
  whole `ifcbflow classify` command (cluster start, imports and model loading included);
- the bare model on the same workers: the compiled predictor on preprocessed uint8 batches already in memory, all
  workers at once; the headline is end-to-end / bare model (1.0 = reading, preprocessing and writing fully hidden);
- a serial loop as peers write it (read a bin, preprocess + predict, write it, next bin) in one worker process;
- the workers' peak resident memory after 10 bins and after the whole archive (it must stay flat);
- where the end-to-end run's time went, by stage (`RunSummary.stage_seconds`: read, preprocess, feed_wait (the model
  idle), batch, infer, commit in the workers; start and consolidate in the client).

`--arch zero-cost` is a model that costs almost nothing (a mean and one dense layer): the pipeline's own ceiling.

    .venv/bin/python bench/bench_classify.py --arch zero-cost --bins 1000 --rois 100 --cli
    .venv/bin/python bench/bench_classify.py --arch utopia-b3 --bins 200 --rois 100
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import model as _quiet_tensorflow  # noqa: F401  (first: it keeps TensorFlow's start-up lines quiet)

WARMUP_BINS = 4
MEMORY_FIRST_BINS = 10
IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))


def worker_bundle(bundle_url: str, bundle_hash: str, runtime: str | None) -> object:
    """The bundle as a CPU worker of the job loads it: for the runtime `model.inference.runtimes` chooses (or
    `runtime`)."""
    from model.bundle import read_bundle_info, runtimes
    from model.inference.runtimes import choose_runtime
    from pipeline.job.worker import get_bundle

    chosen = choose_runtime(runtimes(read_bundle_info(bundle_url)), gpu=False, requested=runtime)
    return get_bundle(bundle_url, None, bundle_hash, chosen)


def bare_model_rate(bundle_url: str, bundle_hash: str, runtime: str | None, seconds: float) -> tuple[int, float]:
    """Task on one worker: the job's predictor on one preprocessed uint8 batch of the job's size, again and again,
    for `seconds`."""
    import numpy as np

    from model.inference.predictors import make_predictor
    from pipeline.cluster.worker_setup import model_threads
    from pipeline.job.worker import CPU_BATCH, ONNX_CPU_BATCH

    bundle = worker_bundle(bundle_url, bundle_hash, runtime)
    predictor = make_predictor(bundle, threads=model_threads())
    batch = ONNX_CPU_BATCH if predictor.backend == "onnxruntime" else CPU_BATCH
    size = bundle.preprocess.size
    inputs = np.random.default_rng(0).integers(0, 256, (batch, size, size, 1), dtype=np.uint8)
    predictor.predict(inputs)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        list(predictor.run((inputs, None) for _ in range(4)))
        done += 4 * batch
    return done, time.perf_counter() - started


def cluster_bare_model(client, bundle_url: str, bundle_hash: str, runtime: str | None, seconds: float = 10.0) -> float:
    """All workers predicting at once, each on its own task: the cluster's bare-model ROIs/s."""
    workers = list(client.scheduler_info(n_workers=-1)["workers"])
    futures = [
        client.submit(bare_model_rate, bundle_url, bundle_hash, runtime, seconds, workers=[w], pure=False)
        for w in workers
    ]
    return sum(n / s for n, s in client.gather(futures))


def peak_rss_mib(client) -> float:
    from pipeline.job.worker import peak_rss_bytes

    return max(client.run(peak_rss_bytes).values()) / 2**20


def serial_loop(archive: str, bundle_url: str, bundle_hash: str, store_url: str) -> float:
    """Task: the usual script, one bin after another with nothing overlapped (read, predict, write, next bin)."""
    import numpy as np

    from model.bundle import read_bundle_info
    from model.inference.predictors import predict
    from pipeline.ifcb.archive import list_bins
    from pipeline.ifcb.bins import read_bin_images, read_bin_meta
    from pipeline.results.partitions import partition_id
    from pipeline.results.records import BinResult
    from pipeline.results.store import ResultStore

    bundle = worker_bundle(bundle_url, bundle_hash, None)
    store = ResultStore(store_url)
    store.prepare(bundle_info=read_bundle_info(bundle_url), bundle_url=bundle_url, archive_url=archive)
    fs, bins, _ = list_bins(archive)
    rois, started = 0, time.perf_counter()
    for files in bins:
        meta = read_bin_meta(fs, files)
        images = read_bin_images(fs, meta)
        scores = predict(bundle, [image for _, image in images])
        numbers = np.array([n for n, _ in images], dtype=np.int64)
        result = BinResult(files.bin.id, files.bin.time, numbers, scores, meta.ml_analyzed)
        store.commit_partition(partition_id([files.bin.id], "serial"), [result], bundle.classes)
        rois += len(images)
    return rois / (time.perf_counter() - started)


def cluster_runs(n_workers: int, archive: str, bundle_url: str, bundle_hash: str, work: Path, args) -> dict:
    """On one cluster: warm up, the memory baseline, a timed full run, the bare model, the serial loop."""
    from pipeline.cluster.client import open_client
    from pipeline.ifcb.archive import list_bins
    from pipeline.job.run import ClassifyRequest, run_classification

    ids = [files.bin.id for files in list_bins(archive)[1]]
    out: dict[str, float] = {}
    with open_client("local", workers=n_workers, dashboard_address=None) as client:
        def request(name: str, bin_ids: list[str] | None = None) -> ClassifyRequest:
            store = str(work / f"{name}-{n_workers}.zarr")
            return ClassifyRequest(archive, bundle_url, store, bin_ids=bin_ids, runtime=args.runtime)

        run_classification(client, request("warm", ids[-WARMUP_BINS:]))
        run_classification(client, request("first", ids[:MEMORY_FIRST_BINS]))
        out["rss_first"] = peak_rss_mib(client)
        summary = run_classification(client, request("e2e"))
        out["e2e"], out["rois"] = summary.rois / summary.seconds, summary.rois
        out["stages"], out["seconds"] = dict(summary.stage_seconds), summary.seconds
        out["rss_all"] = peak_rss_mib(client)
        out["model"] = cluster_bare_model(client, bundle_url, bundle_hash, args.runtime)
        if args.serial:
            out["serial"] = client.submit(
                serial_loop, archive, bundle_url, bundle_hash, str(work / f"serial-{n_workers}.zarr"), pure=False
            ).result()
    if args.cli:
        store = work / f"cli-{n_workers}.zarr"
        started = time.perf_counter()
        done = subprocess.run(
            [IFCBFLOW, "classify", archive, "--model", bundle_url, "--out", str(store), "--workers", str(n_workers),
             "--json", "--runtime", args.runtime or "auto"], capture_output=True, text=True, check=True,
        )  # fmt: skip
        wall = time.perf_counter() - started
        out["cli"], out["cli_run"] = json.loads(done.stdout)["rois"] / wall, json.loads(done.stdout)["rois_per_second"]
    return out


def build_bundle(url: str, arch: str, size: int) -> str:
    """An untrained bundle of `arch`, or of the near-zero-cost model, with its ONNX twin (as `train` writes it)."""
    import keras

    from model.architectures import build
    from model.bundle import Bundle, save_bundle
    from model.convert.to_onnx import with_onnx_twin
    from model.preprocess import PreprocessConfig
    from pipeline.ifcb.synth import SYNTH_CLASSES

    keras.utils.set_random_seed(0)
    classes = SYNTH_CLASSES[:4]
    if arch == "zero-cost":
        inputs = keras.Input((size, size, 1), dtype="uint8", name="image")
        x = keras.layers.Rescaling(1 / 255, name="to_float")(inputs)
        x = keras.layers.GlobalAveragePooling2D(name="mean")(x)
        outputs = keras.layers.Dense(len(classes), activation="softmax", name="probabilities")(x)
        model = keras.Model(inputs, outputs, name="zero_cost")
    else:
        model = build(arch, len(classes), size)
    return save_bundle(with_onnx_twin(Bundle(model, classes, PreprocessConfig(size=size), arch)), url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=200, help="Bins in the archive.")
    parser.add_argument("--rois", type=int, default=100, help="ROIs per bin.")
    parser.add_argument("--arch", default="small-cnn", help="zero-cost, small-cnn or utopia-b3.")
    parser.add_argument("--size", type=int, default=128, help="Model input size.")
    parser.add_argument("--workers", default="1,2", help="Worker counts to measure.")
    parser.add_argument("--cli", action="store_true", help="Also time the whole `ifcbflow classify` command.")
    parser.add_argument("--serial", action="store_true", help="Also time a serial loop as peers write it.")
    parser.add_argument("--runtime", choices=("onnx", "keras"), help="Inference runtime (default: the job's choice).")
    parser.add_argument("--archive", help="Reuse (or create) the synthetic archive here.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.ERROR)

    from pipeline.cluster.local import cores
    from pipeline.ifcb.synth import write_synthetic_archive
    from pipeline.job.worker import STAGES

    with tempfile.TemporaryDirectory(prefix="bench-classify-") as tmp:
        work = Path(tmp)
        archive = args.archive or str(work / "archive")
        if not Path(archive).exists():
            made = time.perf_counter()
            write_synthetic_archive(archive, bins=args.bins, rois=args.rois, classes=4, seed=0)
            print(f"synthesised {args.bins} bins x {args.rois} ROIs in {time.perf_counter() - made:.0f} s")
        bundle_url = str(work / "bundle.zip")
        bundle_hash = build_bundle(bundle_url, args.arch, args.size)
        counts = [int(n) for n in args.workers.split(",")]
        runs = {n: cluster_runs(n, archive, bundle_url, bundle_hash, work, args) for n in counts}

    rois = int(next(iter(runs.values()))["rois"])
    print(f"\n{rois:,} ROIs in {args.bins} bins, {args.arch} at {args.size}x{args.size}, {cores()} cores, "
          f"runtime {args.runtime or 'auto (ONNX Runtime on CPU)'}, after a warm-up run\n")  # fmt: skip
    print("| measure | " + " | ".join(f"{n} worker{'s' if n > 1 else ''}" for n in counts) + " |")
    print("|---|" + "---:|" * len(counts))

    def row(label: str, cell) -> None:
        print(f"| {label} | " + " | ".join(cell(runs[n]) for n in counts) + " |")

    row("end-to-end ROIs/s (`run_classification`)", lambda r: f"{r['e2e']:,.0f}")
    if args.cli:
        row("`ifcbflow classify` wall clock ROIs/s (cluster start included)", lambda r: f"{r['cli']:,.0f}")
    row("bare model ROIs/s, same workers (uint8 batches in memory)", lambda r: f"{r['model']:,.0f}")
    row("**end-to-end / bare model**", lambda r: f"**{r['e2e'] / r['model']:.2f}**")
    if args.serial:
        row("serial loop ROIs/s (read, predict, write, next bin; one process)", lambda r: f"{r['serial']:,.0f}")
        row("end-to-end / serial loop", lambda r: f"{r['e2e'] / r['serial']:.2f}")
    row(f"worker peak RSS after {MEMORY_FIRST_BINS} bins (MiB)", lambda r: f"{r['rss_first']:.0f}")
    row("worker peak RSS after the whole archive (MiB)", lambda r: f"{r['rss_all']:.0f}")

    print("\nWhere the end-to-end run's time went (`RunSummary.stage_seconds`, seconds; feeder stages in "
          "thread-seconds summed over bins, task-thread stages summed over partitions, `start` and `consolidate` "
          "in the client):\n")
    print("| stage | " + " | ".join(f"{n} worker{'s' if n > 1 else ''}" for n in counts) + " |")
    print("|---|" + "---:|" * len(counts))
    row("wall clock of the run", lambda r: f"{r['seconds']:.1f}")
    for stage in ("start", *STAGES, "consolidate"):
        row(stage, lambda r, stage=stage: f"{r['stages'].get(stage, 0.0):.1f}")


if __name__ == "__main__":
    main()
