"""Batches across bins: fixed-size batches from consecutive bins, and each bin's scores back in ROI order."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.job.batching import BatchAssembler, ScoreCollector, padded_size

ROW = (2, 2, 1)


def _bin(key: int, n: int) -> np.ndarray:
    """n rows whose pixels encode (bin, row), so a misplaced row is visible."""
    rows = np.zeros((n, *ROW), dtype=np.uint8)
    rows[:, 0, 0, 0] = key
    rows[:, 0, 1, 0] = np.arange(n) % 256
    rows[:, 1, 0, 0] = np.arange(n) // 256
    return rows


def _fake_scores(inputs: np.ndarray) -> np.ndarray:
    """A 'model' whose scores say which bin and row each input came from."""
    flat = inputs.reshape(len(inputs), -1).astype(np.float32)
    return np.stack([flat[:, 0], flat[:, 1] + 256 * flat[:, 2]], axis=1)


def _run(sizes: list[int], batch_size: int) -> tuple[list[tuple[int, np.ndarray]], list[int]]:
    assembler, collector = BatchAssembler(batch_size, ROW), ScoreCollector(2)
    done, shapes = [], []

    def take(batches) -> None:
        for batch in batches:
            shapes.append(len(batch.inputs))
            assert (batch.inputs[batch.n_valid :] == 0).all()  # padding is zeros
            collector.take(batch, _fake_scores(batch.inputs))
            done.extend(collector.ready())

    for key, n in enumerate(sizes, start=1):
        collector.expect(key, n)
        take(assembler.add(key, _bin(key, n)))
    take(assembler.finish())
    done.extend(collector.ready())
    assert collector.pending == 0
    return done, shapes


@pytest.mark.parametrize(
    "sizes",
    [
        [3, 5],  # a bin split across two batches
        [0, 4, 0],  # bins of 0 ROIs, first and last
        [19],  # a bin bigger than a batch
        [1, 1, 1, 1, 1, 1, 1, 1],  # many bins in one batch
        [8, 8],  # exact multiples
    ],
)
def test_every_bin_gets_its_own_scores_in_roi_order(sizes: list[int]) -> None:
    done, shapes = _run(sizes, batch_size=8)
    assert [key for key, _ in done] == list(range(1, len(sizes) + 1))  # in the order bins were added
    for key, scores in done:
        n = sizes[key - 1]
        assert scores.shape == (n, 2) and scores.dtype == np.float32
        np.testing.assert_array_equal(scores[:, 0], key)
        np.testing.assert_array_equal(scores[:, 1], np.arange(n))
    assert all(size == 8 for size in shapes[:-1])  # every batch but the last is full


def test_the_last_batch_is_padded_to_a_power_of_two() -> None:
    _, shapes = _run([8, 3], batch_size=8)
    assert shapes == [8, 4]
    assert [padded_size(n, 4096) for n in (1, 2, 3, 5, 1000, 4096)] == [1, 2, 4, 8, 1024, 4096]
    assert padded_size(600, 512) == 512


def test_wrong_row_shapes_and_duplicate_bins_are_refused() -> None:
    with pytest.raises(ValueError, match="expected"):
        list(BatchAssembler(4, ROW).add("x", np.zeros((1, 3, 3, 1), np.uint8)))
    collector = ScoreCollector(2)
    collector.expect("x", 1)
    with pytest.raises(ValueError, match="already expected"):
        collector.expect("x", 1)
