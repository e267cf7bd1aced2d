"""Which inference runtime runs a bundle's model in a worker: the rule behind `classify --runtime` (default auto).

Runtimes: "keras" (the Keras model on its backend, TensorFlow unless `KERAS_BACKEND` says otherwise) and "onnx"
(ONNX Runtime on the bundle's ONNX graph: an ONNX bundle's model, or a Keras bundle's ONNX twin, which `train`,
`model import` and `model export --add-onnx` write). A Keras model and its twin give the same scores within
`model.onnx_export.TOLERANCE`, so a store holds their results as one model's.

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
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

#: What `--runtime` accepts: a runtime, or auto (the rule above).
CHOICES = ("auto", "keras", "onnx")


def choose_runtime(offered: Sequence[str], *, gpu: bool, requested: str | None = None) -> str:
    """The runtime to run a bundle with: `requested` ("keras" or "onnx") when given, else the rule above.

    `offered` is what the bundle has (`model.bundle.runtimes`); auto passes over ONNX Runtime where it is not
    installed. A requested runtime the bundle lacks is returned as asked, for `load_bundle` to refuse with a message
    that says how to add it."""
    if requested not in (None, "auto"):
        if requested not in CHOICES:
            raise ValueError(f"unknown runtime {requested!r}: choose one of {', '.join(CHOICES)}")
        return requested
    preferred = ("keras", "onnx") if gpu else ("onnx", "keras")
    usable = [runtime for runtime in preferred if runtime in offered and _installed(runtime)]
    return (usable or [runtime for runtime in preferred if runtime in offered])[0]


def _installed(runtime: str) -> bool:
    """Whether the runtime's package is installed here (ONNX Runtime comes with the `cpu` and `gpu` extras only)."""
    return runtime != "onnx" or importlib.util.find_spec("onnxruntime") is not None
