"""Worker side: one partition task = for each bin, read (ranged) -> predict -> write -> mark complete.

The model bundle is loaded once per worker process and kept (keyed by URL and content hash), so tasks carry only
URLs and a small plan; TensorFlow is configured once per process before the bundle loads (`pipeline.cluster.runtime`).
The next bin's reads run in a prefetch thread and the previous bin's writes in a write-behind thread while the current
bin is on the model, so object-storage latency hides behind inference; at most three bins are in memory at once,
whatever the partition size.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.cluster.runtime import configure_tensorflow
from pipeline.ifcb.archive import open_archive
from pipeline.ifcb.bins import BinMeta, read_bin_images, read_bin_meta
from pipeline.ifcb.errors import BinFailure
from pipeline.job.hold import hold_if_asked
from pipeline.job.plan import BinPlan
from pipeline.results.store import BinResult, ResultStore

log = logging.getLogger(__name__)

_lock = threading.Lock()
_bundles: dict[tuple[str, str], Any] = {}


@dataclass(frozen=True)
class PartitionTask:
    """Everything a partition task needs: URLs, options and the bins (no model, no pixels)."""

    index: int
    bins: tuple[BinPlan, ...]
    archive_url: str
    store_url: str
    bundle_url: str
    bundle_hash: str
    classes: tuple[str, ...]
    archive_options: dict[str, Any] = field(default_factory=dict)
    store_options: dict[str, Any] = field(default_factory=dict)
    bundle_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 256

    @property
    def n_rois(self) -> int:
        return sum(entry.n_rois for entry in self.bins)


@dataclass
class PartitionResult:
    """What a partition did: bins written, bins found already complete (a retried task), failures, timings."""

    index: int
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[BinFailure] = field(default_factory=list)
    rois: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"read_wait": 0.0, "predict": 0.0, "write_wait": 0.0})
    peak_rss_bytes: int = 0


def get_bundle(url: str, storage_options: dict[str, Any] | None, content_hash: str) -> Any:
    """The bundle for (url, hash), loaded at most once per process; refuses a bundle changed since planning."""
    key = (url, content_hash)
    with _lock:
        if key not in _bundles:
            from model.bundle import load_bundle

            configure_tensorflow()
            bundle = load_bundle(url, storage_options)
            if bundle.content_hash != content_hash:
                raise RuntimeError(
                    f"the bundle at {url} changed during the run (hash {bundle.content_hash}, planned {content_hash})"
                )
            _bundles[key] = bundle
            log.info("loaded bundle %s (%s) in worker process %d", url, content_hash[:12], os.getpid())
        return _bundles[key]


@dataclass
class _Loaded:
    meta: BinMeta
    images: list[tuple[int, np.ndarray]]


def _load(fs: Any, store: ResultStore, entry: BinPlan) -> _Loaded | BinFailure | None:
    """Read one bin (None when it is already complete); a bad bin becomes a failure record."""
    if store.is_complete(entry.bin):
        return None
    try:
        meta = read_bin_meta(fs, entry.files)
    except Exception as err:
        return BinFailure.from_error(entry.bin, err, default_stage="adc")
    try:
        return _Loaded(meta, read_bin_images(fs, meta))
    except Exception as err:
        return BinFailure.from_error(entry.bin, err, default_stage="roi")


def classify_partition(task: PartitionTask) -> PartitionResult:
    """Task: classify every bin of the partition; one bad bin is recorded and the rest go on.

    Three stages overlap: the next bin is read (prefetch thread) and the previous bin is written (write-behind
    thread) while the current bin is on the model. Each side holds at most one bin, so memory stays bounded.
    """
    bundle = get_bundle(task.bundle_url, task.bundle_options, task.bundle_hash)
    if list(bundle.classes) != list(task.classes):
        raise RuntimeError(f"bundle classes {bundle.classes} differ from the store's {list(task.classes)}")
    fs, _ = open_archive(task.archive_url, task.archive_options)
    store = ResultStore(task.store_url, task.store_options)
    result = PartitionResult(index=task.index)
    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ifcbflow-read") as reader,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ifcbflow-write") as writer,
    ):
        reading: Future | None = reader.submit(_load, fs, store, task.bins[0]) if task.bins else None
        writing: Future | None = None
        for position, entry in enumerate(task.bins):
            loaded = _wait(reading, result, "read_wait")
            following = position + 1
            reading = reader.submit(_load, fs, store, task.bins[following]) if following < len(task.bins) else None
            if loaded is None:
                result.skipped.append(entry.bin)
                continue
            if isinstance(loaded, BinFailure):
                result.failures.append(loaded)
                continue
            classified = _predict(bundle, loaded, task, result)
            if isinstance(classified, BinFailure):
                result.failures.append(classified)
                continue
            _collect(_wait(writing, result, "write_wait"), result)
            writing = writer.submit(_write, store, classified, list(task.classes))
        _collect(_wait(writing, result, "write_wait"), result)
    for failure in result.failures:
        store.write_failure(failure)
    result.peak_rss_bytes = peak_rss_bytes()
    hold_if_asked()
    return result


def _wait(future: Future | None, result: PartitionResult, what: str) -> Any:
    """The future's value (None for no future), adding the time spent waiting for it to `result.seconds[what]`."""
    if future is None:
        return None
    started = time.perf_counter()
    value = future.result()
    result.seconds[what] += time.perf_counter() - started
    return value


def _predict(bundle: Any, loaded: _Loaded, task: PartitionTask, out: PartitionResult) -> BinResult | BinFailure:
    bin_id = loaded.meta.bin.id
    started = time.perf_counter()
    try:
        scores = bundle.predict([image for _, image in loaded.images], batch_size=task.batch_size)
    except Exception as err:
        return BinFailure.from_error(bin_id, err, default_stage="predict")
    finally:
        out.seconds["predict"] += time.perf_counter() - started
    roi_numbers = np.array([number for number, _ in loaded.images], dtype=np.int64)
    return BinResult(bin_id, loaded.meta.bin.time, roi_numbers, scores, loaded.meta.ml_analyzed)


def _write(store: ResultStore, classified: BinResult, classes: list[str]) -> tuple[BinResult, BinFailure | None]:
    """Write one bin and mark it complete (in the write-behind thread); a failure becomes a record."""
    try:
        store.write_bin(classified, classes)
    except Exception as err:
        return classified, BinFailure.from_error(classified.bin, err, default_stage="write")
    return classified, None


def _collect(written: tuple[BinResult, BinFailure | None] | None, out: PartitionResult) -> None:
    if written is None:
        return
    classified, failure = written
    if failure is not None:
        out.failures.append(failure)
    else:
        out.done.append(classified.bin)
        out.rois += len(classified.roi_numbers)


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
