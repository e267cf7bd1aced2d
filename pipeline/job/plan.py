"""Planning: which bins to classify, and partitions of whole bins, from the archive listing alone.

The listing already gives every file's size, so planning reads no file: each bin's `.hdr`, `.adc` and `.roi` are read
exactly once, by the worker that classifies it (three requests per bin on object storage). Partitions are
consecutive bins of about `target_bytes` of `.roi` (the pixels are what reading, preprocessing and the model cost):
big enough that scheduler overhead and per-partition store writes vanish, small enough that a lost task costs
little. Each bin also weighs a few kilobytes, so a run of tiny or empty bins still splits into partitions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator

from pipeline.ifcb.bins import BinFiles

MB = 1_000_000
DEFAULT_PARTITION_MB = 256.0
#: What a bin weighs beyond its pixels (three requests, parsing, a summary row), in bytes of `.roi`.
BIN_OVERHEAD_BYTES = 64_000


def bin_weight(files: BinFiles) -> int:
    """What classifying a bin costs, in bytes of `.roi` (its pixels) plus a fixed per-bin overhead."""
    return files.roi_size + BIN_OVERHEAD_BYTES


def balanced_target(total_bytes: int, n_workers: int, target_bytes: int) -> int:
    """The partition size actually used: `target_bytes`, made smaller when that would leave workers idle.

    Two partitions per worker at least, so a small archive still spreads over the cluster and the last partition
    does not keep everyone waiting.
    """
    if n_workers <= 0 or total_bytes <= 0:
        return target_bytes
    return max(1, min(target_bytes, math.ceil(total_bytes / (2 * n_workers))))


def partition(bins: Iterable[BinFiles], target_bytes: int) -> list[list[BinFiles]]:
    """Consecutive whole bins, about `target_bytes` per partition; a bin bigger than the target is alone."""
    if target_bytes < 1:
        raise ValueError(f"partition size must be at least 1 byte, got {target_bytes}")
    return list(_partitions(bins, target_bytes))


def stream_partitions(bins: Iterable[BinFiles], n_workers: int, target_bytes: int) -> Iterator[list[BinFiles]]:
    """The partitions `partition(bins, balanced_target(total, n_workers, target_bytes))` gives, formed while `bins`
    is still being listed.

    Only the first `2 * n_workers * target_bytes` bytes of bins are read ahead: a listing that ends before that is a
    small run, balanced as a whole; one that goes beyond it has the target as its partition size whatever follows.
    """
    if target_bytes < 1:
        raise ValueError(f"partition size must be at least 1 byte, got {target_bytes}")
    listed = iter(bins)
    head: list[BinFiles] = []
    size = 0
    for files in listed:
        head.append(files)
        size += bin_weight(files)
        if size >= 2 * max(n_workers, 1) * target_bytes:
            break
    else:  # the whole listing is in `head`
        yield from _partitions(head, balanced_target(size, n_workers, target_bytes))
        return
    yield from _partitions(itertools.chain(head, listed), target_bytes)


def _partitions(bins: Iterable[BinFiles], target_bytes: int) -> Iterator[list[BinFiles]]:
    current: list[BinFiles] = []
    size = 0
    for files in bins:
        weight = bin_weight(files)
        if current and size + weight > target_bytes:
            yield current
            current, size = [], 0
        current.append(files)
        size += weight
    if current:
        yield current
