"""The decision rule: which class a ROI is given from its scores.

One place for it, because counts in the store, the Dashboard export, evaluation and the demo must all agree. Today the
rule is argmax; it lives with the model because anything it could depend on (e.g. per-class thresholds) is a property
of the model.
"""

from __future__ import annotations

import numpy as np


def winners(scores: np.ndarray) -> np.ndarray:
    """The winning class index of each ROI, int64 (n,), for scores (n, n_classes)."""
    scores = np.asarray(scores)
    if scores.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return scores.argmax(axis=1).astype(np.int64)


def class_counts(scores: np.ndarray) -> np.ndarray:
    """ROIs per class, int64 (n_classes,), for scores (n, n_classes)."""
    return np.bincount(winners(scores), minlength=np.asarray(scores).shape[1]).astype(np.int64)
