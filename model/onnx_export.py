"""A Keras bundle as an ONNX bundle (`ifcbflow model export --onnx`): the same classes, contract and thresholds, the
model converted by Keras' own exporter (`model.export(format="onnx")`, tf2onnx under TensorFlow), for CPU nodes
where ONNX Runtime runs the registered CNNs faster than TensorFlow (bench/bench_onnx_cpu.py).

The converted graph takes the same uint8 input; the export is refused unless it gives the Keras model's scores on
random inputs within `TOLERANCE`. It is another model file, so another bundle hash and another output store.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from model.bundle import Bundle, BundleError
from model.onnx_model import OnnxModel, penultimate, with_embedding_output
from model.versions import installed_versions

#: Largest absolute score difference allowed between the Keras model and its ONNX export (float32 reorderings).
TOLERANCE = 1e-4


def keras_to_onnx(model: Any, config: Any, *, seed: int = 0) -> tuple[OnnxModel, float]:
    """(the converted graph with its embedding output where found, the largest score difference on 16 random
    inputs); BundleError when the conversion fails or its scores differ by more than `TOLERANCE`."""
    from model.inference import make_predictor

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (16, config.size, config.size, 1)).astype(config.pixel_dtype)
    keras_scores = make_predictor(Bundle(model, [], config, "keras")).predict(pixels)  # also builds the model
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            model.export(str(path), format="onnx", verbose=False)
        except Exception as err:  # the exporter raises many types; all mean the same here
            raise BundleError(f"Keras could not export {model.name} to ONNX: {err}") from err
        onnx_model = OnnxModel.from_bytes(path.read_bytes(), f"the ONNX export of {model.name}")
    if penultimate(onnx_model) is not None:
        onnx_model = with_embedding_output(onnx_model)
    onnx_scores = make_predictor(Bundle(onnx_model, [], config, "onnx")).predict(pixels)
    difference = float(np.abs(np.asarray(onnx_scores) - np.asarray(keras_scores)).max())
    if not difference <= TOLERANCE:
        raise BundleError(f"the ONNX export of {model.name} differs from it by {difference:.3g} (> {TOLERANCE})")
    return onnx_model, difference


def exported_bundle(bundle: Bundle) -> Bundle:
    """The ONNX bundle of a Keras bundle (unsaved): same classes, contract and thresholds; provenance says from what."""
    if getattr(bundle.model, "runtime", "keras") == "onnx":
        raise BundleError("this bundle's model is already an ONNX model")
    onnx_model, difference = keras_to_onnx(bundle.model, bundle.preprocess)
    provenance = {
        **bundle.provenance,
        "exported_from": {"bundle": bundle.content_hash, "arch": bundle.arch, "max_score_difference": difference},
        "versions": installed_versions(),
    }
    return replace(bundle, model=onnx_model, arch=f"onnx:{bundle.arch}", provenance=provenance, content_hash="")
