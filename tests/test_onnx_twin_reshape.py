"""The ONNX twin of a trained utopia-b3 (`ifcbflow train`): the graph a fresh conversion of its weights gives, with a
constant target for the Flatten's Reshape, whether or not tf2onnx's optimiser folded the batch-size arithmetic
Keras traces there (`model.formats.onnx_model.with_constant_reshapes`)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from model.convert.to_onnx import TOLERANCE, keras_to_onnx
from model.formats.onnx_model import OnnxModel
from model.inference.load import load_bundle
from model.inference.predictors import make_predictor
from pipeline.ifcb.synth import write_synthetic_archive

pytestmark = pytest.mark.slow

IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
#: The operators of a shape computed at run time, as tf2onnx converts `(tf.shape(x)[0], features)`.
SHAPE_OPS = ("Shape", "Gather", "Slice", "Concat", "Cast", "Squeeze", "Unsqueeze")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A utopia-b3 bundle trained for one epoch (its smallest input, 81) on a synthetic archive, as `train` writes
    it: batch-norm shifts no longer zero, so the conversion keeps their additions."""
    root = tmp_path_factory.mktemp("trained-twin")
    archive, out = str(root / "train"), str(root / "b3.ifcbmodel")
    write_synthetic_archive(archive, bins=10, rois=36, classes=4, seed=11)
    command = [IFCBFLOW, "train", archive, "--labels", f"{archive}/labels.csv", "--arch", "utopia-b3",
               "--image-size", "81", "--epochs", "1", "--batch-size", "16", "--seed", "0", "--out", out]  # fmt: skip
    run = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return out


def _computed_targets(proto: onnx.ModelProto) -> list[str]:
    """The op types computing a Reshape's target at run time (walked back from its shape input), in graph order."""
    producers = {output: node for node in proto.graph.node for output in node.output}
    found: set[str] = set()
    pending = [node.input[1] for node in proto.graph.node if node.op_type == "Reshape"]
    while pending:
        node = producers.get(pending.pop())
        if node is not None and node.op_type in SHAPE_OPS and node.name not in found:
            found.add(node.name)
            pending.extend(node.input)
    return [node.op_type for node in proto.graph.node if node.name in found]


def _ops(model: OnnxModel) -> Counter:
    return Counter(node.op_type for node in model.proto().graph.node)


def test_a_trained_twin_is_the_fresh_conversion_with_a_constant_reshape_target(trained: str) -> None:
    twin_bundle, keras_bundle = load_bundle(trained, runtime="onnx"), load_bundle(trained, runtime="keras")
    twin = twin_bundle.model
    assert _computed_targets(twin.proto()) == []
    assert _ops(twin)["Reshape"] == 2 and not {"Shape", "Gather", "Slice", "Concat"} & set(_ops(twin))
    fresh, _ = keras_to_onnx(keras_bundle.model, keras_bundle.preprocess)
    assert _ops(twin) == _ops(fresh)  # the same operators, as many of each: the same node count
    assert twin_bundle.provenance["onnx_twin"]["max_score_difference"] <= TOLERANCE
    pixels = np.random.default_rng(3).integers(0, 256, (40, 81, 81, 1), dtype=np.uint8)  # preprocessed inputs
    onnx_scores, keras_scores = (make_predictor(b).predict(pixels) for b in (twin_bundle, keras_bundle))
    difference = np.abs(np.asarray(onnx_scores) - np.asarray(keras_scores)).max()
    assert difference <= TOLERANCE


def test_the_batch_size_arithmetic_tf2onnx_leaves_is_folded(trained: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without tf2onnx's reshape optimiser (which folds it on some runs and not on others) the export keeps
    `Shape -> Gather -> Cast -> Slice -> Concat -> Cast -> Reshape`; the conversion still gives the twin's graph."""
    tf2onnx_optimizer = pytest.importorskip("tf2onnx.optimizer")
    monkeypatch.delitem(tf2onnx_optimizer._optimizers, "reshape_optimizer")
    keras_bundle = load_bundle(trained, runtime="keras")
    model = keras_bundle.model
    keras_to_onnx(model, keras_bundle.preprocess)  # builds and calls the model, as the export needs
    with tempfile.TemporaryDirectory() as tmp:
        model.export(str(Path(tmp) / "raw.onnx"), format="onnx", verbose=False)
        raw = onnx.load(str(Path(tmp) / "raw.onnx"))
    assert {"Shape", "Concat"} <= set(_computed_targets(raw))  # the problem, reproduced
    converted, difference = keras_to_onnx(model, keras_bundle.preprocess)
    assert _computed_targets(converted.proto()) == [] and difference <= TOLERANCE
    assert _ops(converted) == _ops(load_bundle(trained, runtime="onnx").model)
