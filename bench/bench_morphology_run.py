"""What `classify --morphology` adds to a classification run: the wall clock of the whole `ifcbflow classify`
command on the same archive of real ROIs, without and with morphology, each into a fresh store.

The archive is `--bins` hard links (they cost no disk) of the shared real new-style bin (19 ROIs), each under the id
of its own 20-minute slot. The bundle is an untrained model of `--arch` with its ONNX twin, as `train` writes it
(`bench_classify.build_bundle`); the command runs as a user runs it, on `--workers` local workers, after one
warm-up run (imports in the page cache). Medians of `--repeats` runs of each.

    .venv/bin/python bench/bench_morphology_run.py [--bins 50] [--arch utopia-b3] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import model as _quiet_tensorflow  # noqa: F401  (first: it keeps TensorFlow's start-up lines quiet)

IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))
SHARED_BINS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ifcb" / "bins"
REAL_BIN = "D20130526T095207_IFCB013"


def real_archive(folder: Path, n_bins: int) -> int:
    """`n_bins` hard links of the real bin, one day folder per 72 bins; returns the ROIs in all."""
    start = datetime(2013, 5, 26, 9, 52, 7, tzinfo=UTC)
    for i in range(n_bins):
        when = start + timedelta(minutes=20 * i)
        day = folder / f"D{when:%Y}" / f"D{when:%Y%m%d}"
        day.mkdir(parents=True, exist_ok=True)
        for ext in ("hdr", "adc", "roi"):
            os.link(SHARED_BINS / f"{REAL_BIN}.{ext}", day / f"D{when:%Y%m%dT%H%M%S}_IFCB013.{ext}")
    return 19 * n_bins


def classify(archive: Path, bundle: str, out: Path, workers: int, *flags: str) -> float:
    started = time.perf_counter()
    run = subprocess.run([IFCBFLOW, "classify", str(archive), "--model", bundle, "--out", str(out), "--workers",
                          str(workers), "--json", *flags], capture_output=True, text=True)  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-3000:])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=int, default=50)
    parser.add_argument("--arch", default="utopia-b3", help="zero-cost, small-cnn or utopia-b3")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not SHARED_BINS.exists():
        sys.exit(f"needs the shared real bins at {SHARED_BINS}")
    from bench_classify import build_bundle

    with tempfile.TemporaryDirectory(prefix="bench-morphology-") as tmp:
        work = Path(tmp)
        rois = real_archive(work / "archive", args.bins)
        bundle = str(work / "bundle.zip")
        build_bundle(bundle, args.arch, args.size)
        classify(work / "archive", bundle, work / "warm-up.zarr", args.workers)
        times: dict[str, list[float]] = {"classify": [], "classify --morphology": []}
        for i in range(args.repeats):
            times["classify"].append(classify(work / "archive", bundle, work / f"plain-{i}.zarr", args.workers))
            times["classify --morphology"].append(
                classify(work / "archive", bundle, work / f"measured-{i}.zarr", args.workers, "--morphology")
            )
    plain, measured = (statistics.median(values) for values in times.values())
    print(f"\n{rois:,} real ROIs ({args.bins} hard links of {REAL_BIN}), {args.arch} at {args.size}x{args.size}, "
          f"{args.workers} workers, medians of {args.repeats}\n")  # fmt: skip
    print("| command | wall clock (s) | ROIs/s |\n|---|---:|---:|")
    for label, seconds in (("classify", plain), ("classify --morphology", measured)):
        print(f"| `{label}` | {seconds:.1f} | {rois / seconds:,.0f} |")
    print(f"\nmorphology adds {100 * (measured - plain) / plain:.0f} % to the run's wall clock "
          f"({rois / max(measured - plain, 1e-9):,.0f} ROIs/s of morphology on {args.workers} workers)")  # fmt: skip


if __name__ == "__main__":
    main()
