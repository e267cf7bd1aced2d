"""Planning from the listing alone: partitions of whole bins by bytes of images, balanced over the workers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.ifcb.archive import list_bins
from pipeline.ifcb.bins import BinFiles
from pipeline.ifcb.identifiers import parse_bin_id
from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.job.plan import BIN_OVERHEAD_BYTES, balanced_target, bin_weight, partition, stream_partitions

KB = 1000


def _bins(roi_kb: list[int]) -> list[BinFiles]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        BinFiles(parse_bin_id(f"D{start + timedelta(minutes=20 * i):%Y%m%dT%H%M%S}_IFCB999"), "h", "a", "r",
                 (100, 1000, kb * KB))
        for i, kb in enumerate(roi_kb)
    ]  # fmt: skip


def _sizes(parts: list[list[BinFiles]]) -> list[list[int]]:
    return [[files.roi_size // KB for files in part] for part in parts]


def test_partitions_hold_whole_bins_near_the_target() -> None:
    target = 2 * (300 * KB + BIN_OVERHEAD_BYTES)
    assert _sizes(partition(_bins([300] * 5), target)) == [[300, 300], [300, 300], [300]]


def test_a_bin_bigger_than_the_target_is_alone() -> None:
    assert _sizes(partition(_bins([10, 5000, 10, 10]), 1000 * KB)) == [[10], [5000], [10, 10]]


def test_empty_bins_still_weigh_something() -> None:
    assert bin_weight(_bins([0])[0]) == BIN_OVERHEAD_BYTES
    assert len(partition(_bins([0] * 10), 3 * BIN_OVERHEAD_BYTES)) == 4


def test_order_is_kept_and_nothing_lost() -> None:
    bins = _bins([5, 0, 7, 3, 9, 1, 0, 4])
    assert [files for part in partition(bins, 80 * KB) for files in part] == bins


def test_balanced_target_keeps_every_worker_busy() -> None:
    assert balanced_target(total_bytes=10**9, n_workers=4, target_bytes=10**8) == 10**8
    assert balanced_target(total_bytes=400, n_workers=2, target_bytes=10**8) == 100
    assert balanced_target(total_bytes=0, n_workers=2, target_bytes=5000) == 5000
    with pytest.raises(ValueError):
        partition(_bins([1]), 0)


def test_the_listing_gives_every_file_size(tmp_path: Path) -> None:
    write_synthetic_archive(str(tmp_path), bins=3, rois=5, classes=2, seed=0)
    _, bins, _ = list_bins(str(tmp_path))
    for files in bins:
        assert files.sizes == tuple(Path(path).stat().st_size for path in (files.hdr, files.adc, files.roi))
        assert files.roi_size > 0


def _listing(bins: list[BinFiles], consumed: list[BinFiles]) -> Iterator[BinFiles]:
    for files in bins:
        consumed.append(files)
        yield files


@pytest.mark.parametrize("n_workers", [0, 1, 2, 8])
@pytest.mark.parametrize("n_bins", [1, 5, 40, 400])
def test_streamed_partitions_are_those_of_the_whole_listing(n_workers: int, n_bins: int) -> None:
    sizes = [(i * 7919) % 900 for i in range(n_bins)]  # 0..899 kB, uneven
    bins = _bins(sizes)
    for target in (50 * KB, 300 * KB, 5000 * KB, 10**9):
        whole = partition(bins, balanced_target(sum(map(bin_weight, bins)), n_workers, target))
        consumed: list[BinFiles] = []
        streamed = stream_partitions(_listing(bins, consumed), n_workers, target)
        first = next(streamed)
        assert first == whole[0]
        # formed before the listing ends whenever the run is bigger than two partitions per worker
        big = sum(map(bin_weight, bins[:-1])) >= 2 * max(n_workers, 1) * target
        assert (len(consumed) < len(bins)) == big
        assert [first, *streamed] == whole
