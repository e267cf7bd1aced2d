"""Small randomly initialised ONNX classifiers built with `onnx.helper` (no downloads), and their features in numpy.

The graph: images (n, 3, size, size) float32 -> Flatten -> Gemm (features) -> Relu -> Gemm (classes) [-> Softmax].
Every pixel reaches the features through one matrix, so numpy computes the penultimate layer independently of ONNX.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET, IR_VERSION = 17, 9


def onnx_classifier(
    path: Path,
    *,
    size: int = 32,
    channels: int = 3,
    n_classes: int = 3,
    features: int = 8,
    softmax: bool = True,
    batch: int | str = "n",
    seed: int = 0,
    external: bool = False,
    opset: int = OPSET,
    ir_version: int | None = IR_VERSION,
) -> dict[str, np.ndarray]:
    """Write the classifier to `path` (`external`: its weights in `<path>.data` beside it, as `torch.onnx.export`
    writes them), importing `opset` and stamped with `ir_version` (None: what the installed onnx's `make_model`
    stamps); returns its weights (w1, b1, w2, b2)."""
    rng = np.random.default_rng(seed)
    inputs = channels * size * size
    weights = {
        "w1": rng.normal(0, 1 / np.sqrt(inputs), (features, inputs)).astype(np.float32),
        "b1": rng.normal(0, 0.1, features).astype(np.float32),
        "w2": rng.normal(0, 1, (n_classes, features)).astype(np.float32),
        "b2": rng.normal(0, 0.1, n_classes).astype(np.float32),
    }
    nodes = [
        helper.make_node("Flatten", ["images"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["hidden"], transB=1),
        helper.make_node("Relu", ["hidden"], ["features"]),
        helper.make_node("Gemm", ["features", "w2", "b2"], ["logits"], transB=1),
    ]
    output = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
        output = "probabilities"
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, n_classes])],
        initializer=[numpy_helper.from_array(array, name) for name, array in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if ir_version is not None:
        model.ir_version = ir_version
    onnx.checker.check_model(model)
    onnx.save(model, str(path), save_as_external_data=external, location=f"{path.name}.data", size_threshold=0)
    return weights


def features_of(inputs: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """The penultimate layer (n, features) of `onnx_classifier` for model inputs (n, 3, size, size), in numpy."""
    flat = inputs.reshape(len(inputs), -1).astype(np.float64)
    return np.maximum(flat @ weights["w1"].T.astype(np.float64) + weights["b1"], 0)


def run_directly(path: Path, inputs: np.ndarray) -> np.ndarray:
    """The model's first output for `inputs`, by ONNX Runtime on the file as written (no ifcbflow in between)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]


def onnx_bundle(root: Path, classes: list[str]) -> str:
    """A bundle of a small ONNX classifier (32x32 inputs, the SMHI preprocessing) under `root`: runs that need ONNX
    Runtime only, quick to start. Returns its path."""
    from model.bundle import save_bundle
    from model.convert.from_onnx import import_onnx
    from model.preprocess import preset

    onnx_classifier(root / "m.onnx", size=32, features=8)
    path = str(root / "bundle.zip")
    save_bundle(import_onnx(str(root / "m.onnx"), classes, preprocess_config=preset("smhi")), path)
    return path
