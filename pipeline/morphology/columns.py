"""The morphology table's columns and row type, and the matrix the store keeps per ROI: names only, no image
libraries (what the store and the readers need without measuring anything).

Columns, as the IFCB Dashboard's v4 feature files name them (WHOIGit/ifcb-features `ifcb_features/all.py`,
`compute_features`; `extract_slim_features.py`, `FEATURE_COLUMNS`); their definitions: `pipeline.morphology.features`.
"""

from __future__ import annotations

import numpy as np

#: Per-blob features, in the v4 files' spelling; the largest blob's go in the columns of the same name.
BLOB_COLUMNS = (
    "Area",
    "Biovolume",
    "ConvexArea",
    "ConvexPerimeter",
    "Eccentricity",
    "EquivDiameter",
    "MajorAxisLength",
    "MinorAxisLength",
    "Perimeter",
    "RepresentativeWidth",
    "SurfaceArea",
)
#: Per-blob features summed over the ROI's blobs (`summed` + the blob column's name).
SUMMED_OF = (
    "Area",
    "Biovolume",
    "ConvexArea",
    "ConvexPerimeter",
    "MajorAxisLength",
    "MinorAxisLength",
    "Perimeter",
    "SurfaceArea",
)
COLUMNS = (*BLOB_COLUMNS, "numBlobs", *(f"summed{name}" for name in SUMMED_OF))
#: The table's row type: numBlobs int32, the rest float64.
DTYPE = np.dtype([(name, np.int32 if name == "numBlobs" else np.float64) for name in COLUMNS])


def as_matrix(table: np.ndarray) -> np.ndarray:
    """A morphology table (`morphology_table`) as float32 (n, len(COLUMNS)), columns in `COLUMNS` order: how the
    store keeps it per ROI (`parts/<part>/morphology`)."""
    return np.stack([table[name].astype(np.float32) for name in COLUMNS], axis=1).reshape(len(table), len(COLUMNS))
