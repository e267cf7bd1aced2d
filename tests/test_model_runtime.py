"""TensorFlow starts quietly without hiding anything: no native line on a healthy import, and file descriptor 2 is
never redirected, so a message written just before an abort reaches the terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**env, "PYTHONPATH": str(REPO)})  # fmt: skip


def test_tensorflow_imports_without_a_native_line_and_an_abort_message_gets_through() -> None:
    code = (
        "import os, model, tensorflow; assert os.environ['TF_CPP_MIN_LOG_LEVEL'] == '2'; "
        "os.write(2, b'F native fatal: CPU instruction missing\\n'); os.abort()"
    )
    result = _python(code)
    assert result.returncode == -signal.SIGABRT
    assert result.stderr == "F native fatal: CPU instruction missing\n"
