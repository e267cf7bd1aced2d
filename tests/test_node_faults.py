"""Faults of the node, not of the bin: a feeder process killed by a real signal while it loads a bin, a worker whose
allocation fails under a real memory limit (`RLIMIT_AS`), and a node whose environment cannot import the runtime
the run needs (`--runtime onnx` without ONNX Runtime).

A bin the node cannot hold is neither bad data nor retried at every run: it gets `NODE_ATTEMPTS` attempts in the
task, then it is recorded at stage "node" with a reason that names the limit, and later runs read it again only when
asked (`--retry-failed`). A runtime that cannot be imported stops the run before anything is submitted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from classify_support import session_survivors
from onnx_support import onnx_bundle as onnx_bundle_at

from pipeline.faults import fault_kind
from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.job.hold import FEEDER_HOLD_ENV
from pipeline.results.store import ResultStore

pytestmark = pytest.mark.slow
IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))
REPO = Path(__file__).resolve().parent.parent
CLASSES = ["round", "long", "spiky"]
NEW = "D20130526T095207_IFCB013"


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small ONNX classifier as a bundle: its runs need ONNX Runtime, not TensorFlow (quick to start)."""
    return onnx_bundle_at(tmp_path_factory.mktemp("onnx"), CLASSES)


def _classify(archive: str, bundle: str, out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [IFCBFLOW, "classify", archive, "--model", bundle, "--out", str(out), "--workers", "1", "--json", *extra]
    return subprocess.Popen(command, start_new_session=True, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _finish(job: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert not session_survivors(job.pid), "a process of the run outlived it"
    return subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)


def _next_held(hold: Path, seen: set[int], job: subprocess.Popen, timeout_s: float = 240) -> int:
    """The pid of a feeder process waiting at the hold point that is not one of `seen`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        held = {int(path.name.split(".")[-2]) for path in hold.parent.glob(f"{hold.name}.*.held")} - seen
        if held:
            return min(held)
        assert job.poll() is None, f"the run ended before a feeder held: {job.communicate()}"
        time.sleep(0.05)
    raise TimeoutError("no new feeder process reached the hold point")


# --- a feeder process killed by a signal ----------------------------------------------------------------------------
def test_a_bin_whose_feeder_is_killed_twice_is_a_node_failure_read_again_only_when_asked(
    onnx_bundle: str, tmp_path: Path
) -> None:
    """SIGKILL (what the kernel's out-of-memory killer sends) of the feeder process loading a bin, then of the one
    loading it again alone: the bin is recorded at stage "node", naming the signal; the other bin is complete. A
    rerun does not read it again; a rerun with --retry-failed does, and completes it."""
    archive, out, hold = str(tmp_path / "archive"), tmp_path / "store.zarr", tmp_path / "hold"
    write_synthetic_archive(archive, bins=2, rois=6, classes=3, seed=21)
    hold.touch()
    job = _classify(archive, onnx_bundle, out, "--feeder-kind", "processes", "--feeders", "1",
                    env={FEEDER_HOLD_ENV: str(hold)})  # fmt: skip
    try:
        first = _next_held(hold, set(), job)
        os.kill(first, signal.SIGKILL)  # while it holds the bin's inputs in shared memory
        second = _next_held(hold, {first}, job)  # the same bin, loaded again alone by a new pool
        os.kill(second, signal.SIGKILL)
    finally:
        hold.unlink()
    run = _finish(job)
    assert run.returncode == 1, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert summary["bins_done"] == 1 and summary["bins_failed"] == 1 and summary["bins_incomplete"] == 0
    ledger = ResultStore(str(out)).ledger()
    (failure,) = ledger.failures.values()
    assert failure.stage == "node" and failure.kind == "data" and failure.files  # recorded for these files
    assert "feeder process died while loading it (signal 9, SIGKILL: likely the kernel's out-of-memory killer)" \
        in failure.reason  # fmt: skip
    assert "--retry-failed" in failure.reason and failure.bin not in ledger.complete

    again = _finish(_classify(archive, onnx_bundle, out))
    assert again.returncode == 1, again.stderr[-3000:]
    summary = json.loads(again.stdout)
    assert summary["bins_known_bad"] == 1 and summary["bins_planned"] == 0  # not read again
    assert [entry["stage"] for entry in summary["failures"]] == ["node"]

    retried = _finish(_classify(archive, onnx_bundle, out, "--retry-failed"))
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert json.loads(retried.stdout)["complete"]
    ledger = ResultStore(str(out)).ledger()
    assert failure.bin in ledger.complete and ledger.failures == {}


# --- a worker out of memory -----------------------------------------------------------------------------------------
_OUT_OF_MEMORY = textwrap.dedent(
    """
    import json, logging, resource, sys
    import numpy as np
    from model.preprocess import PreprocessConfig
    from pipeline.faults import fault_kind
    from pipeline.ifcb.archive import list_bins
    from pipeline.job.feeder import Feeder, LoadedBin

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    archive = sys.argv[1]
    _, bins, _ = list_bins(archive)
    small = Feeder(archive, {}, PreprocessConfig(size=32), np.dtype(np.uint8), threads=1)
    big = Feeder(archive, {}, PreprocessConfig(size=8192), np.dtype(np.uint8), threads=1)  # 19 x 64 MiB of inputs
    with open("/proc/self/status") as status:
        size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + 512 * 2**20, resource.RLIM_INFINITY))  # a node's `ulimit -v`
    control = list(small.load(bins))
    loaded = list(big.load(bins))
    try:
        np.empty(2**31, np.uint8)
        kind = None
    except MemoryError as err:
        kind = fault_kind(err, "object")
    print(json.dumps({
        "control": [isinstance(item, LoadedBin) and len(item.roi_numbers) for item in control],
        "loaded": [item.to_dict() if not isinstance(item, LoadedBin) else None for item in loaded],
        "kind": kind,
    }))
    """
)


def test_a_bin_that_exhausts_the_workers_memory_is_a_node_failure_after_two_attempts(
    ifcb_data: Path, tmp_path: Path
) -> None:
    """A real allocation refused under `RLIMIT_AS` (model inputs of 8192 x 8192 for the 19 ROIs of a real bin, 1.2
    GiB over a limit 512 MiB above what the process holds): no retry with backoff, one more attempt with nothing else
    in flight, then a failure at stage "node" whose reason names the allocation. The same bin at a normal input size
    loads under the same limit."""
    archive = tmp_path / "archive"
    archive.mkdir()
    for ext in ("hdr", "adc", "roi"):
        shutil.copy(ifcb_data / "bins" / f"{NEW}.{ext}", archive)
    run = subprocess.run([sys.executable, "-c", _OUT_OF_MEMORY, str(archive)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    assert result["control"] == [19]
    assert result["kind"] == "node"  # a MemoryError is the node's fault
    (failure,) = result["loaded"]
    assert failure["bin"] == NEW and failure["stage"] == "node" and failure["kind"] == "data"
    assert failure["reason"].startswith("the worker ran out of memory at stage preprocess (MemoryError: Unable to")
    assert "2 times, the last with no other bin in flight" in failure["reason"]
    assert "--retry-failed" in failure["reason"]
    assert run.stderr.count("loading it again once the bins in flight are done") == 1  # two attempts, not ten


def test_a_partition_out_of_memory_in_the_workers_thread_is_split_then_its_bins_are_node_failures(
    onnx_bundle: str, tmp_path: Path
) -> None:
    """Batches too large for the node (numpy refuses the allocation: a real MemoryError in the worker's own thread,
    not in a feeder): the partition fails its two attempts, its bins are tried alone, then each is recorded at stage
    "node" naming the allocation and what to do, never "partition lost" redone by every run. A rerun does not read
    them again; one with --retry-failed and batches that fit completes them."""
    archive, out = str(tmp_path / "archive"), tmp_path / "store.zarr"
    write_synthetic_archive(archive, bins=4, rois=6, classes=3, seed=22)
    run = _finish(_classify(archive, onnx_bundle, out, "--batch-size", str(10**12)))
    assert run.returncode == 1, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert summary["bins_failed"] == 4 and summary["bins_incomplete"] == 0 and summary["bins_done"] == 0
    assert summary["partitions"] < 4  # one worker, 4 bins: about two per partition (`balanced_target`)
    assert "bins once more, each alone" in run.stderr and "partition lost" not in run.stderr
    ledger = ResultStore(str(out)).ledger()
    assert len(ledger.failures) == 4
    split = 0
    for failure in ledger.failures.values():
        assert failure.stage == "node" and failure.files
        assert failure.reason.startswith("the worker ran out of memory classifying it (MemoryError: Unable to")
        assert "--batch-size" in failure.reason and "--retry-failed" in failure.reason
        split += "in 2 with its partition and 2 alone" in failure.reason
    assert split >= 2  # the bins of a partition of more than one were tried alone before they were recorded

    again = _finish(_classify(archive, onnx_bundle, out))
    assert again.returncode == 1, again.stderr[-3000:]
    assert json.loads(again.stdout)["bins_known_bad"] == 4 and json.loads(again.stdout)["bins_planned"] == 0

    retried = _finish(_classify(archive, onnx_bundle, out, "--retry-failed", "--batch-size", "32"))
    assert retried.returncode == 0, retried.stderr[-3000:]
    ledger = ResultStore(str(out)).ledger()
    assert len(ledger.complete) == 4 and ledger.failures == {}


def test_a_memory_error_is_a_node_fault_not_a_transient_one() -> None:
    """What `pipeline.faults` makes of a real refused allocation: retried with backoff (transient), it would fail
    again at once; recorded as data, it would blame the bin."""
    try:
        np.empty(2**62, np.uint8)
    except MemoryError as err:
        assert (fault_kind(err, "object"), fault_kind(err, "store")) == ("node", "node")
    else:
        raise AssertionError("a 4 EiB allocation succeeded")


# --- a runtime the node cannot import -------------------------------------------------------------------------------
def _blocked(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import onnxruntime` fails, as on a node where it is not installed: a package of
    that name ahead of site-packages on the path, which raises ImportError."""
    package = tmp_path / "blocked" / "onnxruntime"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError(\"No module named 'onnxruntime' (blocked by a test)\")\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(package.parent), os.environ.get("PYTHONPATH")]))}


def test_a_runtime_that_cannot_be_imported_stops_the_run_before_anything_is_submitted(
    onnx_bundle: str, tmp_path: Path
) -> None:
    archive = str(tmp_path / "archive")
    write_synthetic_archive(archive, bins=3, rois=4, classes=3, seed=22)
    env = _blocked(tmp_path)
    for extra in (["--runtime", "onnx"], []):  # asked for, or the only runtime the bundle has
        out = tmp_path / f"store{len(extra)}.zarr"
        run = _finish(_classify(archive, onnx_bundle, out, *extra, env=env))
        assert run.returncode == 2, run.stderr[-3000:]
        message = " ".join(run.stderr.split())  # as the terminal wraps it
        assert "needs ONNX Runtime (the onnxruntime package), which cannot be imported here" in message
        assert "pip install 'ifcbflow[cpu]'" in message and "ImportError" in message
        assert message.count("error:") == 1 and "partition lost" not in message + run.stdout
        assert not out.exists()  # refused before the store was touched


def test_a_worker_that_cannot_import_the_runtime_refuses_it_and_auto_passes_over_it(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        from model.inference.runtimes import RuntimeMissingError, choose_runtime
        print(choose_runtime(("keras", "onnx"), gpu=False))
        for offered, requested in ((("onnx",), None), (("keras", "onnx"), "onnx")):
            try:
                choose_runtime(offered, gpu=False, requested=requested)
            except RuntimeMissingError as err:
                print(type(err).__mro__[1].__name__, err)
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **_blocked(tmp_path)})  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0] == "keras"  # auto, on CPU, where ONNX Runtime is missing
    assert len(lines) == 3 and all(
        line.startswith("BundleError the onnx runtime needs ONNX Runtime") for line in lines[1:]
    )
