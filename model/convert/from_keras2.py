"""Import a Keras 2 model (as ifcbUTOPIA publishes them: `model.to_json()` + `model.save_weights("x.h5")`) as a bundle.

Keras 3 cannot reliably load Keras 2 HDF5 weights, and `model_from_json` of old configs may run arbitrary code, so
both files are read as plain data: the JSON config is rebuilt layer by layer from a whitelist of layer types with
explicitly translated arguments, and each layer's arrays are read with h5py by the names listed in its
`weight_names` attribute (Keras 2.x layout: root attr `layer_names`, one group per layer).

The rebuilt model takes uint8 like every bundle's model: the Keras 2 input becomes a uint8 input followed by the
exact cast to float (`architectures.uint8_image_input`), so it computes what the Keras 2 model computed on the same
grey levels as floats.
"""

from __future__ import annotations

import io
import json
from typing import Any

import h5py
import numpy as np

from model import architectures
from model.bundle import Bundle, read_model_file
from model.convert.imported import imported_bundle
from model.preprocess import PreprocessConfig

_ACTIVATIONS = {"linear", "relu", "softmax", "sigmoid", "tanh", "elu", "selu", "softplus", "swish"}


class Keras2ImportError(ValueError):
    """The Keras 2 files use something this importer does not translate, or the two files do not agree."""


def _activation(name: str) -> str:
    if name not in _ACTIVATIONS:
        raise Keras2ImportError(f"activation {name!r} is not supported (known: {', '.join(sorted(_ACTIVATIONS))})")
    return name


def _channels_last(cfg: dict[str, Any]) -> None:
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise Keras2ImportError(f"layer {cfg['name']!r}: only channels_last data is supported")


def _layer(class_name: str, cfg: dict[str, Any], input_rank: int) -> Any:
    """One Keras 2 layer config -> the equivalent Keras 3 layer, keeping the layer's name (weights are found by it)."""
    from keras import layers

    name = cfg["name"]
    if class_name == "Conv2D":
        _channels_last(cfg)
        return layers.Conv2D(
            cfg["filters"], tuple(cfg["kernel_size"]), strides=tuple(cfg["strides"]), padding=cfg["padding"],
            dilation_rate=tuple(cfg["dilation_rate"]), activation=_activation(cfg["activation"]),
            use_bias=cfg["use_bias"], name=name,
        )  # fmt: skip
    if class_name == "Dense":
        activation = _activation(cfg["activation"])
        return layers.Dense(cfg["units"], activation=activation, use_bias=cfg["use_bias"], name=name)
    if class_name == "Activation":
        return layers.Activation(_activation(cfg["activation"]), name=name)
    if class_name == "BatchNormalization":
        axis = cfg["axis"][0] if isinstance(cfg["axis"], list) and len(cfg["axis"]) == 1 else cfg["axis"]
        if axis not in (-1, input_rank - 1):
            raise Keras2ImportError(f"layer {name!r}: BatchNormalization over axis {cfg['axis']} is not supported")
        return layers.BatchNormalization(
            axis=-1, momentum=cfg["momentum"], epsilon=cfg["epsilon"], center=cfg["center"], scale=cfg["scale"],
            name=name,
        )  # fmt: skip
    if class_name in ("MaxPooling2D", "AveragePooling2D"):
        _channels_last(cfg)
        pool = layers.MaxPooling2D if class_name == "MaxPooling2D" else layers.AveragePooling2D
        strides = tuple(cfg["strides"]) if cfg.get("strides") else None
        return pool(tuple(cfg["pool_size"]), strides=strides, padding=cfg["padding"], name=name)
    if class_name in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
        _channels_last(cfg)
        return getattr(layers, class_name)(name=name)
    if class_name == "Flatten":
        _channels_last(cfg)
        return layers.Flatten(name=name)
    if class_name == "Dropout":
        if cfg.get("noise_shape") is not None:
            raise Keras2ImportError(f"layer {name!r}: Dropout with a noise_shape is not supported")
        return layers.Dropout(cfg["rate"], name=name)
    raise Keras2ImportError(f"layer type {class_name!r} (layer {name!r}) is not supported by the Keras 2 importer")


def _chain(config: dict[str, Any], class_name: str) -> tuple[list[int], list[dict[str, Any]]]:
    """The model's layers as a single chain (input shape, layer specs in order); branching graphs are refused."""
    specs = config["layers"]
    if class_name == "Sequential":
        first = specs[0]["config"]
        shape = first.get("batch_input_shape") or first.get("batch_shape")
        body = specs[1:] if specs[0]["class_name"] == "InputLayer" else specs
    elif class_name in ("Model", "Functional"):
        if len(config["input_layers"]) != 1 or len(config["output_layers"]) != 1:
            raise Keras2ImportError("only models with one input and one output are supported")
        first = specs[0]
        if first["class_name"] != "InputLayer":
            raise Keras2ImportError("the first layer of a functional model must be its InputLayer")
        shape = first["config"].get("batch_input_shape") or first["config"].get("batch_shape")
        body = specs[1:]
        previous = first["name"]
        for spec in body:
            nodes = spec["inbound_nodes"]
            if len(nodes) != 1 or len(nodes[0]) != 1 or nodes[0][0][0] != previous:
                raise Keras2ImportError(f"layer {spec['name']!r} is not fed by the layer before it: only chains")
            previous = spec["name"]
        if config["output_layers"][0][0] != previous:
            raise Keras2ImportError("the model's output is not its last layer: only chains are supported")
    else:
        raise Keras2ImportError(f"model class {class_name!r} is not supported (Sequential or functional Model only)")
    if not shape:
        raise Keras2ImportError("the model config does not state its input shape")
    return list(shape[1:]), body


def model_from_keras2_json(text: str) -> Any:
    """Rebuild a Keras 2 `to_json()` architecture as a Keras 3 functional model taking uint8 (untrained, same layer
    names, plus the input cast)."""
    import keras

    try:
        document = json.loads(text)
        class_name, config = document["class_name"], document["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise Keras2ImportError(f"not a Keras model JSON (`model.to_json()`): {err}") from None
    try:
        shape, body = _chain(config, class_name)
        inputs, x = architectures.uint8_image_input(tuple(shape), name=config.get("name", "model") + "_input")
        for spec in body:
            x = _layer(spec["class_name"], spec["config"], len(x.shape))(x)
    except KeyError as err:
        raise Keras2ImportError(f"model JSON lacks an expected key {err}") from None
    return keras.Model(inputs, x, name=config.get("name", "keras2_model"))


def read_keras2_weights(data: bytes) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Keras 2 HDF5 weights -> {layer name: [(weight name, array), ...] in the file's `weight_names` order}.

    Accepts both a `save_weights` file and a full `model.save` file (weights under `model_weights`).
    """
    try:
        f = h5py.File(io.BytesIO(data), "r")
    except OSError as err:
        raise Keras2ImportError(f"not an HDF5 weights file: {err}") from None
    with f:
        root = f.get("model_weights", f)  # a full `model.save` file nests the weights
        if "layer_names" not in root.attrs:
            raise Keras2ImportError("not a Keras 2 weights file: no `layer_names` attribute")
        weights = {}
        for raw in root.attrs["layer_names"]:
            layer = raw.decode() if isinstance(raw, bytes) else str(raw)
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in root[layer].attrs.get("weight_names", [])]
            weights[layer] = [(name, np.asarray(root[layer][name])) for name in names]
    return weights


def _short(weight_name: str) -> str:
    """`conv2d_1/kernel:0` -> `kernel`: the variable's own name, the same in Keras 2 and Keras 3."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def set_keras2_weights(model: Any, weights: dict[str, list[tuple[str, np.ndarray]]]) -> None:
    """Put each layer's arrays into the layer of the same name, matching variables by name and checking shapes."""
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in weights:
            raise Keras2ImportError(f"the weights file has no weights for layer {layer.name!r}")
        stored = {_short(name): array for name, array in weights[layer.name]}
        wanted = [variable.name for variable in layer.weights]
        if sorted(stored) != sorted(wanted):
            raise Keras2ImportError(f"layer {layer.name!r}: file has weights {sorted(stored)}, model needs {wanted}")
        for variable, name in zip(layer.weights, wanted, strict=True):
            shape, found = tuple(variable.shape), stored[name].shape
            if shape != found:
                raise Keras2ImportError(f"layer {layer.name!r} weight {name!r}: file shape {found}, model {shape}")
        layer.set_weights([stored[name] for name in wanted])
    extra = {name for name, arrays in weights.items() if arrays} - {layer.name for layer in model.layers}
    if extra:
        raise Keras2ImportError(f"the weights file has weights for layers not in the architecture: {sorted(extra)}")


def import_keras2(
    architecture_url: str,
    weights_url: str,
    classes: list[str],
    *,
    preprocess_config: PreprocessConfig | None = None,
    size_from_model: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> Bundle:
    """Keras 2 JSON + HDF5 weights -> an unsaved Bundle (save it with `save_bundle`); raises Keras2ImportError for
    files it cannot translate and BundleError for a model that does not fit `classes` or the preprocessing.

    `classes` is the model's output order (index 0 first); the preprocessing default is the ifcbUTOPIA contract at
    the model's input size (`size_from_model`: the given contract at the model's input size).
    """
    try:
        text = read_model_file(architecture_url, storage_options, "model architecture").decode()
    except UnicodeDecodeError as err:
        raise Keras2ImportError(f"{architecture_url} is not a Keras model JSON (`model.to_json()`): {err}") from None
    data = read_model_file(weights_url, storage_options, "weights file")
    model = model_from_keras2_json(text)
    set_keras2_weights(model, read_keras2_weights(data))
    document = json.loads(text)
    source = {
        "architecture": architecture_url,
        "weights": weights_url,
        "keras_version": document.get("keras_version"),
        "backend": document.get("backend"),
    }
    return imported_bundle(
        model, classes, preprocess_config, kind="keras2", source=source, size_from_model=size_from_model
    )
