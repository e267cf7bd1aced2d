"""A bundle loaded to run: its file read and verified (`model.bundle`), and the model for the chosen runtime built
from its bytes (`model.formats`): the Keras model in safe mode, or the ONNX graph (an ONNX bundle's model, or a
Keras bundle's ONNX twin, without importing Keras).
"""

from __future__ import annotations

from typing import Any

from model.bundle import Bundle, BundleError, checked_bundle, preprocess_of, read_verified, runtimes
from model.formats.keras_safety import load_keras_model
from model.formats.onnx_model import OnnxModel


def load_bundle(url: str, storage_options: dict[str, Any] | None = None, runtime: str | None = None) -> Bundle:
    """Load and verify a bundle from any fsspec URL; Keras loads in safe mode (no arbitrary code from the file).

    `runtime` picks the model to build: None its own (Keras or ONNX), "onnx" the ONNX graph (an ONNX bundle's model
    or a Keras bundle's ONNX twin: Keras is not imported), "keras" the Keras model. BundleError when the bundle has
    no model for that runtime (`model.bundle.runtimes` tells which it has)."""
    metadata, model_bytes, twin_bytes = read_verified(url, storage_options)
    offered = runtimes(metadata)
    runtime = runtime or offered[0]
    if runtime not in offered:
        hint = " (`ifcbflow model export BUNDLE --add-onnx` adds one)" if runtime == "onnx" else ""
        raise BundleError(f"{url}: this bundle has no model for the {runtime} runtime, only {', '.join(offered)}{hint}")
    preprocess = preprocess_of(metadata, url)
    twin = None
    if runtime == "onnx":
        model: Any = OnnxModel.from_bytes(twin_bytes or model_bytes, f"{url}: the ONNX model inside the bundle")
    else:
        model = load_keras_model(model_bytes, f"{url}: the model inside the bundle")
        if twin_bytes is not None:
            twin = OnnxModel.from_bytes(twin_bytes, f"{url}: the ONNX twin inside the bundle")
    return checked_bundle(metadata, preprocess, model, twin, url)
