"""Peak memory of `ifcbflow train` against the labelled set's size, and streamed against in-memory input speed.

The archive is `bench_scale`'s: bins in day folders whose three files are hard links to copies of one real bin
(`../shared/data/ifcb/bins`, 19 ROIs with images), so a million labelled ROIs cost little disk; every ROI with an
image is labelled with one of four classes (seeded; the model learns nothing, which costs the same). Each size runs
`ifcbflow train` (small-cnn, 1 epoch, one replica) twice, each in a fresh process under a fresh wrapper process that
reads the child's peak RSS with `getrusage(RUSAGE_CHILDREN)`: first preparing the set, then on the prepared set
(nothing read from the archive). Then, on the largest set's training rows (at most `--throughput-rois`), one epoch of
the same model fed by the streamed prepared set and by an in-memory numpy array of the same images, in one process,
each timed from its second step (tracing and start-up left out).

    nice -n 10 .venv/bin/python bench/bench_train_memory.py --rois 20000 100000 --work /tmp/ifcbflow-train
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import REAL_BIN, REAL_BINS, build_archive
from bench_store_requests import scale_ids

IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
CLASSES = ("chain", "needle", "round_cell", "star")
WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "started = time.perf_counter()\n"
    "log = open(sys.argv[1], 'w')\n"
    "code = subprocess.run(sys.argv[2:], stdout=log, stderr=log).returncode\n"
    "print(code, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
)


def real_roi_numbers() -> list[int]:
    from pipeline.ifcb.archive import bin_files_at
    from pipeline.ifcb.bins import read_bin_images, read_bin_meta

    fs, files = bin_files_at(str(REAL_BINS / REAL_BIN))
    return [number for number, _ in read_bin_images(fs, read_bin_meta(fs, files))]


def labelled_archive(work: Path, rois: int) -> tuple[Path, Path, int]:
    """(archive, labels CSV, labelled ROIs): as many bins as `rois` needs, every ROI with an image labelled."""
    numbers = real_roi_numbers()
    ids = scale_ids(math.ceil(rois / len(numbers)))
    archive = work / f"archive-{len(ids)}"
    build_archive(archive, ids)
    labels = work / f"labels-{rois}.csv"
    rng = np.random.default_rng(0)
    lines, n = ["roi_id,class"], 0
    for bin_id in ids:
        for number in numbers[: rois - n]:
            lines.append(f"{bin_id}_{number:05d},{CLASSES[rng.integers(len(CLASSES))]}")
        n = min(rois, n + len(numbers))
    labels.write_text("\n".join(lines) + "\n")
    return archive, labels, n


def train_once(args: list[str], log: Path) -> tuple[int, float, float]:
    """(exit code, seconds, peak RSS MiB) of `ifcbflow train ARGS` in a fresh process under a fresh wrapper."""
    wrapper = subprocess.run([sys.executable, "-c", WRAPPER, str(log), IFCBFLOW, "train", *args], env=ENV,
                             capture_output=True, text=True, check=True)  # fmt: skip
    code, seconds, peak = wrapper.stdout.split()
    return int(code), float(seconds), float(peak)


THROUGHPUT = r"""
import json, sys, time
import numpy as np
from model.training.train import make_strategy
strategy = make_strategy(1)
import keras
from model import architectures
from model.training.data import split_by_group
from model.training.prepared import PreparedSet
from model.training.train import make_dataset

prepared, limit, batch = PreparedSet(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
labels, groups = prepared.labels(), prepared.groups()
rows = np.flatnonzero(labels >= 0)
train_rows = rows[split_by_group(labels[rows], groups[rows], 0.15, 0.15, 0)[0]][:limit]

class Clock(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if batch == 1:
            self.began = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.began

def epoch(data, **fit):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = architectures.build("small-cnn", len(prepared.classes), prepared.config.size)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", weighted_metrics=["accuracy"])
    clock = Clock()
    model.fit(data, epochs=1, verbose=0, callbacks=[clock], **fit)
    steps = len(train_rows) // batch
    return (steps - 1) * batch / clock.seconds

streamed = epoch(make_dataset(prepared, train_rows, batch, training=True, seed=0, augment=False))
images = np.concatenate(list(prepared.iter_batches(np.sort(train_rows), 4096)))
y = labels[np.sort(train_rows)].astype(np.int32)
in_memory = epoch(images, y=y, batch_size=batch, shuffle=True)
print(json.dumps({"rois": len(train_rows), "streamed": streamed, "in_memory": in_memory}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rois", type=int, nargs="+", default=[20_000, 100_000, 200_000],
                        help="Labelled ROIs per run (up to 1,000,000 and more).")  # fmt: skip
    parser.add_argument("--work", default="/tmp/ifcbflow-train")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--throughput-rois", type=int, default=40_000,
                        help="Training rows timed for images/s; 0 leaves that comparison out.")  # fmt: skip
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    common = ["--arch", "small-cnn", "--epochs", "1", "--replicas", "1", "--image-size", str(args.image_size),
              "--batch-size", str(args.batch_size)]  # fmt: skip
    print(f"small-cnn, 1 epoch, 1 replica, {args.image_size}x{args.image_size} inputs, batch {args.batch_size}; "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"{'labelled ROIs':>13s} {'run':>22s} {'s':>7s} {'peak RSS MiB':>13s} {'images/s':>9s} {'stall s':>8s}")
    prepared = None
    for rois in args.rois:
        archive, labels, n = labelled_archive(work, rois)
        prepared = work / f"prepared-{n}"
        shutil.rmtree(prepared, ignore_errors=True)
        for run in ("prepare + train", "train on prepared set"):
            out = work / f"model-{n}.zip"
            shutil.rmtree(work / f"model-{n}.zip.ckpt", ignore_errors=True)
            code, seconds, peak = train_once([str(archive), "--labels", str(labels), *common, "--prepared",
                                              str(prepared), "--out", str(out)], work / f"train-{n}.log")  # fmt: skip
            if code != 0:
                print(f"{n:>13,d} {run:>22s} failed with exit code {code}: see {work / f'train-{n}.log'}")
                continue
            from model.bundle import read_bundle_info

            (epoch,) = read_bundle_info(str(out))["provenance"]["history"]
            print(f"{n:>13,d} {run:>22s} {seconds:7.0f} {peak:13,.0f} {epoch['images_per_s_per_replica']:9.0f} "
                  f"{epoch['input_stall_s']:8.1f}")  # fmt: skip
    if prepared is not None and args.throughput_rois > 0:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", THROUGHPUT, str(prepared), str(args.throughput_rois),
                                 str(args.batch_size)], env=ENV, capture_output=True, text=True)  # fmt: skip
        if result.returncode:
            print(result.stderr[-3000:])
            return
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"one epoch of {figures['rois']:,} training ROIs (no augmentation), from the 2nd step: streamed "
              f"{figures['streamed']:.0f} images/s, in-memory numpy {figures['in_memory']:.0f} images/s (ratio "
              f"{figures['streamed'] / figures['in_memory']:.2f}; {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
