"""Shared memory blocks of feeder processes: named after the worker that frees them, so nothing outlives a kill.

A feeder process writes a bin's model inputs into a POSIX shared memory block; its worker maps the block, copies the
rows into batches and unlinks it. Between the feeder's return and the worker's unlink nobody else owns the block, so
a worker killed in between (OOM, nanny restart, a batch system's time limit, SIGKILL of the whole process group with
Python's resource tracker) would leave it in `/dev/shm` until reboot. Each block is therefore named
`ifcbflow_<worker pid>_<feeder pid>_<n>`: `sweep()` removes the blocks of workers that are no longer alive, and runs
whenever a worker starts its feeder processes, i.e. at the latest when the next run on the host starts.

Containers get a 64 MB `/dev/shm` by default, far less than a few bins of 299 x 299 inputs; a block that does not fit
kills its feeder with SIGBUS. `space_advice()` says so before any block is made.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

#: Where Linux keeps POSIX shared memory (`shm_open` names are files here); absent on macOS, which keeps none.
SHM_DIR = Path("/dev/shm")
PREFIX = "ifcbflow"
_NAME = re.compile(rf"^{PREFIX}_(?P<owner>\d+)_(?P<feeder>\d+)_\d+$")


def block_name(owner: int, feeder: int, number: int) -> str:
    """The name of a feeder's `number`-th block, freed by the worker process `owner`."""
    return f"{PREFIX}_{owner}_{feeder}_{number}"


def blocks(directory: Path = SHM_DIR) -> dict[str, tuple[int, int]]:
    """This project's blocks on this host: name -> (owner pid, feeder pid); empty where there is no `/dev/shm`."""
    try:
        names = os.listdir(directory)
    except OSError:
        return {}
    found = {}
    for name in names:
        match = _NAME.match(name)
        if match:
            found[name] = (int(match["owner"]), int(match["feeder"]))
    return found


def sweep(directory: Path = SHM_DIR, *, owner: int | None = None, keep: frozenset[str] = frozenset()) -> int:
    """Unlink the blocks whose owner is dead (or, with `owner`, every block of that owner except `keep`, which its
    broken feeder pool can no longer hand over); returns how many were removed."""
    removed = 0
    for name, (block_owner, _) in blocks(directory).items():
        stale = block_owner == owner if owner is not None else not _alive(block_owner)
        if stale and name not in keep:
            try:
                os.unlink(directory / name)
                removed += 1
            except FileNotFoundError:  # another process swept it first
                pass
    if removed:
        log.info("removed %d shared memory block(s) left in %s by feeders of stopped workers", removed, directory)
    return removed


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, killed but not yet reaped by a parent, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def space_advice(need_bytes: int, directory: Path = SHM_DIR) -> str | None:
    """Why feeder processes cannot hand `need_bytes` over in `directory`, and what to do; None when they can."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    free = stats.f_bavail * stats.f_frsize
    if free >= need_bytes:
        return None
    return (
        f"{directory} has {free / 2**20:,.0f} MiB free but feeder processes need about {need_bytes / 2**20:,.0f} MiB "
        "to hand bins over (a block that does not fit kills its feeder with SIGBUS): feeding with threads. In a "
        "container, give it more shared memory (docker/podman --shm-size=2g, or --ipc=host; Kubernetes: an emptyDir "
        "with medium: Memory mounted at /dev/shm)"
    )
