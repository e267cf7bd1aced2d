"""The set-up of one Dask worker process for the model: TensorFlow's thread count, its one GPU, GPU memory growth,
and the check that a worker given a GPU computes on it with the inference runtime it runs (`model.inference.runtimes`).

The cluster factory decides the thread count (so N CPU workers on one machine share its cores instead of
oversubscribing them) and passes it in `TF_THREADS_ENV`; the worker applies it once, before TensorFlow starts.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import multiprocessing
import os
import sys
import threading
from collections.abc import Iterator

from pipeline.cluster.cpu_share import cores
from pipeline.cluster.devices import visible_gpus
from pipeline.faults import ConfigurationError

log = logging.getLogger(__name__)

#: Threads TensorFlow may use in one worker process; set by the cluster factory for local CPU workers.
TF_THREADS_ENV = "IFCBFLOW_TF_THREADS"
#: Set to 1, workers compute on their CPU even where GPUs were assigned to them (a test node whose scheduler
#: declares GPUs it does not have, a GPU allocation used for a CPU run): no GPU check, CPU batch sizes and feeders.
CPU_ENV = "IFCBFLOW_CPU"
#: GPU workers feed their device from feeder processes (`pipeline.job.feeder`), which a daemonic process cannot
#: start: every way this project starts GPU workers makes them non-daemonic, by config or by environment.
NON_DAEMONIC_WORKERS = {"distributed.worker.daemon": False}
NON_DAEMONIC_ENV = {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}

_lock = threading.Lock()
_configured = False


def configure_tensorflow() -> None:
    """Once per process, before the Keras backend's runtime starts. On TensorFlow: thread counts, the one GPU and
    its memory growth. Other backends (JAX, where TensorFlow is not installed) need nothing here."""
    global _configured
    with _lock:
        if _configured:
            return
        import model  # noqa: F401  (quiets TensorFlow's native start-up lines before the imports below)

        worker = _in_worker_process()
        with _without_optional_imports(UNUSED_BY_WORKERS if worker and _keras_backend() == "tensorflow" else ()):
            import keras

        if keras.backend.backend() == "tensorflow":
            _configure_tensorflow_runtime()
            if worker:
                atexit.register(_exit_without_native_teardown)
        _configured = True


def model_threads() -> int:
    """Threads the model may use in this worker process (TensorFlow's and ONNX Runtime's pools alike): what the
    cluster factory passed in `TF_THREADS_ENV`, else every core the process may use (`cpu_share.cores`)."""
    return int(os.environ.get(TF_THREADS_ENV, "0") or 0) or cores()


#: Packages that TensorFlow and Keras import whenever they are installed, for features a classify worker never uses
#: (TF Lite's JAX converter, Keras' scikit-learn wrappers): kept out of worker processes on the TensorFlow backend,
#: they save ~190 MiB of each worker's resident memory (836 -> 645 MiB for `import tensorflow, keras` here).
UNUSED_BY_WORKERS = ("jax", "sklearn")


def _keras_backend() -> str | None:
    """The backend Keras will pick, read where Keras reads it (keras/src/backend/config.py: `KERAS_BACKEND`, else
    "backend" in `$KERAS_HOME/keras.json` or `~/.keras/keras.json`, else TensorFlow); None when it cannot be told."""
    if "KERAS_BACKEND" in os.environ:
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~") if os.access(os.path.expanduser("~"), os.W_OK) else "/tmp", ".keras"
    )
    try:
        with open(os.path.join(home, "keras.json")) as config:
            return str(json.load(config).get("backend", "tensorflow"))
    except FileNotFoundError:
        return "tensorflow"
    except (OSError, ValueError, AttributeError):
        return None


@contextlib.contextmanager
def _without_optional_imports(names: tuple[str, ...]) -> Iterator[None]:
    """Within the block, `import NAME` raises ImportError for each of `names` not imported yet (the way Python marks
    a module as unavailable: None in `sys.modules`); afterwards they import as usual."""
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]


def _in_worker_process() -> bool:
    """Whether this is a Dask worker's own process (started by a nanny), not a process that runs a worker thread
    beside other work (the client of a run with an in-process cluster, which must keep its exit status)."""
    if multiprocessing.parent_process() is None:
        return False
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def _exit_without_native_teardown() -> None:
    """The last step of a Dask worker process that ran TensorFlow, once its Python clean-up is done (the worker
    closed; its feeder pools were shut down when its threads were). TensorFlow's native teardown then takes seconds
    (3 s measured on a 2-core machine), longer than a nanny waits (4 s, less the worker's own close) before it
    SIGKILLs the process and says so: skip it. The process ends with status 0: it gets here only by its normal end
    (a worker that fails ends by an exception its nanny has already seen, or by a signal)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _configure_tensorflow_runtime() -> None:
    import tensorflow as tf

    threads = model_threads()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
        # One GPU per worker: dask-cuda lists all GPUs with the worker's own first, so keep only that one.
        gpus = tf.config.list_physical_devices("GPU")[:1]
        if gpus:
            tf.config.set_visible_devices(gpus, "GPU")
            tf.config.experimental.set_memory_growth(gpus[0], True)
    except RuntimeError as err:  # the runtime already started in this process (e.g. a threads-only cluster)
        log.debug("TensorFlow already initialised, keeping its settings: %s", err)


def backend_gpus() -> int:
    """GPUs that this process's Keras backend can compute on (TensorFlow, JAX or PyTorch)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return sum(device.platform in ("gpu", "cuda", "rocm") for device in jax.devices())
    if backend == "torch":
        import torch

        return int(torch.cuda.device_count())
    return 0


def gpu_given() -> bool:
    """Whether this worker was given a GPU (`CUDA_VISIBLE_DEVICES`, else what nvidia-smi lists) and is to compute on
    it: not when `IFCBFLOW_CPU=1` asks for the CPU. Imports no inference runtime."""
    return bool(visible_gpus()) and os.environ.get(CPU_ENV) != "1"


def gpu_in_use(runtime: str = "keras", *, given: bool | None = None) -> bool:
    """Whether this worker computes on a GPU: `given`, what `gpu_given()` answered where the caller asked it already
    (each call may run nvidia-smi), else `gpu_given()`. Raises `ConfigurationError` when one was given but the
    inference runtime ("keras": the Keras backend; "onnx": ONNX Runtime's CUDA provider) sees none: the worker would
    otherwise run on its CPU with a GPU's batch size and feeders, slowly and without a word. Only the named runtime
    is imported."""
    if not (gpu_given() if given is None else given):
        return False
    if runtime == "onnx":
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return True
        seen_by = "ONNX Runtime (no CUDA provider)"
    else:
        configure_tensorflow()
        if backend_gpus() > 0:
            return True
        import keras

        seen_by = f"the Keras backend ({keras.backend.backend()})"
    raise ConfigurationError(
        f"this worker was given GPU {','.join(visible_gpus())} but {seen_by} sees none: install the GPU build "
        "(pip install 'ifcbflow[gpu]') and check the driver (nvidia-smi) and the backend's device warnings "
        "(ifcbflow -v); to run on CPU, set IFCBFLOW_CPU=1"
    )
