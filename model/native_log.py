"""TensorFlow's native log lines, kept off the terminal at the default verbosity on every CPU, and nothing hidden
that a user needs to fix a broken node.

TensorFlow's native logging (absl) honours `TF_CPP_MIN_LOG_LEVEL` (0 shows everything, 2 — the default set here —
errors and fatal messages only) from the moment TensorFlow reads it, but its libraries' static initialisers log
before that: on a CPU where TensorFlow turns on its oneDNN custom operations by default (x86 with AVX-512 VNNI or
BF16, AMX: recent Intel Xeon and AMD EPYC), loading them writes `WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR` and an `I0000 … port.cc:…] oneDNN custom operations are on`
notice, once per library, whatever the level says. These lines cannot be turned off from outside: absl's level
setter is reached only after the library that logs has loaded, and `TF_ENABLE_ONEDNN_OPTS=0` would drop oneDNN's
kernels, which train the project's CNNs twice as fast on such a CPU (measured on a 2-core AMD EPYC, utopia-b3:
50 against 25 to 28 images/s).

So the first `import tensorflow` of a process runs with file descriptor 2 sent through `grep -v`, which drops the
absl lines below the level (`LEVEL_ENV`; nothing at 0) and the pre-initialisation notice, and passes every other
byte through at once, from a separate process. A separate process is the point, and why no in-process capture
library (wurlitzer and the like, which drain a pipe from a thread) is used: if TensorFlow aborts while it loads (a
missing CPU instruction, a broken CUDA library), the message it wrote just before is still in the pipe, and only a
reader that outlives the aborting process delivers it. Once the import returns, descriptor 2 is the terminal
again. Where no `grep` exists, nothing is filtered.

`install()` runs when `model` is imported, i.e. before anything in this project imports Keras or TensorFlow, in
every process, Dask workers and batch jobs included. `ifcbflow --verbose` sets `TF_CPP_MIN_LOG_LEVEL=0`: every
line then goes through.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType

LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = "2"
#: The notice absl writes before its first line when nothing initialised it.
_PRE_INIT = r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
#: An absl line's prefix: severity letter, MMDD, time, thread id, file:line].
_ABSL_LINE = r"{severities}[0-9]{{4}} [0-9:.]+ +[0-9]+ [^ ]+:[0-9]+\] "
_SEVERITIES = "IWEF"
#: How long the filter may take to pass on what the import wrote (it exits when the pipe closes).
_DRAIN_SECONDS = 10.0


def install() -> None:
    """Quiet TensorFlow's native lines in this process and those it starts (unless the level is already set), and
    filter what its libraries write while they load at the first `import tensorflow`."""
    os.environ.setdefault(LEVEL_ENV, DEFAULT_LEVEL)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _TensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TensorFlowFinder())


def dropped_pattern(level: str | None) -> str | None:
    """The extended regular expression of the lines `TF_CPP_MIN_LOG_LEVEL=level` keeps off the terminal while
    TensorFlow loads (absl lines of the severities below the level, and absl's pre-initialisation notice), or None
    for none (level 0, unset or not a number)."""
    try:
        hidden = _SEVERITIES[: max(0, min(int(level or 0), 3))]
    except ValueError:
        return None
    if not hidden:
        return None
    return f"^({_PRE_INIT}$|{_ABSL_LINE.format(severities=f'[{hidden}]')})"


@contextlib.contextmanager
def filtered_stderr(pattern: str | None) -> Iterator[None]:
    """Send file descriptor 2 through `grep -v -E pattern` for the duration; a no-op for None or without grep.

    Every line that does not match reaches the original descriptor 2 as soon as it is written, also when this
    process dies inside the block (the filter is another process and drains the pipe to its end).
    """
    grep = shutil.which("grep")
    if pattern is None or grep is None:
        yield
        return
    sys.stderr.flush()
    original = os.dup(2)
    try:
        filter_ = subprocess.Popen(
            [grep, "-v", "-E", "--line-buffered", pattern], stdin=subprocess.PIPE, stdout=original, close_fds=True
        )
    except OSError:
        os.close(original)
        yield
        return
    assert filter_.stdin is not None
    os.dup2(filter_.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)
        os.close(original)
        filter_.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            filter_.wait(_DRAIN_SECONDS)


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loading of the top-level `tensorflow` package in `filtered_stderr`, once.

    It stays on `sys.meta_path` until TensorFlow is loaded (`_FilteredLoader.exec_module` takes it off): a mere
    `importlib.util.find_spec("tensorflow")`, which asks whether TensorFlow is installed without importing it,
    must not use up the filter of the import that follows."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and isinstance(spec.loader, importlib.abc.Loader):
            spec.loader = _FilteredLoader(spec.loader)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    """A loader that runs another's `exec_module` with descriptor 2 filtered by the level set now."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> object:  # get_resource_reader, is_package, …: the wrapped loader's
        return getattr(self._loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _TensorFlowFinder)]
        with filtered_stderr(dropped_pattern(os.environ.get(LEVEL_ENV))):
            self._loader.exec_module(module)
