"""The decision rule: which class a ROI is given from its scores.

One place for it, because counts in the store, the Dashboard export, evaluation, comparisons and the demo must all
agree. The rule lives with the model because what it depends on (per-class thresholds) is a property of the model.

Without thresholds a ROI goes to its argmax class. With thresholds (one per class, in the class order) a ROI goes to
its argmax class c only if its score for c is at least `thresholds[c]`; otherwise it is unclassified, index
`UNCLASSIFIED` (-1) among winners and one extra trailing column among counts. Argmax is the case of no thresholds.
Thresholds as a bundle, a store or a thresholds file holds them ({class: threshold}) become that array through
`threshold_array`; fitting them on labelled ROIs is `model.training.thresholds`'.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import numpy as np

UNCLASSIFIED = -1
UNCLASSIFIED_NAME = "unclassified"


def winners(scores: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """The winning class index of each ROI, int64 (n,), for scores (n, n_classes); -1 where below its threshold."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (ROIs, classes), got shape {scores.shape}")
    if scores.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    best = scores.argmax(axis=1).astype(np.int64)
    if thresholds is None:
        return best
    thresholds = _aligned(thresholds, scores.shape[1])
    below = scores[np.arange(len(best)), best] < thresholds[best]
    best[below] = UNCLASSIFIED
    return best


def class_counts(scores: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """ROIs per class, int64: (n_classes,) without thresholds, (n_classes + 1,) with a trailing unclassified count."""
    n_classes = np.asarray(scores).shape[1]
    won = winners(scores, thresholds)
    if thresholds is None:
        return np.bincount(won, minlength=n_classes).astype(np.int64)
    # -1 becomes the trailing column n_classes
    return np.bincount(np.where(won == UNCLASSIFIED, n_classes, won), minlength=n_classes + 1).astype(np.int64)


def count_columns(classes: Sequence[str], thresholded: bool) -> list[str]:
    """Names of the columns `class_counts` returns: the classes, then `unclassified` when thresholds apply."""
    if not thresholded:
        return list(classes)
    if UNCLASSIFIED_NAME in classes:
        raise ValueError(
            f"the model has a class named {UNCLASSIFIED_NAME!r}, the name of ROIs below their class threshold; "
            "thresholds cannot be applied to it without mixing the two"
        )
    return [*classes, UNCLASSIFIED_NAME]


def winner_names(won: np.ndarray, classes: Sequence[str]) -> list[str]:
    """Class names of winner indices, `unclassified` for -1 (plain indexing would wrap -1 to the last class)."""
    names = np.asarray([*classes, UNCLASSIFIED_NAME], dtype=object)
    won = np.asarray(won, dtype=np.int64)
    if won.size and (won.min() < UNCLASSIFIED or won.max() >= len(classes)):
        raise ValueError(f"winner indices must lie in [-1, {len(classes)})")
    return names[won].tolist()  # -1 picks the appended name


def threshold_array(thresholds: Mapping[str, float] | None, classes: Sequence[str]) -> np.ndarray | None:
    """{class: threshold} -> an array in class order for `winners` and `class_counts`; None stays None (plain argmax).

    A class the mapping leaves out gets 0.0 (argmax); a name that is not a class, or a value outside [0, 1], is an
    error, so a typo cannot pass silently.
    """
    if thresholds is None:
        return None
    unknown = sorted(set(thresholds) - set(classes))
    if unknown:
        raise ValueError(f"thresholds for {unknown}, which are not classes of the model ({', '.join(classes)})")
    values = np.array([float(thresholds.get(name, 0.0)) for name in classes], dtype=np.float64)
    if not np.all((values >= 0.0) & (values <= 1.0)):
        raise ValueError(f"thresholds must lie in [0, 1], got {dict(zip(classes, values.tolist(), strict=True))}")
    return values


def thresholds_digest(thresholds: Mapping[str, float] | None, classes: Sequence[str]) -> str:
    """sha256 of the thresholds as applied (in class order, a left-out class at 0.0); `argmax` for None.

    Two mappings that decide every ROI alike have the same digest, whatever their key order or source.
    """
    values = threshold_array(thresholds, classes)
    if values is None:
        return "argmax"
    canonical = json.dumps([[name, float(v)] for name, v in zip(classes, values.tolist(), strict=True)])
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_thresholds_file(data: bytes, where: str) -> dict[str, float]:
    """A thresholds file: a JSON object {class: threshold}, or one with such an object under `thresholds` (what
    `ifcbflow model thresholds --json` prints). ValueError names what is wrong."""
    try:
        document = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{where}: not a JSON thresholds file: {err}") from None
    if isinstance(document, dict) and isinstance(document.get("thresholds"), dict):
        document = document["thresholds"]
    if not isinstance(document, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in document.values()
    ):
        raise ValueError(f"{where}: expected a JSON object of class names to thresholds in [0, 1]")
    return {str(name): float(value) for name, value in document.items()}


def _aligned(thresholds: np.ndarray, n_classes: int) -> np.ndarray:
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (n_classes,):
        raise ValueError(f"thresholds have shape {thresholds.shape}, expected ({n_classes},): one per class")
    return thresholds
