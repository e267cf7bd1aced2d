"""A bin's biovolume and carbon per class, from its ROIs' morphology (`pipeline.morphology`) and their classes.

Each ROI's biovolume is its `summedBiovolume` (every blob of the ROI, as WHOI's ifcb-analysis summaries take it:
their per-class feature lists carry `summedBiovolume` and the `cellC` made from it), in µm³ by the instrument's
calibration (pixels per µm: `pipeline.morphology.units`); its carbon follows from the volume by the relation of its
class's kind (diatom or other protist: `pipeline.results.carbon.bin_carbon`, WHOI ifcb-analysis's rule), which the
user's class-to-taxon table says (`pipeline.results.taxa`). A bin's sums are per class by argmax, beside its argmax
counts; per mL they are divided by the bin's `ml_analyzed` (`pipeline.results.summary`).

The store keeps the settings (`Sizing`) in its root attributes (`morphology`): every run into a store measures
and converts its bins alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from model.decision import winners
from pipeline.ifcb.identifiers import parse_bin_id
from pipeline.morphology.columns import COLUMNS
from pipeline.morphology.units import pixels_per_micron
from pipeline.results.carbon import bin_carbon

_VOLUME = COLUMNS.index("summedBiovolume")


@dataclass(frozen=True)
class Sizing:
    """How a store's bins are measured: the calibration (pixels per µm by instrument serial number, "*" for every
    other: `pipeline.morphology.units.parse_calibration`) and, per class in the store's class order, whether it is
    a diatom (None: no class-to-taxon table, so no carbon)."""

    calibration: dict[str, float]
    diatoms: tuple[bool, ...] | None = None
    taxa_source: str | None = None  # where the class-to-taxon table came from (redacted URL)

    def same_as(self, other: Sizing) -> bool:
        """Whether both measure and convert alike (the table's source aside)."""
        return self.calibration == other.calibration and self.diatoms == other.diatoms

    def to_attributes(self) -> dict[str, Any]:
        return {
            "pixels_per_micron": dict(self.calibration),
            "diatoms": None if self.diatoms is None else list(self.diatoms),
            "taxa_source": self.taxa_source,
        }

    @classmethod
    def from_attributes(cls, attributes: dict[str, Any] | None) -> Sizing | None:
        if not attributes:
            return None
        diatoms = attributes.get("diatoms")
        return cls(
            {str(key): float(value) for key, value in attributes["pixels_per_micron"].items()},
            None if diatoms is None else tuple(bool(flag) for flag in diatoms),
            attributes.get("taxa_source"),
        )


def bin_biomass(
    bin_id: str, morphology: np.ndarray | None, scores: np.ndarray, sizing: Sizing
) -> tuple[list[float], list[float] | None] | None:
    """(biovolume per class in µm³, carbon per class in pg or None without a taxon table) of one bin by argmax, from
    its morphology float32 (roi, feature) in pixels and its scores float32 (roi, class); None for a bin that was
    not measured (no morphology, or rows of NaN: a bin of a run without it, carried by a compaction).

    Raises KeyError when the calibration has no value for the bin's instrument."""
    if morphology is None:
        return None
    rows = np.asarray(morphology, dtype=np.float64)
    if len(rows) and np.isnan(rows).all():
        return None
    n_classes = np.asarray(scores).shape[1]
    scale = pixels_per_micron(sizing.calibration, parse_bin_id(bin_id).instrument_number)
    volume = rows[:, _VOLUME] / scale**3 if len(rows) else np.zeros(0)
    diatoms = np.zeros(n_classes, bool) if sizing.diatoms is None else np.asarray(sizing.diatoms, dtype=bool)
    sums = bin_carbon(winners(scores), volume, [str(i) for i in range(n_classes)], diatoms, None)
    return sums.biovolume_um3.tolist(), None if sizing.diatoms is None else sums.carbon_pg.tolist()
