"""Batches across bins: the model sees fixed, large batches assembled from consecutive bins; scores go back per bin.

A bin of 40 ROIs and one of 9,000 cost the device the same per ROI: `BatchAssembler` packs bins' model inputs into
batches of exactly `batch_size` rows (a bin may be split across batches, many bins may share one), and pads only the
last batch, to the next power of two, so the compiled model sees few shapes. `ScoreCollector` takes each batch's
scores back and hands out every bin, in the order the bins were added, as soon as all its rows are scored.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Piece:
    """Rows [start, start + count) of a batch hold rows [offset, offset + count) of item `key`."""

    key: Hashable
    start: int
    count: int
    offset: int


@dataclass
class Batch:
    """Model inputs (rows beyond `n_valid` are padding) and where each item's rows are."""

    inputs: np.ndarray
    n_valid: int
    pieces: list[Piece] = field(default_factory=list)


def padded_size(n: int, batch_size: int) -> int:
    """The rows a last batch of `n` valid rows is padded to: the next power of two, at most `batch_size`."""
    return min(batch_size, 1 << max(0, (n - 1).bit_length()))


class BatchAssembler:
    """Packs items (e.g. bins) of model inputs, each an array (n, *row_shape), into fixed-size batches.

    A fresh buffer is allocated per batch: the previous one may still be on its way to the device.
    """

    def __init__(self, batch_size: int, row_shape: tuple[int, ...], dtype: np.dtype | type = np.uint8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self._current: Batch | None = None

    def add(self, key: Hashable, rows: np.ndarray) -> Iterator[Batch]:
        """Add an item's rows; yields the batches this completes (none, one or many)."""
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"item {key!r}: rows of shape {rows.shape[1:]}, expected {self.row_shape}")
        offset = 0
        while offset < len(rows):
            batch = self._open()
            count = min(len(rows) - offset, self.batch_size - batch.n_valid)
            batch.inputs[batch.n_valid : batch.n_valid + count] = rows[offset : offset + count]
            batch.pieces.append(Piece(key, batch.n_valid, count, offset))
            batch.n_valid += count
            offset += count
            if batch.n_valid == self.batch_size:
                self._current = None
                yield batch

    def finish(self) -> Iterator[Batch]:
        """The last, partial batch (if any), padded with zeros to `padded_size` rows."""
        batch, self._current = self._current, None
        if batch is None or batch.n_valid == 0:
            return
        size = padded_size(batch.n_valid, self.batch_size)
        batch.inputs = batch.inputs[:size]
        batch.inputs[batch.n_valid :] = 0
        yield batch

    def _open(self) -> Batch:
        if self._current is None:
            self._current = Batch(np.empty((self.batch_size, *self.row_shape), dtype=self.dtype), 0)
        return self._current


class ScoreCollector:
    """Collects per-batch scores (or any per-row outputs, of `dtype`) back into per-item arrays, releasing items in
    the order they were expected."""

    def __init__(self, n_classes: int, dtype: np.dtype | type = np.float32) -> None:
        self.n_classes = n_classes
        self.dtype = np.dtype(dtype)
        self._order: list[Hashable] = []
        self._scores: dict[Hashable, np.ndarray] = {}
        self._missing: dict[Hashable, int] = {}

    def expect(self, key: Hashable, n_rows: int) -> None:
        """Announce an item of `n_rows` rows (an item of 0 rows is ready at once, with (0, n_classes) scores)."""
        if key in self._missing:
            raise ValueError(f"item {key!r} is already expected")
        self._order.append(key)
        self._scores[key] = np.empty((n_rows, self.n_classes), dtype=self.dtype)
        self._missing[key] = n_rows

    def take(self, batch: Batch, scores: np.ndarray) -> None:
        """Store the scores of a batch's valid rows where their items expect them."""
        for piece in batch.pieces:
            self._scores[piece.key][piece.offset : piece.offset + piece.count] = scores[
                piece.start : piece.start + piece.count
            ]
            self._missing[piece.key] -= piece.count

    def ready(self) -> Iterator[tuple[Hashable, np.ndarray]]:
        """Items whose rows are all scored, in the order they were expected (stops at the first unfinished one)."""
        while self._order and self._missing[self._order[0]] == 0:
            key = self._order.pop(0)
            del self._missing[key]
            yield key, self._scores.pop(key)

    @property
    def expected(self) -> list[tuple[Hashable, int]]:
        """The items expected and not yet handed out, in order, with their row counts."""
        return [(key, len(self._scores[key])) for key in self._order]

    @property
    def pending(self) -> int:
        """Items expected and not yet handed out."""
        return len(self._order)
