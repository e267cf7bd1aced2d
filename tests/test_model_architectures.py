"""The architecture registry, and utopia-b3 checked layer by layer against the deployed ifcbUTOPIA JSON."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from model import architectures


def _json_layers(utopia_data: Path) -> list[dict]:
    document = json.loads((utopia_data / "model-cnn-v1-b3.json").read_text())
    return [layer for layer in document["config"]["layers"] if layer["class_name"] != "InputLayer"]


def _ours(n_classes: int = 10) -> list[keras.layers.Layer]:
    """Our layers after the input and its uint8 cast (ifcbUTOPIA took floats: the cast is ours)."""
    model = architectures.build("utopia-b3", n_classes)
    return list(model.layers[2:])


def test_utopia_b3_matches_the_deployed_json_layer_by_layer(utopia_data: Path) -> None:
    theirs, ours = _json_layers(utopia_data), _ours()
    assert [layer["class_name"] for layer in theirs] == [type(layer).__name__ for layer in ours]
    for spec, layer in zip(theirs, ours, strict=True):
        want, got = spec["config"], layer.get_config()
        where = f"{spec['name']} vs {layer.name}"
        kind = spec["class_name"]
        if kind == "Conv2D":
            for key in ("filters", "padding", "activation", "use_bias", "data_format"):
                assert got[key] == want[key], (where, key)
            for key in ("kernel_size", "strides", "dilation_rate"):
                assert list(got[key]) == want[key], (where, key)
        elif kind == "MaxPooling2D":
            assert (list(got["pool_size"]), list(got["strides"]), got["padding"]) == (
                want["pool_size"], want["strides"], want["padding"],
            ), where  # fmt: skip
        elif kind == "BatchNormalization":
            rank = len(layer.input.shape)
            axis = got["axis"] % rank if isinstance(got["axis"], int) else got["axis"]
            assert [axis] == want["axis"], where
            for key in ("momentum", "epsilon", "center", "scale"):
                assert got[key] == want[key], (where, key)
        elif kind == "Dense":
            assert (got["units"], got["activation"], got["use_bias"]) == (
                want["units"], want["activation"], want["use_bias"],
            ), where  # fmt: skip
        elif kind == "Activation":
            assert got["activation"] == want["activation"], where
        elif kind == "Dropout":
            assert got["rate"] == want["rate"], where
        else:
            assert kind == "Flatten", where


def test_utopia_b3_parameter_count_and_output() -> None:
    model = architectures.build("utopia-b3", 10)
    assert model.count_params() == 2_920_410
    assert model.input_shape == (None, 128, 128, 1)
    assert model.output_shape == (None, 10)


def test_every_architecture_takes_uint8_and_casts_first() -> None:
    for name in architectures.names():
        model = architectures.build(name, 3, 128)
        assert model.inputs[0].dtype == "uint8", name
        assert isinstance(model.layers[1], keras.layers.Rescaling) and model.layers[1].name == architectures.CAST_LAYER
        assert model.layers[1].output.dtype == "float32", name


@pytest.mark.parametrize(("policy", "half"), [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")])
def test_softmax_stays_float32_and_the_cast_is_exact_under_mixed_precision(policy: str, half: str) -> None:
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        for name in architectures.names():
            model = architectures.build(name, 3, 128)
            assert model.layers[1].compute_dtype == half, name  # the cast gives the half type on the device
            assert model.layers[2].compute_dtype == half, name  # and the body really runs in half precision
            assert model.output.dtype == "float32", name
        inputs, cast = architectures.uint8_image_input((16, 16, 1))
        grey_levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
        seen = keras.Model(inputs, cast).predict_on_batch(grey_levels)
        assert keras.backend.standardize_dtype(seen.dtype) == half
        np.testing.assert_array_equal(np.asarray(seen, dtype=np.float32), grey_levels.astype(np.float32))
    finally:
        keras.config.set_dtype_policy(previous)


def test_registry_names_unknown_and_duplicates() -> None:
    assert {"utopia-b3", "small-cnn"} <= set(architectures.names())
    with pytest.raises(ValueError, match=r"unknown architecture 'nope'; known: .*utopia-b3"):
        architectures.build("nope", 3)
    with pytest.raises(ValueError, match="already registered"):
        architectures.register("small-cnn")(architectures.small_cnn)
    with pytest.raises(ValueError, match="at least 2 classes"):
        architectures.build("small-cnn", 1)
    with pytest.raises(ValueError, match="input_size >= 81"):
        architectures.build("utopia-b3", 3, 32)


def test_small_cnn_is_small_and_takes_any_size() -> None:
    for size in (16, 32, 128):
        model = architectures.build("small-cnn", 4, size)
        assert model.output_shape == (None, 4)
    assert model.count_params() < 20_000
