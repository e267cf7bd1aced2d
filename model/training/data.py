"""Labelled ROI images: class folders as a labelled source, labelled images in memory, and the grouped split.

The split unit is the group (the bin a ROI came from): ROIs of one bin are near-duplicates in time and water
sample, so a bin on two sides of a split would make the held-out numbers too good.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import fsspec
import numpy as np
from PIL import Image

from model.training.prepared import LabelledSource, LabelledUnit

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
#: Image files fetched per request batch (`fs.cat` runs them concurrently on object storage).
FETCH_BATCH = 64
#: Threads reading units when a whole set is loaded into memory (`LabelledImages.read`).
READ_THREADS = 8


class SplitError(ValueError):
    """A labelled set whose groups cannot be split as asked; the message says how many groups are needed."""


@dataclass
class LabelledImages:
    """uint8 2-D images with their class label, group (bin id: the split unit) and id (ROI id or file stem), all in
    memory: for evaluating a bundle on them (training streams from a prepared set, `model.training.prepared`)."""

    images: list[np.ndarray]
    labels: list[str]
    groups: list[str]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def classes(self) -> list[str]:
        """The distinct labels, sorted: the default class order of a model trained on these images."""
        return sorted(set(self.labels))

    @classmethod
    def read(cls, source: LabelledSource) -> LabelledImages:
        """Every image of `source`, read in parallel threads (a slice of units each), in the source's order."""
        units = source.units
        slices = [units[i : i + 16] for i in range(0, len(units), 16)]
        with ThreadPoolExecutor(READ_THREADS) as pool:
            read = list(pool.map(lambda part: list(source.read(part)), slices))
        data = cls(images=[], labels=[], groups=[], ids=[])
        for part, images in zip(slices, read, strict=True):
            for unit, unit_images in zip(part, images, strict=True):
                data.images.extend(unit_images)
                data.labels.extend(unit.labels)
                data.groups.extend([unit.group] * len(unit))
                data.ids.extend(unit.ids)
        return data


def _decode_grey(data: bytes) -> np.ndarray:
    """Any image file's bytes -> uint8 2-D grey levels (ROIs saved as RGB PNGs have grey content; L keeps it)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def _fetch_files(fs: Any, paths: list[str]) -> list[bytes]:
    """Whole files in the order given: one `fs.cat` call (concurrent on async filesystems), or one read each where
    a name has glob characters (`fs.cat` would expand them) or the answer is keyed otherwise."""
    if len(paths) > 1 and not any(char in path for path in paths for char in "*?["):
        answer = fs.cat(paths)
        if isinstance(answer, dict) and set(answer) == set(paths):
            return [answer[path] for path in paths]
    return [fs.cat_file(path) for path in paths]


def image_folder_source(
    url: str, storage_options: dict[str, Any] | None = None, group_of: Callable[[str], str] | None = None
) -> LabelledSource:
    """Images in class subfolders (`<url>/<class>/<image>`), from a local path or any fsspec URL, as a labelled
    source: listed now (one listing per class folder), read when its units are read.

    `group_of(file stem)` names each image's split group (e.g. the bin of a file named by its ROI id); without it
    every image is its own group. Units are the groups, sorted by name; within one, images by class and name.
    Raises FileNotFoundError for a missing folder, ValueError for one without images in class subfolders.
    """
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if not fs.isdir(root):
        raise FileNotFoundError(f"no folder at {url}")
    members: dict[str, list[tuple[str, str, str]]] = {}
    for class_dir in sorted(p for p in fs.ls(root, detail=False) if fs.isdir(p)):
        label = PurePosixPath(class_dir).name
        for path in sorted(fs.ls(class_dir, detail=False)):
            name = PurePosixPath(path)
            if name.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            group = group_of(name.stem) if group_of else name.stem
            members.setdefault(group, []).append((name.stem, label, path))
    if not members:
        raise ValueError(f"no images found in class subfolders of {url}")
    units = [
        LabelledUnit(
            group=group,
            ids=tuple(stem for stem, _, _ in files),
            labels=tuple(label for _, label, _ in files),
            where=tuple(path for _, _, path in files),
        )
        for group, files in sorted(members.items())
    ]

    def read(chosen: Sequence[LabelledUnit]) -> Iterator[list[np.ndarray]]:
        """Files fetched `FETCH_BATCH` at a time across units (concurrent requests on object storage)."""
        paths = [path for unit in chosen for path in unit.where]
        fetched: dict[str, bytes] = {}
        position = 0
        for unit in chosen:
            while position < len(paths) and any(path not in fetched for path in unit.where):
                batch = paths[position : position + FETCH_BATCH]
                position += len(batch)
                fetched.update(zip(batch, _fetch_files(fs, batch), strict=True))
            yield [_decode_grey(fetched.pop(path)) for path in unit.where]

    source = LabelledSource(name=url, stamp="", units=units, read=read)
    log.info("listed %d images of %d classes in %d groups in %s", source.n_rois, len(source.classes), len(units), url)
    return source


def load_image_folder(
    url: str, storage_options: dict[str, Any] | None = None, group_of: Callable[[str], str] | None = None
) -> LabelledImages:
    """The images of class subfolders of `url` in memory (`image_folder_source`, read whole)."""
    return LabelledImages.read(image_folder_source(url, storage_options, group_of))


def groups_needed(val: float, test: float) -> int:
    """The fewest groups a split into training, validation (`val`) and test (`test`) can be made of: one for each
    part asked for, and one for training."""
    return 1 + (val > 0) + (test > 0)


def check_splittable(n_groups: int, val: float, test: float) -> None:
    """Raise `SplitError` saying what is needed unless `n_groups` groups (bins) can be split by `val` and `test`.

    The rule is `split_by_group`'s: each held-out part is at least one whole group, and training keeps at least
    one; fractions come out near what is asked only with about 1 / fraction groups or more.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise SplitError(f"val={val} and test={test} must be fractions with val + test < 1")
    needed = groups_needed(val, test)
    if n_groups >= needed:
        return
    asked = " and ".join(f"{name} {fraction:g}" for name, fraction in (("validation", val), ("test", test)) if fraction)
    near = max(needed, *(round(1 / f) for f in (val, test) if f)) if asked else needed
    raise SplitError(
        f"the labelled set has {n_groups} bin(s) (split groups) but holding out whole bins for {asked} needs at "
        f"least {needed} (one for each held-out part and one for training; about {near} or more for those fractions): "
        "label ROIs of more bins, or hold out less (--val 0 and/or --test 0)"
    )


def _hold_out(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of about `fraction` of the samples, whole groups only, with classes spread as evenly as possible."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    n_splits = min(max(2, round(1 / fraction)), n_groups)
    if n_splits < 2:
        raise SplitError(f"cannot hold out whole groups: only {n_groups} group(s)")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members than n_splits"
        _, held = next(splitter.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return mask


def split_by_group(
    labels: np.ndarray, groups: np.ndarray, val: float = 0.15, test: float = 0.15, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded (train, val, test) split of samples by group: sorted int64 index arrays into `labels`/`groups` (any
    comparable values, one per sample); no group is on two sides; classes stratified where groups allow.

    Fractions are approximate (whole groups, folds of 1/fraction); a fraction of 0 gives an empty part. Raises
    `SplitError` for fractions out of range and for too few groups (`check_splittable`).
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    check_splittable(len(np.unique(groups)), val, test)
    remaining = np.arange(len(labels))
    parts = {}
    for name, fraction, salt in (("test", test, 0), ("val", val / (1 - test), 1)):
        if fraction == 0:
            parts[name] = np.array([], dtype=np.int64)
            continue
        held = _hold_out(labels[remaining], groups[remaining], fraction, seed + salt)
        parts[name], remaining = remaining[held], remaining[~held]
    if len(remaining) == 0:
        raise SplitError("the split left no training images; use smaller val/test fractions or more groups")
    return remaining, np.sort(parts["val"]), np.sort(parts["test"])
