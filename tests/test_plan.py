"""Planning: partitions of whole bins by ROI count, and metadata read on a real cluster (failures as records)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.ifcb.archive import list_bins
from pipeline.ifcb.bins import BinFiles
from pipeline.ifcb.identifiers import parse_bin_id
from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.job.plan import BinPlan, balanced_target, partition, read_metadata


def _plans(sizes: list[int]) -> list[BinPlan]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    plans = []
    for i, n in enumerate(sizes):
        bin_id = parse_bin_id(f"D{start + timedelta(minutes=20 * i):%Y%m%dT%H%M%S}_IFCB999")
        plans.append(BinPlan(files=BinFiles(bin_id, "h", "a", "r"), n_rois=n))
    return plans


def test_partitions_hold_whole_bins_near_the_target() -> None:
    parts = partition(_plans([30, 30, 30, 30, 30]), 70)
    assert [[p.n_rois for p in part] for part in parts] == [[30, 30], [30, 30], [30]]


def test_a_bin_bigger_than_the_target_is_alone() -> None:
    parts = partition(_plans([10, 500, 10, 10]), 100)
    assert [[p.n_rois for p in part] for part in parts] == [[10], [500], [10, 10]]


def test_order_is_kept_and_nothing_lost() -> None:
    plans = _plans([5, 0, 7, 3, 9, 1, 0, 4])
    parts = partition(plans, 8)
    assert [p for part in parts for p in part] == plans


def test_balanced_target_keeps_every_worker_busy() -> None:
    assert balanced_target(total_rois=100_000, n_workers=4, target_rois=5000) == 5000
    assert balanced_target(total_rois=400, n_workers=2, target_rois=5000) == 100
    assert balanced_target(total_rois=0, n_workers=2, target_rois=5000) == 5000
    with pytest.raises(ValueError):
        partition(_plans([1]), 0)


@pytest.mark.slow
def test_metadata_read_on_the_cluster(tmp_path: Path, dask_client) -> None:
    archive = str(tmp_path / "archive")
    ids = write_synthetic_archive(archive, bins=5, rois=12, classes=3, seed=3, flat=True)
    (tmp_path / "archive" / f"{ids[1]}.adc").write_text("not,an\nadc file\n")
    _, bins, listing_failures = list_bins(archive)
    plans, failures = read_metadata(dask_client, archive, None, bins)
    assert listing_failures == []
    assert [p.bin for p in plans] == [ids[0], *ids[2:]]
    assert all(p.n_rois == 12 for p in plans)
    assert [(f.bin, f.stage) for f in failures] == [(ids[1], "adc")]
