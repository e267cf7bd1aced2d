"""Per-class score thresholds, fitted on labelled validation ROIs, that send doubtful ROIs to "unclassified".

The rule: a ROI goes to the class c with its highest score if that score is at least the threshold of c; otherwise
the ROI is "unclassified". A threshold of 0.0 keeps plain argmax for that class.

Fitting: each class's threshold is chosen on its own, to maximise that class's F1 score on the labelled validation
ROIs, where a ROI counts as predicted c only if c is its highest score and that score is at least the threshold.
The candidates are the highest scores of the ROIs predicted c, so the optimum is exact. Among thresholds with the
same F1 the lowest wins (it leaves the fewest ROIs unclassified); when no threshold beats plain argmax, the
threshold is 0.0. A class absent from the validation labels, or never predicted on the validation ROIs, has no F1
to maximise and keeps 0.0 (argmax); the fit says so in its `note`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from model.decision import winners
from model.training.evaluate import label_indices


def fit_thresholds(scores: np.ndarray, labels: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """Fit one threshold per class on labelled validation scores (ROIs, classes); plain JSON-able data.

    Returns `thresholds` ({class: float}, for a bundle's metadata) and, per class, the threshold, F1 with argmax and
    with the threshold, support, the validation ROIs the threshold leaves unclassified, and a note where it kept 0.0.
    """
    scores = np.asarray(scores)
    if scores.shape != (len(labels), len(classes)):
        raise ValueError(f"scores have shape {scores.shape}, expected {(len(labels), len(classes))}")
    if len(labels) == 0:
        raise ValueError("cannot fit thresholds: no labelled validation ROIs")
    truth = label_indices(labels, classes)
    won = winners(scores)
    top = scores[np.arange(len(won)), won]
    support = np.bincount(truth, minlength=len(classes))
    # one sort: ROIs grouped by predicted class, highest score first within a class
    order = np.lexsort((-top, won))
    won, top, correct = won[order], top[order], truth[order] == won[order]
    bounds = np.searchsorted(won, np.arange(len(classes) + 1))
    per_class = {}
    for c, name in enumerate(classes):
        start, stop = bounds[c], bounds[c + 1]
        per_class[name] = _fit_one(top[start:stop], correct[start:stop], int(support[c]))
    return {
        "n": len(labels),
        "thresholds": {name: fit["threshold"] for name, fit in per_class.items()},
        "unclassified": sum(fit["unclassified"] for fit in per_class.values()),
        "per_class": per_class,
    }


def _fit_one(top: np.ndarray, correct: np.ndarray, support: int) -> dict[str, Any]:
    """The best threshold of one class from its predicted ROIs' scores (descending) and whether each is right."""
    if support == 0 or len(top) == 0:
        note = "absent from the validation labels" if support == 0 else "never predicted on the validation ROIs"
        return _fit(0.0, 0.0, 0.0, support, 0, f"{note}: threshold kept at 0.0 (argmax)")
    true_positives = np.cumsum(correct)
    predicted = np.arange(1, len(top) + 1)
    # a threshold equal to a score keeps every ROI with that score: evaluate at the last ROI of each run of ties
    last = np.r_[top[1:] != top[:-1], True]
    f1 = 2 * true_positives[last] / (predicted[last] + support)  # exact ties: division is correctly rounded
    best = np.flatnonzero(f1 == f1.max())[-1]  # candidates run high to low: the last is the lowest threshold
    lowest = best == len(f1) - 1  # keeps every ROI predicted c, as argmax does
    threshold = 0.0 if lowest else float(top[last][best])
    return _fit(threshold, float(f1[-1]), float(f1[best]), support, int(len(top) - predicted[last][best]), None)


def _fit(
    threshold: float, f1_argmax: float, f1: float, support: int, unclassified: int, note: str | None
) -> dict[str, Any]:
    return {
        "threshold": threshold,
        "f1_argmax": f1_argmax,
        "f1": f1,
        "support": support,
        "unclassified": unclassified,
        "note": note,
    }
