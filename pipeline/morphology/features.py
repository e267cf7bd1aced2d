"""The morphology table of a bin: one row of IFCB v4 size features per ROI, in pixels.

Columns (`COLUMNS`), as the IFCB Dashboard's v4 feature files name them (WHOIGit/ifcb-features
`ifcb_features/all.py`, `compute_features`; `extract_slim_features.py`, `FEATURE_COLUMNS`):

- of the largest blob (0 when the ROI has none): Area (px^2), Biovolume (px^3), ConvexArea (px^2),
  ConvexPerimeter (px), Eccentricity, EquivDiameter (px), MajorAxisLength (px), MinorAxisLength (px),
  Perimeter (px), RepresentativeWidth (px), SurfaceArea (px^2);
- numBlobs, and summed over every blob: summedArea, summedBiovolume, summedConvexArea, summedConvexPerimeter,
  summedMajorAxisLength, summedMinorAxisLength, summedPerimeter, summedSurfaceArea (`ROI.summed_attr`).

`units.to_microns` converts a table to µm, µm^2, µm^3 with an instrument's calibration.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pipeline.morphology.biovolume import (
    distance_map,
    rotate_to_major_axis,
    solid_of_revolution,
    use_solid_of_revolution,
)
from pipeline.morphology.blobs import (
    convex_hull,
    ellipse_axes,
    equivalent_diameter,
    find_blobs,
    orientation,
    perimeter_length,
    perimeter_mask,
)
from pipeline.morphology.columns import COLUMNS, DTYPE, SUMMED_OF
from pipeline.morphology.segmentation import segment


def blob_features(mask: np.ndarray) -> dict[str, float]:
    """The `BLOB_COLUMNS` of one blob (`mask` bool (h, w), one 8-connected blob of >= 1 pixel), in pixels.

    Sources, per feature: Area = pixel count; EquivDiameter, MajorAxisLength, MinorAxisLength, Eccentricity:
    `blobs.equivalent_diameter`, `blobs.ellipse_axes`; Perimeter: Benkrid's estimator on the 4-connected boundary
    (`blobs.perimeter_length`); ConvexPerimeter, ConvexArea: `blobs.convex_hull`; Biovolume, RepresentativeWidth,
    SurfaceArea: solid of revolution or distance map, chosen by `biovolume.use_solid_of_revolution`."""
    area = int(mask.sum())
    equiv = equivalent_diameter(area)
    major, minor, eccentricity = ellipse_axes(mask)
    boundary = perimeter_mask(mask)
    perimeter = perimeter_length(boundary)
    convex_perimeter, convex_area = convex_hull(boundary, area, perimeter)
    if use_solid_of_revolution(area, convex_area, eccentricity, equiv, major):
        volume, width, surface = solid_of_revolution(rotate_to_major_axis(mask, orientation(mask)))
    else:
        volume, width, surface = distance_map(mask)
    return {
        "Area": float(area),
        "Biovolume": volume,
        "ConvexArea": convex_area,
        "ConvexPerimeter": convex_perimeter,
        "Eccentricity": eccentricity,
        "EquivDiameter": equiv,
        "MajorAxisLength": major,
        "MinorAxisLength": minor,
        "Perimeter": perimeter,
        "RepresentativeWidth": width,
        "SurfaceArea": surface,
    }


def mask_morphology(mask: np.ndarray) -> dict[str, float]:
    """The `COLUMNS` of a ROI from its blob mask (bool (rows, cols)); a mask without blobs gives numBlobs 0 and
    every other column 0 (the reference's `ZeroMock` row and empty sums)."""
    blobs = find_blobs(mask)
    per_blob = [blob_features(blob.mask) for blob in blobs]
    row: dict[str, float] = {name: 0.0 for name in COLUMNS}
    if per_blob:
        row.update(per_blob[0])
    row["numBlobs"] = len(per_blob)
    for name in SUMMED_OF:
        row[f"summed{name}"] = float(sum(features[name] for features in per_blob))
    return row


def roi_morphology(image: np.ndarray) -> dict[str, float]:
    """The `COLUMNS` of one ROI image (uint8 (rows, cols), as `pipeline.ifcb` reads it, stitched where older bins
    are): segmented (`segmentation.segment`), then measured (`mask_morphology`), in pixels.

    Raises ValueError for an image that is not a non-empty 2-D uint8 array."""
    return mask_morphology(segment(image))


def morphology_table(images: Iterable[np.ndarray]) -> np.ndarray:
    """The morphology of each ROI of `images` (uint8 (rows, cols) each), in order: a structured array (n,) of
    `DTYPE` (fields `COLUMNS`; numBlobs int32, the others float64, pixel units). n = 0 for no images.

    Raises ValueError, naming the image's index, for an image that is not a non-empty 2-D uint8 array."""
    rows = []
    for index, image in enumerate(images):
        try:
            features = roi_morphology(image)
        except ValueError as exc:
            raise ValueError(f"image {index}: {exc}") from None
        rows.append(tuple(features[name] for name in COLUMNS))
    return np.array(rows, dtype=DTYPE)
