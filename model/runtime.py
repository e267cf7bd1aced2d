"""A quiet TensorFlow start-up: no native log lines on the terminal unless asked for.

TensorFlow's native libraries print lines such as `WARNING: All log messages before absl::InitializeLog() is called
are written to STDERR` and `I0000 ... oneDNN custom operations are on` while they load, before they read
`TF_CPP_MIN_LOG_LEVEL`, so that variable alone cannot hide them. `install()` (run when `model` is imported, i.e.
before anything in this project imports Keras or TensorFlow, in every process, Dask workers and batch jobs included)
makes the first `import tensorflow` run with the process's stderr file descriptor sent to a temporary file, then
writes back every line except native log lines below `TF_CPP_MIN_LOG_LEVEL` (default 2: errors only). Set
`TF_CPP_MIN_LOG_LEVEL=0` (what `ifcbflow --verbose` does) to see everything.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = "2"
#: absl's native log line: severity letter (I, W, E, F), MMDD (0000 before absl starts), time, thread, file:line]
_NATIVE_LINE = re.compile(rb"^(?P<severity>[IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\]]+\] ")
_ABSL_PREAMBLE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITIES = b"IWEF"


def keep_line(line: bytes, min_level: int) -> bool:
    """Whether a line written to stderr during TensorFlow's import should reach the terminal."""
    if min_level <= 0:
        return True
    if line.startswith(_ABSL_PREAMBLE):
        return False
    match = _NATIVE_LINE.match(line)
    return match is None or _SEVERITIES.index(match["severity"]) >= min_level


@contextlib.contextmanager
def filtered_native_stderr(min_level: int) -> Iterator[None]:
    """Run the body with file descriptor 2 captured; replay the lines `keep_line` keeps when it ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            _flush_c_stdio()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = b"".join(line for line in capture if keep_line(line, min_level))
            if kept:
                os.write(2, kept)


def _flush_c_stdio() -> None:
    """Flush the C library's stdio buffers, where native libraries may still hold lines written during the body."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            level = int(os.environ.get(LEVEL_ENV, DEFAULT_LEVEL))
        except ValueError:
            level = int(DEFAULT_LEVEL)
        with filtered_native_stderr(level):
            self._loader.exec_module(module)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` through the other finders, once, and wraps its loader in `_QuietLoader`."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)  # type: ignore[arg-type]
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> None:
    """Quiet the first TensorFlow import of this process (no effect once TensorFlow is imported)."""
    os.environ.setdefault(LEVEL_ENV, DEFAULT_LEVEL)
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
