"""Volume analysed (mL): the denominator of every concentration.

Reproduces the community's computation (the IFCB Dashboard and pyifcb agree on it) step by step: v2 from the inhibit
and run time columns (flow 0.25 mL/min), v1 from the trigger-open and frame-grab times (syringe 5/48000 mL per step
at 40 steps/s = 1/240 mL/s, minimum processing time 0.073 s per trigger, 0.05 s for IFCB5 from 2015-06-01).
Undefined volumes are None, never 0, so that a concentration is never silently infinite or zero; so is a volume that
is not positive (a header whose `runTime` is not above its `inhibitTime`, clocks that went backwards): no sample
was looked at, and a zero or negative denominator would give infinite or negative concentrations.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from pipeline.ifcb.adc import AdcSchemaV1, AdcTable
from pipeline.ifcb.hdr import Header
from pipeline.ifcb.identifiers import BinId

FLOW_ML_PER_MIN = 0.25  # v2 instruments
SYRINGE_ML_PER_S = 1 / 240  # v1: 5/48000 mL per step at 40 steps/s
MIN_PROC_S = 0.073  # v1 minimum processing time per trigger
MIN_PROC_IFCB5_LATE_S = 0.05  # IFCB5 from 2015-06-01 on
IFCB5_LATE_FROM = datetime(2015, 6, 1, tzinfo=UTC)


def ml_analyzed(bin_id: BinId, header: Header, adc: AdcTable) -> float | None:
    """Volume analysed by the bin in mL (> 0), or None when the files do not define a positive one."""
    if adc.n_rows == 0:
        return None
    volume = _ml_analyzed_v1(bin_id, adc) if bin_id.schema == "v1" else _ml_analyzed_v2(header, adc)
    return volume if volume is not None and np.isfinite(volume) and volume > 0 else None


def _ml_from_header(header: Header) -> float | None:
    run, inhibit = header.run_time, header.inhibit_time
    if run is None or inhibit is None:
        return None
    return FLOW_ML_PER_MIN * (run - inhibit) / 60


def _ml_analyzed_v2(header: Header, adc: AdcTable) -> float | None:
    s = adc.schema  # AdcSchemaV2, or its columns as the header's ADCFileFormat places them
    n = adc.n_rows
    if not (adc.has(s.INHIBIT_TIME) and adc.has(s.RUN_TIME) and adc.has(s.ADC_TIME)) or n == 1:
        return _ml_from_header(header)
    inh, run, adc_time = adc.column(s.INHIBIT_TIME), adc.column(s.RUN_TIME), adc.column(s.ADC_TIME)
    if not inh.any():
        return None
    diffs = np.diff(inh)
    good = np.ones(n, dtype=bool)
    good[1:] = (inh[1:] > 0) & (diffs > -0.1) & (diffs < 5)
    step = _most_frequent(np.round(np.diff(inh[good]), 4))
    if run[1] - adc_time[1] > 10:
        run_offset, inhibit_offset = run[1] - adc_time[1], inh[1] + 2 * step
    else:
        run_offset = inhibit_offset = 0.0
    if good.all():
        inhibit = inh[n - 1] - inhibit_offset
    else:
        last_good = int(np.flatnonzero(good)[-1])
        inhibit = inh[last_good] + (n - int(good.sum())) * step - inhibit_offset
    run_time = run[n - 1] - run_offset
    m = min(n, 50)
    second = adc_time[n - 1] + float(np.median(run[:m] - adc_time[:m])) - run_offset
    if abs(run_time - second) > 0.2:
        run_time = second
    return float(FLOW_ML_PER_MIN * (run_time - inhibit) / 60)


def _most_frequent(values: np.ndarray) -> float:
    """The most frequent value (the smallest on a tie); 0 when there is none."""
    if values.size == 0:
        return 0.0
    unique, counts = np.unique(values, return_counts=True)
    return float(unique[np.argmax(counts)])


def _ml_analyzed_v1(bin_id: BinId, adc: AdcTable) -> float:
    s = AdcSchemaV1
    _, first_rows = np.unique(adc.column(s.TRIGGER), return_index=True)
    rows = adc.values[np.sort(first_rows)]
    opened, grabbed = rows[:, s.TRIGGER_OPEN_TIME].copy(), rows[:, s.FRAME_GRAB_TIME].copy()
    opened[opened < 0] += 86400  # bins that span midnight
    grabbed[grabbed < 0] += 86400
    min_proc = MIN_PROC_IFCB5_LATE_S if bin_id.instrument_number == 5 and bin_id.time >= IFCB5_LATE_FROM else MIN_PROC_S
    processing = np.maximum(opened[1:] - grabbed[:-1], min_proc)
    look_time = grabbed[-1] - processing.sum() - min_proc
    return float(look_time * SYRINGE_ML_PER_S)
