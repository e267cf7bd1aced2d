"""Digests of the derived tables' committed rows: a table torn by a writer that lost its lease is found, never trusted.

The summary and the ledger's tables are rewritten in place (an append rewrites each array's last chunk), behind one
commit point: the summary group's attributes (`pipeline.results.layout.ROWS`). A writer that passed its last lease
check and was then paused past its lease (a stopped process, a frozen VM) can still land chunk writes after a newer
run's consolidation: object storage has no transaction over several keys, and a conditional write (`If-Match`) fences
one key only. So the commit point also says what the rows it counts hold: per array, a 64-bit digest of its committed
rows (`DIGESTS`). Every reader checks each array it reads against it; an array whose rows are not what the commit point
says is torn (`TornTablesError`), and the tables are then rebuilt from the commits, the facts they are derived from
(`ResultStore`). A consolidation cut off by a kill leaves rows past the count only, which no digest covers.

The digest is a sum over rows (mod 2^64) of a hash of the row's index and bytes, so an append adds the new rows' terms
to the digest the commit point had, without reading the rows before them (O(rows added), like the append itself);
the hash is the splitmix64 finaliser over the row's 64-bit words, vectorised with numpy (a million rows of an array
in milliseconds). It detects faults, not adversaries: a table that someone forges is outside what it guards.
Hand-written because no library offers an additive, row-indexed digest over numpy arrays.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

_TEXT = "text"
_MOD = 2**64


class TornTablesError(RuntimeError):
    """An array of the summary or the ledger does not hold the rows its commit point says (see the module)."""


def array_digest(values: Any, start: int = 0) -> int:
    """The digest of rows `start`, `start + 1`, ... of an array (its first dimension: rows), given their `values`.

    Numbers by their bytes (the dtype is part of the digest), text (zarr's strings, numpy unicode, objects) by its
    UTF-8 bytes whatever the width it is held in. Returns an integer in [0, 2^64)."""
    values = np.asarray(values)
    if values.ndim == 0:
        values = values.reshape(1)
    n = len(values)
    if n == 0:
        return 0
    words, lengths, kind = _row_words(values)
    seed = np.uint64(int.from_bytes(hashlib.blake2b(kind.encode(), digest_size=8).digest(), "little"))
    with np.errstate(over="ignore"):
        state = _mix(np.arange(start, start + n, dtype=np.uint64) ^ seed)
        for j in range(words.shape[1]):
            mixed = _mix(state ^ words[:, j])
            state = mixed if lengths is None else np.where(j * 8 < lengths, mixed, state)
        if lengths is not None:
            state = _mix(state ^ lengths.astype(np.uint64))
        return int(state.sum(dtype=np.uint64))


def grown_digest(previous: int, values: Any, start: int) -> int:
    """The digest of an array whose rows before `start` had digest `previous` and whose rows from `start` on are
    `values` (an append; from row 0 the previous rows are gone)."""
    return ((previous if start else 0) + array_digest(values, start)) % _MOD


def as_text(digest: int) -> str:
    """A digest as it is kept in the commit point's attributes (16 hex digits: JSON has no 64-bit integers)."""
    return f"{digest:016x}"


def verify(name: str, values: Any, digests: dict[str, str] | None) -> None:
    """Raise TornTablesError unless `values` (an array's rows from 0, as many as the commit point counts) have the
    digest `digests[name]`; an array the commit point has no digest for (a store of before digests) is taken."""
    if not digests or name not in digests:
        return
    if as_text(array_digest(values)) != digests[name]:
        raise TornTablesError(
            f"{name} does not hold the rows its commit point says: a writer that had lost the store's lease wrote "
            "it after a newer one; the tables are rebuilt from the commits"
        )


def _row_words(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(each row's bytes as uint64 words (rows, words), the byte length of each row of text or None, the kind)."""
    n = len(values)
    if values.dtype.kind in "OUT":
        encoded = np.strings.encode(values.astype(np.dtypes.StringDType()).reshape(n), "utf-8")
        lengths = np.strings.str_len(encoded).astype(np.int64)
        raw, kind = encoded.view(np.uint8).reshape(n, encoded.dtype.itemsize), _TEXT
    else:
        raw, lengths, kind = np.ascontiguousarray(values).view(np.uint8).reshape(n, -1), None, values.dtype.str
        kind = f"{kind}{values.shape[1:]}"
    width = -(-max(raw.shape[1], 1) // 8) * 8
    padded = np.zeros((n, width), np.uint8)
    padded[:, : raw.shape[1]] = raw
    return padded.view("<u8"), lengths, kind


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
