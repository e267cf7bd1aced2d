"""Morphology per ROI: the IFCB Dashboard's v4 size features (area, biovolume by Moberg & Sosik's distance map or
solid of revolution, axes, perimeter, surface area, blob counts and sums), in pixels, and their conversion to µm.

`morphology_table(images)` is the per-bin entry point: one row per ROI image (uint8, as `pipeline.ifcb` reads
them). Modules, one job each: `columns` (the table's names, and the matrix the store keeps), `phase_congruency`
(edge strength), `segmentation` (blob mask), `blobs` (plane geometry), `biovolume` (volume, width, surface),
`features` (the table), `units` (calibration). The measuring modules (OpenCV, SciPy) load when first used: the store
and its readers need only the names.
"""

from typing import Any

from pipeline.morphology.columns import COLUMNS, DTYPE, as_matrix
from pipeline.morphology.units import PIXELS_PER_MICRON_CLASSIC, PIXELS_PER_MICRON_NEWER, to_microns

__all__ = [
    "COLUMNS",
    "DTYPE",
    "PIXELS_PER_MICRON_CLASSIC",
    "PIXELS_PER_MICRON_NEWER",
    "as_matrix",
    "morphology_table",
    "roi_morphology",
    "to_microns",
]


def __getattr__(name: str) -> Any:
    """`morphology_table` and `roi_morphology`, imported with the image libraries when first asked for."""
    if name in ("morphology_table", "roi_morphology"):
        from pipeline.morphology import features

        return getattr(features, name)
    raise AttributeError(f"module 'pipeline.morphology' has no attribute {name!r}")
