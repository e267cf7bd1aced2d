"""Feeders: bins read and preprocessed by threads or by processes (shared memory), in order, bad bins as records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from model.preprocess import PreprocessConfig, preprocess
from pipeline.cluster.cpu_share import core_share
from pipeline.ifcb.archive import list_bins
from pipeline.ifcb.bins import BinFiles, read_bin_images, read_bin_meta
from pipeline.ifcb.errors import BinFailure
from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.job import shm
from pipeline.job.feeder import Feeder, LoadedBin, feeder_counts
from pipeline.job.hold import FEEDER_HOLD_ENV

CONFIG = PreprocessConfig(size=24)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    write_synthetic_archive(str(root), bins=5, rois=6, classes=2, seed=3, flat=True)
    bins = sorted(root.glob("*.roi"))
    bins[1].write_bytes(bins[1].read_bytes()[:100])  # a truncated .roi
    bins[3].with_suffix(".adc").write_text("1,2,3\nnot,a,row\n")  # a malformed .adc
    return root


def _shared_blocks() -> set[str]:
    return set(shm.blocks())


def _assert_every_bin_in_order_the_bad_ones_as_records(
    loaded: Sequence[LoadedBin | BinFailure], bins: Sequence[BinFiles]
) -> None:
    """`loaded` has one item per bin of `bins`, in their order, and its only failures are the archive's truncated
    .roi and malformed .adc, as data failures."""
    assert [item.files.bin.id if isinstance(item, LoadedBin) else item.bin for item in loaded] == [
        files.bin.id for files in bins
    ]
    assert [(item.stage, item.kind) for item in loaded if not isinstance(item, LoadedBin)] == [
        ("roi", "data"),
        ("adc", "data"),
    ]


@pytest.mark.parametrize("mode", [{"threads": 2}, {"processes": 2}], ids=["threads", "processes"])
def test_bins_come_back_in_order_with_the_model_inputs(archive: Path, mode: dict[str, int]) -> None:
    fs, bins, _ = list_bins(str(archive))
    before = _shared_blocks()
    feeder = Feeder(str(archive), {}, CONFIG, np.dtype(np.uint8), **mode)
    try:
        loaded = list(feeder.load(bins, ahead=2))
    finally:
        feeder.close()
    _assert_every_bin_in_order_the_bad_ones_as_records(loaded, bins)
    for item in loaded:
        if isinstance(item, LoadedBin):
            images = read_bin_images(fs, read_bin_meta(fs, item.files))
            np.testing.assert_array_equal(item.roi_numbers, [number for number, _ in images])
            want = np.stack([preprocess(image, CONFIG) for _, image in images])
            np.testing.assert_array_equal(item.inputs, want)
            assert item.ml_analyzed is not None and item.time == item.files.bin.time
            item.release()
    assert _shared_blocks() <= before  # every shared memory block was freed


def test_cpu_workers_feed_with_threads_and_gpu_workers_with_processes() -> None:
    assert feeder_counts(gpu=False, cores=16) == (0, 2)
    assert feeder_counts(gpu=True, cores=16) == (15, 0)  # one core for the task thread
    assert feeder_counts(gpu=True, cores=1) == (1, 0)
    assert feeder_counts(gpu=False, cores=16, count=3, kind="processes") == (3, 0)
    assert feeder_counts(gpu=False, cores=16, kind="processes") == (15, 0)
    assert feeder_counts(gpu=True, cores=16, kind="threads") == (0, 2)
    assert feeder_counts(gpu=True, cores=16, count=0) == (0, 2)  # 0: threads, as before
    with pytest.raises(ValueError, match="processes, threads"):
        feeder_counts(gpu=True, cores=16, kind="fibres")


def test_each_gpu_worker_of_an_8_gpu_64_core_node_feeds_from_its_own_8_cores() -> None:
    node = list(range(64))
    shares = [core_share(i, 8, node) for i in range(8)]
    assert shares == [list(range(8 * i, 8 * i + 8)) for i in range(8)]  # disjoint, contiguous, covering the node
    feeders = [feeder_counts(gpu=True, cores=len(share))[0] for share in shares]
    assert feeders == [7] * 8
    assert sum(feeders) + 8 == 64  # feeders and task threads: one process or thread per core, not ~500
    assert core_share(2, 4, [3, 1, 2, 0, 7, 6, 5, 4]) == [4, 5]  # what the job's affinity allows, in order
    assert core_share(3, 4, [0, 1]) == [1]  # fewer cores than workers: shared round-robin


def test_a_gpu_worker_pins_itself_to_its_share(tmp_path: Path) -> None:
    """The preload as a worker process runs it: pinned (Linux), and the share's size is what `cores()` reports."""
    code = (
        "import os; from pipeline.cluster.cpu_share import pin; from pipeline.cluster.local import cores; "
        "share = pin(1, 2); print(share, sorted(os.sched_getaffinity(0)), cores())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.split("] ")  # fmt: skip
    node = sorted(os.sched_getaffinity(0))
    want = core_share(1, 2, node)
    assert out[0] + "]" == str(want) and out[1] + "]" == str(want) and int(out[2]) == len(want)


def _held_feeders(hold: Path, timeout_s: float = 60) -> list[int]:
    """Pids of the feeder processes waiting at the hold point (at least one, or the test fails)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        held = [int(path.name.split(".")[-2]) for path in hold.parent.glob(f"{hold.name}.*.held")]
        if held:
            return held
        time.sleep(0.05)
    raise AssertionError("no feeder process reached the hold point")


def test_a_feeder_process_killed_mid_bin_costs_nothing_and_the_pool_heals(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL of a feeder holding a bin in shared memory: the pool is started anew, every bin still comes back in
    order with the same inputs, and the dead feeder's block is unlinked."""
    fs, bins, _ = list_bins(str(archive))
    hold = tmp_path / "hold"
    hold.touch()
    monkeypatch.setenv(FEEDER_HOLD_ENV, str(hold))
    feeder = Feeder(str(archive), {}, CONFIG, np.dtype(np.uint8), processes=2)
    try:
        with ThreadPoolExecutor(1) as reader:
            items = reader.submit(lambda: list(feeder.load(bins, ahead=2)))
            victim = _held_feeders(hold)[0]
            assert any(owner == os.getpid() and pid == victim for owner, pid in shm.blocks().values())
            os.kill(victim, signal.SIGKILL)
            hold.unlink()
            loaded = items.result(timeout=120)
        assert feeder.restarts == 1
        again = list(feeder.load(bins[:2]))  # the healed pool keeps working
    finally:
        feeder.close()
    _assert_every_bin_in_order_the_bad_ones_as_records(loaded, bins)
    for item in [*loaded, *again]:
        if isinstance(item, LoadedBin):
            images = read_bin_images(fs, read_bin_meta(fs, item.files))
            np.testing.assert_array_equal(item.inputs, np.stack([preprocess(image, CONFIG) for _, image in images]))
            item.release()
    assert not any(owner == os.getpid() for owner, _ in shm.blocks().values())


def test_blocks_of_dead_workers_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    names = [shm.block_name(int(dead.stdout), 7, 0), shm.block_name(os.getpid(), 8, 0), "psm_other"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert shm.sweep(tmp_path) == 1
    assert sorted(os.listdir(tmp_path)) == sorted(names[1:])
    assert shm.space_advice(1, tmp_path) is None
    advice = shm.space_advice(2**60, tmp_path)
    assert advice is not None and "--shm-size" in advice and "--ipc=host" in advice
