"""The output store: one zarr v3 hierarchy per model, local or in object storage; the store is the job's ledger.

Layout (every node is plain zarr v3, so `zarr`, `xarray` and other readers open it)::

    STORE/zarr.json                 root attributes: classes (ordered), bundle_hash, bundle_arch, bundle_url,
                                    archive_urls, versions, layout
    STORE/bins/<bin_id>/            one group per classified bin
        scores   (roi, class)       float32 class scores, one row per ROI with an image
        roi      (roi)              ROI numbers (1-based .adc rows): the index of the `roi` dimension
        class    (class)            class names, in the bundle's order
        attributes                  bin, time, n_rois, ml_analyzed, counts (argmax per class), complete (written LAST)
    STORE/failures/<bin_id>/        a group per failed bin; attributes bin, stage, reason (removed when it succeeds)
    STORE/summary/                  bin x class table consolidated by the client after each run:
                                    counts, concentration (per mL), ml_analyzed, n_rois, time; coords bin, class

Why this shape: a bin is the unit of commit. Its arrays are written first and its group attributes (with
`complete: true`) last, so a bin is either complete or redone by the next run; no separate database can drift from the
data. Per-bin data holds no timestamps and fixed codec settings, so a task that Dask retries writes identical bytes.

Reading with xarray::

    import xarray as xr
    summary = xr.open_zarr("s3://bucket/results.zarr", group="summary", consolidated=False,
                           storage_options={...})
    summary.concentration.sel({"class": "diatom"}).plot.line(x="time")  # per mL over time
    one_bin = xr.open_zarr(url, group="bins/D20240101T000000_IFCB999", consolidated=False)
    one_bin.scores.sel(roi=7)                                       # scores of ROI 7, labelled by class
    tree = xr.open_datatree(url, engine="zarr", consolidated=False)  # everything at once
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import zarr
from fsspec.core import url_to_fs
from zarr.api.asynchronous import open_group as open_group_async
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.core.sync import sync  # zarr's own bridge to its event loop (what its sync API uses)

from model.decision import class_counts
from model.versions import installed_versions
from pipeline.ifcb.errors import BinFailure

LAYOUT = "ifcbflow-store/1"
BINS = "bins"
FAILURES = "failures"
SUMMARY = "summary"
#: Fixed codec settings: a retried task must write the same bytes whatever zarr's defaults become.
_SERIALIZER = BytesCodec(endian="little")
_COMPRESSORS = (ZstdCodec(level=3, checksum=False),)


class StoreMismatchError(RuntimeError):
    """The store holds results of another model (or is not an ifcbflow store): never mix two models' results."""


@dataclass(frozen=True)
class BinResult:
    """One classified bin, as written to and read back from the store."""

    bin: str
    time: datetime
    roi_numbers: np.ndarray  # int64 (roi,)
    scores: np.ndarray  # float32 (roi, class)
    ml_analyzed: float | None

    @property
    def counts(self) -> np.ndarray:
        """ROIs per class by the model's decision rule."""
        return class_counts(self.scores)


def iso_utc(moment: datetime) -> str:
    """A UTC time as `YYYY-MM-DDTHH:MM:SSZ` (no sub-seconds: stable bytes)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ResultStore:
    """Access to one output store: the client's ledger reads and the workers' per-bin writes.

    Cheap to construct and picklable by its arguments (url + storage_options), so tasks carry only those.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.fs, root = url_to_fs(url, **self.storage_options)
        self.root = root.rstrip("/") or root
        self._zarr_store: Any = None

    # --- zarr access -------------------------------------------------------------------------------------------
    @property
    def zarr_store(self) -> Any:
        """The zarr store object (FsspecStore for object storage, LocalStore for local paths)."""
        if self._zarr_store is None:
            protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
            if protocol in ("file", "local"):
                self._zarr_store = zarr.storage.LocalStore(self.root)
            else:
                self._zarr_store = zarr.storage.FsspecStore.from_url(self.url, storage_options=self.storage_options)
        return self._zarr_store

    def _group(self, path: str, mode: str = "a", attributes: dict[str, Any] | None = None) -> zarr.Group:
        return zarr.open_group(
            self.zarr_store, path=path, mode=mode, zarr_format=3, use_consolidated=False, attributes=attributes
        )

    def _read_json(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(posixpath.join(self.root, key)))
        except FileNotFoundError:
            return None

    def _read_many_json(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Read many small JSON objects at once (concurrent requests on object storage); missing ones omitted."""
        if not keys:
            return {}
        paths = {posixpath.join(self.root, key): key for key in keys}
        data = self.fs.cat(list(paths), on_error="omit")
        return {paths[path]: json.loads(content) for path, content in data.items() if path in paths}

    def _children(self, folder: str) -> list[str]:
        try:
            entries = self.fs.ls(posixpath.join(self.root, folder), detail=True)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e["type"] == "directory")

    # --- the run's identity --------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any] | None:
        """Root attributes (classes, bundle hash, archives, versions), or None when no store exists here."""
        meta = self._read_json("zarr.json")
        return None if meta is None else meta.get("attributes", {})

    def prepare(self, *, bundle_info: dict[str, Any], bundle_url: str, archive_url: str) -> dict[str, Any]:
        """Create the store for this bundle, or check that an existing one was made with the same bundle.

        Raises StoreMismatchError when the store belongs to another model: results of two models never mix.
        """
        info = self.info()
        if info is None:
            if self.fs.exists(self.root) and self.fs.ls(self.root):
                raise StoreMismatchError(f"{self.url} exists and is not an ifcbflow store; choose another --out")
            info = {
                "layout": LAYOUT,
                "classes": list(bundle_info["classes"]),
                "bundle_hash": bundle_info["content_hash"],
                "bundle_arch": bundle_info.get("arch"),
                "bundle_url": bundle_url,
                "archive_urls": [archive_url],
                "versions": installed_versions(),
            }
            self._group("", mode="w", attributes=info)
            return info
        if info.get("layout") != LAYOUT:
            raise StoreMismatchError(f"{self.url} is not an ifcbflow store (layout {info.get('layout')!r})")
        if info.get("bundle_hash") != bundle_info["content_hash"]:
            raise StoreMismatchError(
                f"refusing to write to {self.url}: it holds results of model bundle {info.get('bundle_hash')} "
                f"({info.get('bundle_url')}), but the requested bundle {bundle_url} has hash "
                f"{bundle_info['content_hash']}. One store holds one model's results: use a new --out for this model."
            )
        if archive_url not in info.get("archive_urls", []):
            info["archive_urls"] = [*info.get("archive_urls", []), archive_url]
            self._group("", mode="r+").attrs.put(info)
        return info

    # --- the ledger ------------------------------------------------------------------------------------------------
    def bin_index(self) -> dict[str, dict[str, Any]]:
        """Attributes of every complete bin, by bin id (reads each bin group's zarr.json, concurrently)."""
        names = self._children(BINS)
        metas = self._read_many_json([f"{BINS}/{name}/zarr.json" for name in names])
        index = {}
        for meta in metas.values():
            attrs = meta.get("attributes", {})
            if attrs.get("complete") is True:
                index[attrs["bin"]] = attrs
        return index

    def is_complete(self, bin_id: str) -> bool:
        """Whether `bin_id` is committed (one small read): lets a retried task skip bins its first attempt did."""
        meta = self._read_json(f"{BINS}/{bin_id}/zarr.json")
        return bool(meta and meta.get("attributes", {}).get("complete") is True)

    def failures(self) -> list[BinFailure]:
        """Failure records of bins not complete, by bin id."""
        names = self._children(FAILURES)
        metas = self._read_many_json([f"{FAILURES}/{name}/zarr.json" for name in names])
        records = [BinFailure(**meta["attributes"]) for meta in metas.values() if meta.get("attributes")]
        return sorted(records, key=lambda failure: failure.bin)

    # --- worker-side writes ------------------------------------------------------------------------------------------
    def write_bin(self, result: BinResult, classes: list[str]) -> None:
        """Write one bin's scores, then mark it complete (last); the same input writes the same bytes."""
        n_classes = result.scores.shape[1]
        if n_classes != len(classes):
            raise ValueError(f"scores have {n_classes} columns but the store has {len(classes)} classes")
        self.clear_failure(result.bin)  # first: a crash before the commit leaves the bin simply not done
        sync(self._write_bin(result, classes))

    async def _write_bin(self, result: BinResult, classes: list[str]) -> None:
        """The bin's documents and chunks written concurrently (one round trip each step on object storage)."""
        group = await open_group_async(
            store=self.zarr_store, path=f"{BINS}/{result.bin}", mode="w", zarr_format=3, use_consolidated=False
        )
        n_rois, n_classes = result.scores.shape
        rows = max(n_rois, 1)  # zarr chunks cannot be empty; an empty bin is a (0, n_classes) array
        numeric = (
            ("scores", result.scores.astype(np.float32, copy=False), (rows, n_classes), ("roi", "class")),
            ("roi", result.roi_numbers.astype(np.int64, copy=False), (rows,), ("roi",)),
        )
        arrays = await asyncio.gather(
            *(
                group.create_array(
                    name,
                    shape=data.shape,
                    chunks=chunks,
                    dtype=data.dtype,
                    dimension_names=dims,
                    serializer=_SERIALIZER,
                    compressors=_COMPRESSORS,
                    fill_value=0,
                )
                for name, data, chunks, dims in numeric
            ),
            group.create_array("class", shape=(n_classes,), dtype=str, dimension_names=("class",)),
        )
        values = [data for _, data, _, _ in numeric] + [np.asarray(classes, dtype=object)]
        await asyncio.gather(
            *(array.setitem(..., data) for array, data in zip(arrays, values, strict=True) if data.size)
        )
        await group.update_attributes(
            {
                "bin": result.bin,
                "time": iso_utc(result.time),
                "n_rois": int(n_rois),
                "ml_analyzed": result.ml_analyzed,
                "counts": [int(c) for c in result.counts],
                "complete": True,
            }
        )

    def write_failure(self, failure: BinFailure) -> None:
        """Record why a bin failed (replacing an older record of the same bin)."""
        self._group(f"{FAILURES}/{failure.bin}", mode="w", attributes=failure.to_dict())

    def clear_failure(self, bin_id: str) -> None:
        path = posixpath.join(self.root, FAILURES, bin_id)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    # --- reading results --------------------------------------------------------------------------------------------
    def read_bin(self, bin_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(ROI numbers int64 (roi,), scores float32 (roi, class)) of a complete bin."""
        group = self._group(f"{BINS}/{bin_id}", mode="r")
        return np.asarray(group["roi"][...]), np.asarray(group["scores"][...])

    def summary_dataset(self, index: dict[str, dict[str, Any]] | None = None):  # -> xr.Dataset
        """The bin x class table of complete bins, sorted by time: counts, concentration (per mL), volume, time."""
        import pandas as pd
        import xarray as xr

        info = self.info() or {}
        classes = list(info.get("classes", []))
        index = self.bin_index() if index is None else index
        rows = sorted(index.values(), key=lambda attrs: (attrs["time"], attrs["bin"]))
        counts = np.array([row["counts"] for row in rows], dtype=np.int64).reshape(len(rows), len(classes))
        volume = np.array([np.nan if row["ml_analyzed"] is None else row["ml_analyzed"] for row in rows], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            concentration = np.where(volume[:, None] > 0, counts / volume[:, None], np.nan)
        times = pd.to_datetime([row["time"] for row in rows], utc=True).tz_localize(None).values
        dataset = xr.Dataset(
            {
                "counts": (("bin", "class"), counts, {"long_name": "ROIs per class (argmax)"}),
                "concentration": (("bin", "class"), concentration, {"units": "mL-1", "long_name": "count / volume"}),
                "ml_analyzed": ("bin", volume, {"units": "mL", "long_name": "volume analysed (NaN: unknown)"}),
                "n_rois": ("bin", np.array([row["n_rois"] for row in rows], dtype=np.int64)),
            },
            coords={
                "bin": ("bin", np.array([row["bin"] for row in rows], dtype=object)),
                "class": ("class", np.array(classes, dtype=object)),
                "time": ("bin", times.astype("datetime64[ns]"), {"long_name": "bin sample time (UTC)"}),
            },
            attrs={key: info[key] for key in ("bundle_hash", "bundle_arch") if key in info},
        )
        dataset["time"].encoding.update({"units": "seconds since 1970-01-01", "dtype": "int64"})
        return dataset

    def consolidate(self, index: dict[str, dict[str, Any]] | None = None) -> int:
        """Rewrite the `summary` group from the complete bins (client side, after a run); returns its bin count."""
        dataset = self.summary_dataset(index)
        target = self.url if self._is_remote else self.root
        kwargs = {"storage_options": self.storage_options} if self._is_remote else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)  # zarr's notes on string dtypes
            dataset.to_zarr(target, group=SUMMARY, mode="w", consolidated=False, zarr_format=3, **kwargs)
        return dataset.sizes["bin"]

    @property
    def _is_remote(self) -> bool:
        return not isinstance(self.zarr_store, zarr.storage.LocalStore)


def open_summary(url: str, storage_options: dict[str, Any] | None = None):  # -> xr.Dataset
    """The consolidated `summary` group as an xarray Dataset (what `xr.open_zarr(url, group="summary")` gives)."""
    import xarray as xr

    return xr.open_zarr(url, group=SUMMARY, consolidated=False, storage_options=storage_options or None)
