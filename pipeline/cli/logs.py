"""Logging set-up shared by the CLI and the demo: ifcbflow's INFO messages, without the libraries' chatter."""

from __future__ import annotations

import logging
import os
import warnings

#: Our own loggers: INFO by default; every other library logs WARNING and above unless `--verbose`.
_OURS = ("pipeline", "model")
#: Warnings that libraries raise about their own code, nothing a user can act on: (category, module regex).
#: Keras' bundled tf2onnx probes `np.object` (a FutureWarning on numpy 2) at every ONNX conversion.
_LIBRARY_WARNINGS = ((FutureWarning, r"keras\.src\.export\.tf2onnx_lib"),)


def configure_logging(verbose: bool = False) -> None:
    """INFO (DEBUG with `verbose`) for ifcbflow, WARNING for libraries (everything with `verbose`).

    `--verbose` also lets TensorFlow's native log lines through (`TF_CPP_MIN_LOG_LEVEL=0`, inherited by local
    worker processes) and the libraries' warnings about their own code; otherwise `model.native_log` keeps the
    native lines off the terminal and `_LIBRARY_WARNINGS` are ignored.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in _OURS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        for category, module in _LIBRARY_WARNINGS:
            warnings.filterwarnings("ignore", category=category, module=module)
        import distributed  # noqa: F401  (sets its own loggers' levels on import: lower them after)

        logging.getLogger("distributed").setLevel(logging.WARNING)
