"""Worker side: one partition task = feed its bins -> batches across bins -> predict -> commit the partition.

The model bundle, its compiled predictor and the feeder pool are made once per worker process and kept (keyed by
URL and content hash), so tasks carry only URLs and a small plan. Feeders read and preprocess the next bins while
the device computes (`pipeline.job.feeder`); the model sees fixed, large batches assembled across bins
(`pipeline.job.batching`), and the next batch is dispatched before the previous one's scores are fetched
(`model.inference.predictors`). The partition is committed once, at the end: its arrays, then its commit record,
whose counts follow the store's thresholds too when it has them (carried by the task), under an id of this attempt's
own (`pipeline.results.store.attempt_id`): a retry of the task beside a zombie attempt never overwrites it, nor is
overwritten; each bin's record keeps the fingerprint of the files it was read from.

Faults: a bad bin becomes a data failure in the commit; a transient fault that outlasts its retries leaves the bin
out of the commit (incomplete: the next run redoes it); a configuration fault (credentials, a bundle that cannot
run) ends the task with `configuration_error` set, and the client stops the run.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from model.bundle import BundleError, model_runtime
from model.inference.runtimes import choose_runtime
from pipeline.cluster.local import cores
from pipeline.cluster.worker_setup import configure_tensorflow, gpu_given, gpu_in_use, model_threads
from pipeline.faults import ConfigurationError, is_configuration, with_retries
from pipeline.ifcb.bins import BinFiles
from pipeline.ifcb.errors import BinFailure
from pipeline.job.batching import Batch, BatchAssembler, ScoreCollector
from pipeline.job.feeder import Feeder, LoadedBin, feeder_counts
from pipeline.job.hold import hold_if_asked
from pipeline.redact import redact_text, redact_url
from pipeline.results.biomass import Sizing
from pipeline.results.partitions import attempt_id
from pipeline.results.records import BinResult, Commit, files_digest
from pipeline.results.store import ResultStore

log = logging.getLogger(__name__)

#: Rows per model call when the task does not say: large on a GPU (the device is fed in big transfers), a few
#: hundred on CPU for Keras, 32 for ONNX Runtime on CPU: its rate is the same at 256 and its memory arena, which
#: keeps the largest batch's activations (~6 MB per ROI of utopia-b3), a seventh (utopia-b3, one process: 164 ROIs/s
#: and 408 MiB at 32, 156 ROIs/s and 2.3 GiB at 256; bench/bench_runtimes.py).
GPU_BATCH, CPU_BATCH, ONNX_CPU_BATCH = 4096, 256, 32

_lock = threading.Lock()
_cache: dict[tuple[Any, ...], Any] = {}


@dataclass(frozen=True)
class JobSpec:
    """What every partition task of a run shares, each thing once: where to read, write and load the model from,
    and how (no model, no pixels). One `storage_options` serves the archive, the store and the bundle: a run has one
    set of credentials and endpoints (`ClassifyRequest.storage_options`)."""

    archive_url: str
    store_url: str
    bundle_url: str
    bundle_hash: str
    classes: tuple[str, ...]
    storage_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int | None = None  # None: GPU_BATCH, ONNX_CPU_BATCH or CPU_BATCH, by device and runtime
    feeders: int | None = None  # feeders per worker (0: threads); None: by the worker's device and cores
    feeder_kind: str | None = None  # "processes" or "threads"; None: processes on a GPU worker, threads on a CPU one
    embeddings: bool = False  # also store each ROI's penultimate features (float16)
    include_beads: bool = False  # classify bead runs by their header too; else each is a record of kind "beads"
    thresholds: tuple[float, ...] | None = None  # the store's, in class order, for counts_thresholded; None: argmax
    runtimes: tuple[str, ...] = ("keras",)  # what the bundle offers (`model.bundle.runtimes`)
    runtime: str | None = None  # "keras" or "onnx"; None: `model.inference.runtimes.choose_runtime`'s rule, by device
    #: the store's morphology settings (`pipeline.results.biomass.Sizing` as attributes): each ROI is measured
    #: too, and each bin's biovolume and carbon per class kept; None: no morphology
    sizing: dict[str, Any] | None = None


@dataclass(frozen=True)
class PartitionTask:
    """One partition of a run: its id, its bins' files, and the run's `JobSpec`."""

    part: str
    bins: tuple[BinFiles, ...]
    job: JobSpec

    @property
    def roi_bytes(self) -> int:
        return sum(files.roi_size for files in self.bins)


#: The stages a partition's time is counted in (`PartitionResult.seconds`). In the feeders, summed over its bins
#: (thread-seconds: feeders run side by side): "read" (requests, parsing, cutting the images), "preprocess",
#: "morphology". In the task's own thread (wall seconds): "load" (the bundle, its predictor and the feeders: made
#: once per worker process, so about 0 after its first partition), "feed_wait" (the model waiting for the feeders:
#: idle), "batch" (packing bins into batches, scores back per bin), "infer" (the model's calls), "commit" (the store).
STAGES = ("read", "preprocess", "morphology", "load", "feed_wait", "batch", "infer", "commit")


@dataclass
class PartitionResult:
    """What a partition task did: its commit (or why there is none), ROIs scored, timings by stage (`STAGES`, and
    "total": the task's wall seconds), memory."""

    part: str
    commit: Commit | None = None
    configuration_error: str | None = None
    rois: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    peak_rss_bytes: int = 0


def _cached(key: tuple[Any, ...], make: Any) -> Any:
    """One object per key per worker process (bundles, predictors, feeder pools outlive tasks)."""
    with _lock:
        if key not in _cache:
            _cache[key] = make()
        return _cache[key]


def get_bundle(url: str, storage_options: dict[str, Any] | None, content_hash: str, runtime: str | None = None) -> Any:
    """The bundle for (url, hash) with its model for `runtime` (None: its own), loaded at most once per process;
    refuses a bundle changed since planning. Only that runtime is imported (TensorFlow for "keras")."""

    def load() -> Any:
        from model.inference.load import load_bundle

        if runtime != "onnx":
            configure_tensorflow()
        bundle = with_retries(lambda: load_bundle(url, storage_options, runtime), f"loading {redact_url(url)}")
        if bundle.content_hash != content_hash:
            raise ConfigurationError(
                f"the bundle at {redact_url(url)} changed during the run "
                f"(hash {bundle.content_hash}, planned {content_hash})"
            )
        log.info(
            "loaded bundle %s (%s) for %s in worker process %d",
            redact_url(url), content_hash[:12], runtime or "its own runtime", os.getpid(),
        )  # fmt: skip
        return bundle

    return _cached(("bundle", url, content_hash, runtime), load)


def _predictor(job: JobSpec, bundle: Any) -> Any:
    from model.inference.predictors import make_predictor

    runtime = model_runtime(bundle.model)
    key = ("predictor", job.bundle_url, job.bundle_hash, runtime, job.embeddings)
    return _cached(key, lambda: make_predictor(bundle, embeddings=job.embeddings, threads=model_threads()))


def _feeder(job: JobSpec, bundle: Any, gpu: bool) -> Feeder:
    processes, threads = feeder_counts(gpu, cores(), job.feeders, job.feeder_kind)
    dtype = bundle.preprocess.pixel_dtype
    options = repr(sorted(job.storage_options.items()))
    measure = job.sizing is not None
    key = ("feeder", job.archive_url, options, bundle.preprocess, processes, threads, measure)
    return _cached(
        key,
        lambda: Feeder(job.archive_url, job.storage_options, bundle.preprocess, dtype, processes=processes,
                       threads=threads, morphology=measure),
    )  # fmt: skip


def classify_partition(task: PartitionTask) -> PartitionResult:
    """Task: classify every bin of the partition and commit it; one bad bin is recorded and the rest go on.

    A configuration fault (credentials, the store denied or gone, a bundle that cannot run, a GPU the backend cannot
    see) comes back as `configuration_error`, for the client to stop the run with one message."""
    started = time.perf_counter()
    job = task.job
    result = PartitionResult(part=task.part)
    try:
        store = ResultStore(job.store_url, job.storage_options)
        gpu = gpu_given()  # asked once: each ask may run nvidia-smi
        runtime = choose_runtime(job.runtimes, gpu=gpu, requested=job.runtime)
        bundle = get_bundle(job.bundle_url, job.storage_options, job.bundle_hash, runtime)
        if list(bundle.classes) != list(job.classes):
            raise ConfigurationError(f"bundle classes {bundle.classes} differ from the store's {list(job.classes)}")
        results, failures, incomplete = _score(task, bundle, gpu_in_use(runtime, given=gpu), result, started)
        commit_started = time.perf_counter()
        thresholds = None if job.thresholds is None else np.asarray(job.thresholds)  # the store decides
        part = attempt_id(task.part)  # this attempt's own keys: another attempt of the task never writes them
        sizing = Sizing.from_attributes(job.sizing)
        result.commit = with_retries(
            lambda: store.commit_partition(part, results, job.classes, failures, incomplete, thresholds,
                                           sizing=sizing),
            f"committing partition {part}",
        )  # fmt: skip
    except Exception as err:  # the same for every bin: the client stops the run
        if isinstance(err, ConfigurationError | BundleError):
            result.configuration_error = redact_text(str(err))
        elif is_configuration(err, scope="store"):
            result.configuration_error = redact_text(f"{type(err).__name__}: {err}")
        else:
            raise
        return result
    result.seconds["commit"] = time.perf_counter() - commit_started
    result.rois = sum(len(r.roi_numbers) for r in results)
    result.seconds["total"] = time.perf_counter() - started
    result.peak_rss_bytes = peak_rss_bytes()
    hold_if_asked()
    return result


def _score(
    task: PartitionTask, bundle: Any, gpu: bool, out: PartitionResult, started: float
) -> tuple[list[BinResult], list[BinFailure], list[dict[str, str]]]:
    """Feed, batch and predict every bin; returns (classified bins in task order, data failures, incomplete).
    `started`: when the task began (`time.perf_counter`), whence its "load" seconds."""
    job = task.job
    size = bundle.preprocess.size
    predictor = _predictor(job, bundle)
    feeder = _feeder(job, bundle, gpu)
    onnx = model_runtime(bundle.model) == "onnx"
    batch_size = job.batch_size or (GPU_BATCH if gpu else ONNX_CPU_BATCH if onnx else CPU_BATCH)
    assembler = BatchAssembler(batch_size, (size, size, 1), bundle.preprocess.pixel_dtype)
    collector = ScoreCollector(len(job.classes))
    features: ScoreCollector | None = None  # embeddings: made at the first batch's (its width), then fed alike
    loaded: dict[str, LoadedBin] = {}
    failures: list[BinFailure] = []
    incomplete: list[dict[str, str]] = []
    results: list[BinResult] = []
    stamps = {files.bin.id: files.stamp for files in task.bins}

    def batches() -> Iterator[tuple[np.ndarray, Batch]]:
        items = feeder.load(task.bins, leave_out_beads=not job.include_beads)
        while True:
            waited = time.perf_counter()
            item = next(items, None)
            out.seconds["feed_wait"] += time.perf_counter() - waited
            if item is None:
                break
            if isinstance(item, BinFailure):
                if item.kind == "transient":
                    incomplete.append({"bin": item.bin, "reason": item.reason})
                else:  # data failures and bead runs, with the files' versions: not read again until they change
                    failures.append(replace(item, files=stamps.get(item.bin, "")))
                continue
            key = item.files.bin.id
            for stage, seconds in item.stages.items():
                out.seconds[stage] += seconds
            packing = time.perf_counter()
            loaded[key] = item
            collector.expect(key, len(item.roi_numbers))
            if features is not None:
                features.expect(key, len(item.roi_numbers))
            packed = list(assembler.add(key, item.inputs))  # a fresh buffer each: not overwritten by the next
            item.release()
            out.seconds["batch"] += time.perf_counter() - packing
            for batch in packed:
                yield batch.inputs, batch
        for batch in assembler.finish():
            yield batch.inputs, batch

    def finish_ready() -> None:
        for key, scores in collector.ready():
            item = loaded.pop(key)
            embedded = None if features is None else next(features.ready())[1]
            digest = files_digest(item.files.sizes)
            result = BinResult(key, item.time, item.roi_numbers, scores, item.ml_analyzed, item.warnings, embedded,
                               digest, item.sample, item.morphology)  # fmt: skip
            results.append(result)

    model_started = time.perf_counter()
    out.seconds["load"] = model_started - started
    for outputs, batch in predictor.run(batches()):
        taking = time.perf_counter()
        scores, embedded = outputs if job.embeddings else (outputs, None)
        if embedded is not None:
            if features is None:
                features = ScoreCollector(embedded.shape[1], np.float16)
                for key, rows in collector.expected:
                    features.expect(key, rows)
            features.take(batch, embedded)
        collector.take(batch, scores)
        finish_ready()
        out.seconds["batch"] += time.perf_counter() - taking
    finish_ready()  # bins of 0 ROIs after the last batch
    looped = time.perf_counter() - model_started
    out.seconds["infer"] = looped - out.seconds["feed_wait"] - out.seconds["batch"]
    if collector.pending:
        raise RuntimeError(f"partition {task.part}: {collector.pending} bin(s) left without scores")
    return results, failures, incomplete


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far: Linux's VmHWM, which starts anew at exec, where getrusage's
    ru_maxrss carries over the peak of the process that forked it (a worker's nanny runs in the client: a client
    that had built a model would lend its peak to every worker); ru_maxrss elsewhere (kilobytes on Linux)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
