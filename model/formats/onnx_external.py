"""Weights an ONNX model keeps outside its graph ("external data"), read without trusting the names the model gives.

`torch.onnx.export` writes large weights beside the graph (`MODEL.onnx.data`); each such tensor names its file
(`location`, relative to the graph's folder in the ONNX spec, `docs/ExternalData.md`), an `offset` and a `length`.
The names are the model publisher's: onnx's own loader joins them to a folder, and a loader that first copies the
files into a folder of its own writes wherever an absolute or `..` name points. So here nothing is written: each
location is checked (relative, no `..` part, no drive or backslash, no link that leads out of the model's folder on
a local disk) before anything is fetched, each tensor's bytes are fetched with one ranged read of exactly the size
its type and shape need, the total is bounded like any model file, and the bytes go into the graph in memory.

A graph that still names external data after this (a bundle's, which must be self-contained) is refused by
`check_self_contained`: ONNX Runtime, given a graph as bytes, would resolve such names against the working folder.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import onnx
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from onnx import helper

from model.bundle import BundleError, model_file_limit
from model.safe_zip import MAX_MODEL_BYTES_ENV


def _node_tensors(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.TensorProto]:
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _graph_tensors(attribute.g)
            for graph in attribute.graphs:
                yield from _graph_tensors(graph)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def all_tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of the model: initializers, sparse ones, node attributes, in subgraphs and functions too."""
    yield from _graph_tensors(proto.graph)
    for function in proto.functions:
        yield from _node_tensors(function.node)


def external_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The tensors whose bytes the graph keeps outside itself."""
    return [tensor for tensor in all_tensors(proto) if tensor.data_location == onnx.TensorProto.EXTERNAL]


def _fields(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def checked_location(location: str, what: str) -> str:
    """`location` as a relative POSIX path inside the model's folder; BundleError for an empty or absolute one, a
    Windows drive or backslash, or one with a `..` part."""
    parts = location.split("/")
    if (
        not location
        or location.startswith("/")
        or "\\" in location
        or ":" in parts[0]
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise BundleError(
            f"{what} names external weights at {location!r}: only a file beside the model or in a folder below it "
            "is read (a relative path, no '..'); nothing was fetched or written"
        )
    return location


def _nbytes(tensor: onnx.TensorProto, what: str) -> int:
    """The bytes a numeric tensor of this type and shape holds."""
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except (KeyError, TypeError, ValueError):
        dtype = np.dtype(object)
    if dtype.kind not in "biufc":
        raise BundleError(f"{what}: tensor {tensor.name!r} of type {tensor.data_type} cannot be external data")
    return int(np.prod(tensor.dims, dtype=np.int64)) * dtype.itemsize


def _inside(fs: Any, folder: str, path: str) -> bool:
    """On a local disk, whether `path` with every link resolved is still inside `folder`; elsewhere True (object
    stores and web servers have no links)."""
    if not isinstance(fs, LocalFileSystem):
        return True
    root = os.path.realpath(folder)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def embed_external_data(proto: onnx.ModelProto, url: str, storage_options: dict[str, Any]) -> None:
    """Put every external tensor's bytes into `proto` (in place), fetched from beside the graph at `url`.

    Every location is checked first (`checked_location`, and no link out of the folder), then each tensor's
    `length` (when given) must equal what its type and shape hold and the total must stay within
    `model.bundle.model_file_limit()`; then one ranged read per tensor. BundleError for any of these, or a missing
    file, or a file shorter than the tensor needs. Nothing is written to any disk.
    """
    tensors = external_tensors(proto)
    if not tensors:
        return
    fs, path = url_to_fs(url, **storage_options)
    folder = posixpath.dirname(path)
    plan, total, limit = [], 0, model_file_limit()
    for tensor in tensors:
        fields = _fields(tensor)
        location = checked_location(fields.get("location", ""), url)
        target = posixpath.join(folder, location)
        if not _inside(fs, folder, target):
            raise BundleError(f"{url} names external weights at {location!r}, a link out of the model's folder")
        size = _nbytes(tensor, url)
        offset = int(fields.get("offset", "0") or 0)
        length = int(fields.get("length", str(size)) or size)
        if length != size or offset < 0:
            raise BundleError(
                f"{url}: tensor {tensor.name!r} says its external data is {length:,} bytes at offset {offset}, "
                f"but its type and shape hold {size:,} bytes"
            )
        total += size
        if total > limit:
            raise BundleError(
                f"{url}: its external weights exceed {limit:,} bytes, the bound on a model file (set "
                f"{MAX_MODEL_BYTES_ENV} to a larger number of bytes for a model that truly is this large)"
            )
        plan.append((tensor, target, location, offset, size))
    for tensor, target, location, offset, size in plan:
        try:
            data = fs.cat_file(target, start=offset, end=offset + size)
        except FileNotFoundError:
            raise BundleError(f"{url} keeps its weights in {location}, which is not beside it") from None
        if len(data) != size:
            raise BundleError(f"{url}: {location} ends before tensor {tensor.name!r}'s {size:,} bytes at {offset}")
        tensor.raw_data = data
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT


def check_self_contained(proto: onnx.ModelProto, what: str) -> None:
    """Refuse (BundleError) a graph that names external data: a bundle's ONNX model holds every weight itself."""
    outside = external_tensors(proto)
    if outside:
        location = _fields(outside[0]).get("location", "")
        raise BundleError(
            f"{what} keeps {len(outside)} weight tensor(s) outside itself (external data at {location!r}); a bundle's "
            "model holds all its weights: import the model with `ifcbflow model import`, which embeds them"
        )
