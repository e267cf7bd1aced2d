"""Which inference runtime runs a bundle's model in a worker: the rule behind `classify --runtime` (default auto).

Runtimes: "keras" (the Keras model on its backend, TensorFlow unless `KERAS_BACKEND` says otherwise) and "onnx"
(ONNX Runtime on the bundle's ONNX graph: an ONNX bundle's model, or a Keras bundle's ONNX twin, which `train`,
`model import` and `model export --add-onnx` write). A Keras model and its twin give the same scores within
`model.convert.to_onnx.TOLERANCE`, so a store holds their results as one model's.

`auto` chooses, per device, the runtime measured fastest to start and to run among those the bundle has
(bench/bench_runtimes.py: utopia-b3, batches of 64, 2 cores, each runtime in a fresh process, the machine idle):

| on CPU | import + load | first batch | ROIs/s | peak RSS |
|---|---:|---:|---:|---:|
| ONNX Runtime | 0.50 s | 0.64 s | 138 | 436 MiB |
| Keras on TensorFlow | 8.25 s | 1.14 s | 99 | 1,129 MiB |
| Keras on JAX | 16.0 s | 1.77 s | 68 | 889 MiB |

so on CPU: "onnx" where the bundle has an ONNX graph, else "keras". On a GPU: "keras" (TensorFlow with XLA, the
path `bench/gpu_check.sh` measures), unless the bundle has only an ONNX graph: ONNX Runtime's CUDA provider has not
been measured against it on a GPU yet.

A runtime whose package cannot be imported is no runtime: auto passes over it, and one that must run (asked for with
`--runtime`, or the only one the bundle has) is refused with `RuntimeMissingError`, which names the package and how
to install it, once, by the client before anything is submitted (`check_runtime`) and by a worker whose environment
lacks it (`choose_runtime`), instead of every partition failing on the import.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from collections.abc import Sequence

from model.bundle import BundleError

#: What `--runtime` accepts: a runtime, or auto (the rule above).
CHOICES = ("auto", "keras", "onnx")
#: How to install each runtime's package (pyproject.toml's extras: `cpu` for laptops and CI, `gpu` for CUDA nodes).
INSTALL = {
    "onnx": "pip install 'ifcbflow[cpu]' (or 'ifcbflow[gpu]' on CUDA nodes), which brings onnxruntime "
    "(onnxruntime-gpu)",
    "keras": "pip install 'ifcbflow[cpu]' (or 'ifcbflow[gpu]' on CUDA nodes), which brings TensorFlow",
}


class RuntimeMissingError(BundleError):
    """The runtime that must run the bundle cannot be imported here: the message names its package and how to
    install it. A `BundleError`, so that a worker that meets it reports a configuration fault and the run stops."""


def check_runtime(offered: Sequence[str], requested: str | None = None) -> None:
    """Raise `RuntimeMissingError` unless a runtime the bundle offers (`requested` when given, not "auto") can be
    imported: what a run checks before it submits any work, since a worker could run nothing else."""
    if requested not in (None, "auto"):
        if requested not in CHOICES:
            raise ValueError(f"unknown runtime {requested!r}: choose one of {', '.join(CHOICES)}")
        candidates = [requested]
    else:
        candidates = sorted(offered, key=lambda runtime: runtime != "keras")  # keras's check imports nothing
    problems = []
    for runtime in candidates:
        if (problem := runtime_problem(runtime)) is None:
            return
        problems.append(problem)
    if problems:
        raise RuntimeMissingError("; ".join(problems))


def choose_runtime(offered: Sequence[str], *, gpu: bool, requested: str | None = None) -> str:
    """The runtime to run a bundle with: `requested` ("keras" or "onnx") when given, else the rule above.

    `offered` is what the bundle has (`model.bundle.runtimes`); auto passes over a runtime that cannot be imported
    (`runtime_problem`). `RuntimeMissingError` when the runtime that must run cannot be imported: the requested one,
    or under auto every one the bundle has. A requested runtime the bundle lacks is returned as asked, for
    `load_bundle` to refuse with a message that says how to add it."""
    if requested not in (None, "auto"):
        if requested not in CHOICES:
            raise ValueError(f"unknown runtime {requested!r}: choose one of {', '.join(CHOICES)}")
        if (problem := runtime_problem(requested)) is not None:
            raise RuntimeMissingError(problem)
        return requested
    preferred = [runtime for runtime in (("keras", "onnx") if gpu else ("onnx", "keras")) if runtime in offered]
    for runtime in preferred:
        if runtime_problem(runtime) is None:
            return runtime
    if not preferred:  # a runtime this module does not know: `load_bundle` refuses it with its own message
        return offered[0] if offered else "keras"
    raise RuntimeMissingError("; ".join(str(runtime_problem(runtime)) for runtime in preferred))


def runtime_problem(runtime: str) -> str | None:
    """Why `runtime` cannot run here, naming the package and how to install it; None when it can.

    "onnx" imports ONNX Runtime (`onnxruntime`, a fraction of a second, kept by the interpreter once imported): a
    package that is installed but breaks on import is no more usable than a missing one. "keras" checks that Keras
    and its backend (`KERAS_BACKEND`, TensorFlow unless set) are installed without importing them: TensorFlow takes
    seconds to import, and a client never needs it."""
    if runtime == "onnx":
        failure = _import_failure("onnxruntime")
        if failure is None:
            return None
        return (
            f"the onnx runtime needs ONNX Runtime (the onnxruntime package), which cannot be imported here "
            f"({failure}): {INSTALL['onnx']}, or choose --runtime keras"
        )
    if runtime == "keras":
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        missing = [name for name in ("keras", backend) if importlib.util.find_spec(name) is None]
        if not missing:
            return None
        return f"the keras runtime needs {' and '.join(missing)}, not installed here: {INSTALL['keras']}"
    return None


@functools.cache
def _import_failure(module: str) -> str | None:
    """The error importing `module` raises here, as text (None: it imports), asked once per process."""
    try:
        importlib.import_module(module)
    except Exception as err:  # ImportError, or whatever a broken package raises on import
        return f"{type(err).__name__}: {err}"
    return None
