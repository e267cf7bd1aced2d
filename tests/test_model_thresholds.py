"""Per-class thresholds: hand-computed fits, ties, absent classes, and the exact optimum against a brute force."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from sklearn.metrics import f1_score

from model.decision import class_counts, threshold_array, winners
from model.training.thresholds import fit_thresholds


def two_classes(a_scores: list[float]) -> np.ndarray:
    a = np.array(a_scores)
    return np.stack([a, 1 - a], axis=1)


def test_a_threshold_that_clearly_maximises_f1_and_an_all_correct_class() -> None:
    # predicted a: 0.95 a, 0.9 a, 0.7 b, 0.6 b;  predicted b (b scores 0.8, 0.65): both right
    scores = two_classes([0.95, 0.9, 0.7, 0.6, 0.2, 0.35])
    fit = fit_thresholds(scores, ["a", "a", "b", "b", "b", "b"], ["a", "b"])
    a, b = fit["per_class"]["a"], fit["per_class"]["b"]
    # a: argmax TP 2 of 4 predicted, support 2 -> F1 4/6; at 0.9: TP 2 of 2 -> F1 1
    assert a == {"threshold": 0.9, "f1_argmax": pytest.approx(4 / 6), "f1": 1.0, "support": 2, "unclassified": 2,
                 "note": None}  # fmt: skip
    # b: every ROI predicted b is right, so any threshold only loses recall: argmax, 0.0
    assert b["threshold"] == 0.0 and b["f1"] == b["f1_argmax"] == pytest.approx(2 * 2 / (2 + 4))
    assert fit["thresholds"] == {"a": 0.9, "b": 0.0}
    assert fit["unclassified"] == 2 and fit["n"] == 6
    assert json.loads(json.dumps(fit)) == fit


def test_equal_f1_goes_to_the_lower_threshold() -> None:
    # predicted a, high to low: 0.95 a, 0.9 b, 0.85 b, 0.8 b, 0.75 a, 0.7 b; one more true a is predicted b.
    # support 3: F1 at 0.95 = 2/4, at 0.75 = 4/8 (equal, the lower wins), at argmax (0.7) = 4/9
    scores = two_classes([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.3])
    fit = fit_thresholds(scores, ["a", "b", "b", "b", "a", "b", "a"], ["a", "b"])
    a = fit["per_class"]["a"]
    assert (a["threshold"], a["f1"], a["f1_argmax"], a["unclassified"]) == (0.75, 0.5, pytest.approx(4 / 9), 1)


def test_rois_with_equal_scores_are_kept_or_dropped_together() -> None:
    # 0.9 a, 0.8 a, 0.8 b, 0.6 b with support 2: a threshold of 0.8 keeps both 0.8s, F1 = 4/5 (never 1.0)
    scores = two_classes([0.9, 0.8, 0.8, 0.6])
    a = fit_thresholds(scores, ["a", "a", "b", "b"], ["a", "b"])["per_class"]["a"]
    assert (a["threshold"], a["f1"], a["unclassified"]) == (0.8, pytest.approx(4 / 5), 1)


def test_absent_and_never_predicted_classes_keep_argmax_and_say_so() -> None:
    scores = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    fit = fit_thresholds(scores, ["a", "c", "c"], ["a", "b", "c"])  # b predicted, never a label; c never predicted
    a, b, c = (fit["per_class"][name] for name in "abc")
    assert (b["threshold"], b["support"], b["f1"]) == (0.0, 0, 0.0)
    assert "absent from the validation labels" in b["note"] and "0.0 (argmax)" in b["note"]
    assert (c["threshold"], c["support"], c["f1"]) == (0.0, 2, 0.0)
    assert "never predicted" in c["note"]
    assert a["note"] is None


def test_a_class_never_right_keeps_argmax() -> None:
    scores = two_classes([0.9, 0.8, 0.3])
    a = fit_thresholds(scores, ["b", "b", "b"], ["a", "b"])["per_class"]["a"]
    assert (a["threshold"], a["f1"]) == (0.0, 0.0)  # every threshold scores 0: the lowest, argmax


def synthetic(n: int, n_classes: int, seed: int) -> tuple[np.ndarray, list[str], list[str]]:
    """Softmax scores that lean towards the true class, float32 as a model writes them."""
    rng = np.random.default_rng(seed)
    classes = [f"class{i}" for i in range(n_classes)]
    truth = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), truth] += 1.5
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return scores.astype(np.float32), [classes[i] for i in truth], classes


def test_fitted_on_validation_the_unclassified_count_matches_a_hand_count() -> None:
    scores, labels, classes = synthetic(3000, 5, seed=1)
    val, test = slice(0, 1500), slice(1500, None)
    fit = fit_thresholds(scores[val], labels[val], classes)
    thresholds = threshold_array(fit["thresholds"], classes)
    assert thresholds is not None and np.any(thresholds > 0)
    for part in (val, test):
        by_hand = 0
        for row in scores[part].tolist():
            best = max(range(len(row)), key=row.__getitem__)
            by_hand += row[best] < fit["thresholds"][classes[best]]
        assert class_counts(scores[part], thresholds)[-1] == by_hand
    assert fit["unclassified"] == class_counts(scores[val], thresholds)[-1]


def test_each_threshold_is_the_exact_optimum_over_every_score() -> None:
    scores, labels, classes = synthetic(600, 4, seed=2)
    fit = fit_thresholds(scores, labels, classes)
    truth = np.array([classes.index(label) for label in labels])
    for c, name in enumerate(classes):

        def f1_at(t: float, c: int = c) -> float:
            alone = np.zeros(len(classes))
            alone[c] = t
            return f1_score(truth == c, winners(scores, alone) == c, zero_division=0)

        got = fit["per_class"][name]
        assert got["f1"] == pytest.approx(f1_at(got["threshold"]))
        assert got["f1_argmax"] == pytest.approx(f1_at(0.0))
        every = [f1_at(float(t)) for t in np.unique(scores[:, c])]
        assert got["f1"] == pytest.approx(max(every))
        candidates = np.unique(scores[winners(scores) == c, c])
        lower = [float(t) for t in candidates if t < got["threshold"]]
        assert all(f1_at(t) < got["f1"] - 1e-12 for t in lower)  # no lower candidate does as well


def test_a_hundred_thousand_rois_fit_quickly() -> None:
    scores, labels, classes = synthetic(100_000, 30, seed=3)
    start = time.perf_counter()
    fit = fit_thresholds(scores, labels, classes)
    assert time.perf_counter() - start < 5  # about 0.05 s on the development machine
    assert len(fit["thresholds"]) == 30


def test_threshold_array_aligns_and_checks_names_and_values() -> None:
    assert threshold_array(None, ["a", "b"]) is None
    np.testing.assert_array_equal(threshold_array({"b": 0.5}, ["a", "b"]), [0.0, 0.5])
    with pytest.raises(ValueError, match=r"thresholds for \['z'\], which are not classes"):
        threshold_array({"z": 0.5}, ["a", "b"])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        threshold_array({"a": 1.5}, ["a", "b"])


def test_bad_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        fit_thresholds(np.zeros((2, 3)), ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="no labelled validation ROIs"):
        fit_thresholds(np.zeros((0, 2)), [], ["a", "b"])
    with pytest.raises(ValueError, match="not classes of the model"):
        fit_thresholds(np.eye(2), ["a", "z"], ["a", "b"])
