"""The failure table: the failed bins the ledger keeps (stage, reason, the versions of their files, the kind), as
five arrays of the `ledger` group along `failed`; bead runs left out are kept here too, as kind "beads"
(`pipeline.ifcb.errors.KINDS`), and the ledger keeps them apart from the failures (`records.Ledger.bead_runs`).

It grows by appending behind the summary's commit point, like every derived table (`pipeline.results.consolidation`):
a bin's later row supersedes its earlier ones, and a failure of a bin complete since is no failure (`Ledger`). A
table no commit point counts (stores written before the table grew by appending, which rewrote it in place) may
have been torn by a kill between its arrays' writes: arrays of two lengths, or a row of one write and a stage of
another. Such a table is dropped, never trusted: its bins are read again by the next run, and fail again if their
files are still bad.
"""

from __future__ import annotations

import numpy as np

from pipeline.ifcb.errors import KINDS, STAGES, BinFailure

COLUMNS = ("failed_bin", "failed_stage", "failed_reason", "failed_files", "failed_kind")
#: What a column absent from a table of before holds: no versions known, and kind "data" (the only kind recorded).
_ABSENT = {"failed_files": "", "failed_kind": "data"}


def failures_from_columns(columns: dict[str, np.ndarray]) -> dict[str, BinFailure] | None:
    """The failures the table's arrays hold, by bin (a later row over an earlier one); None when the table is
    torn. `failed_files` and `failed_kind` are absent in stores written before they existed (`_ABSENT`)."""
    if "failed_bin" not in columns:
        return {}
    rows = len(columns["failed_bin"])
    values = [columns.get(name, np.full(rows, _ABSENT.get(name, ""), dtype=object)).tolist() for name in COLUMNS]
    if len({len(column) for column in values}) > 1 or any(str(stage) not in STAGES for stage in values[1]):
        return None
    if any(str(kind) not in KINDS for kind in values[4]):
        return None
    return {
        str(bin_id): BinFailure(str(bin_id), str(stage), str(reason), kind=str(kind), files=str(stamp))
        for bin_id, stage, reason, stamp, kind in zip(*values, strict=True)
    }


def changed_failures(failures: dict[str, BinFailure], recorded: dict[str, BinFailure]) -> list[BinFailure]:
    """The failures a consolidation appends: those the table does not hold as they are."""
    return [failure for bin_id, failure in failures.items() if recorded.get(bin_id) != failure]
