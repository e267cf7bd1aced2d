"""CNN architectures by name, so the trainer and the CLI take `--arch NAME` and a new one is one decorated function.

Every builder returns a Keras 3 functional model taking (input_size, input_size, 1) uint8 images (`model.preprocess`
output) and giving class probabilities. uint8 crosses to the device (a quarter of float32's bytes); the first layer,
`uint8_image_input`'s cast, turns it into the compute dtype there. The last layer is float32 so mixed precision stays
stable.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import keras
from keras import layers

Builder = Callable[[int, int], keras.Model]
_REGISTRY: dict[str, Builder] = {}
CAST_LAYER = "input_cast"


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make `builder(n_classes, input_size)` available as `build(name, ...)`."""

    def add(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return add


def names() -> list[str]:
    """The registered architecture names, sorted."""
    return sorted(_REGISTRY)


def build(name: str, n_classes: int, input_size: int = 128) -> keras.Model:
    """A fresh, untrained model of the named architecture."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(names())}")
    if n_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
    return _REGISTRY[name](n_classes, input_size)


def _signature(model: keras.Model) -> list[tuple[str, ...]]:
    """What decides a model's computation, without names: layer types and their shape-relevant settings."""
    keys = ("filters", "kernel_size", "strides", "padding", "pool_size", "units", "activation", "rate", "epsilon",
            "momentum", "center", "scale", "use_bias", "dilation_rate")  # fmt: skip
    out = []
    for layer in model.layers:
        config = layer.get_config()
        out.append((type(layer).__name__, *(json.dumps(config.get(key)) for key in keys)))
    return out


def registry_match(model: keras.Model) -> str | None:
    """The registered architecture this model is identical to (same layers and settings), if any."""
    size, n_classes = model.input_shape[1], model.output_shape[-1]
    if model.input_shape[1:] != (size, size, 1):
        return None
    for name in names():
        try:
            candidate = build(name, n_classes, size)
        except ValueError:
            continue
        if _signature(candidate) == _signature(model):
            return name
    return None


def uint8_image_input(
    shape: tuple[int, ...], scale: float = 1.0, name: str = "image"
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """A uint8 model input and its cast to the layers' compute dtype, times `scale`: every model's first step.

    `Rescaling` casts to its compute dtype (float32, or float16/bfloat16 under a mixed policy, both exact for
    0..255) and is a standard layer, so bundles still load in safe mode. Returns (input, cast tensor).
    """
    inputs = keras.Input(shape, dtype="uint8", name=name)
    return inputs, layers.Rescaling(scale, name=CAST_LAYER)(inputs)


def _conv_block(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    """Conv 3x3 'same' -> ReLU -> BatchNorm: ifcbUTOPIA normalises after the activation."""
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    return layers.BatchNormalization(axis=-1, momentum=0.99, epsilon=1e-3, name=f"{name}_bn")(x)


@register("utopia-b3")
def utopia_b3(n_classes: int, input_size: int) -> keras.Model:
    """The ifcbUTOPIA CNN as deployed ("model-cnn-v1-b3", published as Keras 2 JSON + H5), layer for layer.

    The input size must survive four 3x3/stride-3 'valid' poolings (128 -> 42 -> 14 -> 4 -> 1).
    """
    if input_size < 81:
        raise ValueError(f"utopia-b3 needs input_size >= 81 (four 3x3/3 poolings), got {input_size}")
    inputs, x = uint8_image_input((input_size, input_size, 1))  # ifcbUTOPIA feeds the 0..255 grey levels as they are
    block = 0
    for stage_filters in ((32, 16), (64, 32), (128, 128, 64), (256, 256, 128)):
        for filters in stage_filters:
            block += 1
            x = _conv_block(x, filters, f"block{block}")
        x = layers.MaxPooling2D(pool_size=3, strides=3, padding="valid", name=f"pool{block}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, name="fc1")(x)
    x = layers.Activation("relu", name="fc1_relu")(x)
    x = layers.BatchNormalization(momentum=0.99, epsilon=1e-3, name="fc1_bn")(x)
    x = layers.Dropout(0.2, name="fc1_dropout")(x)
    x = layers.Dense(1000, name="fc2")(x)
    x = layers.Activation("relu", name="fc2_relu")(x)
    x = layers.Dense(1000, activation="relu", name="fc3")(x)
    x = layers.Dropout(0.1, name="fc3_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="utopia_b3")


@register("small-cnn")
def small_cnn(n_classes: int, input_size: int) -> keras.Model:
    """A small fast CNN (a few thousand parameters) for demos and tests on a couple of CPU cores."""
    inputs, x = uint8_image_input((input_size, input_size, 1), scale=1 / 255)
    for i, filters in enumerate((16, 32, 32), start=1):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)  # few steps per run: adapt fast
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.1, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="small_cnn")
