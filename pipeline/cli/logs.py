"""Logging set-up shared by the CLI and the demo: our INFO messages, without the libraries' chatter."""

from __future__ import annotations

import logging
import os

# Loggers that talk at INFO about their own machinery (cluster start/stop, distribution-strategy reductions).
_CHATTY = ("distributed", "tensorflow", "absl")


def configure_logging(verbose: bool = False) -> None:
    """INFO (DEBUG with `verbose`) for ifcbflow; WARNING for chatty libraries unless `verbose`."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ side, inherited by worker processes
    if not verbose:
        import distributed  # noqa: F401  (configures its loggers on import: quieten them after)

        for name in _CHATTY:
            logging.getLogger(name).setLevel(logging.WARNING)
