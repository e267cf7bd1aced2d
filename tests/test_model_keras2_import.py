"""Keras 2 import: the real ifcbUTOPIA JSON + weights written here in the Keras 2.3 HDF5 layout (random values).

The reference is independent of the importer: the registry's utopia-b3 model gets the same arrays through
`set_weights` in the JSON's layer order, and both models must predict the same.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from classify_support import random_weight
from typer.testing import CliRunner

from model import architectures
from model.bundle import BundleError, read_bundle_info
from model.convert.from_keras2 import Keras2ImportError, import_keras2, model_from_keras2_json
from model.inference.load import load_bundle
from model.inference.predictors import predict
from model.preprocess import PreprocessConfig, preprocess_batch
from model.training.data import load_image_folder
from pipeline.cli.app import app

UTOPIA_CLASSES = ["Chloro", "Cilliate", "Crypto", "Diatom", "Dictyo", "Dinoflagellate", "Eugleno", "Other",
                  "Prymnesio", "null"]  # fmt: skip
_WEIGHT_NAMES = {
    "Conv2D": ("kernel", "bias"),
    "Dense": ("kernel", "bias"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
}


def _random_arrays(layer_specs: list[dict], rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Per JSON layer, arrays of the shapes Keras 2 would store, scaled so activations stay in a sane range."""
    body = architectures.build("utopia-b3", 10).layers[2:]  # after the input and its uint8 cast
    shapes = [[tuple(w.shape) for w in layer.weights] for layer in body]
    out = []
    for spec, layer_shapes in zip(layer_specs, shapes, strict=True):
        names = _WEIGHT_NAMES.get(spec["class_name"], ())
        out.append([random_weight(name, shape, rng) for name, shape in zip(names, layer_shapes, strict=True)])
    return out


def write_keras2_weights(path: Path, layer_specs: list[dict], arrays: list[list[np.ndarray]]) -> None:
    """What Keras 2.3 `save_weights('x.h5')` writes: root attrs, one group per layer, `<layer>/<layer>/<var>:0`."""
    with h5py.File(path, "w") as f:
        # fixed-length byte strings, as Keras 2 files hold them (h5py reads them back as bytes)
        f.attrs["layer_names"] = np.array([spec["name"].encode() for spec in layer_specs])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.3.0-tf"
        for spec, layer_arrays in zip(layer_specs, arrays, strict=True):
            group = f.create_group(spec["name"])
            names = [f"{spec['name']}/{n}:0" for n in _WEIGHT_NAMES.get(spec["class_name"], ())]
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for name, array in zip(names, layer_arrays, strict=True):
                group.create_dataset(name, data=array)


@pytest.fixture(scope="module")
def keras2_files(utopia_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[np.ndarray]]:
    folder = tmp_path_factory.mktemp("keras2")
    architecture = folder / "model-cnn-v1-b3.json"
    shutil.copy(utopia_data / "model-cnn-v1-b3.json", architecture)
    specs = json.loads(architecture.read_text())["config"]["layers"]
    arrays = [[], *_random_arrays(specs[1:], np.random.default_rng(7))]  # the InputLayer has no weights
    weights = folder / "model-cnn-v1-b3.h5"
    write_keras2_weights(weights, specs, arrays)
    return architecture, weights, [a for layer in arrays for a in layer]


def _reference(flat_arrays: list[np.ndarray]):  # -> keras.Model
    model = architectures.build("utopia-b3", 10)
    model.set_weights(flat_arrays)  # registry layer order == JSON layer order (checked in test_model_architectures)
    return model


def _float_twin(model):  # -> keras.Model
    """The model's layers (same weights) after a float32 input instead of the uint8 input and its cast: the model
    as the importer built it before bundles took uint8."""
    inputs = keras.Input(model.input_shape[1:])
    x = inputs
    for layer in model.layers[2:]:
        x = layer(x)
    return keras.Model(inputs, x)


def test_imported_model_predicts_like_the_reference(keras2_files, utopia_data: Path) -> None:
    architecture, weights, flat = keras2_files
    bundle = import_keras2(str(architecture), str(weights), UTOPIA_CLASSES)
    assert bundle.arch == "utopia-b3"  # recognised as the registry architecture
    assert bundle.preprocess.size == 128 and bundle.preprocess.pad_value == 0
    assert bundle.provenance["imported_from"]["keras_version"] == "2.3.0-tf"
    assert bundle.model.inputs[0].dtype == "uint8"
    images = load_image_folder(str(utopia_data / "labelled")).images[:24]
    x = preprocess_batch(images, bundle.preprocess)
    expected = _reference(flat).predict(x, verbose=0)
    got = predict(bundle, images, batch_size=8)
    assert got.shape == (24, 10)
    assert expected.max(axis=1).min() < 0.99  # random weights that still give a non-degenerate softmax
    np.testing.assert_allclose(got, expected, atol=1e-5)
    as_floats = _float_twin(bundle.model).predict(x.astype(np.float32), verbose=0)
    np.testing.assert_allclose(got, as_floats, atol=1e-6)  # the cast changes nothing: same as float input


def test_cli_import_then_load_and_info(keras2_files, tmp_path: Path) -> None:
    architecture, weights, flat = keras2_files
    (tmp_path / "classes.txt").write_text("\n".join(UTOPIA_CLASSES) + "\n")
    out = tmp_path / "utopia.ifcbmodel"
    result = CliRunner().invoke(
        app, ["model", "import", str(architecture), str(weights), "--classes-file", str(tmp_path / "classes.txt"),
              "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = read_bundle_info(str(out))
    assert info["classes"] == UTOPIA_CLASSES and info["arch"] == "utopia-b3"
    bundle = load_bundle(str(out))
    x = np.random.default_rng(1).integers(0, 256, (4, 128, 128, 1), dtype=np.uint8)
    np.testing.assert_allclose(bundle.model.predict(x, verbose=0), _reference(flat).predict(x, verbose=0), atol=1e-5)
    result = CliRunner().invoke(app, ["model", "info", str(out), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["content_hash"] == bundle.content_hash


def test_class_count_and_input_size_must_match(keras2_files) -> None:
    architecture, weights, _ = keras2_files
    with pytest.raises(BundleError, match="10 outputs but 3 class names"):
        import_keras2(str(architecture), str(weights), ["a", "b", "c"])
    with pytest.raises(BundleError, match=r"input shape \(128, 128, 1\) does not match the preprocessing size 64"):
        import_keras2(str(architecture), str(weights), UTOPIA_CLASSES, preprocess_config=PreprocessConfig(size=64))
    result = CliRunner().invoke(app, ["model", "import", str(architecture), str(weights), "--classes", "a,b",
                                      "--out", "/dev/null"])  # fmt: skip
    assert result.exit_code == 2 and "10 outputs but 2 class names" in result.output


def test_weights_that_do_not_fit_are_refused(keras2_files, tmp_path: Path) -> None:
    architecture, weights, _ = keras2_files
    broken = tmp_path / "broken.h5"
    shutil.copy(weights, broken)
    with h5py.File(broken, "a") as f:
        del f["conv2d_12/conv2d_12/bias:0"]
        f["conv2d_12/conv2d_12"].create_dataset("bias:0", data=np.zeros(3, np.float32))
    with pytest.raises(Keras2ImportError, match=r"conv2d_12.*'bias'.*\(3,\).*\(64,\)"):
        import_keras2(str(architecture), str(broken), UTOPIA_CLASSES)
    shutil.copy(weights, broken)
    with h5py.File(broken, "a") as f:
        f.attrs["layer_names"] = [n for n in f.attrs["layer_names"] if n != b"dense_7"]
    with pytest.raises(Keras2ImportError, match="no weights for layer 'dense_7'"):
        import_keras2(str(architecture), str(broken), UTOPIA_CLASSES)
    (tmp_path / "not.h5").write_bytes(b"plain text")
    with pytest.raises(Keras2ImportError, match="not an HDF5 weights file"):
        import_keras2(str(architecture), str(tmp_path / "not.h5"), UTOPIA_CLASSES)


def test_unsupported_configs_are_refused_not_guessed(utopia_data: Path) -> None:
    document = json.loads((utopia_data / "model-cnn-v1-b3.json").read_text())
    document["config"]["layers"][2]["class_name"] = "Lambda"
    with pytest.raises(Keras2ImportError, match="layer type 'Lambda'"):
        model_from_keras2_json(json.dumps(document))
    document = json.loads((utopia_data / "model-cnn-v1-b3.json").read_text())
    document["config"]["layers"][1]["config"]["activation"] = "gelu_custom"
    with pytest.raises(Keras2ImportError, match="activation 'gelu_custom'"):
        model_from_keras2_json(json.dumps(document))
    document = json.loads((utopia_data / "model-cnn-v1-b3.json").read_text())
    document["config"]["layers"][3]["inbound_nodes"] = [[["input_2", 0, 0, {}]]]
    with pytest.raises(Keras2ImportError, match="only chains"):
        model_from_keras2_json(json.dumps(document))
    with pytest.raises(Keras2ImportError, match="not a Keras model JSON"):
        model_from_keras2_json("{}")


def test_sequential_form_of_the_same_model(utopia_data: Path) -> None:
    functional = json.loads((utopia_data / "model-cnn-v1-b3.json").read_text())
    layers = [{"class_name": spec["class_name"], "config": dict(spec["config"])}
              for spec in functional["config"]["layers"][1:]]  # fmt: skip
    layers[0]["config"]["batch_input_shape"] = [None, 128, 128, 1]
    sequential = {"class_name": "Sequential", "config": {"name": "sequential_1", "layers": layers}}
    model = model_from_keras2_json(json.dumps(sequential))
    assert model.count_params() == 2_920_410 and [layer.name for layer in model.layers][2] == "conv2d_10"
