"""Partition ids: what a planned partition, one attempt of it, and its keys in the store are called.

A partition id is its first bin and a digest of the run and its bins (so listings sort by time); an attempt's id
adds 8 random hex digits (`attempt_id`); `part_key` refuses, as an altered record, any id these could not make, so
no id read back from a store becomes a path outside it."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence

from pipeline.results.layout import PARTS, StoreMismatchError

#: What a partition id is made of (`partition_id`: a bin id, a dash, hex digits): no path separator, no leading dot.
_PARTITION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*", re.ASCII)


def part_key(part: str) -> str:
    """`parts/<part>`, the key prefix of a partition in the store.

    Partition ids come back from the store's commit records, which anyone who can write the store (or hand it to a
    colleague) can change: an id that `partition_id` could not have made (a `/`, `..`, a leading dot) is refused
    with `StoreMismatchError` rather than joined into a path, so no record can steer a read, write or delete outside
    the store."""
    if not _PARTITION.fullmatch(part):
        raise StoreMismatchError(f"the store names a partition {part!r}, which is not a partition id: it was altered")
    return f"{PARTS}/{part}"


def partition_id(bins: Sequence[str], run: str) -> str:
    """A partition's id: its first bin (so listings sort by time) and a digest of the run and all its bins;
    ValueError when the first bin is no bin id (a path, say), which would otherwise steer the write out of the store.

    The same within a run (a retried task rewrites the same keys with the same bytes), new in the next run (a bin
    that failed and is retried there gets a new commit, never one the summary already counts).
    """
    digest = hashlib.sha256("\n".join([run, *bins]).encode()).hexdigest()[:12]
    part = f"{bins[0] if bins else 'empty'}-{digest}"
    if not _PARTITION.fullmatch(part):  # a bin id always fits; anything else never becomes a path in the store
        raise ValueError(f"{bins[0]!r} is not a bin id, and a partition is named by its first bin")
    return part


def attempt_id(part: str) -> str:
    """The id one attempt of the planned partition `part` commits under: `part`, a dash and 8 random hex digits.

    Two attempts of one partition (a retry beside a zombie the scheduler gave up on, each having seen other transient
    faults) so write disjoint keys and two commits, each listing only the bins whose ROIs its own arrays hold: neither
    can overwrite the other's arrays or commit, and the ledger takes one record per bin. Nothing a commit says is
    trusted beyond what it is: its thresholds are checked against the store's when it is read (`ResultStore.ledger`),
    its files' fingerprints against the listing (`pipeline.job.run`).
    """
    return f"{part}-{secrets.token_hex(4)}"
