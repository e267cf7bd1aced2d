"""Import a Keras 3 native model file (`model.save("x.keras")`) as a bundle: bring your own trained model.

The file is loaded in safe mode (no code from it runs: custom objects and lambdas are refused). The model must take
one square single-channel image of the preprocessing size and give one score per class (`bundle.check_model`).
A model that takes floats is wrapped so the bundle takes uint8 like every other: the cast comes first, and the model
then receives the contract's grey levels 0..255 as floats (a model trained on 0..1 must hold its own `Rescaling`).
"""

from __future__ import annotations

from typing import Any

from model import architectures
from model.bundle import Bundle, BundleError, read_model_file
from model.convert.imported import imported_bundle
from model.formats.keras_safety import load_keras_model
from model.preprocess import PreprocessConfig


def _uint8_model(model: Any) -> Any:
    """The model itself when it takes uint8, else the model behind a uint8 input and its cast; other input types
    (integers other than uint8, strings) are refused rather than guessed."""
    import keras

    if len(model.inputs) != 1:
        raise BundleError(f"the model must have one input, it has {len(model.inputs)}")
    dtype = model.inputs[0].dtype
    if dtype == "uint8":
        return model
    if not keras.backend.is_float_dtype(dtype):
        raise BundleError(f"the model takes {dtype} input; only uint8 or floating-point image inputs can be imported")
    inputs, x = architectures.uint8_image_input(tuple(model.input_shape[1:]), name=f"{model.name}_uint8")
    return keras.Model(inputs, model(x), name=model.name)


def import_keras3(
    model_url: str,
    classes: list[str],
    *,
    preprocess_config: PreprocessConfig | None = None,
    size_from_model: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> Bundle:
    """A `.keras` file (any fsspec URL) -> an unsaved Bundle (save it with `save_bundle`); BundleError if unusable.

    `classes` is the model's output order (index 0 first); the preprocessing default is the ifcbUTOPIA contract at
    the model's input size (`size_from_model`: the given contract at the model's input size).
    """
    data = read_model_file(model_url, storage_options, "model file")
    loaded = load_keras_model(data, f"{model_url} (a Keras 3 native .keras file)")
    model = _uint8_model(loaded)
    source = {"model": model_url, "input_dtype": loaded.inputs[0].dtype}
    return imported_bundle(
        model, classes, preprocess_config, kind="keras", source=source, size_from_model=size_from_model
    )
