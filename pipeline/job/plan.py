"""Planning: which bins to classify, their ROI counts (read on the cluster), and partitions of whole bins.

The client lists the archive (one paginated listing), drops the bins the store already holds, then reads the small
`.hdr`/`.adc` files of the rest in parallel on the workers - an archive of 100,000 bins is 200,000 small reads, which
one client would do slowly - and groups the bins into partitions of about `target_rois` ROIs: big enough that
scheduler overhead vanishes, small enough that a worker's memory stays bounded and a lost task costs little.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.ifcb.archive import open_archive
from pipeline.ifcb.bins import BinFiles, read_many_bin_meta
from pipeline.ifcb.errors import BinFailure

#: Bins whose metadata one planning task reads (their requests run concurrently inside the task).
META_CHUNK = 64
DEFAULT_PARTITION_ROIS = 5000


@dataclass(frozen=True)
class BinPlan:
    """A bin to classify: where its files are and how many ROIs it has (the partitioning weight)."""

    files: BinFiles
    n_rois: int

    @property
    def bin(self) -> str:
        return self.files.bin.id


def read_metadata_chunk(
    archive_url: str, storage_options: dict[str, Any] | None, chunk: Sequence[BinFiles]
) -> list[BinPlan | BinFailure]:
    """Task: read the `.hdr` and `.adc` of a few bins (one concurrent batch of GETs) into small records."""
    fs, _ = open_archive(archive_url, storage_options)
    return [
        record if isinstance(record, BinFailure) else BinPlan(files=record.files, n_rois=record.n_rois)
        for record in read_many_bin_meta(fs, chunk)
    ]


def read_metadata(
    client: Any, archive_url: str, storage_options: dict[str, Any] | None, bins: Sequence[BinFiles]
) -> tuple[list[BinPlan], list[BinFailure]]:
    """Read every bin's metadata on the cluster, in chunks of META_CHUNK bins; keep the archive's time order."""
    chunks = [list(bins[i : i + META_CHUNK]) for i in range(0, len(bins), META_CHUNK)]
    futures = client.map(
        read_metadata_chunk, [archive_url] * len(chunks), [storage_options] * len(chunks), chunks, pure=False, retries=2
    )
    plans: list[BinPlan] = []
    failures: list[BinFailure] = []
    for records in client.gather(futures):
        for record in records:
            (failures if isinstance(record, BinFailure) else plans).append(record)
    return plans, failures


def balanced_target(total_rois: int, n_workers: int, target_rois: int) -> int:
    """The partition size actually used: `target_rois`, made smaller when that would leave workers idle.

    Two partitions per worker at least, so a small archive still spreads over the cluster and the last partition
    does not keep everyone waiting.
    """
    if n_workers <= 0 or total_rois <= 0:
        return target_rois
    return max(1, min(target_rois, math.ceil(total_rois / (2 * n_workers))))


def partition(bins: Sequence[BinPlan], target_rois: int) -> list[list[BinPlan]]:
    """Consecutive whole bins, about `target_rois` ROIs per partition; a bin bigger than the target is alone."""
    if target_rois < 1:
        raise ValueError(f"partition size must be >= 1 ROI, got {target_rois}")
    partitions: list[list[BinPlan]] = []
    current: list[BinPlan] = []
    size = 0
    for entry in bins:
        weight = max(entry.n_rois, 1)  # an empty bin still costs a few requests
        if current and size + weight > target_rois:
            partitions.append(current)
            current, size = [], 0
        current.append(entry)
        size += weight
    if current:
        partitions.append(current)
    return partitions
