"""Worker side: one partition task = for each bin, read (ranged) -> predict -> write -> mark complete.

The model bundle is loaded once per worker process and kept (keyed by URL and content hash), so tasks carry only
URLs and a small plan. TensorFlow is configured once per process before it starts: GPU memory growth (so a worker
does not grab the whole card) and a fixed thread count (so N CPU workers on one machine do not oversubscribe it).
The next bin's reads run in a prefetch thread while the current bin is on the model, so object-storage latency hides
behind inference; at most two bins' images are in memory at once, whatever the partition size.
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

from pipeline.archive import open_archive
from pipeline.bins import BinMeta, read_bin_images, read_bin_meta
from pipeline.errors import BinFailure
from pipeline.plan import BinPlan
from pipeline.store import BinResult, ResultStore

log = logging.getLogger(__name__)

#: Threads TensorFlow may use in one worker process; set by the cluster factory for local CPU workers.
TF_THREADS_ENV = "IFCBFLOW_TF_THREADS"

_lock = threading.Lock()
_bundles: dict[tuple[str, str], Any] = {}
_tf_configured = False


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
    seconds: dict[str, float] = field(default_factory=lambda: {"read_wait": 0.0, "predict": 0.0, "write": 0.0})
    peak_rss_bytes: int = 0


def configure_tensorflow() -> None:
    """Once per process, before TensorFlow's runtime starts: thread counts and GPU memory growth."""
    global _tf_configured
    if _tf_configured:
        return
    import tensorflow as tf

    threads = int(os.environ.get(TF_THREADS_ENV, "0") or 0) or len(os.sched_getaffinity(0))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError as err:  # the runtime already started in this process (e.g. a threads-only cluster)
        log.debug("TensorFlow already initialised, keeping its settings: %s", err)
    _tf_configured = True


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
    """Task: classify every bin of the partition; one bad bin is recorded and the rest go on."""
    bundle = get_bundle(task.bundle_url, task.bundle_options, task.bundle_hash)
    if list(bundle.classes) != list(task.classes):
        raise RuntimeError(f"bundle classes {bundle.classes} differ from the store's {list(task.classes)}")
    fs, _ = open_archive(task.archive_url, task.archive_options)
    store = ResultStore(task.store_url, task.store_options)
    result = PartitionResult(index=task.index)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ifcbflow-prefetch") as prefetch:
        pending: Future | None = prefetch.submit(_load, fs, store, task.bins[0]) if task.bins else None
        for position, entry in enumerate(task.bins):
            started = time.perf_counter()
            loaded = pending.result()
            result.seconds["read_wait"] += time.perf_counter() - started
            following = position + 1
            pending = prefetch.submit(_load, fs, store, task.bins[following]) if following < len(task.bins) else None
            if loaded is None:
                result.skipped.append(entry.bin)
            elif isinstance(loaded, BinFailure):
                result.failures.append(loaded)
            else:
                _classify_bin(bundle, store, loaded, task, result)
    for failure in result.failures:
        store.write_failure(failure)
    result.peak_rss_bytes = peak_rss_bytes()
    return result


def _classify_bin(bundle: Any, store: ResultStore, loaded: _Loaded, task: PartitionTask, out: PartitionResult) -> None:
    bin_id = loaded.meta.bin.id
    started = time.perf_counter()
    try:
        scores = bundle.predict([image for _, image in loaded.images], batch_size=task.batch_size)
    except Exception as err:
        out.failures.append(BinFailure.from_error(bin_id, err, default_stage="predict"))
        return
    predicted = time.perf_counter()
    out.seconds["predict"] += predicted - started
    roi_numbers = np.array([number for number, _ in loaded.images], dtype=np.int64)
    try:
        store.write_bin(
            BinResult(bin_id, loaded.meta.bin.time, roi_numbers, scores, loaded.meta.ml_analyzed), list(task.classes)
        )
    except Exception as err:
        out.failures.append(BinFailure.from_error(bin_id, err, default_stage="write"))
        return
    out.seconds["write"] += time.perf_counter() - predicted
    out.done.append(bin_id)
    out.rois += len(roi_numbers)


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
