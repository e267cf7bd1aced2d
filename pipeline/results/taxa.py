"""The class-to-taxon table: what each class of a model is, in the World Register of Marine Species (WoRMS) terms that
taxonomic exports (SeaBASS, `pipeline.results.seabass`) and carbon estimates (`pipeline.results.carbon`) need.

The table is a CSV file the user writes, one row per class, with exactly these columns (any order):

- `class`: the class name, as the model's bundle names it (case and spelling exact);
- `scientificName`: the WoRMS name at the lowest level that matches the class (`Bacillariophyceae`); may be empty for
  a class that is no taxon, such as detritus or a catch-all of unidentifiable images;
- `aphia_id`: the WoRMS AphiaID of that name, a positive integer (`148899`), or empty for a class that is no taxon.
  The life-science identifier written to exports is `urn:lsid:marinespecies.org:taxname:<aphia_id>`, the form of
  SeaBASS's `scientificNameID` fields (SeaBASS standard fields list: "urn:lsid:marinespecies.org:taxname:233015 ...
  233015 represents the taxon identifier (AphiaID) in WoRMS");
- `diatom`: `true` or `false` (any letter case): whether Menden-Deuer & Lessard's diatom relation applies to the
  class's ROIs when carbon is estimated from their biovolume (WHOI's ifcb-analysis and iRfcb decide it per class in
  the same way: `biovol2carbon(biovol, diatom_flag)`, iRfcb's `ifcb_is_diatom`).

Lines whose first non-blank character is `#` are comments (for the source of each identifier, say), and blank lines
are skipped; the first other line is the header. Errors name the file, the line and the class: unknown or missing
columns, a row with the wrong number of cells, an empty class, a class listed twice, an AphiaID that is not a
positive integer, an AphiaID without a scientific name, a diatom flag that is not true/false, and (when the model's
classes are given) classes of the model that the table leaves out. Classes in the table that the model lacks are
allowed: one table can serve several models.

`docs/examples/utopia-taxa.csv` is the table for ifcbUTOPIA's ten classes.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np

#: The table's columns, in the order the example file writes them.
COLUMNS = ("class", "scientificName", "aphia_id", "diatom")
#: The WoRMS life-science identifier of an AphiaID, as SeaBASS's `scientificNameID_*` fields take it.
WORMS_LSID = "urn:lsid:marinespecies.org:taxname:{aphia_id}"
_TRUE = frozenset({"true"})
_FALSE = frozenset({"false"})


@dataclass(frozen=True)
class Taxon:
    """One class of the table: its name, WoRMS name and AphiaID (None for a class that is no taxon), and whether the
    diatom carbon relation applies."""

    class_name: str
    scientific_name: str | None
    aphia_id: int | None
    diatom: bool

    @property
    def scientific_name_id(self) -> str | None:
        """`urn:lsid:marinespecies.org:taxname:<AphiaID>`, or None for a class that is no taxon."""
        return None if self.aphia_id is None else WORMS_LSID.format(aphia_id=self.aphia_id)


@dataclass(frozen=True)
class TaxonTable:
    """The table, in file order; look classes up with `table[name]` or `table.taxa_for(classes)`."""

    taxa: tuple[Taxon, ...]
    source: str = "<table>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_class", {taxon.class_name: taxon for taxon in self.taxa})

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(taxon.class_name for taxon in self.taxa)

    def __contains__(self, class_name: object) -> bool:
        return class_name in self._by_class  # type: ignore[attr-defined]

    def __getitem__(self, class_name: str) -> Taxon:
        try:
            return self._by_class[class_name]  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(f"class {class_name!r} is not in the taxon table {self.source}") from None

    def __iter__(self) -> Iterator[Taxon]:
        return iter(self.taxa)

    def __len__(self) -> int:
        return len(self.taxa)

    def check_classes(self, classes: Sequence[str]) -> None:
        """Raise ValueError naming every class of `classes` (a model's) that the table leaves out."""
        missing = [name for name in classes if name not in self]
        if missing:
            raise ValueError(
                f"the taxon table {self.source} has no row for the model's classes {missing}: add a row for each "
                f"(class,scientificName,aphia_id,diatom; scientificName and aphia_id empty for a class that is no "
                f"taxon)"
            )

    def taxa_for(self, classes: Sequence[str]) -> list[Taxon]:
        """The taxa of `classes`, in that order (ValueError naming the classes the table lacks)."""
        self.check_classes(classes)
        return [self[name] for name in classes]

    def diatom_flags(self, classes: Sequence[str]) -> np.ndarray:
        """Bool array (n_classes,): whether each of `classes` takes the diatom carbon relation."""
        return np.array([taxon.diatom for taxon in self.taxa_for(classes)], dtype=bool)


def read_taxon_table(
    url: str | os.PathLike[str], classes: Sequence[str] | None = None, storage_options: dict[str, Any] | None = None
) -> TaxonTable:
    """Read and validate the table at `url` (a path or any fsspec URL); with `classes` (a model's), check that each
    has a row. Raises ValueError with the line and class at fault."""
    source = os.fspath(url)
    with fsspec.open(source, "rt", encoding="utf-8", **(storage_options or {})) as f:
        text = f.read()
    return parse_taxon_table(text, classes=classes, source=source)


def parse_taxon_table(text: str, classes: Sequence[str] | None = None, source: str = "<table>") -> TaxonTable:
    """Validate the table's CSV `text` (the rules of this module's docstring); `source` names it in errors."""
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if _is_content(line)]
    if not lines:
        raise ValueError(f"the taxon table {source} is empty: expected a header line {','.join(COLUMNS)}")
    header_number, header_line = lines[0]
    header = [cell.strip() for cell in _cells(header_line)]
    _check_header(header, source, header_number)
    position = {name: header.index(name) for name in COLUMNS}
    taxa: list[Taxon] = []
    first_line: dict[str, int] = {}
    for number, line in lines[1:]:
        cells = [cell.strip() for cell in _cells(line)]
        where = f"{source} line {number}"
        if len(cells) != len(header):
            raise ValueError(f"{where} has {len(cells)} cells, the header {len(header)} ({','.join(header)}): {line!r}")
        row = {name: cells[index] for name, index in position.items()}
        taxon = _taxon(row, where)
        if taxon.class_name in first_line:
            raise ValueError(
                f"{where}: class {taxon.class_name!r} is listed twice (first on line {first_line[taxon.class_name]})"
            )
        first_line[taxon.class_name] = number
        taxa.append(taxon)
    table = TaxonTable(tuple(taxa), source=source)
    if classes is not None:
        table.check_classes(classes)
    return table


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _cells(line: str) -> list[str]:
    return next(csv.reader([line]))


def _check_header(header: list[str], source: str, number: int) -> None:
    where = f"the taxon table {source} (header, line {number})"
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise ValueError(f"{where} names the columns {duplicated} twice")
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        raise ValueError(f"{where} has unknown columns {unknown}; the columns are {list(COLUMNS)}")
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        raise ValueError(f"{where} lacks the columns {missing}; the columns are {list(COLUMNS)}")


def _taxon(row: dict[str, str], where: str) -> Taxon:
    class_name = row["class"]
    if not class_name:
        raise ValueError(f"{where}: the class is empty")
    label = f"{where} (class {class_name!r})"
    scientific_name = row["scientificName"] or None
    aphia_id = _aphia_id(row["aphia_id"], label)
    if aphia_id is not None and scientific_name is None:
        raise ValueError(f"{label}: AphiaID {aphia_id} has no scientificName; give the WoRMS name it identifies")
    return Taxon(class_name, scientific_name, aphia_id, _diatom(row["diatom"], label))


def _aphia_id(text: str, label: str) -> int | None:
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or int(text) <= 0:
        raise ValueError(
            f"{label}: aphia_id {text!r} is not a positive integer (a WoRMS AphiaID such as 148899; leave it empty "
            f"for a class that is no taxon)"
        )
    return int(text)


def _diatom(text: str, label: str) -> bool:
    value = text.casefold()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{label}: diatom {text!r} is neither true nor false")
