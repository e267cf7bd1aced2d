"""Labelled ROI images in memory, loading them from class folders, and the grouped train/val/test split.

The split unit is the group (the bin a ROI came from): ROIs of one bin are near-duplicates in time and water
sample, so a bin on two sides of a split would make the held-out numbers too good.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import fsspec
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")


@dataclass
class LabelledImages:
    """uint8 2-D images with their class label, group (bin id: the split unit) and id (ROI id or file stem)."""

    images: list[np.ndarray]
    labels: list[str]
    groups: list[str]
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ids:
            self.ids = [str(i) for i in range(len(self.images))]
        lengths = {len(self.images), len(self.labels), len(self.groups), len(self.ids)}
        if len(lengths) != 1:
            raise ValueError("images, labels, groups and ids must have the same length")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def classes(self) -> list[str]:
        """The distinct labels, sorted: the default class order of a model trained on these images."""
        return sorted(set(self.labels))

    def subset(self, indices: np.ndarray | list[int]) -> LabelledImages:
        return LabelledImages(
            images=[self.images[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            groups=[self.groups[i] for i in indices],
            ids=[self.ids[i] for i in indices],
        )


def _read_grey(fs: Any, path: str) -> np.ndarray:
    """Any image file -> uint8 2-D grey levels (ROIs saved as RGB PNGs have grey content; L keeps it exactly)."""
    with fs.open(path, "rb") as f, Image.open(f) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def load_image_folder(
    url: str, storage_options: dict[str, Any] | None = None, group_of: Callable[[str], str] | None = None
) -> LabelledImages:
    """Images in class subfolders (`<url>/<class>/<image>`), from a local path or any fsspec URL.

    `group_of(file stem)` names each image's split group (e.g. the bin of a file named by its ROI id); without it
    every image is its own group.
    """
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if not fs.isdir(root):
        raise FileNotFoundError(f"no folder at {url}")
    images, labels, groups, ids = [], [], [], []
    for class_dir in sorted(p for p in fs.ls(root, detail=False) if fs.isdir(p)):
        label = PurePosixPath(class_dir).name
        for path in sorted(fs.ls(class_dir, detail=False)):
            name = PurePosixPath(path)
            if name.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            images.append(_read_grey(fs, path))
            labels.append(label)
            groups.append(group_of(name.stem) if group_of else name.stem)
            ids.append(name.stem)
    if not images:
        raise ValueError(f"no images found in class subfolders of {url}")
    log.info("loaded %d images of %d classes from %s", len(images), len(set(labels)), url)
    return LabelledImages(images, labels, groups, ids)


def _hold_out(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of about `fraction` of the samples, whole groups only, with classes spread as evenly as possible."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups.tolist()))
    n_splits = min(max(2, round(1 / fraction)), n_groups)
    if n_splits < 2:
        raise ValueError(f"cannot hold out whole groups: only {n_groups} group(s)")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members than n_splits"
        _, held = next(splitter.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return mask


def split_by_group(
    data: LabelledImages, val: float = 0.15, test: float = 0.15, seed: int = 0
) -> tuple[LabelledImages, LabelledImages, LabelledImages]:
    """Seeded (train, val, test) split by group: no group is on two sides; classes stratified where groups allow.

    Fractions are approximate (whole groups, folds of 1/fraction); a fraction of 0 gives an empty part.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val={val} and test={test} must be fractions with val + test < 1")
    labels, groups = np.asarray(data.labels), np.asarray(data.groups)
    remaining = np.arange(len(data))
    parts = {}
    for name, fraction, salt in (("test", test, 0), ("val", val / (1 - test), 1)):
        if fraction == 0:
            parts[name] = np.array([], dtype=np.int64)
            continue
        held = _hold_out(labels[remaining], groups[remaining], fraction, seed + salt)
        parts[name], remaining = remaining[held], remaining[~held]
    if len(remaining) == 0:
        raise ValueError("the split left no training images; use smaller val/test fractions or more groups")
    return data.subset(remaining), data.subset(parts["val"]), data.subset(parts["test"])
