"""Import an ONNX model (WHOI's `ifcb-inference` models, a torchvision ResNet exported with `torch.onnx.export`, any
classifier of one image input) as a bundle, with the preprocessing contract it was trained with.

The graph is checked and stored as it is, but for its IR version, lowered where the installed ONNX Runtime reads
only an older one and the graph allows (`model.formats.onnx_compat`), and two optional pieces of surgery: a Softmax
after the scores for a model that outputs logits (`softmax`), and its penultimate features as a second output
(`model.formats.onnx_model`), found automatically (the input of the last fully connected layer) or named, so that
`classify --embeddings` can store them. No bundle is returned before ONNX Runtime has loaded and run its graph.
"""

from __future__ import annotations

from typing import Any

import onnx

from model.bundle import Bundle, BundleError, read_model_file
from model.convert.imported import imported_bundle
from model.formats.onnx_compat import fit_to_runtime
from model.formats.onnx_external import embed_external_data
from model.formats.onnx_model import OnnxModel, penultimate, with_embedding_output, with_softmax
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
    proto = _read_model(model_url, storage_options or {})
    lowered_from = fit_to_runtime(proto, model_url)
    model = OnnxModel.from_bytes(proto.SerializeToString(), model_url)
    if softmax:
        model = with_softmax(model)
    if embedding is not None or penultimate(model) is not None:
        model = with_embedding_output(model, embedding)
    embeddings = model.output_names[1] if model.has_embeddings else None
    source = {
        "model": model_url,
        "softmax_added": softmax,
        "embedding_output": embeddings,
        "ir_version_lowered": None if lowered_from is None else {"from": lowered_from, "to": proto.ir_version},
    }
    config = preprocess_config or PRESETS["whoi"]
    bundle = imported_bundle(model, classes, config, kind="onnx", source=source, size_from_model=size_from_model)
    model.check_runs(bundle.preprocess, len(classes))
    return bundle


def _read_model(url: str, storage_options: dict[str, Any]) -> onnx.ModelProto:
    """The graph with every weight inside: weights stored beside it as external data (what `torch.onnx.export`
    writes by default, `MODEL.onnx.data`) are checked and fetched from the same folder and embedded in memory
    (`model.formats.onnx_external.embed_external_data`); nothing is written to disk."""
    data = read_model_file(url, storage_options, "model file")
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as err:  # protobuf raises its own decode errors for a file that is not ONNX
        raise BundleError(f"{url} is not a valid ONNX model: {err}") from None
    embed_external_data(proto, url, storage_options)
    return proto
