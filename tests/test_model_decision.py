"""The decision rule: argmax without thresholds, unclassified below a class threshold."""

from __future__ import annotations

import numpy as np
import pytest

from model.decision import UNCLASSIFIED, class_counts, count_columns, winner_names, winners

SCORES = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]])


def test_no_thresholds_is_argmax_and_zero_thresholds_change_nothing() -> None:
    np.testing.assert_array_equal(winners(SCORES), SCORES.argmax(axis=1))
    np.testing.assert_array_equal(class_counts(SCORES), [2, 1, 2])
    np.testing.assert_array_equal(winners(SCORES, np.zeros(3)), winners(SCORES))
    np.testing.assert_array_equal(class_counts(SCORES, np.zeros(3)), [2, 1, 2, 0])


def test_below_its_class_threshold_a_roi_is_unclassified() -> None:
    thresholds = np.array([0.5, 0.8, 0.45])  # 0.8 itself passes: at least the threshold
    np.testing.assert_array_equal(winners(SCORES, thresholds), [0, UNCLASSIFIED, 1, 2, UNCLASSIFIED])
    np.testing.assert_array_equal(class_counts(SCORES, thresholds), [1, 1, 1, 2])
    assert count_columns(["a", "b", "c"], thresholded=True) == ["a", "b", "c", "unclassified"]
    assert count_columns(["a", "b", "c"], thresholded=False) == ["a", "b", "c"]


def test_float32_scores_against_thresholds_fitted_on_them() -> None:
    scores = SCORES.astype(np.float32)
    thresholds = np.array([float(scores[0, 0]), 1.0, 1.0])  # exactly a float32 score, as a fit returns it
    assert winners(scores, thresholds)[0] == 0


def test_empty_bins() -> None:
    assert winners(np.zeros((0, 3))).shape == (0,)
    np.testing.assert_array_equal(class_counts(np.zeros((0, 3))), [0, 0, 0])
    np.testing.assert_array_equal(class_counts(np.zeros((0, 3)), np.full(3, 0.5)), [0, 0, 0, 0])


def test_names_of_winners_never_wrap_unclassified_to_the_last_class() -> None:
    assert winner_names(np.array([2, -1, 0]), ["a", "b", "c"]) == ["c", "unclassified", "a"]
    with pytest.raises(ValueError, match=r"\[-1, 3\)"):
        winner_names(np.array([3]), ["a", "b", "c"])


def test_misaligned_thresholds_and_a_clashing_class_name_are_errors() -> None:
    with pytest.raises(ValueError, match="one per class"):
        winners(SCORES, np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="ROIs, classes"):
        winners(np.zeros(3))
    with pytest.raises(ValueError, match="class named 'unclassified'"):
        count_columns(["a", "unclassified"], thresholded=True)
