"""Feeders: read, decode and preprocess bins off the task thread, so the model is never waiting on Python.

A bin is read with three requests (`.hdr` and `.adc` together, then one ranged read of the `.roi`), cut into images
and turned into model inputs by THE preprocessing function. Where the worker has a GPU, this runs in a pool of
feeder processes (outside the worker's GIL, on the cores the GPU does not need), which hand each bin's inputs
back through shared memory: no pickling of pixels, one copy into the batch. Where it has no GPU, feeders are threads
of the worker process (OpenCV and I/O release the GIL), so CPU workers never oversubscribe their cores with extra
processes. A daemonic worker process (a Dask worker started without `distributed.worker.daemon: false`) cannot
have child processes: it falls back to threads and says so once.

At most `ahead` bins are in flight per task, so a worker holds a bounded number of bins whatever the partition.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import numpy as np

from model.preprocess import PreprocessConfig, preprocess_into
from pipeline.faults import ConfigurationError, is_configuration
from pipeline.ifcb.archive import open_archive
from pipeline.ifcb.bins import BinFiles, read_bin_images, read_bin_meta
from pipeline.ifcb.errors import BinFailure

log = logging.getLogger(__name__)


@dataclass
class LoadedBin:
    """A bin ready for the model: what the store needs of it, and its model inputs (n, size, size, 1)."""

    files: BinFiles
    time: datetime
    ml_analyzed: float | None
    roi_numbers: np.ndarray
    inputs: np.ndarray
    seconds: float = 0.0  # spent reading and preprocessing it
    warnings: tuple[str, ...] = ()  # what the reader forgave in its files (a cut-off last .adc line)
    shared: str | None = field(default=None, repr=False)  # "<block name>:<rows>" when `inputs` is in shared memory
    _block: Any = field(default=None, repr=False, compare=False)

    def release(self) -> None:
        """Free the shared memory behind `inputs`, once its rows are copied into batches (no-op otherwise)."""
        if self._block is not None:
            self.inputs = self.inputs[:0]  # drop the view first: a mapped block cannot close under it
            self._block.close()
            self._block.unlink()
            self._block = None


def load_bin(fs: Any, files: BinFiles, config: PreprocessConfig, dtype: np.dtype) -> LoadedBin | BinFailure:
    """Read and preprocess one bin; a bad bin becomes a failure record (data or transient), never an exception.

    Credentials and permission faults are raised as `ConfigurationError`: every other bin would fail the same way.
    """
    started = time.perf_counter()
    stage = "adc"
    try:
        meta = read_bin_meta(fs, files)
        stage = "roi"
        images = read_bin_images(fs, meta)
        stage = "preprocess"
        inputs = np.empty((len(images), config.size, config.size, 1), dtype=dtype)
        preprocess_into([image for _, image in images], config, inputs)
    except Exception as err:
        if is_configuration(err):
            raise ConfigurationError(f"cannot read bin {files.bin.id}: {type(err).__name__}: {err}") from err
        return BinFailure.from_error(files.bin.id, err, default_stage=stage)
    numbers = np.array([number for number, _ in images], dtype=np.int32)
    seconds = time.perf_counter() - started
    return LoadedBin(files, files.bin.time, meta.ml_analyzed, numbers, inputs, seconds, tuple(meta.warnings))


# --- the process pool's side ------------------------------------------------------------------------------------
_child: dict[str, Any] = {}


def _start_child(archive_url: str, storage_options: dict[str, Any], config: PreprocessConfig, dtype: str) -> None:
    """Feeder process start-up: its own filesystem object, one OpenCV thread (the pool is the parallelism)."""
    import cv2

    cv2.setNumThreads(1)
    _child["fs"] = open_archive(archive_url, storage_options)[0]
    _child["config"], _child["dtype"] = config, np.dtype(dtype)


def _load_in_child(files: BinFiles) -> LoadedBin | BinFailure:
    """Load a bin in a feeder process; its inputs travel back in a shared memory block, not through the pipe."""
    loaded = load_bin(_child["fs"], files, _child["config"], _child["dtype"])
    if isinstance(loaded, BinFailure) or loaded.inputs.size == 0:
        return loaded
    block = shared_memory.SharedMemory(create=True, size=loaded.inputs.nbytes)
    np.ndarray(loaded.inputs.shape, loaded.inputs.dtype, buffer=block.buf)[...] = loaded.inputs
    # The parent unlinks the block once it has used it; this process's tracker must not unlink it at exit.
    resource_tracker.unregister(block._name, "shared_memory")  # type: ignore[attr-defined]
    shape, dtype = loaded.inputs.shape, loaded.inputs.dtype
    block.close()
    return replace(loaded, inputs=np.empty((0, *shape[1:]), dtype=dtype), shared=f"{block.name}:{shape[0]}")


def _attach(loaded: LoadedBin) -> LoadedBin:
    """The parent's view of a bin loaded in a feeder process: its inputs mapped from the shared memory block."""
    if loaded.shared is None:
        return loaded
    name, rows = loaded.shared.rsplit(":", 1)
    loaded._block = shared_memory.SharedMemory(name=name)
    shape = (int(rows), *loaded.inputs.shape[1:])
    loaded.inputs = np.ndarray(shape, loaded.inputs.dtype, buffer=loaded._block.buf)
    loaded.shared = None
    return loaded


class Feeder:
    """A pool that loads bins in order, `ahead` at a time: processes (shared memory) or threads."""

    def __init__(
        self,
        archive_url: str,
        storage_options: dict[str, Any],
        config: PreprocessConfig,
        dtype: np.dtype,
        *,
        processes: int = 0,
        threads: int = 2,
    ) -> None:
        self.config, self.dtype = config, np.dtype(dtype)
        if processes and multiprocessing.current_process().daemon:
            log.warning(
                "this worker process is daemonic and cannot start feeder processes: feeding with %d threads "
                "(start Dask workers with distributed.worker.daemon: false to use processes)",
                processes,
            )
            threads, processes = processes, 0
        self.processes = processes
        self.workers = processes or max(1, threads)
        self._executor: Executor
        if processes:
            self._executor = ProcessPoolExecutor(
                processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_child,
                initargs=(archive_url, storage_options, config, self.dtype.str),
            )
        else:
            self._fs = open_archive(archive_url, storage_options)[0]
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="ifcbflow-feeder")

    def load(self, bins: Sequence[BinFiles], ahead: int | None = None) -> Iterator[LoadedBin | BinFailure]:
        """Every bin, loaded, in the order given; at most `ahead` (default: 2 per feeder) in flight."""
        ahead = ahead or 2 * self.workers
        pending: deque[Future] = deque()
        queue = iter(bins)
        try:
            for files in queue:
                pending.append(self._submit(files))
                if len(pending) >= ahead:
                    yield self._result(pending.popleft())
            while pending:
                yield self._result(pending.popleft())
        finally:  # the task stopped early: bins nobody will use must not keep their shared memory
            for future in pending:
                self._discard(future)

    def _discard(self, future: Future) -> None:
        if future.cancel():
            return
        try:
            loaded = self._result(future)
        except Exception:  # the task is already failing; this bin's own error adds nothing
            return
        if isinstance(loaded, LoadedBin):
            loaded.release()

    def _submit(self, files: BinFiles) -> Future:
        if self.processes:
            return self._executor.submit(_load_in_child, files)
        return self._executor.submit(load_bin, self._fs, files, self.config, self.dtype)

    def _result(self, future: Future) -> LoadedBin | BinFailure:
        loaded = future.result()
        return _attach(loaded) if isinstance(loaded, LoadedBin) else loaded

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def default_feeders(gpu: bool, cores: int) -> tuple[int, int]:
    """(processes, threads) for a worker: on a GPU worker, processes on all but two of its cores (the task thread
    and the device's driver need one each); on a CPU worker, two threads, which overlap reading with the model
    without taking cores from it."""
    if gpu:
        return max(1, cores - 2), 0
    return 0, 2
