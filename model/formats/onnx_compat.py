"""An imported ONNX graph fitted to the installed ONNX Runtime: the highest IR version and opset it runs, found by
asking it, and a graph's IR version lowered to that where the graph uses nothing the newer IR versions added.

An ONNX file carries two version stamps (onnx `docs/Versioning.md`): the IR version of its format
(`ModelProto.ir_version`) and, per operator domain, the opset it imports (`ModelProto.opset_import`). ONNX Runtime
refuses a graph stamped with a higher IR version than its build reads ("Unsupported model IR version: 14, max
supported IR version: 13") and, by default, an opset of the default domain above the last released one it
implements ("Current official support for domain ai.onnx is till opset 26"). The `onnx` package may be newer than
the runtime: `onnx.helper.make_model` stamps `onnx.IR_VERSION` (14 in onnx 1.23, `onnx.helper.VERSION_TABLE`)
whatever the graph uses. So:

- the runtime's limits come from the runtime itself (`runtime_limits`): its API reports neither number, so tiny
  graphs stamped with each version are loaded in it, from the newest the installed `onnx` knows downwards;
- a newer IR version than the runtime's is lowered where no IR version in between added anything the graph uses
  (`IR_ADDITIONS`);
- an opset above the runtime's is refused, never changed here: operators change meaning between opsets, and only a
  version converter (`onnx.version_converter.convert_version`) or a new export can move a graph between them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import onnx
from google.protobuf.message import Message
from onnx import TensorProto, helper

from model.bundle import BundleError
from model.formats.onnx_model import OnnxModel

_DEFAULT_DOMAINS = ("", "ai.onnx")
#: ONNX Runtime "only *guarantees* support for models stamped with opset version 7 or above" (its warning on load):
#: the opset the IR version probes import.
_PROBE_OPSET = 7
#: The fields that name a tensor element type (TensorProto, TypeProto.Tensor, TypeProto.SparseTensor).
_TYPE_FIELDS = ("data_type", "elem_type")


@dataclass(frozen=True)
class IrAdditions:
    """What one IR version added that a graph can use: tensor element types and protobuf fields
    (`Message.field`)."""

    types: frozenset[int] = frozenset()
    fields: frozenset[str] = frozenset()


_METADATA = ("NodeProto", "GraphProto", "FunctionProto", "ValueInfoProto", "TensorProto")
#: Each IR version's additions, from the comments on the `Version` enum of onnx.proto (onnx/onnx.proto in the
#: installed package). A graph stamped with a version newer than the last listed here is never lowered.
IR_ADDITIONS: dict[int, IrAdditions] = {
    9: IrAdditions(
        frozenset(
            {TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2, TensorProto.FLOAT8E5M2FNUZ}
        ),
        frozenset({"FunctionProto.attribute_proto"}),
    ),
    10: IrAdditions(
        frozenset({TensorProto.UINT4, TensorProto.INT4}),
        frozenset({"NodeProto.overload", "FunctionProto.overload", *(f"{m}.metadata_props" for m in _METADATA)}),
    ),
    11: IrAdditions(
        frozenset({TensorProto.FLOAT4E2M1}), frozenset({"ModelProto.configuration", "NodeProto.device_configurations"})
    ),
    12: IrAdditions(frozenset({TensorProto.FLOAT8E8M0})),
    13: IrAdditions(frozenset({TensorProto.UINT2, TensorProto.INT2})),
    14: IrAdditions(frozenset({TensorProto.FLOAT6E2M3, TensorProto.FLOAT6E3M2}), frozenset({"TypeProto.opaque_type"})),
}


@dataclass(frozen=True)
class RuntimeLimits:
    """The newest IR version and default-domain opset the installed ONNX Runtime (`version`) loads."""

    ir_version: int
    opset: int
    version: str

    def describe(self) -> str:
        return f"ONNX Runtime {self.version} runs models up to IR version {self.ir_version} and opset {self.opset}"


def _probe(ir_version: int, opset: int) -> onnx.ModelProto:
    """A one-node graph (Identity) stamped with these versions."""
    x, y = (helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in ("x", "y"))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def _loads(ir_version: int, opset: int) -> bool:
    """Whether ONNX Runtime opens a session on `_probe(ir_version, opset)`, as `OnnxModel.session` opens them."""
    try:
        OnnxModel.from_bytes(_probe(ir_version, opset).SerializeToString(), "the probe").session(threads=1)
    except Exception:  # the runtime raises its own Fail/InvalidGraph types; any of them means "not this version"
        return False
    return True


def _highest(candidates: Iterable[int], loads: Callable[[int], bool]) -> int | None:
    """The first of `candidates` (newest first) that `loads`."""
    return next((version for version in candidates if loads(version)), None)


@functools.cache
def runtime_limits() -> RuntimeLimits:
    """The installed ONNX Runtime's limits, probed once per process (a millisecond a probe on the CPU): the newest IR
    version up to `onnx.IR_VERSION` (the newest the installed onnx checks) and then the newest default-domain opset
    up to `onnx.defs.onnx_opset_version()`. BundleError where it loads no probe at all."""
    import onnxruntime

    ir_version = _highest(range(onnx.IR_VERSION, 2, -1), lambda v: _loads(v, _PROBE_OPSET))
    opset = None
    if ir_version is not None:
        opset = _highest(range(onnx.defs.onnx_opset_version(), 0, -1), lambda v: _loads(ir_version, v))
    if ir_version is None or opset is None:
        raise BundleError(f"ONNX Runtime {onnxruntime.__version__} loads no ONNX model here, not even a one-node one")
    return RuntimeLimits(ir_version, opset, onnxruntime.__version__)


def default_opset(proto: onnx.ModelProto) -> int | None:
    """The opset of the default (`ai.onnx`) domain the graph and its local functions import; None if none."""
    imports = [*proto.opset_import, *(entry for function in proto.functions for entry in function.opset_import)]
    versions = [entry.version for entry in imports if entry.domain in _DEFAULT_DOMAINS]
    return max(versions, default=None)


def _collect(message: Message, fields: set[str], types: set[int]) -> None:
    """Add to `fields` every field set anywhere in `message` (`Message.field`) and to `types` every tensor element
    type named (`_TYPE_FIELDS`); weights' values are only counted, never read."""
    name = message.DESCRIPTOR.name
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated:
            children = getattr(message, field.name)
            if not len(children):
                continue
        elif message.HasField(field.name):
            children = [getattr(message, field.name)] if field.message_type or field.name in _TYPE_FIELDS else []
        else:
            continue
        fields.add(f"{name}.{field.name}")
        if field.message_type is not None:
            for child in children:
                _collect(child, fields, types)
        elif field.name in _TYPE_FIELDS:
            types.update(children)


def _used(proto: onnx.ModelProto) -> tuple[set[str], set[int]]:
    """(the fields, the element types) the graph uses, its inferred intermediate types included (a Cast's output
    type is only an attribute until shape inference writes it down); the graph as it is where inference fails."""
    # inference raises several types on graphs it cannot follow; the stored types still count then
    with contextlib.suppress(Exception):
        proto = onnx.shape_inference.infer_shapes(proto)
    fields: set[str] = set()
    types: set[int] = set()
    _collect(proto, fields, types)
    return fields, types


def newer_features(proto: onnx.ModelProto, target: int) -> list[str]:
    """What the graph uses that IR versions after `target` (up to its own) added, each named with its version."""
    fields, types = _used(proto)
    found = []
    for version in range(target + 1, proto.ir_version + 1):
        added = IR_ADDITIONS[version]
        found += [f"{TensorProto.DataType.Name(t)} tensors (IR {version})" for t in sorted(types & added.types)]
        found += [f"{field} (IR {version})" for field in sorted(fields & added.fields)]
    return found


def _refusal(what: str, problem: str, limits: RuntimeLimits, remedy: str) -> BundleError:
    return BundleError(f"{what} {problem}; the installed {limits.describe()}: {remedy}")


def _convert_hint(limits: RuntimeLimits) -> str:
    return (
        f"convert it with `onnx.version_converter.convert_version(model, {limits.opset})`, or export it again at "
        f"opset {limits.opset} or lower (`torch.onnx.export(..., opset_version=N)`, `python -m tf2onnx.convert "
        "--opset N`)"
    )


def _writer_of(ir_version: int) -> str:
    """The last onnx release that stamps `ir_version` or lower (`onnx.helper.VERSION_TABLE`)."""
    releases = [row[0] for row in helper.VERSION_TABLE if row[1] <= ir_version]
    return f"onnx {releases[-1]}" if releases else "an older onnx"


def fit_to_runtime(proto: onnx.ModelProto, what: str) -> int | None:
    """Make `proto` loadable by the installed ONNX Runtime (`runtime_limits`), in place: its IR version lowered to the
    runtime's where the graph allows. Returns the IR version it had where lowered, else None.

    BundleError, naming the highest IR version and opset supported and how to convert, for a default-domain opset
    above the runtime's, or an IR version that cannot be lowered: newer than `IR_ADDITIONS` describes, or a graph
    that uses what the newer IR versions added.
    """
    limits = runtime_limits()
    opset = default_opset(proto)
    if opset is not None and opset > limits.opset:
        raise _refusal(what, f"imports opset {opset} of the ONNX operators", limits, _convert_hint(limits))
    if proto.ir_version <= limits.ir_version:
        return None
    if proto.ir_version > max(IR_ADDITIONS):
        raise _refusal(what, f"has IR version {proto.ir_version}, newer than the installed onnx describes", limits,
                       f"save it with {_writer_of(limits.ir_version)} or older")  # fmt: skip
    blocking = newer_features(proto, limits.ir_version)
    if blocking:
        raise _refusal(what, f"has IR version {proto.ir_version} and uses {', '.join(blocking)}", limits,
                       f"export it again without them, for IR version {limits.ir_version} (as "
                       f"{_writer_of(limits.ir_version)} writes)")  # fmt: skip
    original = proto.ir_version
    proto.ir_version = limits.ir_version
    return original
