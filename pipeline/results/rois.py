"""Every classified ROI of a store as one lazy xarray Dataset: the per-ROI questions in one expression.

    rois = open_rois("s3://bucket/scores/m.zarr", start="2024-06-01", end="2024-07-01")
    sure = rois.isel(roi=(rois.scores.sel({"class": "Diatom"}) > 0.9).values)   # June's ROIs, Diatom above 0.9
    sure.bin.values, sure.roi_number.values                                      # which ROIs, to look at them

The Dataset concatenates the store's partitions (`parts/<part>`, each a zarr group of ROI-level arrays) in time
order: `scores` (roi, class) with coordinates `class`, in a store made with `classify --embeddings` also
`embeddings` (roi, feature) float16 (the model's penultimate-layer features), and per ROI `bin`, `roi_number` and
`time`. Arrays stay lazy
(dask), so only what an expression needs is read; `start`/`end` open only the partitions of that time window.
"""

from __future__ import annotations

import warnings
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from pipeline.results.store import ResultStore, part_key


def open_rois(
    url: str,
    storage_options: dict[str, Any] | None = None,
    *,
    start: str | datetime | None = None,
    end: str | datetime | None = None,
) -> xr.Dataset:
    """The store's ROIs (bins sampled in [start, end) when given) as one Dataset over the `roi` dimension."""
    store = ResultStore(url, storage_options)
    ledger = store.ledger()
    low = pd.Timestamp(start, tz="UTC") if start is not None else None
    high = pd.Timestamp(end, tz="UTC") if end is not None else None
    parts: dict[str, pd.Timestamp] = {}
    for record in ledger.bins.values():
        moment = pd.Timestamp(record.time)
        if (low is None or moment >= low) and (high is None or moment < high) and record.n_rois:
            parts[record.part] = min(moment, parts.get(record.part, moment))
    classes = list((store.info() or {}).get("classes", []))
    if not parts:
        return xr.Dataset(coords={"class": ("class", classes)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # zarr's notes on string dtypes
        pieces = [
            xr.open_zarr(url, group=part_key(part), consolidated=False, storage_options=storage_options or None)
            for part in sorted(parts, key=parts.__getitem__)
        ]
    rois = xr.concat(pieces, dim="roi", data_vars="all").set_coords(["bin", "roi_number", "time"])
    rois = rois.assign_coords({"class": ("class", classes)})
    if low is None and high is None:
        return rois
    times = pd.DatetimeIndex(rois.time.values)  # partitions may reach beyond the window: keep its ROIs only
    keep = np.ones(len(times), dtype=bool)
    if low is not None:
        keep &= times >= low.tz_localize(None)
    if high is not None:
        keep &= times < high.tz_localize(None)
    return rois.isel(roi=np.flatnonzero(keep))
