"""Evaluation of class probabilities against true labels: the numbers and plots a model is judged by.

`evaluate` returns plain JSON-able data (it goes into bundle provenance and `ifcbflow evaluate --json`);
`write_confusion` renders the same confusion matrix as CSV and PNG for people.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.decision import winners

DEFAULT_TOP_K = (1, 3, 5)


def label_indices(labels: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Labels -> indices into `classes`; a label the model does not know is an error, never silently dropped."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"labels {unknown} are not classes of the model ({', '.join(classes)})")
    return np.array([index[label] for label in labels], dtype=np.int64)


def top_k_accuracy(probabilities: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Fraction of samples whose true class is among the k highest probabilities."""
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == truth[:, None], axis=1)))


def evaluate(
    probabilities: np.ndarray,
    labels: Sequence[str],
    classes: Sequence[str],
    top_k: Sequence[int] = DEFAULT_TOP_K,
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro and weighted averages, confusion matrix, top-k."""
    # imported here: scikit-learn takes seconds to import, and the CLI reads this package's thresholds rule at start
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    if len(labels) == 0:
        raise ValueError("nothing to evaluate: no labelled images")
    if probabilities.shape != (len(labels), len(classes)):
        raise ValueError(f"probabilities have shape {probabilities.shape}, expected {(len(labels), len(classes))}")
    truth = label_indices(labels, classes)
    predicted = winners(probabilities)
    everything = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=everything, zero_division=0
    )
    averages = {
        average: precision_recall_fscore_support(truth, predicted, labels=everything, average=average, zero_division=0)
        for average in ("macro", "weighted")
    }
    return {
        "n": len(labels),
        "classes": list(classes),
        "accuracy": float(np.mean(predicted == truth)),
        "macro_precision": float(averages["macro"][0]),
        "macro_recall": float(averages["macro"][1]),
        "macro_f1": float(averages["macro"][2]),
        "weighted_precision": float(averages["weighted"][0]),
        "weighted_recall": float(averages["weighted"][1]),
        "weighted_f1": float(averages["weighted"][2]),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        # rows = true class, columns = predicted class, both in `classes` order
        "confusion_matrix": confusion_matrix(truth, predicted, labels=everything).tolist(),
        "top_k": {str(k): top_k_accuracy(probabilities, truth, k) for k in top_k if k <= len(classes)},
    }


def write_confusion(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write `confusion_matrix.csv` (true class rows, predicted class columns) and `confusion_matrix.png`."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes: list[str] = report["classes"]
    matrix = np.asarray(report["confusion_matrix"])
    csv_path = out / "confusion_matrix.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, matrix.tolist(), strict=True):
            writer.writerow([name, *row])

    # rows normalised to recall so rare classes are as readable as common ones; counts written in the cells
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    side = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), labels=classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels=classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"accuracy {report['accuracy']:.3f}, macro F1 {report['macro_f1']:.3f} (n={report['n']})")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="fraction of true class")
    fig.tight_layout()
    png_path = out / "confusion_matrix.png"
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return csv_path, png_path
