"""Stitching of older bins (IFCB1-6, `IFCBn_YYYY_DDD_HHMMSS`): one target written as two `.adc` rows.

The first instruments sometimes cut one target's image into two boxes, written as two consecutive rows with the same
trigger number. The community's readers combine them into one ROI: pyifcb (`ifcb/data/stitching.py`: `Stitcher`,
`Infiller`, `InfilledImages`), which the IFCB Dashboard uses for every schema-1 bin, and WHOI's MATLAB tools
(ifcb-analysis `IFCB_tools/ifcb_stitch_bin.m`, the same pairs and boxes). The rule, as pyifcb applies it (the infill
is pyifcb's, the images the Dashboard serves):

- Pairs: consecutive rows with an image (in file order) that share the trigger number and whose boxes overlap by
  more than 2 pixels along both axes (box = x, y, x + width, y + height).
- The pair becomes one ROI numbered by its first row; the second row is not a ROI of its own (not counted, not
  classified). A row that is the second of one pair does not start another.
- The stitched image covers the union box of both; each image is placed at its own x, y (the second written over
  the first where they overlap). The pixels that neither box covers (the gap) are filled with one grey value: the
  rounded mean of the real pixels that border the gap (4-connected ring around the gap, the image's outermost rows
  and columns counting as their neighbours inside), 0 when no real pixel borders it.

Newer bins (`D..._IFCBnnn`) are never stitched: their instruments write one row per target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.ifcb.adc import AdcTable

#: Boxes must overlap by more than this many pixels on both axes to be one target (pyifcb's `overlap_thresh`).
OVERLAP_PX = 2


@dataclass(frozen=True)
class Stitching:
    """Which rows of a bin are stitched: `pairs` {first ROI number: second ROI number} (the ROIs that become one
    image) and `excluded` (every pair's second row: ROI numbers that are not ROIs of their own)."""

    pairs: dict[int, int] = field(default_factory=dict)
    excluded: frozenset[int] = frozenset()

    def roi_numbers(self, numbers: np.ndarray) -> np.ndarray:
        """`numbers` (ROI numbers with an image) without the excluded ones."""
        if not self.excluded:
            return numbers
        return numbers[~np.isin(numbers, list(self.excluded))]


NOT_STITCHED = Stitching()


def find_stitching(adc: AdcTable) -> Stitching:
    """The stitched pairs of an older bin's `.adc` (see the module's rule); `NOT_STITCHED` when there is none."""
    numbers = adc.roi_numbers
    if numbers.size < 2:
        return NOT_STITCHED
    x1, y1, x2, y2 = _boxes(adc, numbers)
    trigger = adc.column(adc.schema.TRIGGER)[numbers - 1]
    a, b = slice(None, -1), slice(1, None)
    touching = (
        (trigger[a] == trigger[b])
        & (x1[a] < x2[b] - OVERLAP_PX) & (x2[a] > x1[b] + OVERLAP_PX)
        & (y1[a] < y2[b] - OVERLAP_PX) & (y2[a] > y1[b] + OVERLAP_PX)
    )  # fmt: skip
    firsts = np.flatnonzero(touching)
    if firsts.size == 0:
        return NOT_STITCHED
    excluded = frozenset(int(numbers[i + 1]) for i in firsts)
    pairs = {int(numbers[i]): int(numbers[i + 1]) for i in firsts if int(numbers[i]) not in excluded}
    return Stitching(pairs, excluded)


def _boxes(adc: AdcTable, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x1, y1, x2, y2) int64 of the rows `numbers` (1-based): the box each image covers in the camera frame."""
    rows = numbers - 1
    x1 = adc.column(adc.schema.ROI_X)[rows].astype(np.int64)
    y1 = adc.column(adc.schema.ROI_Y)[rows].astype(np.int64)
    return x1, y1, x1 + adc.width[rows], y1 + adc.height[rows]


def stitch_images(
    images: list[tuple[int, np.ndarray]], adc: AdcTable, stitching: Stitching
) -> list[tuple[int, np.ndarray]]:
    """The bin's images with each pair replaced by its stitched, infilled image (uint8 (height, width)) under the
    first row's ROI number, and the excluded rows left out; `images` as the `.roi` reader cut them."""
    if not stitching.excluded:
        return images
    by_number = dict(images)
    stitched = []
    for number, image in images:
        if number in stitching.excluded:
            continue
        second = stitching.pairs.get(number)
        if second is not None:
            image = _stitch(adc, (number, by_number[number]), (second, by_number[second]))
        stitched.append((number, image))
    return stitched


def _stitch(adc: AdcTable, first: tuple[int, np.ndarray], second: tuple[int, np.ndarray]) -> np.ndarray:
    x1, y1, x2, y2 = _boxes(adc, np.array([first[0], second[0]]))
    left, top = int(x1.min()), int(y1.min())
    out = np.zeros((int(y2.max()) - top, int(x2.max()) - left), dtype=np.uint8)
    gap = np.ones(out.shape, dtype=bool)
    for k, (_, image) in enumerate((first, second)):
        rows = slice(int(y1[k]) - top, int(y2[k]) - top)
        cols = slice(int(x1[k]) - left, int(x2[k]) - left)
        out[rows, cols] = image
        gap[rows, cols] = False
    if gap.any():
        out[gap] = _infill_value(out, gap)
    return out


def _infill_value(image: np.ndarray, gap: np.ndarray) -> int:
    """The rounded mean of the real pixels bordering `gap` (pyifcb's `infill_image`: the boundary of the gap grown
    by one pixel, with the image's outermost rows and columns taking the boundary of their inner neighbours)."""
    grown = _grow(gap)
    padded = np.pad(grown, 1, constant_values=False)  # outside the image counts as not grown
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    boundary = grown & ~inner
    if min(boundary.shape) >= 2:
        boundary[:, 0], boundary[:, -1] = boundary[:, 1], boundary[:, -2]
        boundary[0, :], boundary[-1, :] = boundary[1, :], boundary[-2, :]
    real = boundary & ~gap
    if not real.any():
        return 0
    return round(float(image[real].mean()))  # Python's round: halves to even, as pyifcb


def _grow(mask: np.ndarray) -> np.ndarray:
    """`mask` grown by one pixel to its 4-connected neighbours."""
    grown = mask.copy()
    grown[1:, :] |= mask[:-1, :]
    grown[:-1, :] |= mask[1:, :]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown
