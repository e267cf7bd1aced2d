"""The `.roi` file: raw 8-bit pixels of every image of a bin, back to back.

The images of a bin are contiguous, so one ranged read (first start byte to the end of the last image) fetches
them all: one request per bin on object storage, whatever the number of ROIs.
"""

from __future__ import annotations

import numpy as np
from fsspec import AbstractFileSystem

from pipeline.ifcb.adc import AdcTable
from pipeline.ifcb.errors import IfcbFormatError


def image_span(adc: AdcTable) -> tuple[int, int]:
    """The byte range [start, end) of the `.roi` that holds every image of the bin; (0, 0) when it has none."""
    numbers = adc.roi_numbers
    if numbers.size == 0:
        return 0, 0
    rows = numbers - 1
    starts = adc.start_byte[rows]
    ends = starts + adc.width[rows] * adc.height[rows]
    return int(starts.min()), int(ends.max())


def check_roi_size(adc: AdcTable, size: int) -> None:
    """Raise `IfcbFormatError` when a `.roi` of `size` bytes ends before the images the `.adc` lists do."""
    end = image_span(adc)[1]
    if end > size:
        raise IfcbFormatError(f".roi is truncated: images need bytes up to {end}, the file ends at {size}", stage="roi")


def slice_images(block: bytes, block_start: int, adc: AdcTable) -> list[tuple[int, np.ndarray]]:
    """Cut the images out of `block` (the `.roi` bytes from `block_start`): (ROI number, uint8 (height, width)).

    Raises `IfcbFormatError` when `block` ends before the last image does (a truncated `.roi`).
    """
    numbers = adc.roi_numbers
    if numbers.size == 0:
        return []
    rows = numbers - 1
    widths, heights = adc.width[rows], adc.height[rows]
    offsets = adc.start_byte[rows] - block_start
    need = int((offsets + widths * heights).max())
    if offsets.min() < 0 or need > len(block):
        raise IfcbFormatError(
            f".roi is truncated: images need bytes up to {block_start + need}, the file ends at "
            f"{block_start + len(block)}",
            stage="roi",
        )
    pixels = np.frombuffer(bytearray(block), dtype=np.uint8)  # one writable copy shared by every image
    return [
        (int(number), pixels[offset : offset + width * height].reshape(height, width))
        for number, offset, width, height in zip(numbers, offsets, widths, heights, strict=True)
    ]


def read_images(fs: AbstractFileSystem, path: str | None, adc: AdcTable) -> list[tuple[int, np.ndarray]]:
    """Read every image of a bin from its `.roi` at `path` on the fsspec filesystem `fs`, in one ranged read."""
    start, end = image_span(adc)
    if end == start:
        return []
    if path is None:
        raise IfcbFormatError("missing .roi: the .adc lists images but the bin has no .roi file", stage="roi")
    try:
        block = fs.cat_file(path, start=start, end=end)
    except FileNotFoundError:
        raise IfcbFormatError(f"missing .roi: {path} not found", stage="roi") from None
    except OSError:  # object stores refuse a range that starts past the end of the object
        size = fs.size(path)
        if size is not None:
            check_roi_size(adc, size)
        raise
    return slice_images(block, start, adc)
