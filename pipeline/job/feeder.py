"""Feeders: read, decode and preprocess bins off the task thread, so the model is never waiting on Python.

A bin is read with three requests (`.hdr` and `.adc` together, then one ranged read of the `.roi`), cut into images
and turned into model inputs by THE preprocessing function. Where the worker has a GPU, this runs by default in a
pool of feeder processes (outside the worker's GIL, on the worker's share of the node's cores), which hand each
bin's inputs back through shared memory (`pipeline.job.shm`): no pickling of pixels, one copy into the batch. Where it
has no GPU, feeders are by default threads of the worker process (OpenCV and I/O release the GIL), so CPU workers
never oversubscribe their cores with extra processes; `classify --feeder-kind processes` runs the process path on
CPU workers too. A daemonic worker process (a Dask worker started without `distributed.worker.daemon: false`) cannot
have child processes: it falls back to threads and says so once.

At most `ahead` bins are in flight per task, so a worker holds a bounded number of bins whatever the partition.

Faults of the node (`pipeline.faults`, kind "node"): a bin whose loading runs out of memory (`MemoryError`, `ENOMEM`)
or whose feeder process dies (the kernel's out-of-memory killer, SIGBUS from a full `/dev/shm`, a crash in a native
library) is loaded again once the bins in flight beside it are done, alone; `NODE_ATTEMPTS` attempts in all, then it
is recorded at stage "node", the reason naming the limit (the signal that killed the feeder, or the allocation that
failed). Like a bad bin, a later run does not read it again while its files are unchanged, unless asked
(`classify --retry-failed`, once the workers have more memory): retried at every run instead, a bin too large for
the node would cost every run the same exhaustion, or the same killed feeder, forever.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import datetime
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import numpy as np

from model.preprocess import PreprocessConfig, preprocess_into
from pipeline.faults import ConfigurationError, is_configuration, is_node_fault
from pipeline.ifcb.archive import open_archive
from pipeline.ifcb.bins import BinFiles, read_bin_images, read_bin_meta
from pipeline.ifcb.errors import BinFailure
from pipeline.ifcb.sample import SampleInfo
from pipeline.job import shm
from pipeline.job.hold import hold_feeder_if_asked

log = logging.getLogger(__name__)

#: Attempts a bin gets when the node fails it (out of memory, its feeder process killed): the first among the bins in
#: flight, the last alone. Then it is recorded at stage "node" (see the module's docstring).
NODE_ATTEMPTS = 2
#: What the user can do about a node fault, at the end of its reason.
NODE_ADVICE = "give the workers more memory (or /dev/shm more space), then rerun with --retry-failed to read it again"


@dataclass
class LoadedBin:
    """A bin ready for the model: what the store needs of it, and its model inputs (n, size, size, 1)."""

    files: BinFiles
    time: datetime
    ml_analyzed: float | None
    roi_numbers: np.ndarray
    inputs: np.ndarray
    #: seconds its feeder spent on it, by stage: "read" (the requests, parsing the `.adc`, cutting the images),
    #: "preprocess", and "morphology" when it was measured
    stages: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # what the reader forgave in its files (a cut-off last .adc line)
    sample: SampleInfo = field(default_factory=SampleInfo)  # what its header says of the sample
    morphology: np.ndarray | None = None  # float32 (n, feature) in pixels (`pipeline.morphology`); None: not asked
    shared: str | None = field(default=None, repr=False)  # "<block name>:<rows>" when `inputs` is in shared memory
    _block: Any = field(default=None, repr=False, compare=False)

    def release(self) -> None:
        """Free the shared memory behind `inputs`, once its rows are copied into batches (no-op otherwise)."""
        if self._block is not None:
            self.inputs = self.inputs[:0]  # drop the view first: a mapped block cannot close under it
            self._block.close()
            self._block.unlink()
            _mapped.discard(self._block.name)
            self._block = None


def load_bin(
    fs: Any,
    files: BinFiles,
    config: PreprocessConfig,
    dtype: np.dtype,
    leave_out_beads: bool = False,
    morphology: bool = False,
) -> LoadedBin | BinFailure:
    """Read and preprocess one bin; a bad bin becomes a failure record (data or transient), never an exception.
    With `leave_out_beads` a bead run by its header becomes a record of kind "beads" once its `.hdr` is read
    (`pipeline.ifcb.bins.bin_meta_from_bytes`): its images are never read. With `morphology` each ROI is also
    measured from its image as read (`pipeline.morphology`: the same read, off the model's thread).

    A denied, archived or missing object is this bin's failure; credentials, a missing bucket or a certificate that
    does not verify are raised as `ConfigurationError`: every other bin would fail the same way (`pipeline.faults`).
    """
    clock = time.perf_counter()
    stages: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[name], clock = now - clock, now

    stage = "adc"
    try:
        meta = read_bin_meta(fs, files, leave_out_beads=leave_out_beads)
        stage = "roi"
        images = read_bin_images(fs, meta)
        lap("read")
        stage = "preprocess"
        inputs = np.empty((len(images), config.size, config.size, 1), dtype=dtype)
        preprocess_into([image for _, image in images], config, inputs)
        lap("preprocess")
        measured = None
        if morphology:
            from pipeline.morphology import as_matrix, morphology_table  # OpenCV, SciPy: only for runs that ask

            stage = "morphology"
            measured = as_matrix(morphology_table([image for _, image in images]))
            lap("morphology")
    except Exception as err:  # a MemoryError too: a failure at stage "node" (`BinFailure.from_error`)
        if is_configuration(err, scope="object"):
            detail = str(err) if isinstance(err, ConfigurationError) else f"{type(err).__name__}: {err}"
            raise ConfigurationError(f"cannot read bin {files.bin.id}: {detail}") from err
        return BinFailure.from_error(files.bin.id, err, default_stage=stage)
    numbers = np.array([number for number, _ in images], dtype=np.int32)
    return LoadedBin(files, files.bin.time, meta.ml_analyzed, numbers, inputs, stages, tuple(meta.warnings),
                     sample=meta.sample, morphology=measured)  # fmt: skip


# --- the process pool's side ------------------------------------------------------------------------------------
_child: dict[str, Any] = {}
#: Names of the shared memory blocks this process has mapped and not yet released (kept by a sweep after a break).
_mapped: set[str] = set()
#: How often a feeder process checks that its worker is still there.
ORPHAN_POLL_S = 0.5
#: ROIs of a busy bin: what the shared memory check assumes each bin in flight needs.
BUSY_BIN_ROIS = 2_000


def _start_child(
    archive_url: str, storage_options: dict[str, Any], config: PreprocessConfig, dtype: str, morphology: bool
) -> None:
    """Feeder process start-up: its own filesystem object, one OpenCV thread (the pool is the parallelism), and a
    watch that ends this process when its worker is gone (SIGKILLed workers cannot stop their pools)."""
    import cv2

    cv2.setNumThreads(1)
    _child["fs"] = open_archive(archive_url, storage_options)[0]
    _child["config"], _child["dtype"], _child["morphology"] = config, np.dtype(dtype), morphology
    _child["owner"], _child["blocks"] = os.getppid(), itertools.count()
    threading.Thread(target=_exit_when_orphaned, args=(_child["owner"],), daemon=True).start()


def _exit_when_orphaned(worker: int) -> None:
    while os.getppid() == worker:
        time.sleep(ORPHAN_POLL_S)
    os._exit(1)


def _load_in_child(files: BinFiles, leave_out_beads: bool) -> LoadedBin | BinFailure:
    """Load a bin in a feeder process; its inputs travel back in a shared memory block, not through the pipe."""
    loaded = load_bin(_child["fs"], files, _child["config"], _child["dtype"], leave_out_beads, _child["morphology"])
    if isinstance(loaded, BinFailure) or loaded.inputs.size == 0:
        return loaded
    name = shm.block_name(_child["owner"], os.getpid(), next(_child["blocks"]))
    block = shared_memory.SharedMemory(name=name, create=True, size=loaded.inputs.nbytes)
    np.ndarray(loaded.inputs.shape, loaded.inputs.dtype, buffer=block.buf)[...] = loaded.inputs
    # The worker unlinks the block once it has used it (or, killed, the next sweep on this host does): this
    # process's resource tracker must not unlink it when this process exits.
    resource_tracker.unregister(block._name, "shared_memory")  # type: ignore[attr-defined]
    shape, dtype = loaded.inputs.shape, loaded.inputs.dtype
    block.close()
    hold_feeder_if_asked()
    return replace(loaded, inputs=np.empty((0, *shape[1:]), dtype=dtype), shared=f"{block.name}:{shape[0]}")


def _attach(loaded: LoadedBin) -> LoadedBin:
    """The worker's view of a bin loaded in a feeder process: its inputs mapped from the shared memory block."""
    if loaded.shared is None:
        return loaded
    name, rows = loaded.shared.rsplit(":", 1)
    loaded._block = shared_memory.SharedMemory(name=name)
    _mapped.add(name)
    shape = (int(rows), *loaded.inputs.shape[1:])
    loaded.inputs = np.ndarray(shape, loaded.inputs.dtype, buffer=loaded._block.buf)
    loaded.shared = None
    return loaded


def death_of(exitcodes: Sequence[int | None]) -> str:
    """How a broken pool's feeder process died, from the exit codes of its processes (multiprocessing's: -N for
    signal N): the one that died first, not those the pool terminated after it (SIGTERM, `terminate_broken` of
    `concurrent.futures.process`)."""
    codes = [code for code in exitcodes if code is not None and code != 0]
    died = [code for code in codes if code != -signal.SIGTERM] or codes
    if not died:
        return "its exit status is unknown"
    if died[0] > 0:
        return f"exit status {died[0]}"
    number = -died[0]
    name = signal.Signals(number).name if number in signal.valid_signals() else "an unknown signal"
    return f"signal {number}, {name}{_LIKELY.get(number, '')}"


#: What a signal that kills a feeder process most likely means.
_LIKELY = {
    int(signal.SIGKILL): ": likely the kernel's out-of-memory killer",
    int(signal.SIGBUS): ": likely a full /dev/shm",
    int(signal.SIGSEGV): ": a crash in a native library",
}


class Feeder:
    """A pool that loads bins in order, `ahead` at a time: processes (shared memory) or threads.

    A feeder process that dies (the out-of-memory killer, SIGBUS from a full `/dev/shm`, a crash in a native
    library) breaks its pool: the pool is started anew, and the bins that were in flight are loaded again one at a
    time, so a second death names its bin, which becomes a failure record at stage "node" naming the signal. A bin
    that runs out of memory is loaded again alone the same way (`NODE_ATTEMPTS`). A death costs at most that bin.
    """

    def __init__(
        self,
        archive_url: str,
        storage_options: dict[str, Any],
        config: PreprocessConfig,
        dtype: np.dtype,
        *,
        processes: int = 0,
        threads: int = 2,
        morphology: bool = False,
    ) -> None:
        self.config, self.dtype, self.morphology = config, np.dtype(dtype), morphology
        if processes and multiprocessing.current_process().daemon:
            log.warning(
                "this worker process is daemonic and cannot start feeder processes: feeding with %d threads "
                "(start Dask workers with distributed.worker.daemon: false to use processes)",
                processes,
            )
            threads, processes = processes, 0
        if processes:
            shm.sweep()  # blocks of workers killed before: at the latest now, when the next run starts its feeders
            advice = shm.space_advice(2 * processes * BUSY_BIN_ROIS * config.size**2 * self.dtype.itemsize)
            if advice:
                log.warning("%s", advice)
                threads, processes = processes, 0
        self.processes = processes
        self.workers = processes or max(1, threads)
        self.restarts = 0
        self._pool_args = (archive_url, storage_options, config, self.dtype.str, morphology)
        self._executor: Executor
        if processes:
            self._executor = self._process_pool()
        else:
            self._fs = open_archive(archive_url, storage_options)[0]
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="ifcbflow-feeder")

    def _process_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_child,
            initargs=self._pool_args,
        )

    def load(
        self, bins: Sequence[BinFiles], ahead: int | None = None, *, leave_out_beads: bool = False
    ) -> Iterator[LoadedBin | BinFailure]:
        """Every bin, loaded, in the order given; at most `ahead` (default: 2 per feeder) in flight; bead runs as
        records of kind "beads" with `leave_out_beads` (`load_bin`)."""
        ahead = ahead or 2 * self.workers
        pending: deque[tuple[BinFiles, Future]] = deque()
        try:
            for files in bins:
                pending.append((files, self._submit(files, leave_out_beads)))
                if len(pending) >= ahead:
                    yield from self._take(pending, leave_out_beads)
            while pending:
                yield from self._take(pending, leave_out_beads)
        finally:  # the task stopped early: bins nobody will use must not keep their shared memory
            for _, future in pending:
                self._discard(future)

    def _take(self, pending: deque[tuple[BinFiles, Future]], leave_out_beads: bool) -> Iterator[LoadedBin | BinFailure]:
        """The first pending bin; after a feeder died, every bin that was in flight, each loaded alone; a bin that ran
        out of memory, loaded again alone once the others in flight are done."""
        files, future = pending.popleft()
        try:
            loaded = self._result(future, files)
        except BrokenProcessPool:
            in_flight = [files, *(each for each, _ in pending)]
            pending.clear()
            log.warning("a feeder process died; starting the pool anew and loading %d bin(s) again", len(in_flight))
            self._restart()
            yield from (self._alone(each, leave_out_beads) for each in in_flight)
            return
        if isinstance(loaded, BinFailure) and loaded.node:
            log.warning("bin %s: %s; loading it again once the bins in flight are done", files.bin.id, loaded.reason)
            wait([each for _, each in pending])  # their results wait in their futures, in order
            loaded = self._alone(files, leave_out_beads)
        yield loaded

    def _alone(self, files: BinFiles, leave_out_beads: bool) -> LoadedBin | BinFailure:
        """Load one bin with nothing else in flight, so that a feeder dying now names its bin: its last attempt
        (`NODE_ATTEMPTS`), after which a node fault is recorded at stage "node"."""
        try:
            future = self._submit(files, leave_out_beads)
        except BrokenProcessPool:  # the pool broke before this bin was given to it: not this bin's doing
            self._restart()
            future = self._submit(files, leave_out_beads)
        try:
            loaded = self._result(future, files)
        except BrokenProcessPool:
            death = self._restart()
            reason = (
                f"its feeder process died while loading it ({death}), {NODE_ATTEMPTS} times, the last with no other "
                f"bin in flight: a limit of the node, not a fault of the bin's files; {NODE_ADVICE}"
            )
            log.warning("bin %s: %s", files.bin.id, reason)
            return BinFailure(files.bin.id, "node", reason)
        if isinstance(loaded, BinFailure) and loaded.node:
            reason = f"{loaded.reason}; {NODE_ATTEMPTS} times, the last with no other bin in flight; {NODE_ADVICE}"
            log.warning("bin %s: %s", files.bin.id, reason)
            return replace(loaded, reason=reason)
        return loaded

    def _restart(self) -> str:
        """A new process pool in place of a broken one, once the old one's processes are gone and the blocks they
        made but never handed over are unlinked; returns how the old pool's process died (`death_of`)."""
        # The pool's processes, to read their exit codes once it is shut down (which forgets them).
        processes = list((getattr(self._executor, "_processes", None) or {}).values())
        self._executor.shutdown(wait=True, cancel_futures=True)
        shm.sweep(owner=os.getpid(), keep=frozenset(_mapped))
        self._executor = self._process_pool()
        self.restarts += 1
        return death_of([process.exitcode for process in processes])

    def _discard(self, future: Future) -> None:
        if future.cancel():
            return
        try:
            loaded = self._result(future)
        except Exception:  # the task is already failing; this bin's own error adds nothing
            return
        if isinstance(loaded, LoadedBin):
            loaded.release()

    def _submit(self, files: BinFiles, leave_out_beads: bool) -> Future:
        if self.processes:
            return self._executor.submit(_load_in_child, files, leave_out_beads)
        return self._executor.submit(
            load_bin, self._fs, files, self.config, self.dtype, leave_out_beads, self.morphology
        )

    def _result(self, future: Future, files: BinFiles | None = None) -> LoadedBin | BinFailure:
        """The loaded bin of `future`, mapped from shared memory; a node fault outside `load_bin` (handing over its
        inputs: `ENOMEM`, `MemoryError`) as `files`' failure at stage "node", where `files` is given."""
        try:
            loaded = future.result()
        except BrokenProcessPool:
            raise
        except Exception as err:
            if files is None or not is_node_fault(err):
                raise
            return BinFailure.from_error(files.bin.id, err, default_stage="preprocess")
        return _attach(loaded) if isinstance(loaded, LoadedBin) else loaded

    def close(self) -> None:
        """Stop the pool: its processes or threads are gone when this returns."""
        self._executor.shutdown(wait=True, cancel_futures=True)


#: How feeders run: "processes" (shared memory, off the worker's GIL) or "threads" (of the worker process).
FEEDER_KINDS = ("processes", "threads")
#: Feeder threads of a CPU worker: they overlap reading with the model without taking cores from it.
CPU_FEEDER_THREADS = 2


def feeder_counts(gpu: bool, cores: int, count: int | None = None, kind: str | None = None) -> tuple[int, int]:
    """(processes, threads) for a worker with `cores` cores of its own (its share of the node, see
    `pipeline.cluster.cpu_share`): by default processes on a GPU worker, one per core but the one its task thread
    needs to keep the device busy, and two threads on a CPU worker. `count` and `kind` (`classify --feeders N
    --feeder-kind`) override either; a count of 0 means threads, as it always has."""
    if kind is not None and kind not in FEEDER_KINDS:
        raise ValueError(f"feeder kind {kind!r}: expected one of {', '.join(FEEDER_KINDS)}")
    kind = "threads" if count == 0 else kind or ("processes" if gpu else "threads")
    if kind == "processes":
        return (count or max(1, cores - 1)), 0
    return 0, (count or CPU_FEEDER_THREADS)
