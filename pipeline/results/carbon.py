"""Carbon from biovolume, per ROI and per bin: Menden-Deuer & Lessard (2000) volume-to-carbon relations, as the IFCB
community's reference code applies them.

Menden-Deuer, S. & Lessard, E. J. (2000) Carbon to volume relationships for dinoflagellates, diatoms, and other protist
plankton. Limnology and Oceanography 45(3): 569-579, doi:10.4319/lo.2000.45.3.0569. Each relation is
log10(C / pg) = log a + b log10(V / µm³), with C the carbon of one cell and V its volume:

- `protist_carbon_pg`, protist plankton other than diatoms: log a = -0.665, b = 0.939 (C = 0.216 V^0.939).
  WHOI's ifcb-analysis `vol2C_nondiatom.m` (Sosik, 2012) and iRfcb's `vol2C_nondiatom` use these two numbers.
- `diatom_carbon_pg`, diatoms of all sizes: log a = -0.541, b = 0.811 (C = 0.288 V^0.811). iRfcb's `vol2C_diatom`
  (its `diatom_equation = "all"`).
- `large_diatom_carbon_pg`, diatoms larger than 3000 µm³: log a = -0.933, b = 0.881 (C = 0.117 V^0.881).
  ifcb-analysis `vol2C_lgdiatom.m`, iRfcb `vol2C_lgdiatom`.

Which relation a diatom ROI takes is the `rule` (`DiatomRule`):

- `"ifcb-analysis"` (the default): WHOI's `biovol2carbon.m` (hsosik/ifcb-analysis, Sosik 2012) gives every ROI the
  protist relation and replaces it, for ROIs of a diatom class with V >= 3000 µm³, by the large-diatom relation.
  Small diatoms thus take the protist relation, and each relation stays inside the size range it was fitted on.
- `"large"`: every diatom ROI takes the large-diatom relation whatever its size: iRfcb's default
  (`ifcb_summarize_biovolumes(diatom_equation = "large")`, which its documentation calls the ifcb-analysis
  convention; it applies that relation below 3000 µm³ too).
- `"all-sizes"`: every diatom ROI takes the all-sizes diatom relation (iRfcb `"all"`).
- `"by-size"`: the all-sizes relation up to 3000 µm³, the large-diatom relation above (iRfcb `"auto"`,
  `vol2C_diatom_auto`: `volume > 3000`).

Caveats, from the paper and the codes' own notes: the relations were fitted to cells, and an IFCB biovolume is per ROI,
so a chain of small cells is converted as one large cell; the all-sizes and large-diatom relations are discontinuous
at 3000 µm³ (about 190 and 135 pg C there, iRfcb's note), so `"by-size"` lets carbon fall as a cell grows across the
boundary; and V is the cell's volume in µm³, which needs the instrument's calibration (`pipeline.morphology.to_microns`)
before it is converted. A ROI with no blob has biovolume 0, and 0 µm³ is 0 pg C.

Per bin (`bin_carbon`): for each class, the ROI count, the summed biovolume (µm³) and the summed carbon (pg); divided
by the bin's volume analysed they give biovolume per mL (µm³ mL⁻¹) and carbon in µg C L⁻¹, the unit the field reports
(ifcb-analysis users' summaries: `volC = cellC ./ ml_analyzed ./ 1000  % convert from pg/mL to ug/L`; SeaBASS's
standard field `phyto_carbon` is in ug/L). 1 pg mL⁻¹ = 10⁻³ µg L⁻¹. As iRfcb's `ifcb_summarize_biovolumes` does,
counts include ROIs whose biovolume is NaN (unknown) while the sums leave those out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike

from model.decision import UNCLASSIFIED, UNCLASSIFIED_NAME

DiatomRule = Literal["ifcb-analysis", "large", "all-sizes", "by-size"]
DIATOM_RULES: tuple[str, ...] = get_args(DiatomRule)

#: Menden-Deuer & Lessard (2000), log10 C (pg cell⁻¹) = LOG_A + B log10 V (µm³).
PROTIST_LOG_A, PROTIST_B = -0.665, 0.939
DIATOM_LOG_A, DIATOM_B = -0.541, 0.811
LARGE_DIATOM_LOG_A, LARGE_DIATOM_B = -0.933, 0.881
#: The volume (µm³) above which the large-diatom relation was fitted.
LARGE_DIATOM_UM3 = 3000.0
#: pg mL⁻¹ to µg L⁻¹.
PG_PER_ML_TO_UG_PER_L = 1e-3


def _power_law(volume_um3: ArrayLike, log_a: float, b: float) -> np.ndarray:
    """10^(log_a + b log10 V) for V > 0; 0 for V = 0; NaN stays NaN. ValueError for a negative volume."""
    volume = np.asarray(volume_um3, dtype=np.float64)
    if np.any(volume < 0):
        raise ValueError(f"biovolumes must be >= 0 µm³; got {volume[volume < 0][:5].tolist()}")
    carbon = np.zeros_like(volume)
    positive = volume > 0
    carbon[positive] = 10.0 ** (log_a + b * np.log10(volume[positive]))
    carbon[np.isnan(volume)] = np.nan
    return carbon


def protist_carbon_pg(volume_um3: ArrayLike) -> np.ndarray:
    """Carbon (pg per cell) of protists other than diatoms, from volume (µm³): C = 10^-0.665 V^0.939."""
    return _power_law(volume_um3, PROTIST_LOG_A, PROTIST_B)


def diatom_carbon_pg(volume_um3: ArrayLike) -> np.ndarray:
    """Carbon (pg per cell) of diatoms of all sizes, from volume (µm³): C = 10^-0.541 V^0.811."""
    return _power_law(volume_um3, DIATOM_LOG_A, DIATOM_B)


def large_diatom_carbon_pg(volume_um3: ArrayLike) -> np.ndarray:
    """Carbon (pg per cell) of diatoms larger than 3000 µm³, from volume (µm³): C = 10^-0.933 V^0.881."""
    return _power_law(volume_um3, LARGE_DIATOM_LOG_A, LARGE_DIATOM_B)


def roi_carbon_pg(volume_um3: ArrayLike, diatom: ArrayLike, rule: DiatomRule = "ifcb-analysis") -> np.ndarray:
    """Carbon (pg) of each ROI from its biovolume (µm³) and whether its class is a diatom (bool, same shape or a
    scalar), by `rule` (this module's docstring)."""
    if rule not in DIATOM_RULES:
        raise ValueError(f"unknown diatom rule {rule!r}; expected one of {list(DIATOM_RULES)}")
    volume = np.asarray(volume_um3, dtype=np.float64)
    is_diatom = np.broadcast_to(np.asarray(diatom, dtype=bool), volume.shape)
    carbon = protist_carbon_pg(volume)
    if rule == "ifcb-analysis":
        large = is_diatom & (volume >= LARGE_DIATOM_UM3)
        carbon[large] = large_diatom_carbon_pg(volume[large])
    elif rule == "large":
        carbon[is_diatom] = large_diatom_carbon_pg(volume[is_diatom])
    elif rule == "all-sizes":
        carbon[is_diatom] = diatom_carbon_pg(volume[is_diatom])
    else:  # "by-size"
        large = is_diatom & (volume > LARGE_DIATOM_UM3)
        small = is_diatom & ~large
        carbon[large] = large_diatom_carbon_pg(volume[large])
        carbon[small] = diatom_carbon_pg(volume[small])
    return carbon


@dataclass(frozen=True)
class BinCarbon:
    """One bin's per-class totals. `classes` names the columns (the model's classes, then `unclassified` when the
    decision had thresholds); `count` (ROIs), `biovolume_um3` (µm³, summed) and `carbon_pg` (pg, summed) are arrays
    (n_columns,); `ml_analyzed` is the bin's volume analysed (mL; NaN when unknown)."""

    classes: tuple[str, ...]
    count: np.ndarray
    biovolume_um3: np.ndarray
    carbon_pg: np.ndarray
    ml_analyzed: float

    def _per_ml(self, values: np.ndarray) -> np.ndarray:
        volume = self.ml_analyzed
        if not np.isfinite(volume) or volume <= 0:
            return np.full(values.shape, np.nan)
        return values / volume

    @property
    def count_per_ml(self) -> np.ndarray:
        """ROIs per mL of each class (NaN when the volume analysed is unknown)."""
        return self._per_ml(self.count.astype(np.float64))

    @property
    def biovolume_um3_per_ml(self) -> np.ndarray:
        """Biovolume concentration of each class, µm³ mL⁻¹ (NaN when the volume analysed is unknown)."""
        return self._per_ml(self.biovolume_um3)

    @property
    def carbon_pg_per_ml(self) -> np.ndarray:
        """Carbon concentration of each class, pg mL⁻¹ (= ng L⁻¹)."""
        return self._per_ml(self.carbon_pg)

    @property
    def carbon_ug_per_l(self) -> np.ndarray:
        """Carbon concentration of each class, µg C L⁻¹: pg mL⁻¹ / 1000, the unit IFCB carbon summaries report."""
        return self.carbon_pg_per_ml * PG_PER_ML_TO_UG_PER_L


def bin_carbon(
    winners: ArrayLike,
    biovolume_um3: ArrayLike,
    classes: Sequence[str],
    diatom: ArrayLike,
    ml_analyzed: float | None,
    *,
    thresholded: bool = False,
    rule: DiatomRule = "ifcb-analysis",
) -> BinCarbon:
    """Per-class count, biovolume and carbon of one bin.

    `winners`: each ROI's class, as indices into `classes` (int, `model.decision.winners`; -1 = unclassified, allowed
    only with `thresholded`) or as class names (`unclassified` likewise); `biovolume_um3`: each ROI's biovolume in µm³
    (`to_microns`'s `Biovolume`); `diatom`: bool per class of `classes` (`TaxonTable.diatom_flags`); `ml_analyzed`: the
    bin's volume analysed in mL (None or NaN: unknown, concentrations NaN). Unclassified ROIs take the protist
    relation, as iRfcb does for a class whose diatom status is unknown. Raises ValueError for mismatched lengths, a
    class index or name outside `classes`, or a negative biovolume."""
    names = tuple(classes)
    n_classes = len(names)
    flags = np.asarray(diatom, dtype=bool)
    if flags.shape != (n_classes,):
        raise ValueError(f"diatom must hold one flag per class ({n_classes}), got shape {flags.shape}")
    index = _class_indices(winners, names)
    volume = np.asarray(biovolume_um3, dtype=np.float64)
    if volume.shape != index.shape:
        raise ValueError(f"{index.size} ROI classes but {volume.size} biovolumes: give one of each per ROI")
    unclassified = index == UNCLASSIFIED
    if unclassified.any() and not thresholded:
        raise ValueError(
            f"{int(unclassified.sum())} ROIs are {UNCLASSIFIED_NAME} but the decision has no thresholds: pass "
            f"thresholded=True for thresholded classes"
        )
    n_columns = n_classes + 1 if thresholded else n_classes
    column = np.where(unclassified, n_classes, index)
    roi_diatom = np.append(flags, False)[column]
    carbon = roi_carbon_pg(volume, roi_diatom, rule)
    known = ~np.isnan(volume)
    count = np.bincount(column, minlength=n_columns).astype(np.int64)
    biovolume = np.bincount(column[known], weights=volume[known], minlength=n_columns)
    carbon_sum = np.bincount(column[known], weights=carbon[known], minlength=n_columns)
    volume_ml = np.nan if ml_analyzed is None else float(ml_analyzed)
    columns = (*names, UNCLASSIFIED_NAME) if thresholded else names
    return BinCarbon(columns, count, biovolume, carbon_sum, volume_ml)


def _class_indices(winners: ArrayLike, classes: tuple[str, ...]) -> np.ndarray:
    """Each ROI's class index (-1 = unclassified) from indices or names; ValueError for one outside `classes`."""
    values = np.asarray(winners)
    if values.ndim != 1:
        values = values.reshape(-1)
    if values.size == 0:
        return np.zeros(0, dtype=np.int64)
    if values.dtype.kind in "US" or values.dtype == object:
        lookup = {name: i for i, name in enumerate(classes)}
        lookup.setdefault(UNCLASSIFIED_NAME, UNCLASSIFIED)
        unknown = sorted({str(v) for v in values if str(v) not in lookup})
        if unknown:
            raise ValueError(f"ROI classes {unknown} are not among the model's classes {list(classes)}")
        return np.array([lookup[str(v)] for v in values], dtype=np.int64)
    if values.dtype.kind not in "iu":
        raise ValueError(f"ROI classes must be class indices (integers) or names, got dtype {values.dtype}")
    index = values.astype(np.int64)
    bad = (index < UNCLASSIFIED) | (index >= len(classes))
    if bad.any():
        raise ValueError(f"class indices {sorted(set(index[bad].tolist()))[:5]} are outside 0..{len(classes) - 1}")
    return index
