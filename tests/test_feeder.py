"""Feeders: bins read and preprocessed by threads or by processes (shared memory), in order, bad bins as records."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from model.preprocess import PreprocessConfig, preprocess
from pipeline.ifcb.archive import list_bins
from pipeline.ifcb.bins import read_bin_images, read_bin_meta
from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.job.feeder import Feeder, LoadedBin, default_feeders

CONFIG = PreprocessConfig(size=24)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    write_synthetic_archive(str(root), bins=5, rois=6, classes=2, seed=3, flat=True)
    bins = sorted(root.glob("*.roi"))
    bins[1].write_bytes(bins[1].read_bytes()[:100])  # a truncated .roi
    bins[3].with_suffix(".adc").write_text("1,2,3\nnot,a,row\n")  # a malformed .adc
    return root


def _shared_blocks() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


@pytest.mark.parametrize("mode", [{"threads": 2}, {"processes": 2}], ids=["threads", "processes"])
def test_bins_come_back_in_order_with_the_model_inputs(archive: Path, mode: dict[str, int]) -> None:
    fs, bins, _ = list_bins(str(archive))
    before = _shared_blocks()
    feeder = Feeder(str(archive), {}, CONFIG, np.dtype(np.uint8), **mode)
    try:
        loaded = list(feeder.load(bins, ahead=2))
    finally:
        feeder.close()
    assert [item.files.bin.id if isinstance(item, LoadedBin) else item.bin for item in loaded] == [
        files.bin.id for files in bins
    ]
    assert [(item.stage, item.kind) for item in loaded if not isinstance(item, LoadedBin)] == [
        ("roi", "data"),
        ("adc", "data"),
    ]
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
    assert default_feeders(gpu=False, cores=16) == (0, 2)
    assert default_feeders(gpu=True, cores=16) == (14, 0)
    assert default_feeders(gpu=True, cores=2) == (1, 0)
