"""ONNX models as bundles: import with a contract, refusal of a contract that does not fit, graph surgery (softmax,
embedding output), scores and embeddings equal to the model run directly, and Keras embeddings by layer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from classify_support import make_bundle
from onnx_support import features_of, onnx_classifier, run_directly
from typer.testing import CliRunner

from model.bundle import BundleError, read_bundle_info, save_bundle
from model.convert.from_onnx import import_onnx
from model.inference.load import load_bundle
from model.inference.predictors import make_predictor, predict
from model.preprocess import model_input, preprocess_batch, preset
from pipeline.cli.app import app

CLASSES = "round,long,spiky"


def _images(n: int = 12, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, tuple(rng.integers(5, 90, 2)), dtype=np.uint8) for _ in range(n)]


def _import(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["model", "import", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize("name", ["whoi", "smhi"])
def test_import_then_scores_equal_the_model_run_directly(tmp_path: Path, name: str) -> None:
    model = tmp_path / "m.onnx"
    onnx_classifier(model, size=40)
    code, output = _import(str(model), "--classes", CLASSES, "--preprocess", name, "--out", str(tmp_path / "b.zip"))
    assert code == 0, output
    info = read_bundle_info(str(tmp_path / "b.zip"))
    assert info["runtime"] == "onnx" and info["arch"] == "onnx:tiny_classifier"
    bundle = load_bundle(str(tmp_path / "b.zip"))
    assert bundle.preprocess == preset(name, size=40)  # the size from the model's input
    images = _images()
    inputs = model_input(preprocess_batch(images, bundle.preprocess), bundle.preprocess)
    assert inputs.shape == (len(images), 3, 40, 40) and inputs.dtype == np.float32
    np.testing.assert_array_equal(predict(bundle, images, batch_size=5), run_directly(model, inputs))


def test_classes_from_a_file_and_logits_get_a_softmax(tmp_path: Path) -> None:
    model = tmp_path / "logits.onnx"
    onnx_classifier(model, size=24, softmax=False, batch=4)  # a statically batched graph, as WHOI exports some
    (tmp_path / "classes.txt").write_text("round\nlong\nspiky\n")
    code, output = _import(str(model), "--classes-file", str(tmp_path / "classes.txt"), "--preprocess", "smhi",
                           "--softmax", "--mean", "0.5", "--std", "0.25", "--out", str(tmp_path / "b.zip"))  # fmt: skip
    assert code == 0, output
    bundle = load_bundle(str(tmp_path / "b.zip"))
    assert bundle.classes == CLASSES.split(",") and bundle.preprocess.mean == (0.5,)
    images = _images(7)  # 7 rows: two calls of 4, the second padded
    inputs = model_input(preprocess_batch(images, bundle.preprocess), bundle.preprocess)
    logits = np.concatenate([run_directly(model, inputs[:4]), run_directly(model, np.pad(inputs[4:], ((0, 1),) +
                             ((0, 0),) * 3))[:3]])  # fmt: skip
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(predict(bundle, images), expected, rtol=1e-6, atol=1e-7)


def test_weights_stored_beside_the_graph_are_embedded(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx_classifier(model, size=24, external=True)
    assert (tmp_path / "m.onnx.data").exists()
    bundle = import_onnx(str(model), CLASSES.split(","), preprocess_config=preset("smhi"))
    save_bundle(bundle, str(tmp_path / "b.zip"))
    images = _images()
    (tmp_path / "m.onnx.data").rename(tmp_path / "elsewhere.data")
    scores = predict(load_bundle(str(tmp_path / "b.zip")), images)  # the bundle holds every weight
    (tmp_path / "elsewhere.data").rename(tmp_path / "m.onnx.data")
    inputs = model_input(preprocess_batch(images, bundle.preprocess), bundle.preprocess)
    np.testing.assert_array_equal(scores, run_directly(model, inputs))
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(BundleError, match=r"keeps its weights in m.onnx.data, which is not beside it"):
        import_onnx(str(model), CLASSES.split(","), preprocess_config=preset("smhi"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--size", "64"], r"input shape \(3, 32, 32\) does not match the preprocessing contract's \(3, 64, 64\)"),
        (["--channels", "1"], r"input shape \(3, 32, 32\) does not match the preprocessing contract's \(1, 32, 32\)"),
        # channels last reads the size from the model's second axis: 3
        (["--layout", "last"], r"input shape \(3, 32, 32\) does not match the preprocessing contract's \(3, 3, 3\)"),
    ],
)
def test_a_contract_that_does_not_fit_the_model_is_refused(tmp_path: Path, flags: list[str], message: str) -> None:
    model = tmp_path / "m.onnx"
    onnx_classifier(model, size=32)
    code, output = _import(str(model), "--classes", CLASSES, "--preprocess", "whoi", *flags, "--out",
                           str(tmp_path / "b.zip"))  # fmt: skip
    assert code == 2 and not (tmp_path / "b.zip").exists()
    assert re.search(message, " ".join(output.split())), output


def test_wrong_class_count_and_missing_contract(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx_classifier(model, size=32)
    with pytest.raises(BundleError, match=r"scores have shape \(None, 3\) but 2 class names"):
        import_onnx(str(model), ["a", "b"], preprocess_config=preset("whoi"))
    code, output = _import(str(model), "--classes", CLASSES, "--out", str(tmp_path / "b.zip"))
    assert code == 2 and "--preprocess" in output


def test_onnx_embeddings_are_the_penultimate_layer(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    weights = onnx_classifier(model, size=32, features=8)
    bundle = import_onnx(str(model), CLASSES.split(","), preprocess_config=preset("whoi"))
    assert bundle.model.output_names == ("probabilities", "features")  # found by walking back from the scores
    save_bundle(bundle, str(tmp_path / "b.zip"))
    bundle = load_bundle(str(tmp_path / "b.zip"))
    inputs = preprocess_batch(_images(), bundle.preprocess)
    scores, features = make_predictor(bundle, embeddings=True).predict(inputs)
    values = model_input(inputs, bundle.preprocess)
    assert features.shape == (len(inputs), 8) and features.dtype == np.float32
    np.testing.assert_allclose(features, features_of(values, weights), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(scores, run_directly(model, values))
    named = import_onnx(str(model), CLASSES.split(","), preprocess_config=preset("whoi"), embedding="hidden")
    assert named.model.output_names == ("probabilities", "hidden")
    with pytest.raises(BundleError, match="no tensor named 'nope'"):
        import_onnx(str(model), CLASSES.split(","), preprocess_config=preset("whoi"), embedding="nope")


def test_keras_embeddings_are_the_input_of_the_last_dense_layer() -> None:
    import keras

    url = "memory://keras-embeddings/b.zip"
    make_bundle(url)
    bundle = load_bundle(url)
    inputs = preprocess_batch(_images(), bundle.preprocess)
    scores, features = make_predictor(bundle, embeddings=True).predict(inputs)
    layer = keras.Model(bundle.model.inputs, bundle.model.get_layer("dropout").output)  # what feeds "probabilities"
    assert features.shape == (len(inputs), 32)
    np.testing.assert_allclose(features, layer.predict_on_batch(inputs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, predict(bundle, _images()), rtol=1e-5, atol=1e-6)


def test_a_keras_model_refuses_a_float_contract(tmp_path: Path) -> None:
    from model import architectures

    architectures.build("small-cnn", 3, 32).save(tmp_path / "m.keras")
    code, output = _import(str(tmp_path / "m.keras"), "--classes", CLASSES, "--preprocess", "utopia", "--scale",
                           "unit", "--out", str(tmp_path / "b.zip"))  # fmt: skip
    assert code == 2 and "Rescaling" in output


def test_model_export_onnx_gives_the_same_scores(tmp_path: Path) -> None:
    keras_url, onnx_url = str(tmp_path / "k.zip"), str(tmp_path / "o.zip")
    make_bundle(keras_url)
    result = CliRunner().invoke(app, ["model", "export", keras_url, "--onnx", "--out", onnx_url])
    assert result.exit_code == 0, result.output
    keras_bundle, onnx_bundle = load_bundle(keras_url), load_bundle(onnx_url)
    assert onnx_bundle.arch == "onnx:small-cnn" and onnx_bundle.preprocess == keras_bundle.preprocess
    assert onnx_bundle.provenance["exported_from"]["bundle"] == keras_bundle.content_hash
    images = _images()
    np.testing.assert_allclose(predict(onnx_bundle, images), predict(keras_bundle, images), rtol=1e-5, atol=1e-6)
    pixels = preprocess_batch(images, keras_bundle.preprocess)
    _, onnx_features = make_predictor(onnx_bundle, embeddings=True).predict(pixels)
    _, keras_features = make_predictor(keras_bundle, embeddings=True).predict(pixels)
    np.testing.assert_allclose(onnx_features, keras_features, rtol=1e-5, atol=1e-5)
    result = CliRunner().invoke(app, ["model", "export", onnx_url, "--onnx", "--out", str(tmp_path / "again.zip")])
    assert result.exit_code == 2 and "already an ONNX model" in result.output
