"""Preprocessing throughput on one core, and its parity with the contract written the plain way.

ROIs/s of `preprocess_into` (batches of 256 into one reused uint8 buffer, what a feeder does) and of `preprocess`
(a new array per ROI), pinned to one CPU with OpenCV's own threads off, each timed run over at least 2,000 ROIs,
for: the shared labelled ROIs (PNG), every ROI of the shared real bins (read with `pipeline.ifcb.bins`), and large
synthetic ROIs (median about 66,000 pixels). Parity: grey levels that differ from the plain OpenCV implementation
(`tests/preprocess_support.reference`) on the real ROIs. The load average is printed: compare rates only from an
idle machine. Prints markdown tables.

    .venv/bin/python bench/bench_preprocess.py [--repeats 7] [--large 400]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from model.preprocess import PreprocessConfig, preprocess, preprocess_batch, preprocess_into

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "tests"))
from preprocess_support import bin_rois, labelled_rois, reference  # noqa: E402


def large_rois(n: int, seed: int = 0) -> list[np.ndarray]:
    """ROIs of log-normal area around 66,000 pixels and log-normal aspect ratio, with smooth content plus noise."""
    rng = np.random.default_rng(seed)
    rois = []
    for area, aspect in zip(66_000 * rng.lognormal(0, 0.4, n), rng.lognormal(0, 0.5, n), strict=True):
        height, width = max(1, round((area / aspect) ** 0.5)), max(1, round((area * aspect) ** 0.5))
        y, x = np.mgrid[:height, :width]
        blob = 120 * np.exp(-(((y - height / 2) / height) ** 2 + ((x - width / 2) / width) ** 2) * 8)
        rois.append(np.clip(blob + rng.normal(40, 6, (height, width)), 0, 255).astype(np.uint8))
    return rois


def median_rate(run: Callable[[], object], n: int, repeats: int) -> float:
    """ROIs per second of the median of `repeats` timed runs, after one untimed warm-up."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def throughput(rois: list[np.ndarray], repeats: int, batch: int = 256, least: int = 2000) -> dict:
    config = PreprocessConfig()
    work = rois * -(-least // len(rois))  # small sets repeat, so a timed run is long enough to measure
    chunks = [work[i : i + batch] for i in range(0, len(work), batch)]
    buffer = np.empty((batch, config.size, config.size, 1), np.uint8)

    def feed() -> None:
        for chunk in chunks:
            preprocess_into(chunk, config, buffer[: len(chunk)])

    return {
        "into": median_rate(feed, len(work), repeats),
        "each": median_rate(lambda: [preprocess(roi, config) for roi in work], len(work), repeats),
    }


def parity(rois: list[np.ndarray]) -> dict:
    config = PreprocessConfig()
    ours = preprocess_batch(rois, config)[..., 0].astype(np.int16)
    theirs = np.stack([reference(roi, config.size, config.pad_value) for roi in rois]).astype(np.int16)
    difference = np.abs(ours - theirs)
    return {"pixels": difference.size, "max": int(difference.max()), "off": float(np.mean(difference > 0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--large", type=int, default=400, help="Number of large synthetic ROIs.")
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core ...
    cv2.setNumThreads(1)  # ... and no OpenCV worker threads

    real = []
    if (SHARED / "utopia").is_dir() and (SHARED / "ifcb").is_dir():
        real = [("real: labelled PNGs", labelled_rois(SHARED / "utopia")), ("real: bins", bin_rois(SHARED / "ifcb"))]
    else:
        print(f"(real ROIs skipped: {SHARED} not found)")
    sources = [*real, ("synthetic large", large_rois(args.large))]
    load = os.getloadavg()[0]
    print(f"\n### Preprocessing to 128x128 uint8, one core (OpenCV {cv2.__version__}; load average {load:.2f})\n")
    print("| ROIs | n | median px | `preprocess_into` ROIs/s | µs/ROI | `preprocess` ROIs/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rois in sources:
        row = throughput(rois, args.repeats)
        median_px = int(np.median([roi.size for roi in rois]))
        print(f"| {name} | {len(rois)} | {median_px:,} | {row['into']:,.0f} | {1e6 / row['into']:.1f} "
              f"| {row['each']:,.0f} |")  # fmt: skip
    if real:
        print("\n### Parity with the contract written the plain way (resize, copyMakeBorder, normalize)\n")
        print("| ROIs | pixels | max difference (grey levels) | pixels that differ |")
        print("|---|---:|---:|---:|")
        for name, rois in real:
            row = parity(rois)
            print(f"| {name} | {row['pixels']:,} | {row['max']} | {row['off']:.4%} |")


if __name__ == "__main__":
    main()
