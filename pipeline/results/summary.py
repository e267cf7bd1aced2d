"""The summary (bin x class: counts, concentrations, volume, time, and per bin what its header says of the sample)
and the ledger tables, as xarray Datasets.

After every run the client appends the bins it added to both (`ResultStore.consolidate`; rewrites them whole
only after a compaction or a change of thresholds), so the summary shows exactly the complete bins: in append
order in the store, sorted by time by `open_summary` and in the Datasets built here. Concentration is count /
volume analysed (per mL), NaN where the volume is unknown.
A store that decides by thresholds (its bundle's, or those `rethreshold` applied) also gets `counts_thresholded` and
`concentration_thresholded` over the `class_thresholded` dimension (the classes, then `unclassified`), and each
class's `threshold`; its attributes name the thresholds by `thresholds_sha256`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from model.decision import count_columns
from pipeline.ifcb.errors import BinFailure
from pipeline.results.records import BinRecord

#: Root attributes the summary repeats: which model, and which thresholds its thresholded counts follow.
PROVENANCE = ("model_hash", "bundle_hash", "bundle_arch", "thresholds_sha256")
_TIME_ENCODING = {"units": "seconds since 1970-01-01", "dtype": "int64"}
_CONCENTRATION = {"units": "mL-1", "long_name": "count / volume"}
_POSITION = "position from the header (latitude/longitude or gpsLatitude/gpsLongitude; NaN: none)"


def summary_dataset(records: Iterable[BinRecord], info: dict[str, Any]) -> xr.Dataset:
    """The bin x class table of complete bins, sorted by time."""
    classes = list(info.get("classes", []))
    rows = sorted(records, key=lambda record: (record.time, record.bin))
    counts = np.array([row.counts for row in rows], dtype=np.int64).reshape(len(rows), len(classes))
    volume = np.array([np.nan if row.ml_analyzed is None else row.ml_analyzed for row in rows], dtype=np.float64)
    times = pd.to_datetime([row.time for row in rows], utc=True).tz_localize(None).values.astype("datetime64[ns]")
    dataset = xr.Dataset(
        {
            "counts": (("bin", "class"), counts, {"long_name": "ROIs per class (argmax)"}),
            "concentration": (("bin", "class"), _per_ml(counts, volume), _CONCENTRATION),
            "ml_analyzed": ("bin", volume, {"units": "mL", "long_name": "volume analysed (NaN: unknown)"}),
            "n_rois": ("bin", np.array([row.n_rois for row in rows], dtype=np.int64)),
            "part": ("bin", np.array([row.part for row in rows], dtype=object), {"long_name": "partition group"}),
            "roi_offset": (
                "bin",
                np.array([row.roi_offset for row in rows], dtype=np.int64),
                {"long_name": "first row of the bin's ROIs in parts/<part>"},
            ),
            "files_digest": (
                "bin",
                np.array([row.files_digest or 0 for row in rows], dtype=np.int64),
                {"long_name": "fingerprint of the sizes of the bin's files when read (0: unknown)"},
            ),
            **_sample_variables(rows),
        },
        coords={
            "bin": ("bin", np.array([row.bin for row in rows], dtype=object)),
            "class": ("class", np.array(classes, dtype=object)),
            "time": ("bin", times, {"long_name": "bin sample time (UTC)"}),
        },
        attrs={key: info[key] for key in PROVENANCE if key in info},
    )
    dataset["time"].encoding.update(_TIME_ENCODING)
    if info.get("morphology") is not None:  # a store that measures (`pipeline.results.biomass`)
        dataset = dataset.assign(_biomass_variables(rows, len(classes), volume, carbon=bool(info["morphology"].get(
            "diatoms"))))  # fmt: skip
    if info.get("thresholds") is not None:
        dataset = _with_thresholded(dataset, rows, classes, info["thresholds"], volume)
    return dataset


def _sample_variables(rows: list[BinRecord]) -> dict[str, tuple[str, np.ndarray, dict[str, str]]]:
    """The bins' sample metadata from their headers (`pipeline.ifcb.sample`): texts ("" where the header does not
    say), degrees (NaN where it gives no position), and whether each is a bead run."""

    def text(values: Iterable[str | None]) -> np.ndarray:
        return np.array([value or "" for value in values], dtype=object)

    def degrees(values: Iterable[float | None]) -> np.ndarray:
        return np.array([np.nan if value is None else value for value in values], dtype=np.float64)

    return {
        "run_type": ("bin", text(r.run_type for r in rows), {"long_name": "runType of the header (NORMAL, ALT)"}),
        "sample_type": ("bin", text(r.sample_type for r in rows), {"long_name": "sampleType of the header"}),
        "latitude": ("bin", degrees(r.latitude for r in rows), {"units": "degrees_north", "long_name": _POSITION}),
        "longitude": ("bin", degrees(r.longitude for r in rows), {"units": "degrees_east", "long_name": _POSITION}),
        "bead_run": (
            "bin",
            np.array([r.bead_run for r in rows], dtype=bool),
            {"long_name": "bead run by its header, classified as asked (classify --include-beads)"},
        ),
    }


#: The summary's arrays of the bins' biovolume and carbon per class (`_biomass_variables`): only in stores of runs
#: with morphology.
BIOMASS_VARIABLES = ("biovolume", "carbon")


def _biomass_variables(
    rows: list[BinRecord], n_classes: int, volume: np.ndarray, *, carbon: bool
) -> dict[str, tuple[tuple[str, str], np.ndarray, dict[str, str]]]:
    """Biovolume (µm³) and, where the store has a class-to-taxon table (`carbon`), carbon (pg) per class by argmax,
    and the same per mL (µm³ mL⁻¹, pg mL⁻¹) (`pipeline.results.biomass`); NaN rows for bins not measured
    (classified before the store measured)."""
    variables = {}
    for name, units, long_name in (
        ("biovolume", "um3", "summed biovolume of the class's ROIs (argmax)"),
        ("carbon", "pg", "carbon of the class's ROIs (argmax; Menden-Deuer & Lessard 2000)"),
    )[: 2 if carbon else 1]:
        kept = [getattr(row, name) for row in rows]
        values = np.array([[np.nan] * n_classes if v is None else v for v in kept], np.float64).reshape(-1, n_classes)
        variables[name] = (("bin", "class"), values, {"units": units, "long_name": long_name})
        variables[f"{name}_per_ml"] = (
            ("bin", "class"),
            _per_ml(values, volume),
            {"units": f"{units} mL-1", "long_name": f"{long_name}, per mL analysed (NaN: unknown volume)"},
        )
    return variables


#: The summary's arrays of the bins' sample metadata (`_sample_variables`); absent in stores written before them.
SAMPLE_VARIABLES = ("run_type", "sample_type", "latitude", "longitude", "bead_run")


def sample_fields_at(arrays: dict[str, np.ndarray], row: int) -> dict[str, Any]:
    """The `BinRecord` sample fields of one row of the summary's `arrays`: None (False for `bead_run`) where the
    array is absent or the value unknown ("" or NaN)."""

    def text(name: str) -> str | None:
        return str(arrays[name][row]) or None if name in arrays else None

    def degrees(name: str) -> float | None:
        value = float(arrays[name][row]) if name in arrays else float("nan")
        return None if np.isnan(value) else value

    return {
        "run_type": text("run_type"),
        "sample_type": text("sample_type"),
        "latitude": degrees("latitude"),
        "longitude": degrees("longitude"),
        "bead_run": bool(arrays["bead_run"][row]) if "bead_run" in arrays else False,
    }


def biomass_fields_at(arrays: dict[str, np.ndarray], row: int) -> dict[str, list[float] | None]:
    """The `BinRecord` biovolume and carbon of one row of the summary's `arrays`: None where the array is absent
    or the row NaN (a bin not measured)."""
    fields: dict[str, list[float] | None] = {}
    for name in BIOMASS_VARIABLES:
        values = arrays[name][row] if name in arrays else None
        fields[name] = None if values is None or np.isnan(values).all() else [float(v) for v in values]
    return fields


def _with_thresholded(
    dataset: xr.Dataset, rows: list[BinRecord], classes: list[str], thresholds: dict[str, float], volume: np.ndarray
) -> xr.Dataset:
    """The thresholded counts and concentrations, over the classes and `unclassified`, and the thresholds."""
    columns = count_columns(classes, thresholded=True)
    lacking = [row.bin for row in rows if row.counts_thresholded is None]
    if lacking:
        raise ValueError(f"the store decides by thresholds but bins {lacking[:5]} have no thresholded counts")
    counts = np.array([row.counts_thresholded for row in rows], dtype=np.int64).reshape(len(rows), len(columns))
    dims = ("bin", "class_thresholded")
    return dataset.assign(
        counts_thresholded=(dims, counts, {"long_name": "ROIs per class by the store's thresholds"}),
        concentration_thresholded=(dims, _per_ml(counts, volume), _CONCENTRATION),
        threshold=("class", np.array([thresholds[name] for name in classes]), {"long_name": "class threshold"}),
    ).assign_coords(class_thresholded=("class_thresholded", np.array(columns, dtype=object)))


def _per_ml(counts: np.ndarray, volume: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(volume[:, None] > 0, counts / volume[:, None], np.nan)


def ledger_dataset(
    parts: Iterable[str], failures: Iterable[BinFailure], records: Iterable[BinRecord] = ()
) -> xr.Dataset:
    """Partitions the summary includes, failed bins (not complete) with the stage, reason, file versions and kind of
    the failure (bead runs left out are kind "beads"), and the warnings of complete bins (one row per warning:
    `warned_bin`, `warning`).

    The failure table grows by appending, like the summary (`ResultStore.consolidate`): a bin's later row
    supersedes its earlier ones, and rows of bins complete since are not failures any more."""
    failed = sorted(failures, key=lambda failure: failure.bin)
    warned = [(r.bin, text) for r in sorted(records, key=lambda r: r.bin) for text in (r.warnings or ())]
    return xr.Dataset(
        {
            "consolidated_part": ("part", np.array(sorted(parts), dtype=object)),
            "failed_bin": ("failed", np.array([f.bin for f in failed], dtype=object)),
            "failed_stage": ("failed", np.array([f.stage for f in failed], dtype=object)),
            "failed_reason": ("failed", np.array([f.reason for f in failed], dtype=object)),
            "failed_files": ("failed", np.array([f.files for f in failed], dtype=object)),
            "failed_kind": ("failed", np.array([f.kind for f in failed], dtype=object)),
            "warned_bin": ("warned", np.array([bin_id for bin_id, _ in warned], dtype=object)),
            "warning": ("warned", np.array([text for _, text in warned], dtype=object)),
        }
    )
