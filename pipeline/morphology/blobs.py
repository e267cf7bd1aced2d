"""The blobs of a segmented ROI and their plane geometry: area, equivalent diameter, ellipse axes, eccentricity,
orientation, perimeter, convex hull.

Rules from the IFCB Dashboard's v4 feature extractor (WHOIGit/ifcb-features), each named in its function: blobs
are the 8-connected components of the mask, ordered largest first (ties: leftmost, then topmost bounding box), and
each is measured on its own bounding-box crop (`ifcb_features/blobs.py`, `find_blobs`; `ifcb_features/all.py`,
`RoiFeatures.blobs`). Lengths are in pixels, areas in pixels^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Blob:
    """One blob: `mask` bool (height, width), its bounding-box crop (only this blob's pixels True); `top`, `left`
    the crop's place in the ROI (0-based row, column); `area` its pixel count."""

    mask: np.ndarray
    top: int
    left: int
    area: int


def find_blobs(mask: np.ndarray) -> list[Blob]:
    """The 8-connected blobs of a bool `mask` (rows, cols), largest area first; equal areas by the bounding box's
    first column, then first row. Source: `ifcb_features/blobs.py`, `find_blobs` (MATLAB `blob_geomprop`'s order)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    area, left, top = stats[:, cv2.CC_STAT_AREA], stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    order = sorted(range(1, n), key=lambda i: (-int(area[i]), int(left[i]), int(top[i])))
    blobs = []
    for i in order:
        left, top, width, height, area = (int(v) for v in stats[i, :5])
        crop = labels[top : top + height, left : left + width] == i
        blobs.append(Blob(crop, top, left, area))
    return blobs


def equivalent_diameter(area: float) -> float:
    """Diameter of the disc of `area` pixels: sqrt(4 area / pi) (MATLAB `regionprops` 'EquivDiameter'; the
    reference's `BlobFeatures.equiv_diameter`)."""
    return float(np.sqrt(4.0 * area / np.pi))


def ellipse_axes(mask: np.ndarray) -> tuple[float, float, float]:
    """(major axis length, minor axis length, eccentricity) of a blob `mask`: 4 x the square roots of the
    eigenvalues of the sample covariance (N - 1 normalisation) of its pixel coordinates, and the first
    eccentricity sqrt(1 - (minor / major)^2). Source: `ifcb_features/blob_geometry.py`, `ellipse_properties`
    (no 1/12 pixel term, unlike MATLAB `regionprops`). A blob of one pixel gives (0, 0, 0)."""
    rows, cols = np.nonzero(mask)
    n = rows.size
    if n < 2:
        return 0.0, 0.0, 0.0
    r = rows - rows.mean()
    c = cols - cols.mean()
    a, b, d = (r @ r) / (n - 1), (r @ c) / (n - 1), (c @ c) / (n - 1)
    half_trace, root = (a + d) / 2.0, np.hypot((a - d) / 2.0, b)
    major = 4.0 * np.sqrt(max(half_trace + root, 0.0))
    minor = 4.0 * np.sqrt(max(half_trace - root, 0.0))
    eccentricity = float(np.sqrt(max(1.0 - (minor / major) ** 2, 0.0))) if major > 0 else 0.0
    return float(major), float(minor), eccentricity


def orientation(mask: np.ndarray) -> float:
    """Orientation of a blob in degrees, in (-90, 90]: -1/2 atan2(2 mu11, mu20 - mu02) of its central second
    moments (x = column, y = row). Source: `ifcb_features/blob_geometry.py`, `explicit_orientation` (MATLAB
    `regionprops` 'Orientation' sign convention: anticlockwise positive with rows growing downwards)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return 0.0
    y = rows - rows.mean()
    x = cols - cols.mean()
    theta = -0.5 * np.degrees(np.arctan2(2.0 * (x @ y), x @ x - y @ y))
    while theta > 90.0:
        theta -= 180.0
    while theta <= -90.0:
        theta += 180.0
    return float(theta)


def perimeter_mask(mask: np.ndarray) -> np.ndarray:
    """The blob's boundary pixels: pixels of `mask` with a 4-neighbour outside it (outside the array counts as
    outside). Source: `ifcb_features/morphology.py`, `find_perimeter`."""
    m = mask.astype(bool)
    padded = np.pad(m, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return m & ~inner


#: Benkrid's weights by neighbourhood code (centre 1, 4-neighbours 2 each, diagonals 10 each), MATLAB
#: `benkrid_perimeter`: straight runs 1, diagonal steps sqrt(2), corners (1 + sqrt(2)) / 2.
_BENKRID = np.zeros(50)
_BENKRID[[5, 7, 15, 17, 25, 27]] = 1.0
_BENKRID[[21, 33]] = np.sqrt(2.0)
_BENKRID[[13, 23]] = (1.0 + np.sqrt(2.0)) / 2.0
_BENKRID_KERNEL = np.array([[10, 2, 10], [2, 1, 2], [10, 2, 10]], dtype=np.float32)


def perimeter_length(boundary: np.ndarray) -> float:
    """Perimeter in pixels of a boundary mask (`perimeter_mask`) by Benkrid's look-up estimator: each boundary
    pixel weighted by the pattern of its boundary neighbours. Source: `ifcb_features/perimeter.py`,
    `benkrid_perimeter`."""
    code = cv2.filter2D(boundary.astype(np.uint8), cv2.CV_32F, _BENKRID_KERNEL, borderType=cv2.BORDER_CONSTANT)
    codes = code[boundary].astype(np.int64)
    return float(_BENKRID[np.clip(codes, 0, _BENKRID.size - 1)].sum())


def convex_hull(boundary: np.ndarray, area: int, perimeter: float) -> tuple[float, float]:
    """(convex perimeter, convex area) of a blob from its boundary pixels: the hull polygon of the boundary pixel
    centres, its perimeter, and its area plus half its perimeter (the half-pixel rasterisation margin). A hull
    without area (all pixels on a line) gives (`perimeter`, `area`). Source: `ifcb_features/blob_geometry.py`,
    `convex_hull_properties` and `BlobFeatures.convex_hull_properties` (which sums the hull's area as a fan of
    triangles by Heron's formula: the same polygon area, computed here by the shoelace formula)."""
    rows, cols = np.nonzero(boundary)
    if rows.size < 3:
        return perimeter, float(area)
    points = np.stack([cols, rows], axis=1).astype(np.int32)
    hull = cv2.convexHull(points).reshape(-1, 2).astype(np.float64)
    if hull.shape[0] < 3:
        return perimeter, float(area)
    nxt = np.roll(hull, -1, axis=0)
    hull_perimeter = float(np.sqrt(((nxt - hull) ** 2).sum(axis=1)).sum())
    hull_area = 0.5 * abs(float((hull[:, 0] * nxt[:, 1] - nxt[:, 0] * hull[:, 1]).sum()))
    if hull_area == 0.0:
        return perimeter, float(area)
    return hull_perimeter, hull_area + hull_perimeter / 2.0
