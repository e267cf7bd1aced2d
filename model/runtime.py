"""A quiet TensorFlow start-up: no native log lines on the terminal unless asked for, and nothing hidden that a user
needs to fix a broken node.

TensorFlow's native logging (absl) reads `TF_CPP_MIN_LOG_LEVEL` when its libraries load: 0 shows everything, 2 (the
default set here) errors and fatal messages only. With 2, TensorFlow 2.21 writes nothing while it imports on a
healthy node; an error or an abort message (a CUDA or CPU-instruction mismatch) is written straight to the
terminal, from the thread that writes it, when it happens. Nothing redirects file descriptor 2: a redirect would
lose the message before an abort and hold back other threads' output. A GPU that the backend cannot see is reported
on its own, as a configuration error (`pipeline.cluster.runtime.gpu_in_use`), which names `ifcbflow -v` to see the
backend's device warnings. `install()` runs when `model` is imported, i.e. before anything in this project imports
Keras or TensorFlow, in every process, Dask workers and batch jobs included. Set `TF_CPP_MIN_LOG_LEVEL=0` (what
`ifcbflow --verbose` does) to see everything.
"""

from __future__ import annotations

import os

LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = "2"


def install() -> None:
    """Quiet TensorFlow's native start-up lines in this process and those it starts (unless already set)."""
    os.environ.setdefault(LEVEL_ENV, DEFAULT_LEVEL)
