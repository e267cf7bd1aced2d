"""ONNX models in bundles: the graph as bytes, what ifcbflow needs of its input and outputs, and the graph surgery
an import may do (a softmax after logits, the penultimate features as a second output).

A bundle's ONNX graph has one image input and the class scores as its first output; where it can give embeddings,
the penultimate features (n, features) are its second output. Inference runs on ONNX Runtime
(`model.inference.predictors`), on the CUDA provider where the `gpu` extra installed it, else on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from model.bundle import BundleError
from model.formats.onnx_external import check_self_contained
from model.preprocess import PreprocessConfig

#: Nodes between the last fully connected layer and the scores that change no feature (walked through backwards).
_PASS_THROUGH = ("Softmax", "LogSoftmax", "Identity", "Sigmoid", "Flatten", "Reshape", "Cast", "Add")
_LINEAR = ("Gemm", "MatMul")
#: Operator domains whose operators ONNX Runtime builds in: the ONNX standard ("" and "ai.onnx"), its classical ML
#: operators and Microsoft's contrib operators. Any other domain needs a custom-operator library, native code that
#: ifcbflow never registers, so such a graph is refused with its domains named instead of failing on a worker.
BUILT_IN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})


def check_built_in_ops(proto: onnx.ModelProto, what: str) -> None:
    """Refuse (BundleError) a graph that uses operators outside `BUILT_IN_DOMAINS` (its local functions aside)."""
    local = {(function.domain, function.name) for function in proto.functions}
    nodes = [*proto.graph.node, *(node for function in proto.functions for node in function.node)]
    foreign = sorted(
        {f"{node.domain}.{node.op_type}" for node in nodes if node.domain not in BUILT_IN_DOMAINS}
        - {f"{domain}.{name}" for domain, name in local}
    )
    if foreign:
        raise BundleError(
            f"{what} uses custom operators ({', '.join(foreign)}), which need native code from outside the model; "
            "ifcbflow loads none: export the model with standard ONNX operators only"
        )


def _dims(value: onnx.ValueInfoProto) -> tuple[int | None, ...]:
    """A tensor's shape, None for each symbolic or unknown dimension."""
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim)


@dataclass(frozen=True)
class OnnxModel:
    """A serialized ONNX graph (`data`) and its interface, read once from it."""

    data: bytes
    name: str
    input_name: str
    input_shape: tuple[int | None, ...]  # batch first
    input_dtype: np.dtype
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int | None, ...], ...]

    runtime = "onnx"

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "the ONNX model") -> OnnxModel:
        """Parse and check a serialized graph; BundleError if it is not a valid ONNX model with one image input, or
        one that names weights outside itself (`model.formats.onnx_external`) or custom operators
        (`check_built_in_ops`).

        Loading runs no code from the file: an ONNX graph is data (protobuf), and ONNX Runtime runs only its built-in
        operators unless a custom-operator library is registered, which ifcbflow never does."""
        try:
            proto = onnx.load_model_from_string(data)
        except Exception as err:  # protobuf raises its own decode errors for a file that is not ONNX
            raise BundleError(f"{what} is not a valid ONNX model: {err}") from err
        check_self_contained(proto, what)
        check_built_in_ops(proto, what)
        try:
            onnx.checker.check_model(proto)
        except Exception as err:  # onnx raises several types for a bad graph; all mean the same to the caller
            raise BundleError(f"{what} is not a valid ONNX model: {err}") from err
        return cls._of(proto, data)

    @classmethod
    def _of(cls, proto: onnx.ModelProto, data: bytes | None = None) -> OnnxModel:
        graph = proto.graph
        weights = {tensor.name for tensor in graph.initializer}
        inputs = [value for value in graph.input if value.name not in weights]
        if len(inputs) != 1:
            raise BundleError(f"the ONNX model must have one image input, it has {len(inputs)}")
        if not 1 <= len(graph.output) <= 2:
            raise BundleError(f"the ONNX model must have one output (scores) or two, it has {len(graph.output)}")
        return cls(
            data=proto.SerializeToString() if data is None else data,
            name=graph.name or "onnx",
            input_name=inputs[0].name,
            input_shape=_dims(inputs[0]),
            input_dtype=np.dtype(helper.tensor_dtype_to_np_dtype(inputs[0].type.tensor_type.elem_type)),
            output_names=tuple(value.name for value in graph.output),
            output_shapes=tuple(_dims(value) for value in graph.output),
        )

    @property
    def has_embeddings(self) -> bool:
        return len(self.output_names) == 2

    def proto(self) -> onnx.ModelProto:
        return onnx.load_model_from_string(self.data)

    def save(self, path: Any) -> None:
        """Write the graph's bytes (what `Bundle` stores as `model.onnx`)."""
        with open(path, "wb") as f:
            f.write(self.data)

    def check(self, n_classes: int, config: PreprocessConfig) -> None:
        """Refuse a graph whose input the contract cannot feed or whose scores are not one per class.

        Every fixed dimension of the input must equal the contract's (size, channels, layout); symbolic ones
        (a dynamic batch or image size) take what the contract makes. The message names both shapes.
        """
        shape, expected = self.input_shape[1:], config.input_shape
        fits = len(shape) == len(expected) and all(d is None or d == e for d, e in zip(shape, expected, strict=True))
        if not fits:
            shown = tuple("?" if d is None else d for d in shape)
            raise BundleError(
                f"the model's input shape {shown} does not match the preprocessing contract's {expected} "
                f"({config.describe()}): set the contract's size, channels and layout to the model's input"
            )
        if not np.issubdtype(self.input_dtype, np.floating) and self.input_dtype != config.input_dtype:
            raise BundleError(f"the model takes {self.input_dtype} input but the contract makes {config.input_dtype}")
        scores = self.output_shapes[0]
        if len(scores) != 2 or scores[1] not in (None, n_classes):
            raise BundleError(f"the model's scores have shape {scores} but {n_classes} class names were given")

    def session(self, threads: int | None = None) -> Any:
        """An ONNX Runtime session: the CUDA provider first where installed (the `gpu` extra), then the CPU."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        # its threads sleep between runs instead of spinning: a worker's feeders share the cores with them
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        return ort.InferenceSession(self.data, sess_options=options, providers=providers)

    def check_runs(self, config: PreprocessConfig, n_classes: int) -> None:
        """Prove that ONNX Runtime loads and runs the graph: one all-zero input of the contract's shape (the graph's
        batch where it fixes one, else 1) through `session`. BundleError with the runtime's message where it cannot,
        or where the scores are not one row per input and one column per class."""
        batch = self.input_shape[0] or 1
        zeros = np.zeros((batch, *config.input_shape), dtype=self.input_dtype)
        try:
            scores = self.session(threads=1).run(None, {self.input_name: zeros})[0]
        except Exception as err:  # the runtime raises its own types (Fail, InvalidGraph, ...); all mean "cannot run"
            raise BundleError(f"ONNX Runtime cannot run the model: {err}") from err
        if scores.shape != (batch, n_classes):
            raise BundleError(
                f"the model gave scores of shape {scores.shape} for {batch} input(s) of shape {zeros.shape[1:]}; "
                f"expected {(batch, n_classes)}"
            )


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in graph.node for output in node.output}


def with_softmax(model: OnnxModel) -> OnnxModel:
    """The graph with a Softmax over the classes after its scores (for models that output logits)."""
    proto = model.proto()
    graph = proto.graph
    logits = graph.output[0]
    probabilities = f"{logits.name}_softmax"
    graph.node.append(helper.make_node("Softmax", [logits.name], [probabilities], axis=-1, name=probabilities))
    replacement = onnx.ValueInfoProto()
    replacement.CopyFrom(logits)
    replacement.name = probabilities
    graph.output.remove(logits)
    graph.output.insert(0, replacement)
    return OnnxModel._of(proto)


def penultimate(model: OnnxModel) -> str | None:
    """The tensor that feeds the last fully connected layer (Gemm or MatMul) before the scores, or None.

    Walks back from the scores through nodes that change no feature (softmax, bias addition, reshapes).
    """
    graph = model.proto().graph
    weights = {tensor.name for tensor in graph.initializer}
    producers = _producers(graph)
    node = producers.get(model.output_names[0])
    while node is not None and node.op_type in _PASS_THROUGH:
        data = [name for name in node.input if name and name not in weights]
        node = producers.get(data[0]) if data else None
    if node is None or node.op_type not in _LINEAR:
        return None
    return node.input[0]


def _symbols(value: onnx.ValueInfoProto | None) -> list[int | str | None] | None:
    """A tensor's dimensions as inferred: an int where fixed, the symbol's name where symbolic, None where unknown;
    None where even the rank is unknown."""
    if value is None or not value.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in value.type.tensor_type.shape.dim]


def _constant_target(data: list[int | str | None], out: list[int | str | None]) -> list[int] | None:
    """A constant Reshape target giving `out` from `data` (inferred dimensions, `_symbols`): fixed dimensions as
    they are, the one other as -1, or, where there are several, each a symbolic dimension of `data` at the same
    place as 0 (Reshape copies it) and at most one -1. None where no constant target is proven right."""
    if any(d == 0 for d in out):  # a 0 in a target means "copy", not an empty dimension
        return None
    free = [i for i, d in enumerate(out) if not isinstance(d, int)]
    if len(free) <= 1:
        return [-1 if i in free else int(d) for i, d in enumerate(out)]
    target = [
        d if isinstance(d, int) else 0 if d is not None and i < len(data) and data[i] == d else -1
        for i, d in enumerate(out)
    ]
    return target if target.count(-1) <= 1 else None


def _prune(graph: onnx.GraphProto) -> None:
    """Remove the nodes whose outputs nothing uses (not a graph output, not a node's input, subgraphs' included),
    then the weights and value infos of tensors that are gone."""

    def used(nodes) -> set[str]:
        names = set()
        for node in nodes:
            names.update(node.input)
            for attribute in node.attribute:
                for subgraph in [attribute.g, *attribute.graphs]:
                    names.update(used(subgraph.node))
        return names

    outputs = {value.name for value in graph.output}
    while True:
        needed = used(graph.node) | outputs
        dead = [node for node in graph.node if not any(name in needed for name in node.output if name)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    needed = used(graph.node) | outputs
    for tensor in [t for t in graph.initializer if t.name not in needed]:
        graph.initializer.remove(tensor)
    produced = {name for node in graph.node for name in node.output} | {value.name for value in graph.input}
    for value in [v for v in graph.value_info if v.name not in produced]:
        graph.value_info.remove(value)


def with_constant_reshapes(model: OnnxModel) -> OnnxModel:
    """The graph with each Reshape whose target is computed at run time given a constant target instead, where ONNX
    shape inference with data propagation proves it (`_constant_target`), and the shape computation left unused
    removed; the model itself where no Reshape changes.

    Keras' Flatten (and Reshape) layers reshape to `(ops.shape(x)[0], features)`: the batch size read from the
    tensor at run time, so the traced graph carries `Shape -> Gather/Slice -> Concat -> Reshape`. tf2onnx's
    optimizer usually folds that into a constant `(-1, features)` but not always: the same model converts to either
    graph from one run to the next (utopia-b3 with trained batch-norm shifts: 63 or 69 nodes), and the run-time shape
    computation runs on every batch. Folding it here makes the conversion one graph whatever tf2onnx did."""
    proto = model.proto()
    graph = proto.graph
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True).graph
    known = {value.name: value for value in [*inferred.value_info, *inferred.input, *inferred.output]}
    constant = {tensor.name for tensor in graph.initializer}
    constant |= {output for node in graph.node if node.op_type == "Constant" for output in node.output}
    names = {name for node in graph.node for name in [*node.input, *node.output]} | constant
    changed = False
    for node in graph.node:
        allow_zero = any(a.name == "allowzero" and a.i for a in node.attribute)
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] in constant or allow_zero:
            continue
        data, out = _symbols(known.get(node.input[0])), _symbols(known.get(node.output[0]))
        target = None if data is None or out is None else _constant_target(data, out)
        if target is None:
            continue
        name = f"{node.output[0]}_target"
        while name in names:
            name += "_"
        names.add(name)
        graph.initializer.append(numpy_helper.from_array(np.array(target, np.int64), name))
        node.input[1] = name
        changed = True
    if not changed:
        return model
    _prune(graph)
    return OnnxModel._of(proto)


def with_embedding_output(model: OnnxModel, tensor: str | None = None) -> OnnxModel:
    """The graph with `tensor` (default: `penultimate`) as its second output; the model itself when it has one.

    BundleError when no such tensor exists or none can be found.
    """
    if model.has_embeddings:
        return model
    tensor = tensor or penultimate(model)
    if tensor is None:
        raise BundleError(
            "cannot find the model's penultimate layer (no Gemm or MatMul before its scores): name the tensor with "
            "--embedding"
        )
    inferred = onnx.shape_inference.infer_shapes(model.proto()).graph
    known = {value.name: value for value in [*inferred.value_info, *inferred.input, *inferred.output]}
    proto = model.proto()
    graph = proto.graph
    if tensor not in known and tensor not in _producers(graph):
        raise BundleError(f"the model has no tensor named {tensor!r}")
    value = onnx.ValueInfoProto()
    if tensor in known:
        value.CopyFrom(known[tensor])
    else:
        value = helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None)
    if len(_dims(value)) not in (0, 2):
        raise BundleError(f"the embedding tensor {tensor!r} has shape {_dims(value)}; it must be (n, features)")
    graph.output.append(value)
    return OnnxModel._of(proto)
