"""Import an ONNX model (WHOI's `ifcb-inference` models, a torchvision ResNet exported with `torch.onnx.export`, any
classifier of one image input) as a bundle, with the preprocessing contract it was trained with.

The graph is checked and stored as it is, but for two optional pieces of surgery: a Softmax after the scores for a
model that outputs logits (`softmax`), and its penultimate features as a second output (`model.onnx_model`), found
automatically (the input of the last fully connected layer) or named, so that `classify --embeddings` can store them.
"""

from __future__ import annotations

from typing import Any

import fsspec

from model.bundle import Bundle, BundleError
from model.imported import imported_bundle
from model.onnx_model import OnnxModel, penultimate, with_embedding_output, with_softmax
from model.preprocess import PRESETS, PreprocessConfig


def import_onnx(
    model_url: str,
    classes: list[str],
    *,
    preprocess_config: PreprocessConfig | None = None,
    size_from_model: bool = True,
    softmax: bool = False,
    embedding: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Bundle:
    """An `.onnx` file (any fsspec URL) -> an unsaved Bundle (save it with `save_bundle`); BundleError if unusable.

    `classes` is the model's output order; the contract defaults to the `whoi` preset, its size (with
    `size_from_model`) from the model's input. `embedding` names the tensor to expose as embeddings (default: the
    penultimate layer's, when one is found; a bundle without one classifies but cannot give embeddings).
    """
    try:
        with fsspec.open(model_url, "rb", **(storage_options or {})) as f:
            data = f.read()
    except FileNotFoundError:
        raise BundleError(f"no model file at {model_url}") from None
    model = OnnxModel.from_bytes(data, f"{model_url}")
    if softmax:
        model = with_softmax(model)
    if embedding is not None or penultimate(model) is not None:
        model = with_embedding_output(model, embedding)
    embeddings = model.output_names[1] if model.has_embeddings else None
    source = {"model": model_url, "softmax_added": softmax, "embedding_output": embeddings}
    config = preprocess_config or PRESETS["whoi"]
    return imported_bundle(model, classes, config, kind="onnx", source=source, size_from_model=size_from_model)
