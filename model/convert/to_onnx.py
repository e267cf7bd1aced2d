"""A Keras model converted to ONNX by Keras' own exporter (`model.export(format="onnx")`, tf2onnx under TensorFlow),
for CPU nodes, where ONNX Runtime starts and runs the registered CNNs faster than TensorFlow
(bench/bench_runtimes.py), in two forms:

- `with_onnx_twin`: the Keras bundle carrying the conversion as its ONNX twin (`train` and `model import` write
  one; `ifcbflow model export --add-onnx` adds one): the same model to an output store, run on ONNX Runtime by CPU
  workers (`model.inference.runtimes`);
- `exported_bundle`: an ONNX bundle (`ifcbflow model export --onnx`), for a node without Keras: another model file,
  so another bundle hash and another output store.

The converted graph takes the same uint8 input, and its reshapes have constant targets (`with_constant_reshapes`:
one graph for one model, whichever way tf2onnx's optimiser went); a conversion is refused unless it gives the Keras
model's scores on random inputs within `TOLERANCE`.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from model.bundle import Bundle, BundleError, model_runtime, require_keras
from model.formats.onnx_model import OnnxModel, penultimate, with_constant_reshapes, with_embedding_output
from model.versions import installed_versions

log = logging.getLogger(__name__)

#: Largest absolute score difference allowed between the Keras model and its ONNX export (float32 reorderings).
TOLERANCE = 1e-4


def keras_to_onnx(model: Any, config: Any, *, seed: int = 0) -> tuple[OnnxModel, float]:
    """(the converted graph with its embedding output where found, the largest score difference on 16 random
    inputs); BundleError when the conversion fails or its scores differ by more than `TOLERANCE`."""
    from model.inference.predictors import make_predictor

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
    # tf2onnx leaves a Flatten's run-time batch-size arithmetic in the graph on some runs, not others
    onnx_model = with_constant_reshapes(onnx_model)
    if penultimate(onnx_model) is not None:
        onnx_model = with_embedding_output(onnx_model)
    onnx_scores = make_predictor(Bundle(onnx_model, [], config, "onnx")).predict(pixels)
    difference = float(np.abs(np.asarray(onnx_scores) - np.asarray(keras_scores)).max())
    if not difference <= TOLERANCE:
        raise BundleError(f"the ONNX export of {model.name} differs from it by {difference:.3g} (> {TOLERANCE})")
    return onnx_model, difference


def _converted(bundle: Bundle) -> tuple[OnnxModel, float]:
    """`keras_to_onnx` of a Keras bundle's model; BundleError for an ONNX bundle."""
    require_keras(model_runtime(bundle.model))
    return keras_to_onnx(bundle.model, bundle.preprocess)


def exported_bundle(bundle: Bundle) -> Bundle:
    """The ONNX bundle of a Keras bundle (unsaved): same classes, contract and thresholds; provenance says from what."""
    onnx_model, difference = _converted(bundle)
    provenance = {
        **bundle.provenance,
        "exported_from": {"bundle": bundle.content_hash, "arch": bundle.arch, "max_score_difference": difference},
        "versions": installed_versions(),
    }
    return replace(
        bundle, model=onnx_model, arch=f"onnx:{bundle.arch}", provenance=provenance, content_hash="", onnx_twin=None
    )


def onnx_twin(bundle: Bundle) -> tuple[OnnxModel, dict[str, Any]]:
    """(the ONNX conversion of a Keras bundle's model, how it was made: its largest score difference and the
    tolerance), for `Bundle.onnx_twin` or `model.bundle.save_with_twin`; BundleError for an ONNX bundle or a failed
    conversion."""
    onnx_model, difference = _converted(bundle)
    return onnx_model, {"max_score_difference": difference, "tolerance": TOLERANCE}


def with_onnx_twin(bundle: Bundle) -> Bundle:
    """The (unsaved) Keras bundle with its model's ONNX conversion as its twin, recorded in its provenance."""
    onnx_model, made = onnx_twin(bundle)
    return replace(bundle, onnx_twin=onnx_model, provenance={**bundle.provenance, "onnx_twin": made}, content_hash="")


def twin_if_possible(bundle: Bundle) -> Bundle:
    """`with_onnx_twin`, or the bundle unchanged, with a warning saying why, when the conversion fails (tf2onnx
    missing, a layer it cannot convert): the bundle still runs, on its Keras backend."""
    try:
        return with_onnx_twin(bundle)
    except BundleError as err:
        log.warning("the bundle gets no ONNX twin (CPU workers will run its Keras model): %s", err)
        return bundle
