"""Class remaps: merge or rename a model's classes into the classes a study reports, from a `from,to` CSV.

The CSV has a header row `from,to`, then one row per source class (blank lines are ignored). Several classes may map
to one target (many-to-one); one class mapped to two different targets is an error naming both lines. Every row must
name a class of the model (a typo must not pass silently), and every class of the model must have a row, unless
unmapped classes are kept as they are (`keep_unmapped`). A target named `unclassified` sends its classes to the
unclassified pseudo-class; ROIs already unclassified by thresholds stay unclassified.

Target classes are ordered by first appearance when the model's classes are walked in their own order, so the
result does not depend on the order of the CSV's rows, and a remap that renames nothing keeps the model's order.
A remap is identified by its CSV's URL and sha256, recorded with whatever it produced.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fsspec
import numpy as np

from model.decision import UNCLASSIFIED, UNCLASSIFIED_NAME


@dataclass(frozen=True)
class Remap:
    """A parsed remap CSV: source class -> target class, in file order, and where it came from."""

    mapping: dict[str, str]
    url: str
    sha256: str

    @property
    def description(self) -> str:
        """Short and stable: the same CSV bytes at the same URL always read the same."""
        return f"{self.url} (sha256 {self.sha256[:16]})"

    def to_dict(self) -> dict[str, str]:
        return {"url": self.url, "sha256": self.sha256}

    def record(self, class_map: ClassMap) -> dict[str, str]:
        """What a report, export or comparison records of this remap as it applied it (`apply`'s class map)."""
        return {**self.to_dict(), "description": class_map.description}

    def apply(self, classes: Sequence[str], keep_unmapped: bool = False) -> ClassMap:
        """The class map of this remap over a model's ordered classes."""
        unknown = [name for name in self.mapping if name not in classes]
        if unknown:
            raise ValueError(f"remap {self.url} names {unknown}, which are not classes ({', '.join(classes)})")
        unmapped = [name for name in classes if name not in self.mapping]
        if unmapped and not keep_unmapped:
            raise ValueError(
                f"remap {self.url} has no row for {unmapped}; add them, or keep unmapped classes as they are"
            )
        targets = [self.mapping.get(name, name) for name in classes]
        return ClassMap.from_targets(classes, targets, self.description + (", unmapped kept" if unmapped else ""))


@dataclass(frozen=True, eq=False)
class ClassMap:
    """Source classes -> target classes: `index[i]` is the target of source class i, or -1 (unclassified)."""

    source: tuple[str, ...]
    target: tuple[str, ...]
    index: np.ndarray
    description: str

    @classmethod
    def from_targets(cls, source: Sequence[str], targets: Sequence[str], description: str) -> ClassMap:
        """From each source class's target name; targets ordered by first appearance, `unclassified` excluded."""
        order = list(dict.fromkeys(name for name in targets if name != UNCLASSIFIED_NAME))
        position = {name: i for i, name in enumerate(order)}
        index = np.array([position.get(name, UNCLASSIFIED) for name in targets], dtype=np.int64)
        return cls(tuple(source), tuple(order), index, description)

    @classmethod
    def identity(cls, classes: Sequence[str]) -> ClassMap:
        return cls.from_targets(classes, classes, "none")

    @property
    def sends_to_unclassified(self) -> bool:
        return bool(np.any(self.index == UNCLASSIFIED))

    def columns(self, thresholded: bool) -> list[str]:
        """Names of `remap_counts`'s output columns, for counts with (`thresholded`) or without a trailing column."""
        extra = [UNCLASSIFIED_NAME] if thresholded or self.sends_to_unclassified else []
        return [*self.target, *extra]


def read_remap(url: str, storage_options: dict[str, Any] | None = None) -> Remap:
    """Read and check a `from,to` remap CSV from a local path or any fsspec URL."""
    with fsspec.open(url, "rb", **(storage_options or {})) as f:
        data = f.read()
    return _parse(data, _without_credentials(url))


def remap_winners(won: np.ndarray, class_map: ClassMap) -> np.ndarray:
    """Winner indices into the source classes (-1: unclassified) -> indices into the targets (-1 stays -1)."""
    won = np.asarray(won, dtype=np.int64)
    n_source = len(class_map.source)
    if won.size and (won.min() < UNCLASSIFIED or won.max() >= n_source):
        raise ValueError(f"winner indices must lie in [-1, {n_source})")
    return np.append(class_map.index, UNCLASSIFIED)[won]  # -1 picks the appended -1


def remap_counts(counts: np.ndarray, class_map: ClassMap) -> np.ndarray:
    """Counts (..., sources[+1 trailing unclassified]) -> (..., `class_map.columns(...)`), summing merged classes."""
    counts = np.asarray(counts)
    n_source = len(class_map.source)
    if counts.shape[-1] not in (n_source, n_source + 1):
        raise ValueError(f"counts have {counts.shape[-1]} columns; the remap has {n_source} source classes")
    thresholded = counts.shape[-1] == n_source + 1
    columns = class_map.columns(thresholded)
    into = np.where(class_map.index == UNCLASSIFIED, len(columns) - 1, class_map.index)
    if thresholded:
        into = np.append(into, len(columns) - 1)
    summing = np.zeros((counts.shape[-1], len(columns)), dtype=counts.dtype)
    summing[np.arange(len(into)), into] = 1
    return counts @ summing


def _parse(data: bytes, url: str) -> Remap:
    text = data.decode("utf-8-sig")  # spreadsheets often save a byte-order mark
    reader = csv.reader(io.StringIO(text))
    mapping: dict[str, str] = {}
    line_of: dict[str, int] = {}
    header_seen = False
    for row in reader:
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        where = f"{url}, line {reader.line_num}"
        if not header_seen:
            if [cell.lower() for cell in cells] != ["from", "to"]:
                raise ValueError(f"{where}: the first row must be the header 'from,to', got {','.join(row)!r}")
            header_seen = True
            continue
        if len(cells) != 2 or not all(cells):
            raise ValueError(f"{where}: expected 'from,to' with two class names, got {','.join(row)!r}")
        source, target = cells
        if source in mapping and mapping[source] != target:
            raise ValueError(
                f"{where}: {source!r} is mapped to {target!r}, but to {mapping[source]!r} on line {line_of[source]}"
            )
        mapping[source] = target
        line_of.setdefault(source, reader.line_num)
    if not header_seen:
        raise ValueError(f"{url}: empty remap; expected a header 'from,to' and one row per class")
    return Remap(mapping, url, hashlib.sha256(data).hexdigest())


def _without_credentials(url: str) -> str:
    """The URL as recorded: any user:password@ part removed (it would land in reports and exports)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
