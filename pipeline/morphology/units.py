"""Pixel units to microns: a morphology table (`features.morphology_table`) converted with an instrument's
calibration.

The calibration is the instrument's pixels per µm. Values in WHOI's MATLAB lineage (ifcb-analysis and the
scripts built on it), written there as `micron_factor` = µm per pixel:

- `PIXELS_PER_MICRON_CLASSIC` = 3.4: `micron_factor = 1/3.4` of the summary scripts (e.g. the biovolume
  summaries of hsosik/ifcb-analysis and its users' copies, such as IFCB104's); also the default of the
  community's R package iRfcb (`scale_micron_factor = 1/3.4`). It holds for the earlier instruments' optics
  (IFCB 1-14 era).
- `PIXELS_PER_MICRON_NEWER` = 2.77: `micron_factor = 1/2.77` of ifcb-analysis's `summarize_biovol_class_h5`
  (written beside the older 1/3.4, commented out), for newer instruments' optics.

Neither is universal: each instrument has its own calibration (beads of known size); pass it when known.
"""

from __future__ import annotations

import numpy as np

from pipeline.morphology.columns import COLUMNS

PIXELS_PER_MICRON_CLASSIC = 3.4
PIXELS_PER_MICRON_NEWER = 2.77
#: The calibration of every instrument a run is given none for: the classic one (the summary scripts' and iRfcb's).
DEFAULT_CALIBRATION = {"*": PIXELS_PER_MICRON_CLASSIC}

#: The power of length of each column: 1 = µm, 2 = µm^2, 3 = µm^3, 0 = no unit.
DIMENSION = {
    "Area": 2, "Biovolume": 3, "ConvexArea": 2, "ConvexPerimeter": 1, "Eccentricity": 0, "EquivDiameter": 1,
    "MajorAxisLength": 1, "MinorAxisLength": 1, "Perimeter": 1, "RepresentativeWidth": 1, "SurfaceArea": 2,
    "numBlobs": 0, "summedArea": 2, "summedBiovolume": 3, "summedConvexArea": 2, "summedConvexPerimeter": 1,
    "summedMajorAxisLength": 1, "summedMinorAxisLength": 1, "summedPerimeter": 1, "summedSurfaceArea": 2,
}  # fmt: skip
assert set(DIMENSION) == set(COLUMNS)


def to_microns(table: np.ndarray, pixels_per_micron: float) -> np.ndarray:
    """A copy of `table` (structured array with some or all of `features.COLUMNS`, pixel units) in µm, µm^2 and
    µm^3: each column divided by `pixels_per_micron` to the power of its `DIMENSION`; Eccentricity and numBlobs
    unchanged. Fields not in `DIMENSION` are copied as they are.

    Raises ValueError when `pixels_per_micron` is not a positive finite number."""
    scale = float(pixels_per_micron)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"pixels_per_micron must be a positive number, got {pixels_per_micron!r}")
    out = table.copy()
    for name in table.dtype.names or ():
        power = DIMENSION.get(name, 0)
        if power:
            out[name] = table[name] / scale**power
    return out


def parse_calibration(text: str) -> dict[str, float]:
    """A calibration as `classify --pixels-per-micron` takes it: one number for every instrument (`3.4`), or per
    instrument by its serial number (`IFCB13=3.4,IFCB125=2.77`, `13=3.4`), with `*=` for the others. Returns
    {"*": value} or {"13": value, ..., "*": value} (serial numbers as text: the store keeps it as JSON).

    Raises ValueError naming the item that is not a positive number or not an instrument."""
    calibration: dict[str, float] = {}
    for item in (part.strip() for part in str(text).split(",")):
        if not item:
            continue
        name, _, value = item.rpartition("=")
        key = "*" if name.strip() in ("", "*") else name.strip().upper().removeprefix("IFCB")
        if key != "*" and not key.isdigit():
            raise ValueError(f"{item!r}: an instrument is IFCBn or its serial number n (or * for every other)")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not np.isfinite(number) or number <= 0:
            raise ValueError(f"{item!r}: pixels per micron must be a positive number")
        calibration[key if key == "*" else str(int(key))] = number
    if not calibration:
        raise ValueError("no calibration given: a number of pixels per micron, or INSTRUMENT=VALUE pairs")
    return calibration


def pixels_per_micron(calibration: dict[str, float], instrument_number: int) -> float:
    """The instrument's pixels per µm from a calibration (`parse_calibration`): its own, else `*`'s.

    Raises KeyError naming the instrument when the calibration has neither."""
    value = calibration.get(str(int(instrument_number)), calibration.get("*"))
    if value is None:
        raise KeyError(f"the calibration names no value for IFCB{instrument_number} and no default (*=)")
    return float(value)
