"""How the store's tables and partitions are encoded as zarr v3 keys, built in memory before anything is written.

Fixed codec settings and chunk sizes (a retried write makes the same bytes whatever zarr's defaults become); the
summary's and the ledger's arrays in chunks of `CHUNK_ROWS` rows, so that an append rewrites the last chunk and
adds new ones (`grow_rows`), and readers take the rows the commit point counts (`read_rows`)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import MemoryStore

from pipeline.morphology.columns import COLUMNS as MORPHOLOGY_COLUMNS
from pipeline.results.partitions import part_key
from pipeline.results.records import BinResult

#: Rows per chunk of the summary's and the ledger's arrays: an append rewrites the last chunk and adds new ones.
#: One-dimensional arrays (what a rerun reads: `bin`, `consolidated_part`) in large chunks, a few GETs a million
#: bins; bin x class arrays in smaller ones, so that an append rewrites little.
CHUNK_ROWS = 65536
CHUNK_ROWS_2D = 4096
#: Fixed codec settings: a retried task must write the same bytes whatever zarr's defaults become.
_SERIALIZER = BytesCodec(endian="little")
_COMPRESSORS = (ZstdCodec(level=3, checksum=False),)


def zarr_contents(dataset: Any) -> dict[str, Any]:
    """A Dataset written as zarr v3 in memory (key -> buffer), its arrays in chunks of `CHUNK_ROWS` rows (bin x
    class arrays: `CHUNK_ROWS_2D`)."""
    encoding = {
        name: {
            **variable.encoding,
            "chunks": (CHUNK_ROWS if variable.ndim == 1 else CHUNK_ROWS_2D, *variable.shape[1:]),
        }
        for name, variable in dataset.variables.items()
        if variable.ndim and variable.dims[0] in ("bin", "part", "failed", "warned")
    }
    contents: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # zarr's notes on string dtypes
        dataset.to_zarr(MemoryStore(contents), mode="w", consolidated=False, zarr_format=3, encoding=encoding)
    return contents


def grow_rows(array: Any, start: int, new: Any) -> bytes:
    """Write the rows of `new` (an array of the same name encoded in memory) as the rows from `start` on of `array`
    (only the chunks they touch) and return the array's metadata with its new length, for the caller to write after
    every chunk (the array keeps its shape till then). From row 0 the array takes `new`'s metadata whole: an empty
    array was written with no type to tell (xarray writes an empty array of strings as float)."""
    values = np.asarray(new[...])
    grown = (start + len(values), *array.shape[1:])
    metadata = new.metadata if start == 0 else array.metadata.update_shape(grown)
    if len(values):
        current = array._async_array
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            zarr.Array(AsyncArray(metadata, current.store_path, current.config))[start : start + len(values)] = values
    return as_bytes(metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"])


def read_rows(array: Any, limits: dict[str, int]) -> np.ndarray:
    """An array whole, or its first rows where `limits` counts its first dimension."""
    dims = array.metadata.dimension_names or ()
    if dims and dims[0] in limits:
        return np.asarray(array[: min(int(limits[dims[0]]), array.shape[0])])
    return np.asarray(array[...])


def _morphology_rows(result: BinResult) -> np.ndarray:
    """A bin's morphology rows, float32 (roi, feature); NaN rows for a bin that was not measured."""
    if result.morphology is None:
        return np.full((len(result.roi_numbers), len(MORPHOLOGY_COLUMNS)), np.nan, np.float32)
    return np.asarray(result.morphology, dtype=np.float32).reshape(len(result.roi_numbers), len(MORPHOLOGY_COLUMNS))


def as_bytes(value: Any) -> bytes:
    return value.to_bytes() if hasattr(value, "to_bytes") else bytes(value)


def group_document(attributes: dict[str, Any]) -> bytes:
    """A zarr v3 group's `zarr.json`, with stable bytes (sorted keys; our own attributes only)."""
    document = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False).encode()


def partition_documents(part: str, results: Sequence[BinResult], n_classes: int) -> dict[str, bytes]:
    """Every key of `parts/<part>` (the group, its arrays' metadata and one chunk each), built in memory.

    ROI-level arrays, so that xarray reads a partition (and `open_rois` the whole store) as one table of ROIs:
    `scores` (roi, class), `embeddings` (roi, feature) and `morphology` (roi, morphology_feature; pixels, the
    columns named by its attribute `features`) when the results have them, and per ROI its `roi_number`, `bin` and
    `time` (CF-encoded, decoded by xarray).
    """
    scores = np.concatenate([r.scores.astype(np.float32, copy=False) for r in results]).reshape(-1, n_classes)
    arrays: list[tuple[str, np.ndarray, tuple[str, ...], dict[str, str]]] = [
        ("scores", scores, ("roi", "class"), {"long_name": "class scores"})
    ]
    if any(r.embeddings is not None for r in results):
        embedded = np.concatenate([np.asarray(r.embeddings, dtype=np.float16) for r in results])
        arrays.append(("embeddings", embedded, ("roi", "feature"), {"long_name": "penultimate-layer features"}))
    if any(r.morphology is not None for r in results):  # bins measured in a run of before: NaN rows (compaction)
        measured = np.concatenate([_morphology_rows(r) for r in results])
        arrays.append(("morphology", measured, ("roi", "morphology_feature"),
                       {"long_name": "morphology per ROI (pipeline.morphology)", "units": "pixels",
                        "features": list(MORPHOLOGY_COLUMNS)}))  # fmt: skip
    numbers = np.concatenate([np.asarray(r.roi_numbers, dtype=np.int32) for r in results])
    bins = np.concatenate([np.full(len(r.roi_numbers), r.bin, dtype=object) for r in results])
    seconds = np.concatenate([np.full(len(r.roi_numbers), int(r.time.timestamp()), dtype=np.int64) for r in results])
    rows = max(len(numbers), 1)  # zarr chunks cannot be empty
    contents: dict[str, Any] = {}
    group = zarr.open_group(MemoryStore(contents), mode="w", zarr_format=3)
    for name, data, dimensions, attributes in (
        *arrays,
        ("roi_number", numbers, ("roi",), {"long_name": "ROI number (1-based .adc row)"}),
        ("time", seconds, ("roi",), {"units": "seconds since 1970-01-01", "calendar": "proleptic_gregorian"}),
    ):
        array = group.create_array(
            name,
            shape=data.shape,
            chunks=(rows, *data.shape[1:]),
            dtype=data.dtype,
            dimension_names=dimensions,
            serializer=_SERIALIZER,
            compressors=_COMPRESSORS,
            fill_value=0,
            attributes=attributes,
        )
        if data.size:
            array[...] = data
    names = group.create_array("bin", shape=bins.shape, chunks=(rows,), dtype=str, dimension_names=("roi",))
    if bins.size:
        names[...] = bins
    return {f"{part_key(part)}/{key}": as_bytes(value) for key, value in sorted(contents.items())}
