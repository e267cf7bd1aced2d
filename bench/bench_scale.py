"""What a run and a poll cost on a large archive, against the work they are asked for (local disk, one machine).

The archive is laid out by day (`D2020/D20200101/`, 72 bins a day, 20 minutes apart) and every bin's three files are
hard links to a few copies of one real bin (`../shared/data/ifcb/bins`), so a million bins cost little disk; a store
holds every bin as complete (`bench_store_requests.complete_store`). Each measurement runs in a fresh process, so
its peak RSS is its own:

- one day of the archive, listed with `--start/--end`, against an archive of that day alone, and against a listing
  of the whole archive (what every run did before: one recursive listing, then filtering);
- a full no-op rerun's planning: the ledger, then the archive streamed and every bin found complete;
- the time until the first partition is formed, streamed against listing the whole archive first;
- `rethreshold` against `classify` on the same store (`--rethreshold-bins`, a zero-cost model on 2 workers).

    nice -n 10 .venv/bin/python bench/bench_scale.py --bins 1000000 --work /tmp/ifcbflow-scale
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench_store_requests import SCALE_START, complete_store, scale_ids

REAL_BINS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ifcb" / "bins"
REAL_BIN = "D20130526T095207_IFCB013"
#: Hard links per source file (ext4 allows 65,000).
LINKS_PER_SOURCE = 60_000


def build_archive(root: Path, ids: list[str]) -> None:
    """Every bin of `ids` in its day folder, its files hard links to copies of one real bin (skipped when built)."""
    marker = root / ".built"
    if marker.exists() and marker.read_text() == str(len(ids)):
        return
    shutil.rmtree(root, ignore_errors=True)
    sources = root.parent / f"{root.name}-sources"
    sources.mkdir(parents=True, exist_ok=True)
    for i, bin_id in enumerate(ids):
        copy = sources / str(i // LINKS_PER_SOURCE)
        if i % LINKS_PER_SOURCE == 0:
            copy.mkdir(exist_ok=True)
            for ext in ("hdr", "adc", "roi"):
                shutil.copy(REAL_BINS / f"{REAL_BIN}.{ext}", copy / f"bin.{ext}")
        folder = root / f"D{bin_id[1:5]}" / bin_id[:9]
        if i % 72 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        for ext in ("hdr", "adc", "roi"):
            os.link(copy / f"bin.{ext}", folder / f"{bin_id}.{ext}")
    marker.write_text(str(len(ids)))


def measured(function: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """(result, seconds, peak RSS MiB) of `function(*args)` in a fresh process."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_run, (function, args))


def _run(function: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, float, float]:
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def list_window(archive: str, start: datetime | None, end: datetime | None, by_day: bool) -> int:
    from pipeline.ifcb.archive import list_bins

    return len(list_bins(archive, start=start, end=end, by_day=by_day)[1])


def stream_all(archive: str) -> int:
    from pipeline.ifcb.archive import iter_bins

    return sum(1 for _ in iter_bins(archive)[1])


def first_partition(archive: str, streamed: bool) -> float:
    """Seconds until the first partition exists (2 workers, 256 MB partitions)."""
    from pipeline.ifcb.archive import iter_bins, list_bins
    from pipeline.ifcb.bins import BinFiles
    from pipeline.job.plan import MB, balanced_target, bin_weight, partition, stream_partitions

    started = time.perf_counter()
    if streamed:
        next(stream_partitions((f for f in iter_bins(archive)[1] if isinstance(f, BinFiles)), 2, 256 * MB))
    else:
        bins = list_bins(archive, by_day=False)[1]
        partition(bins, balanced_target(sum(map(bin_weight, bins)), 2, 256 * MB))
    return time.perf_counter() - started


def noop_rerun(archive: str, store_url: str) -> tuple[int, int]:
    """A rerun's planning when every bin is complete: (bins listed, bins to do)."""
    from pipeline.ifcb.archive import iter_bins
    from pipeline.job.run import Selection
    from pipeline.results.store import ResultStore

    store = ResultStore(store_url)
    with store.lease("bench"):
        selection = Selection(store.ledger(clean=True))
        todo = sum(1 for _ in selection.todo(iter_bins(archive)[1]))
    return selection.complete, todo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bins", type=int, default=100_000)
    parser.add_argument("--work", default="/tmp/ifcbflow-scale")
    parser.add_argument("--no-store", action="store_true", help="Skip the no-op rerun (building its store).")
    parser.add_argument(
        "--no-full-passes",
        action="store_true",
        help="Skip the full passes and the first partition after a whole listing (the longest rows at a million bins).",
    )
    args = parser.parse_args()
    work = Path(args.work)
    ids = scale_ids(args.bins)
    archive = work / f"archive-{args.bins}"
    made = time.perf_counter()
    build_archive(archive, ids)
    day = SCALE_START + timedelta(days=(args.bins // 72) // 2)  # a day in the middle
    alone = work / "one-day"
    shutil.rmtree(alone, ignore_errors=True)
    (alone / f"D{day:%Y}").mkdir(parents=True)
    shutil.copytree(archive / f"D{day:%Y}" / f"D{day:%Y%m%d}", alone / f"D{day:%Y}" / f"D{day:%Y%m%d}",
                    copy_function=os.link)  # fmt: skip
    print(f"{args.bins:,} bins in {args.bins // 72:,} day folders (built in {time.perf_counter() - made:.0f} s)")

    one_day = (str(archive), day, day + timedelta(days=1))
    cases = [
        ("one day, --start/--end", list_window, (*one_day, True)),
        ("that day alone (an archive of one day)", list_window, (str(alone), None, None, True)),
        ("one day, whole archive listed then filtered (before)", list_window, (*one_day, False)),
        ("first partition formed, streamed", first_partition, (str(archive), True)),
    ]
    if not args.no_full_passes:
        cases += [
            ("full pass, streamed day by day", stream_all, (str(archive),)),
            ("full pass, one listing held whole (before)", list_window, (str(archive), None, None, False)),
            ("first partition formed, after the whole listing (before)", first_partition, (str(archive), False)),
        ]
    rows = []
    for label, function, call in cases:
        result, seconds, rss = measured(function, *call)
        rows.append((label, seconds, rss, result))
        print(f"{label}: {seconds:.2f} s, {rss:.0f} MiB", flush=True)
    if not args.no_store:
        store = work / f"store-{args.bins}.zarr"
        if not (store / "summary").exists():
            built = time.perf_counter()
            complete_store(str(store), {}, ids)
            print(f"store of {args.bins:,} complete bins built in {time.perf_counter() - built:.0f} s")
        result, seconds, rss = measured(noop_rerun, str(archive), str(store))
        rows.append(("no-op rerun planning (ledger + streamed listing)", seconds, rss, result))
    print(f"\n| {args.bins:,}-bin archive | seconds | client peak RSS (MiB) | result |\n|---|---:|---:|---|")
    for label, seconds, rss, result in rows:
        shown = f"{result:.2f} s" if isinstance(result, float) else result
        print(f"| {label} | {seconds:.2f} | {rss:.0f} | {shown} |")


if __name__ == "__main__":
    main()
