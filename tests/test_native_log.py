"""Quiet output on every CPU, nothing hidden: TensorFlow's native start-up lines are kept off the terminal at the
default verbosity, `--verbose` shows them, and a message written just before an abort still gets through.

Whether TensorFlow writes its oneDNN notice depends on the CPU (on by default where it finds AVX-512 VNNI/BF16 or
AMX). These tests set `TF_ENABLE_ONEDNN_OPTS=1`, which makes TensorFlow take that path, and write that notice, on
every x86 CPU, so what they check does not depend on the machine that runs them; each shows first that the noise is
there without the project's filter.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from model.native_log import dropped_pattern

REPO = Path(__file__).resolve().parent.parent
IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))
#: TensorFlow's oneDNN notice, written while its libraries load (absl's format: severity, MMDD, time, thread, file).
ONEDNN_NOTICE = re.compile(r"^I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on", re.M)
#: Lines that are not the project's own: absl lines, absl's pre-initialisation notice, Python warnings, log records
#: of other loggers (the CLI's format: time, level, logger), absl-py's Python records, tracebacks.
FOREIGN = re.compile(
    r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]"
    r"|WARNING: All log messages before absl"
    r"|.*\b\w*Warning: "
    r"|\d{4}-\d\d-\d\d [\d:,]+ [A-Z]+ (?!pipeline\b|pipeline\.|model\b|model\.)\S+: "
    r"|(DEBUG|INFO|WARNING|ERROR):[a-z]"
    r"|Traceback )",
    re.M,
)


def _env(**changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update({"PYTHONPATH": str(REPO), "TF_ENABLE_ONEDNN_OPTS": "1", "CUDA_VISIBLE_DEVICES": ""})
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _python(code: str, **env: str | None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=_env(**env))


ABORT = "os.write(2, b'F native fatal: CPU instruction missing\\n'); os.abort()"


def test_tensorflow_imports_without_a_native_line_and_an_abort_message_gets_through() -> None:
    bare = _python("import tensorflow")
    assert ONEDNN_NOTICE.search(bare.stderr), f"TensorFlow wrote no oneDNN notice here: {bare.stderr!r}"

    result = _python(f"import os, model, tensorflow; assert os.environ['TF_CPP_MIN_LOG_LEVEL'] == '2'; {ABORT}")
    assert result.returncode == -signal.SIGABRT
    assert result.stderr == "F native fatal: CPU instruction missing\n"


def test_asking_whether_tensorflow_is_installed_keeps_its_import_quiet() -> None:
    """`importlib.util.find_spec("tensorflow")` (how a runtime check asks, without importing it) does not use up
    the filter: the import that follows is as quiet as a first one."""
    result = _python("import importlib.util, model; assert importlib.util.find_spec('tensorflow'); import tensorflow")
    assert result.returncode == 0, result.stderr
    assert not ONEDNN_NOTICE.search(result.stderr), result.stderr


def test_verbose_level_lets_every_native_line_through() -> None:
    result = _python("import model, tensorflow", TF_CPP_MIN_LOG_LEVEL="0")
    assert result.returncode == 0, result.stderr
    assert ONEDNN_NOTICE.search(result.stderr)
    assert "WARNING: All log messages before absl::InitializeLog()" in result.stderr


def test_the_filter_passes_what_a_dying_loader_wrote_last() -> None:
    """A message written inside the filtered import, just before an abort, reaches the terminal; the lines below
    the level do not."""
    code = (
        "import os; from model.native_log import filtered_stderr, dropped_pattern\n"
        "with filtered_stderr(dropped_pattern('2')):\n"
        "    os.write(2, b'I0101 00:00:00.000001    7 port.cc:153] an info line\\n')\n"
        "    os.write(2, b'W0101 00:00:00.000002    7 port.cc:154] a warning line\\n')\n"
        "    os.write(2, b'E0101 00:00:00.000003    7 util.cc:131] an error line\\n')\n"
        f"    {ABORT}\n"
    )
    result = _python(code)
    assert result.returncode == -signal.SIGABRT
    assert result.stderr == (
        "E0101 00:00:00.000003    7 util.cc:131] an error line\nF native fatal: CPU instruction missing\n"
    )


@pytest.mark.parametrize(
    ("level", "dropped", "kept"),
    [
        ("0", "", "IWEF"),
        ("1", "I", "WEF"),
        ("2", "IW", "EF"),
        ("3", "IWE", "F"),
        ("", "", "IWEF"),
        ("quiet", "", "IWEF"),
    ],
)
def test_the_level_decides_which_absl_lines_are_dropped(level: str, dropped: str, kept: str) -> None:
    pattern = dropped_pattern(level)
    for severity in "IWEF":
        line = f"{severity}0000 00:00:1796584815.937187    2657 port.cc:153] text"
        matched = pattern is not None and re.search(pattern, line) is not None
        assert matched == (severity in dropped), (level, line)
    assert (pattern is not None) == bool(dropped)
    ordinary = "2026-12-06 19:20:20,496 INFO model.training.train: training small-cnn on 240 images"
    assert pattern is None or re.search(pattern, ordinary) is None


@pytest.mark.slow
def test_the_commands_print_only_their_own_lines(tmp_path: Path) -> None:
    """`synth`, `ls`, `train` (augmentation and the ONNX twin included), `classify` on both runtimes and `export`
    print only ifcbflow's own lines at the default verbosity, with oneDNN's kernels on."""
    archive, bundle = tmp_path / "archive", tmp_path / "m.zip"
    commands = [
        ["synth", str(archive), "--bins", "4", "--rois", "30"],
        ["ls", str(archive)],
        ["train", str(archive), "--labels", str(archive / "labels.csv"), "--arch", "small-cnn", "--epochs", "1",
         "--out", str(bundle)],
        ["classify", str(archive), "--model", str(bundle), "--out", str(tmp_path / "onnx.zarr"), "--workers", "1"],
        ["classify", str(archive), "--model", str(bundle), "--out", str(tmp_path / "keras.zarr"), "--workers", "1",
         "--runtime", "keras"],
        ["export", str(tmp_path / "keras.zarr"), "--csv", str(tmp_path / "bins.csv"), "--dashboard",
         str(tmp_path / "dashboard")],
    ]  # fmt: skip
    for command in commands:
        result = subprocess.run(
            [IFCBFLOW, *command], capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path
        )
        assert result.returncode == 0, (command, result.stderr)
        output = result.stdout + result.stderr
        assert not FOREIGN.search(output), f"{command[0]} printed lines not its own:\n{output}"
    verbose = subprocess.run(
        [IFCBFLOW, "-v", "ls", str(archive)], capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path
    )
    assert verbose.returncode == 0
    assert FOREIGN.search(verbose.stderr), "the detector finds nothing even in verbose output"
