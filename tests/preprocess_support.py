"""The preprocessing contract written the plain way, and the real ROIs it is checked on (tests and bench share them)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def reference(image: np.ndarray, size: int = 128, pad_value: int = 0) -> np.ndarray:
    """ifcbUTOPIA's preprocessing as it reads, independent of `model.preprocess`: resize, copyMakeBorder, normalize."""
    height, width = image.shape
    ratio = size / max(height, width)
    new_h, new_w = max(1, int(height * ratio)), max(1, int(width * ratio))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dh, dw = size - new_h, size - new_w
    top, left = dh // 2, dw // 2
    padded = cv2.copyMakeBorder(resized, top, dh - top, left, dw - left, cv2.BORDER_CONSTANT, value=pad_value)
    return cv2.normalize(padded, None, 0, 255, cv2.NORM_MINMAX)


def labelled_rois(utopia: Path) -> list[np.ndarray]:
    """The shared labelled ROIs (`utopia/labelled/<class>/*.png`)."""
    from model.training.data import load_image_folder

    return load_image_folder(str(utopia / "labelled")).images


def bin_rois(ifcb: Path) -> list[np.ndarray]:
    """Every ROI of the shared real bins (`ifcb/bins`: two instruments, two `.adc` schemas), by the one bin reader."""
    from pipeline.ifcb.archive import bin_files_at
    from pipeline.ifcb.bins import read_bin_images, read_bin_meta

    rois = []
    for roi in sorted((ifcb / "bins").glob("*.roi")):
        fs, files = bin_files_at(str(roi))
        rois += [image for _, image in read_bin_images(fs, read_bin_meta(fs, files))]
    return rois


def bin_rois_by_bin(ifcb: Path) -> list[tuple[str, list[tuple[int, np.ndarray]]]]:
    """Per shared real bin (by id, in name order): its (ROI number, image) pairs, by the one bin reader."""
    from pipeline.ifcb.archive import bin_files_at
    from pipeline.ifcb.bins import read_bin_images, read_bin_meta

    found = []
    for roi in sorted((ifcb / "bins").glob("*.roi")):
        fs, files = bin_files_at(str(roi))
        found.append((files.bin.id, read_bin_images(fs, read_bin_meta(fs, files))))
    return found
