"""Bring your own model: `ifcbflow model import MODEL.keras` (Keras 3 native files), through the real CLI, and its
refusals: the same checks as every bundle (square single-channel input of the preprocessing size, one output per
class), safe-mode loading, and floats wrapped to take uint8."""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from model import architectures
from model.bundle import BundleError, read_bundle_info
from model.convert.from_keras3 import import_keras3
from model.inference.load import load_bundle
from model.inference.predictors import predict
from model.preprocess import PreprocessConfig, preprocess_batch
from pipeline.cli.app import app

CLASSES = "round,needle,star"


def _images(n: int = 9) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 256, size=(rng.integers(5, 70), rng.integers(5, 70)), dtype=np.uint8) for _ in range(n)]


def _float_model(shape: tuple[int, ...], n_out: int = 3, dtype: str = "float32") -> keras.Model:
    """A user's model as usually written: float input of grey levels, no cast of its own."""
    inputs = keras.Input(shape, dtype=dtype)
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(n_out, activation="softmax")(x), name="users_cnn")


def _import(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["model", "import", *args])
    return result.exit_code, result.output


def test_a_uint8_keras_file_imports_as_is(tmp_path: Path) -> None:
    model = architectures.build("small-cnn", 3, 32)
    model.save(tmp_path / "mine.keras")
    code, output = _import(str(tmp_path / "mine.keras"), "--classes", CLASSES, "--out", str(tmp_path / "b.zip"))
    assert code == 0, output
    info = read_bundle_info(str(tmp_path / "b.zip"))
    assert info["arch"] == "small-cnn" and info["classes"] == CLASSES.split(",")  # recognised by its layers
    assert info["preprocess"] == PreprocessConfig(size=32).to_dict()
    assert info["provenance"]["imported_from"]["input_dtype"] == "uint8"
    bundle = load_bundle(str(tmp_path / "b.zip"))
    images = _images()
    expected = model.predict_on_batch(preprocess_batch(images, bundle.preprocess))
    np.testing.assert_allclose(predict(bundle, images), expected, atol=1e-6)


def test_a_float_keras_file_is_wrapped_to_take_uint8(tmp_path: Path) -> None:
    model = _float_model((40, 40, 1))
    model.save(tmp_path / "floats.keras")
    code, output = _import(str(tmp_path / "floats.keras"), "--classes", CLASSES, "--pad-value", "3",
                           "--out", str(tmp_path / "b.zip"))  # fmt: skip
    assert code == 0, output
    bundle = load_bundle(str(tmp_path / "b.zip"))  # safe mode: the wrapper is standard layers only
    assert bundle.arch == "keras:users_cnn" and bundle.model.inputs[0].dtype == "uint8"
    assert bundle.preprocess == PreprocessConfig(size=40, pad_value=3)
    assert bundle.provenance["imported_from"]["input_dtype"] == "float32"
    x = preprocess_batch(_images(), bundle.preprocess)
    # the bundle computes what the user's model computes on the same grey levels as floats
    np.testing.assert_allclose(bundle.model.predict_on_batch(x), model.predict_on_batch(x.astype(np.float32)),
                               atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (lambda: _float_model((32, 32, 1), n_out=4), "4 outputs but 3 class names"),
        (lambda: _float_model((32, 16, 1)), "input shape (32, 16, 1) does not match the preprocessing size 32"),
        (lambda: _float_model((32, 32, 3)), "input shape (32, 32, 3) does not match the preprocessing size 32"),
        (lambda: _float_model((None, None, 1)), "shape (None, None, 1) does not match the preprocessing size 128"),
        (lambda: _float_model((32, 32, 1), dtype="int32"), "takes int32 input; only uint8 or floating-point"),
    ],
    ids=["classes", "not-square", "rgb", "any-size", "int32"],
)
def test_models_that_do_not_fit_are_refused(model, message: str, tmp_path: Path) -> None:
    model().save(tmp_path / "m.keras")
    code, output = _import(str(tmp_path / "m.keras"), "--classes", CLASSES, "--out", str(tmp_path / "b.zip"))
    assert code == 2 and message in output, output
    assert not (tmp_path / "b.zip").exists()


def test_size_mismatch_is_refused_through_the_api(tmp_path: Path) -> None:
    architectures.build("small-cnn", 3, 32).save(tmp_path / "m.keras")
    with pytest.raises(BundleError, match=r"input shape \(32, 32, 1\) does not match the preprocessing size 64"):
        import_keras3(str(tmp_path / "m.keras"), CLASSES.split(","), preprocess_config=PreprocessConfig(size=64))


def test_code_in_a_keras_file_and_other_files_are_refused(tmp_path: Path) -> None:
    inputs = keras.Input((8, 8, 1), dtype="uint8")
    outputs = keras.layers.Lambda(lambda x: keras.ops.ones((keras.ops.shape(x)[0], 3)))(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    code, output = _import(str(tmp_path / "lambda.keras"), "--classes", CLASSES, "--out", str(tmp_path / "b.zip"))
    assert code == 2 and re.search(r"layer 'lambda\w*' is a Lambda layer", output), output  # auto-named
    assert "safe_mode" not in output, output
    (tmp_path / "text.keras").write_text("not a model")
    code, output = _import(str(tmp_path / "text.keras"), "--classes", CLASSES, "--out", str(tmp_path / "b.zip"))
    assert code == 2 and "a Keras 3 native .keras file) cannot be loaded" in output, output
    code, output = _import(str(tmp_path / "absent.keras"), "--classes", CLASSES, "--out", str(tmp_path / "b.zip"))
    assert code == 2 and "no model file at" in output, output
    code, output = _import(str(tmp_path / "arch.json"), "--classes", CLASSES, "--out", str(tmp_path / "b.zip"))
    assert code == 2 and "needs its WEIGHTS.h5" in output, output
    assert not (tmp_path / "b.zip").exists()
