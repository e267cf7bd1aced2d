"""A prepared training set: a labelled set's model inputs, preprocessed once, in a sharded zarr v3 store.

Training streams from it shard by shard (`model.training.train.make_dataset`), so its memory is bounded by the
shuffle buffer and the prefetch depth, not by the set's size; a second training with the same preprocessing reads
nothing from the labelled source. Zarr v3 because it is chunked arrays over one small store abstraction (the
project's output store is zarr v3 too): a chunk of the images array is one object, a contiguous range of rows (a
*shard*), read whole from a local disk or from object storage through fsspec, and written by whichever task owns it.

Layout of `DIR` (a path or fsspec URL):

    DIR/zarr.json        attributes: format, version, classes (ordered: label i is classes[i]), preprocess
                         (`PreprocessConfig.to_dict()`), source and its stamp, shard_rois, n_rois, n_groups,
                         fingerprint (sha256 of the ROI ids and labels), complete (written last)
    DIR/images           uint8 (rows, size, size, 1): `model.preprocess.preprocess` output, the exact model input;
                         chunks of `shard_rois` rows (one shard each), zstd
    DIR/labels           int16 (rows,): index into classes; -1 for a padding row
    DIR/groups           int32 (rows,): index into group_names (the split unit: the bin); -1 for a padding row
    DIR/group_names      str (groups,)
    DIR/ids              str (rows,): ROI id (or file stem); "" for a padding row
    DIR/parts/N.done     while preparing: part N is written (removed once the set is complete)

Preparation is parallel over *parts*: consecutive whole groups (bins) packed into up to `part_shards` shards, each
part starting on a shard boundary, so no two tasks ever write the same chunk and every bin is read once, by one
task. The rows a part leaves unused at the end of its last shard are padding (label -1), a few percent of the set
at the defaults; readers skip them. A part is done or redone: a killed preparation, run again with the same source
and preprocessing, redoes only the parts that have no `.done` marker.

The parts run as Dask tasks on the threaded scheduler, not on a cluster: a part's work is reading (I/O: threads
wait without the GIL), OpenCV's resize and normalisation and zstd (both release the GIL), and its result is written
to the store by the task itself, so threads use the cores without worker processes, the TLS cluster's start-up or
moving images between processes; and training then runs in the same process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import posixpath
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from model.preprocess import PreprocessConfig, preprocess_into

log = logging.getLogger(__name__)

FORMAT = "ifcbflow-prepared-training-set"
VERSION = 1
#: Rows per shard (one chunk of the images array): 16 MiB of 128x128 inputs, a few MiB compressed.
SHARD_ROIS = 1024
#: Shards a preparation task fills at most: bins are packed into parts of up to 8192 rows, so the padding at the
#: end of each part costs at most one bin's labelled ROIs per 8192 rows.
PART_SHARDS = 8
#: Rows per chunk of the small per-ROI arrays (labels, groups, ids): few requests to read them all for the split.
METADATA_CHUNK = 1 << 20
#: The label (and group) of a padding row.
PADDING = -1


class PreparedSetError(ValueError):
    """A prepared set that cannot be used as asked: not one, unfinished, made from another source or preprocessing."""


@dataclass(frozen=True)
class LabelledUnit:
    """One group's labelled ROIs (a bin's, in an archive): the unit a source reads at once.

    `ids` and `labels` are in the order the source's reader returns the images; `where` is the source's own note of
    where the images are (a bin's files, a list of image paths).
    """

    group: str
    ids: tuple[str, ...]
    labels: tuple[str, ...]
    where: Any = None

    def __len__(self) -> int:
        return len(self.ids)


#: Reads units: for each unit given, its uint8 2-D images in the unit's order (an iterator, one unit at a time).
UnitReader = Callable[[Sequence[LabelledUnit]], Iterator[Sequence[np.ndarray]]]


@dataclass(frozen=True)
class LabelledSource:
    """A labelled set before it is read: its units (known from a listing and the labels alone) and their reader.

    `name` says where it is (e.g. `URL (labels CSV)`), `stamp` the version of what names the labels (the labels
    file's size and ETag or mtime; "" where the listing is the labels, as for class folders): together with the
    preprocessing they decide whether a prepared set is this source's.
    """

    name: str
    stamp: str
    units: list[LabelledUnit]
    read: UnitReader

    @property
    def classes(self) -> list[str]:
        """The distinct labels, sorted: the class order of a model trained on this set."""
        return sorted({label for unit in self.units for label in unit.labels})

    @property
    def n_rois(self) -> int:
        return sum(len(unit) for unit in self.units)


@dataclass(frozen=True)
class Part:
    """A preparation task: `units` (indices) written from row `start` on, `rows` rows (whole shards) in all."""

    index: int
    start: int
    rows: int
    units: tuple[int, ...]


def plan_parts(counts: Sequence[int], shard_rois: int = SHARD_ROIS, part_shards: int = PART_SHARDS) -> list[Part]:
    """Consecutive units (by their ROI counts) packed into parts of at most `part_shards` x `shard_rois` rows.

    Every part starts on a shard boundary and holds whole units; a unit larger than that is a part of its own, of as
    many shards as it needs. Units of no ROIs are left out.
    """
    if shard_rois < 1 or part_shards < 1:
        raise ValueError(f"shard_rois and part_shards must be >= 1, got {shard_rois} and {part_shards}")
    capacity = shard_rois * part_shards
    parts: list[Part] = []
    start, members, filled = 0, [], 0
    for index, count in enumerate([*counts, None]):
        if members and (count is None or filled + count > capacity):
            rows = math.ceil(filled / shard_rois) * shard_rois
            parts.append(Part(len(parts), start, rows, tuple(members)))
            start, members, filled = start + rows, [], 0
        if count:
            members.append(index)
            filled += count
    return parts


def fingerprint(ids: Sequence[str], labels: Sequence[str]) -> str:
    """sha256 of the ROI ids and their labels, in order: the identity of a labelled set."""
    digest = hashlib.sha256()
    for roi, label in zip(ids, labels, strict=True):
        digest.update(f"{roi}:{label}\0".encode())
    return digest.hexdigest()


def _zarr_store(url: str, storage_options: dict[str, Any] | None) -> Any:
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return zarr.storage.LocalStore(root)
    return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options or {})


class PreparedSet:
    """A complete prepared set, opened for reading (`PreparedSetError` if `url` holds none, or an unfinished one).

    Cheap to open: the attributes only; the per-ROI arrays are read on demand.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        attributes = read_attributes(url, storage_options)
        if attributes is None:
            raise PreparedSetError(f"{url} holds no prepared training set")
        if not attributes.get("complete"):
            raise PreparedSetError(f"the prepared training set at {url} is unfinished: prepare it again")
        self.attributes = attributes
        self._group = zarr.open_group(_zarr_store(url, storage_options), mode="r", zarr_format=3)
        self._images: Any = self._group["images"]
        self._labels: np.ndarray | None = None

    @property
    def classes(self) -> list[str]:
        return list(self.attributes["classes"])

    @property
    def config(self) -> PreprocessConfig:
        """The preprocessing the images were made with."""
        return PreprocessConfig.from_dict(self.attributes["preprocess"])

    @property
    def source(self) -> str:
        return str(self.attributes["source"])

    @property
    def fingerprint(self) -> str:
        return str(self.attributes["fingerprint"])

    @property
    def shard_rois(self) -> int:
        return int(self.attributes["shard_rois"])

    @property
    def n_rows(self) -> int:
        """Rows of the arrays, padding included."""
        return int(self._images.shape[0])

    def __len__(self) -> int:
        """Labelled ROIs (padding rows not counted)."""
        return int(self.attributes["n_rois"])

    def labels(self) -> np.ndarray:
        """int16 (rows,): each row's class index, -1 for padding (read once, then kept: 2 bytes a row)."""
        if self._labels is None:
            self._labels = np.asarray(self._group["labels"][:])
        return self._labels

    def groups(self) -> np.ndarray:
        """int32 (rows,): each row's group index (into `group_names`), -1 for padding."""
        return np.asarray(self._group["groups"][:])

    def group_names(self) -> list[str]:
        return [str(name) for name in self._group["group_names"][:]]

    def ids(self, rows: np.ndarray) -> list[str]:
        """The ROI ids of `rows`."""
        ids = self._group["ids"]
        return [str(roi) for roi in ids.get_orthogonal_selection(np.asarray(rows, dtype=np.int64))]

    def read_shard(self, shard: int) -> np.ndarray:
        """uint8 (shard_rois, size, size, 1): every row of shard `shard` (one chunk, one read)."""
        rows = self.shard_rois
        return np.asarray(self._images[shard * rows : (shard + 1) * rows])

    def iter_batches(self, rows: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        """The images of `rows` (sorted row indices) in that order, in batches of up to `batch_size`, reading each
        shard once: memory holds one shard and one batch."""
        pending: list[np.ndarray] = []
        held = 0
        shards = np.asarray(rows) // self.shard_rois
        for shard in np.unique(shards):
            local = np.asarray(rows)[shards == shard] - shard * self.shard_rois
            pending.append(self.read_shard(int(shard))[local])
            held += len(local)
            while held >= batch_size:
                batch = np.concatenate(pending)
                yield batch[:batch_size]
                pending, held = [batch[batch_size:]], held - batch_size
        if held:
            yield np.concatenate(pending)


def read_attributes(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The root attributes of the prepared set at `url`, or None where there is none (nothing, or another kind of
    zarr group)."""
    try:
        group = zarr.open_group(_zarr_store(url, storage_options), mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return None
    attributes = dict(group.attrs)
    return attributes if attributes.get("format") == FORMAT else None


def key_of(source_name: str, stamp: str, config: PreprocessConfig) -> dict[str, Any]:
    """What makes a prepared set this source's: where the source is, its labels' version, the preprocessing."""
    return {"source": source_name, "stamp": stamp, "preprocess": config.to_dict(), "version": VERSION}


def matches(attributes: dict[str, Any], key: dict[str, Any]) -> bool:
    """Whether a prepared set's attributes were made for `key` (`key_of`)."""
    return {name: attributes.get(name) for name in key} == key


def open_matching(
    url: str, key: dict[str, Any], storage_options: dict[str, Any] | None = None
) -> PreparedSet | None:
    """The complete prepared set at `url` made for `key`; None where `url` holds no set, or an unfinished one for
    this key (prepare it, resuming); `PreparedSetError` for a set made for another key, or a folder that holds
    something else: never overwritten."""
    attributes = read_attributes(url, storage_options)
    if attributes is None:
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        if fs.exists(root) and fs.ls(root, detail=False):
            raise PreparedSetError(f"{url} exists and holds no prepared training set: choose another --prepared")
        return None
    if not matches(attributes, key):
        made = {name: attributes.get(name) for name in key if attributes.get(name) != key[name]}
        raise PreparedSetError(
            f"the prepared training set at {url} was made from another source or preprocessing ({made}); delete it "
            "or choose another --prepared"
        )
    return PreparedSet(url, storage_options) if attributes.get("complete") else None


def default_workers() -> int:
    """Preparation threads: the cores plus four, as Python's thread pools choose for I/O-bound work, at most 32."""
    return min(32, (os.cpu_count() or 1) + 4)


def prepare(
    source: LabelledSource,
    url: str,
    config: PreprocessConfig,
    *,
    storage_options: dict[str, Any] | None = None,
    shard_rois: int = SHARD_ROIS,
    part_shards: int = PART_SHARDS,
    workers: int | None = None,
) -> PreparedSet:
    """Read, preprocess and write `source` into a prepared set at `url`, in parallel over parts; return it opened.

    Resumes an unfinished preparation of the same source and preprocessing (its done parts are kept); refuses
    (`PreparedSetError`) a set of another source or preprocessing at `url` (`open_matching`), and a preprocessing
    whose pixels are not uint8 (the models trained here take uint8). Errors of the source's reader (a labelled ROI
    without an image, an unreadable bin) end the preparation with that error; the set stays unfinished.
    """
    import dask

    if config.pixel_dtype != np.uint8:
        raise PreparedSetError(f"training takes uint8 pixels; this preprocessing makes {config.pixel_dtype}")
    key = key_of(source.name, source.stamp, config)
    existing = open_matching(url, key, storage_options)
    if existing is not None:
        return existing
    units = source.units
    classes = source.classes
    all_ids = [roi for unit in units for roi in unit.ids]
    all_labels = [label for unit in units for label in unit.labels]
    digest = fingerprint(all_ids, all_labels)
    parts = plan_parts([len(unit) for unit in units], shard_rois, part_shards)
    rows = parts[-1].start + parts[-1].rows if parts else 0
    attributes = {
        "format": FORMAT, **key, "classes": classes, "shard_rois": shard_rois, "part_shards": part_shards,
        "n_rois": len(all_ids), "n_rows": rows, "n_groups": len(units), "fingerprint": digest, "complete": False,
    }  # fmt: skip
    store = _zarr_store(url, storage_options)
    previous = read_attributes(url, storage_options)
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    done_dir = posixpath.join(root, "parts")
    if previous is None or any(previous.get(name) != attributes[name] for name in ("fingerprint", "n_rows")):
        _remove(fs, done_dir)  # another listing's parts
        _create(store, attributes, units, parts, classes, config, shard_rois)
    fs.makedirs(done_dir, exist_ok=True)  # object stores have no folders: nothing to make there
    done = {posixpath.basename(path) for path in fs.find(done_dir)}
    pending = [part for part in parts if f"{part.index}.done" not in done]
    log.info(
        "preparing %d labelled ROIs of %d groups (%d classes) into %s: %d part(s) of %d, %d thread(s)",
        len(all_ids), len(units), len(classes), url, len(pending), len(parts), workers or default_workers(),
    )  # fmt: skip
    images = zarr.open_group(store, mode="r+", zarr_format=3)["images"]

    finished, lock, every = [0], threading.Lock(), max(1, len(pending) // 10)

    def run(part: Part) -> int:
        written = _write_part(images, part, [units[i] for i in part.units], source.read, config, shard_rois)
        fs.pipe_file(posixpath.join(done_dir, f"{part.index}.done"), b"")
        with lock:
            finished[0] += 1
            if finished[0] % every == 0 or finished[0] == len(pending):
                log.info("prepared %d of %d part(s)", finished[0], len(pending))
        return written

    tasks = [dask.delayed(run, pure=False)(part, dask_key_name=f"prepare-part-{part.index}") for part in pending]
    dask.compute(*tasks, scheduler="threads", num_workers=workers or default_workers())
    group = zarr.open_group(store, mode="r+", zarr_format=3)
    group.attrs.update({"complete": True})
    _remove(fs, done_dir)
    log.info("prepared %d ROIs (%d rows with padding) at %s", len(all_ids), rows, url)
    return PreparedSet(url, storage_options)


def _remove(fs: Any, folder: str) -> None:
    """Remove `folder` and what it holds, if anything (object stores list no empty folders)."""
    with contextlib.suppress(FileNotFoundError):
        fs.rm(folder, recursive=True)


def _create(
    store: Any,
    attributes: dict[str, Any],
    units: list[LabelledUnit],
    parts: list[Part],
    classes: list[str],
    config: PreprocessConfig,
    shard_rois: int,
) -> None:
    """A new set's arrays: images empty (the parts fill them), the per-ROI arrays written whole from the plan."""
    rows = attributes["n_rows"]
    if len(classes) > np.iinfo(np.int16).max:
        raise PreparedSetError(f"{len(classes)} classes: a prepared set holds at most {np.iinfo(np.int16).max}")
    group = zarr.open_group(store, mode="w", zarr_format=3, attributes=attributes)
    size = config.size
    group.create_array(
        "images", shape=(rows, size, size, 1), dtype="uint8", chunks=(shard_rois, size, size, 1),
        compressors=ZstdCodec(level=1), fill_value=0,
    )  # fmt: skip
    chunk = (max(1, min(METADATA_CHUNK, rows)),)
    labels = np.full(rows, PADDING, dtype=np.int16)
    groups = np.full(rows, PADDING, dtype=np.int32)
    ids = np.full(rows, "", dtype=object)
    index = {name: i for i, name in enumerate(classes)}
    for part in parts:
        row = part.start
        for u in part.units:
            unit = units[u]
            end = row + len(unit)
            labels[row:end] = [index[label] for label in unit.labels]
            groups[row:end] = u
            ids[row:end] = unit.ids
            row = end
    group.create_array("labels", shape=(rows,), dtype="int16", chunks=chunk, fill_value=PADDING)[:] = labels
    group.create_array("groups", shape=(rows,), dtype="int32", chunks=chunk, fill_value=PADDING)[:] = groups
    names = np.array([unit.group for unit in units], dtype=object)
    group.create_array("group_names", shape=(len(units),), dtype=str, chunks=(max(1, len(units)),))[:] = names
    id_array = group.create_array("ids", shape=(rows,), dtype=str, chunks=chunk)
    for start in range(0, rows, chunk[0]):
        id_array[start : start + chunk[0]] = ids[start : start + chunk[0]]


def _write_part(
    images: Any,
    part: Part,
    units: list[LabelledUnit],
    read: UnitReader,
    config: PreprocessConfig,
    shard_rois: int,
) -> int:
    """Read a part's units, preprocess them into one reused shard buffer and write each shard once it is full (and
    the last one, padded with zeros): memory holds one shard and one unit's images. Returns the ROIs written."""
    size = config.size
    buffer = np.zeros((shard_rois, size, size, 1), dtype=np.uint8)
    shard_start, fill, written = part.start, 0, 0
    for unit, unit_images in zip(units, read(units), strict=True):
        if len(unit_images) != len(unit):
            raise PreparedSetError(f"group {unit.group}: {len(unit_images)} images read for {len(unit)} labelled ROIs")
        offset = 0
        while offset < len(unit_images):
            take = min(shard_rois - fill, len(unit_images) - offset)
            preprocess_into(unit_images[offset : offset + take], config, buffer[fill : fill + take])
            fill, offset = fill + take, offset + take
            if fill == shard_rois:
                images[shard_start : shard_start + shard_rois] = buffer
                shard_start, fill = shard_start + shard_rois, 0
        written += len(unit_images)
    if fill:
        buffer[fill:] = 0
        images[shard_start : shard_start + shard_rois] = buffer
    return written
