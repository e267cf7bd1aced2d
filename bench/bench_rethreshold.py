"""`rethreshold` against `classify` on the same store and the same 2-worker LocalCluster: what changing thresholds
costs now that it reads the stored scores instead of running the model again.

    nice -n 10 .venv/bin/python bench/bench_rethreshold.py --arch small-cnn --bins 200 --rois 100
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench_classify import build_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="small-cnn", help="zero-cost, small-cnn or utopia-b3.")
    parser.add_argument("--bins", type=int, default=200)
    parser.add_argument("--rois", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from pipeline.cluster.client import open_client
    from pipeline.ifcb.synth import write_synthetic_archive
    from pipeline.job.rethreshold import rethreshold_store
    from pipeline.job.run import ClassifyRequest, run_classification

    work = Path(tempfile.mkdtemp(prefix="ifcbflow-rethreshold-"))
    archive = str(work / "archive")
    write_synthetic_archive(archive, bins=args.bins, rois=args.rois, classes=4, seed=1)
    bundle = str(work / "bundle.zip")
    build_bundle(bundle, args.arch, 128 if args.arch == "utopia-b3" else 64)
    warm = str(work / "warm.zarr")
    with open_client("local", workers=args.workers, dashboard_address=None) as client:
        run_classification(client, ClassifyRequest(archive, bundle, warm))  # warm-up: workers load the model
        store = str(work / "store.zarr")
        started = time.perf_counter()
        classified = run_classification(client, ClassifyRequest(archive, bundle, store))
        classify_s = time.perf_counter() - started
        timings = []
        for i, value in enumerate((0.5, 0.6)):
            thresholds = work / f"thresholds-{i}.json"
            thresholds.write_text(json.dumps({"thresholds": {"round_cell": value, "needle": value}}))
            started = time.perf_counter()
            done = rethreshold_store(client, store, {}, str(thresholds))
            timings.append(time.perf_counter() - started)
    print(f"\n| {args.bins} bins x {args.rois} ROIs, {args.arch}, {args.workers} workers | seconds | ROIs/s |")
    print("|---|---:|---:|")
    print(f"| classify | {classify_s:.2f} | {classified.rois / classify_s:,.0f} |")
    for i, seconds in enumerate(timings):
        print(f"| rethreshold #{i + 1} ({done.partitions} partitions, {done.tasks} tasks) | {seconds:.2f} | "
              f"{done.rois / seconds:,.0f} |")  # fmt: skip
    print(f"rethreshold / classify: {min(timings) / classify_s:.3f}")


if __name__ == "__main__":
    main()
