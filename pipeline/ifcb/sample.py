"""What a bin's header says of its sample: run type, sample type, position, and whether it is a bead run.

Every reader of bins takes these from `read_sample` (through `pipeline.ifcb.bins.bin_meta_from_bytes`), so `ls`,
`classify`, the store and its exports agree. Keys are matched without regard to case (`Header.get`). The rules, with
the readers they follow:

- **run type**: `runType` as written (`NORMAL`; `ALT` for the alternate hardware settings that an instrument
  switches to every `intervalBetweenAlternateHardwareSettings` samples, which analyses keep apart). WHOI's
  ifcb-analysis reads it so (hsosik/ifcb-analysis `IFCB_tools/IFCBxxx_readhdr.m`), taking the last `runType:` line
  where a header has two ("fudge for 2018 IFCB109 cases with two runType entries"), as iRfcb does
  (`R/ifcb_get_runtime.R`, `ifcb_get_runtime`); `Header` keeps the last value of a key written twice.
- **sample type**: `sampleType` as written (IFCBacquire 2 writes `sampleType: Normal`: iRfcb's real test headers,
  `tests/testthat/test_data/test_data.zip`). The IFCB Dashboard stores it as it is at accession (WHOIGit/ifcbdb
  `ifcbdb/dashboard/accession.py`, `Accession.add_bin`).
- **position**: latitude from `latitude`, else `gpsLatitude`; longitude from `longitude`, else `gpsLongitude`, each
  a number, both or neither: the Dashboard's rule at accession (`add_bin`: `headers.get('latitude') or
  headers.get('gpsLatitude')`, a location only when both parse as numbers). Ship-borne instruments with a GPS feed
  write `gpsLatitude: 58.25983722` / `gpsLongitude: 11.43537362` (iRfcb's test header
  `D20230810T113059_IFCB134.hdr`; iRfcb reads the same two keys, `R/ifcb_read_hdr_data.R`). A blank value, `NaN`
  or `N/A` (which iRfcb's `read_hdr_file` turns into NA) is unknown: no position. A value that is not a number, or
  a latitude outside -90..90 or a longitude outside -180..180 (no place on Earth), is never stored as a position:
  the bin has none, and a warning says which value was refused. One coordinate without the other is no position.
- **bead run**: a bead-calibration run is not plankton. iRfcb's QC flags a sample `is_bead_run` when its header's
  `runBeads` is `true` in any letter case or its `sampleType` contains `bead` in any letter case
  (`R/ifcb_qc_sample.R`, `qc_one_sample`); acquisition software writes `runBeads: True` / `False`. `runBeads: 1`
  is taken as true too: the same boolean written as a number, as pyifcb reads header values as Python literals
  (joefutrelle/pyifcb `ifcb/data/hdr.py`, `parse_hdr`: `ast.literal_eval`), where `1` is as true as `True`.
  Older headers (quoted lines) have none of these keys: no bin of theirs is a bead run by its header (their bead
  runs sit in `beads/` folders, which listings leave out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.ifcb.hdr import Header

#: Header texts that mean "no value": blank, and what iRfcb's reader turns into NA.
_UNKNOWN = frozenset({"", "n/a", "nan", "na"})
#: `runBeads` values that mean true (compared in lower case).
_TRUE = frozenset({"true", "1"})
#: Keys of each coordinate, in the order the Dashboard takes them, and its range.
_LATITUDE = (("latitude", "gpsLatitude"), 90.0)
_LONGITUDE = (("longitude", "gpsLongitude"), 180.0)


@dataclass(frozen=True)
class SampleInfo:
    """A bin's sample metadata (None: the header does not say) and whether it is a bead run, with the reason."""

    run_type: str | None = None
    sample_type: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    bead_run: bool = False
    bead_reason: str = ""  # what in the header makes it a bead run ("" when it is none, or when not known)
    warnings: tuple[str, ...] = ()  # header values refused (a position out of range)

    @property
    def has_position(self) -> bool:
        return self.latitude is not None and self.longitude is not None


def read_sample(header: Header) -> SampleInfo:
    """The sample metadata of a parsed header, by the rules of this module's docstring."""
    sample_type = _text(header, "sampleType")
    latitude, lat_warning = _coordinate(header, *_LATITUDE)
    longitude, lon_warning = _coordinate(header, *_LONGITUDE)
    if latitude is None or longitude is None:
        latitude = longitude = None
    reason = _bead_reason(header, sample_type)
    return SampleInfo(
        run_type=_text(header, "runType"),
        sample_type=sample_type,
        latitude=latitude,
        longitude=longitude,
        bead_run=bool(reason),
        bead_reason=reason,
        warnings=tuple(warning for warning in (lat_warning, lon_warning) if warning),
    )


def _text(header: Header, key: str) -> str | None:
    """The value of `key`, or None where it is absent or says nothing (`_UNKNOWN`)."""
    text = header.get(key)
    return None if text is None or text.strip().casefold() in _UNKNOWN else text.strip()


def _coordinate(header: Header, keys: tuple[str, ...], limit: float) -> tuple[float | None, str]:
    """The first of `keys` that has a value, as degrees within -limit..limit, and a warning where a value was refused
    (not a number, or out of range); (None, "") where none has a value."""
    for key in keys:
        text = _text(header, key)
        if text is None:
            continue
        try:
            value = float(text)
        except ValueError:
            return None, f"the header's {key} {text!r} is not a number: the bin has no position"
        if math.isnan(value):
            return None, ""
        if not -limit <= value <= limit:
            return None, f"the header's {key} {text} is outside -{limit:g}..{limit:g}: the bin has no position"
        return value, ""
    return None, ""


def _bead_reason(header: Header, sample_type: str | None) -> str:
    """Why the header makes the bin a bead run (iRfcb's `is_bead_run`), or "" when it does not."""
    run_beads = _text(header, "runBeads")
    if run_beads is not None and run_beads.casefold() in _TRUE:
        return f"bead run: the header says runBeads: {run_beads}"
    if sample_type is not None and "bead" in sample_type.casefold():
        return f"bead run: the header says sampleType: {sample_type}"
    return ""
