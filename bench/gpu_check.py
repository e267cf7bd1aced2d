"""The GPU check: one table of what a GPU node gives, measured in one run (run it through `bench/gpu_check.sh`).

- model only: utopia-b3 at 128x128 on the GPU, uint8 input cast on the device, float32 and mixed bfloat16, over
  batch sizes, through the same compiled predictor the job uses (`model.inference.predictors`);
- feeders: ROIs/s that the feeder processes of one GPU worker read, decode and preprocess from a local archive;
- end to end: `run_classification` of that archive on the embedded local cluster (one worker per GPU), after a
  warm-up run; and the ratio end to end / model only (at the job's batch size and precision, float32).

Runs on the Keras backend in KERAS_BACKEND (TensorFlow when installed, else JAX). `--quick` shrinks everything so
that the script can be tried on a CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

SIZE = 128


def model_only(batches: list[int], policy: str, seconds: float) -> dict[int, float]:
    """ROIs/s of utopia-b3 (random weights) on random uint8 batches, for each batch size."""
    import keras
    import numpy as np

    from model.architectures import build
    from model.inference.predictors import Predictor

    keras.config.set_dtype_policy(policy)
    try:
        model = build("utopia-b3", 10, SIZE)
    finally:
        keras.config.set_dtype_policy("float32")
    predictor = Predictor(model)
    rates = {}
    for batch in batches:
        inputs = np.random.default_rng(0).integers(0, 256, (batch, SIZE, SIZE, 1), dtype=np.uint8)
        list(predictor.run((inputs, None) for _ in range(3)))  # compile and warm up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            list(predictor.run((inputs, None) for _ in range(8)))
            done += 8 * batch
        rates[batch] = done / (time.perf_counter() - started)
    return rates


def make_archive(root: Path, bins: int, unique: int, rois: int) -> None:
    """`bins` bins of `rois` ROIs: `unique` synthesised ones, the rest copies of them under later sample times."""
    from pipeline.ifcb.synth import write_synthetic_archive

    made = write_synthetic_archive(str(root), bins=unique, rois=rois, classes=10, seed=0, flat=True)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for i in range(bins - unique):
        source = made[i % unique]
        name = f"D{start + timedelta(minutes=20 * i):%Y%m%dT%H%M%S}_IFCB999"
        for ext in ("hdr", "adc", "roi"):
            shutil.copyfile(root / f"{source}.{ext}", root / f"{name}.{ext}")


def feeders_only(archive: Path, processes: int) -> float:
    """ROIs/s the feeder processes of one worker deliver (read, decode, preprocess), with no model."""
    import numpy as np

    from model.preprocess import PreprocessConfig
    from pipeline.ifcb.archive import list_bins
    from pipeline.job.feeder import Feeder, LoadedBin

    _, bins, _ = list_bins(str(archive))
    feeder = Feeder(str(archive), {}, PreprocessConfig(size=SIZE), np.dtype(np.uint8), processes=processes)
    try:
        for item in feeder.load(bins[: 2 * processes]):  # start the processes
            if isinstance(item, LoadedBin):
                item.release()
        rois, started = 0, time.perf_counter()
        for item in feeder.load(bins):
            if isinstance(item, LoadedBin):
                rois += len(item.roi_numbers)
                item.release()
        return rois / (time.perf_counter() - started)
    finally:
        feeder.close()


def end_to_end(archive: Path, work: Path) -> tuple[float, int, int]:
    """(ROIs/s, ROIs, workers) of the job on the embedded local cluster, after a warm-up run on a few bins."""
    from model.architectures import build
    from model.bundle import Bundle, save_bundle
    from model.preprocess import PreprocessConfig
    from pipeline.cluster.client import open_client
    from pipeline.ifcb.archive import list_bins
    from pipeline.job.run import ClassifyRequest, run_classification

    bundle = str(work / "utopia-b3.zip")
    save_bundle(Bundle(build("utopia-b3", 10, SIZE), [f"c{i}" for i in range(10)], PreprocessConfig(size=SIZE),
                       "utopia-b3"), bundle)  # fmt: skip
    ids = [files.bin.id for files in list_bins(str(archive))[1]]
    with open_client("local", dashboard_address=None) as client:
        workers = len(client.scheduler_info(n_workers=-1)["workers"])
        run_classification(client, ClassifyRequest(str(archive), bundle, str(work / "warm.zarr"), bin_ids=ids[:8]))
        summary = run_classification(client, ClassifyRequest(str(archive), bundle, str(work / "run.zarr")))
    return summary.rois / summary.seconds, summary.rois, workers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Tiny sizes: check that the script runs (e.g. on CPU).")
    parser.add_argument("--out", help="Also write the table to this file.")
    args = parser.parse_args()

    import keras

    import model  # noqa: F401  (first: it keeps TensorFlow's native start-up lines quiet)
    from pipeline.cluster.devices import visible_gpus
    from pipeline.cluster.local import cores

    quick = args.quick
    batches = [64, 256] if quick else [256, 1024, 4096]
    seconds = 2.0 if quick else 10.0
    lines = [f"backend {keras.backend.backend()}, GPUs {visible_gpus() or 'none'}, {cores()} cores, "
             f"python {sys.version.split()[0]}, keras {keras.__version__}", ""]  # fmt: skip
    fp32 = model_only(batches, "float32", seconds)
    bf16 = model_only(batches, "mixed_bfloat16", seconds)
    lines += ["| model only, utopia-b3 128x128, uint8 input | " + " | ".join(f"batch {b}" for b in batches) + " |",
              "|---|" + "---:|" * len(batches),
              "| float32 ROIs/s | " + " | ".join(f"{fp32[b]:,.0f}" for b in batches) + " |",
              "| mixed bfloat16 ROIs/s | " + " | ".join(f"{bf16[b]:,.0f}" for b in batches) + " |", ""]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        archive = work / "archive"
        make_archive(archive, bins=8 if quick else 600, unique=4 if quick else 40, rois=50 if quick else 1000)
        processes = max(1, cores() - 2)
        feeders = feeders_only(archive, processes)
        e2e, rois, workers = end_to_end(archive, work)
    from pipeline.job.worker import CPU_BATCH, GPU_BATCH

    job_batch = GPU_BATCH if visible_gpus() else CPU_BATCH
    bare = fp32.get(job_batch) or max(fp32.values())
    lines += ["| pipeline | ROIs/s |", "|---|---:|",
              f"| feeders of one worker ({processes} processes: read, decode, preprocess) | {feeders:,.0f} |",
              f"| end to end `classify`, {rois:,} ROIs, {workers} worker(s), float32, batch {job_batch} | {e2e:,.0f} |",
              f"| **end to end / model only (float32, batch {job_batch})** | **{e2e / bare:.2f}** |"]  # fmt: skip
    table = "\n".join(lines)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
