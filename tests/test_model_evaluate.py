"""Evaluation numbers on a hand-checked example, and the confusion matrix files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.training.evaluate import evaluate, top_k_accuracy, write_confusion

CLASSES = ["a", "b", "c"]
#                   true a: predicted a, a, b;  true b: b, c;  true c: c
PROBABILITIES = np.array(
    [[0.8, 0.1, 0.1], [0.5, 0.3, 0.2], [0.3, 0.6, 0.1], [0.1, 0.7, 0.2], [0.2, 0.3, 0.5], [0.1, 0.2, 0.7]]
)
LABELS = ["a", "a", "a", "b", "b", "c"]


def test_numbers_match_a_hand_count() -> None:
    report = evaluate(PROBABILITIES, LABELS, CLASSES)
    assert json.loads(json.dumps(report)) == report  # JSON-able as it is
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    a, b, c = (report["per_class"][name] for name in CLASSES)
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"], c["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    f1 = [0.8, 0.5, 2 / 3]
    assert report["macro_f1"] == pytest.approx(np.mean(f1))
    assert report["weighted_f1"] == pytest.approx(np.average(f1, weights=[3, 2, 1]))
    # top-2: row 2 (true a, a is 2nd) and row 4 (true b, b is 2nd) become right; top-3 is everything
    assert report["top_k"] == {"1": pytest.approx(4 / 6), "3": 1.0}
    assert top_k_accuracy(PROBABILITIES, np.array([0, 0, 0, 1, 1, 2]), 2) == 1.0


def test_class_without_predictions_or_samples_is_zero_not_an_error() -> None:
    report = evaluate(np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0]]), ["a", "b"], CLASSES)
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["per_class"]["b"]["precision"] == 0.0


def test_unknown_labels_and_bad_shapes_are_errors() -> None:
    with pytest.raises(ValueError, match=r"labels \['z'\] are not classes of the model"):
        evaluate(PROBABILITIES, [*LABELS[:-1], "z"], CLASSES)
    with pytest.raises(ValueError, match="shape"):
        evaluate(PROBABILITIES[:, :2], LABELS, CLASSES)


def test_confusion_files(tmp_path: Path) -> None:
    report = evaluate(PROBABILITIES, LABELS, CLASSES)
    csv_path, png_path = write_confusion(report, tmp_path / "out")
    with csv_path.open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", "a", "b", "c"]
    assert rows[1:] == [["a", "2", "1", "0"], ["b", "0", "1", "1"], ["c", "0", "0", "1"]]
    with Image.open(png_path) as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 200


def test_cli_evaluate_refuses_labels_the_model_does_not_know(utopia_data: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from model.architectures import build
    from model.bundle import Bundle, save_bundle
    from model.preprocess import PreprocessConfig
    from pipeline.cli.app import app

    bundle = Bundle(model=build("small-cnn", 2, 16), classes=["diatoms", "x"], preprocess=PreprocessConfig(size=16),
                    arch="small-cnn")  # fmt: skip
    save_bundle(bundle, str(tmp_path / "m.ifcbmodel"))
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "m.ifcbmodel"), str(utopia_data / "labelled")])
    assert result.exit_code == 2
    assert "are not classes of the model (diatoms, x)" in result.output and "chloro" in result.output
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "m.ifcbmodel"), str(tmp_path / "absent")])
    assert result.exit_code == 2 and "no folder at" in result.output
