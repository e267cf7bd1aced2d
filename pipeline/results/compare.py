"""Comparing two models' results, ROI by ROI: what changed, where, and into which classes.

Input is a stream of per-bin records (each bin's ROI numbers and winner indices from result A and from result B),
accumulated one bin at a time so two stores can be compared bin by bin without holding an archive in memory. Both
sides are mapped to one common class list: A's classes (after A's remap), then B's classes that A lacks (after B's
remap), then `unclassified` when either side has unclassified ROIs (below a threshold, or remapped there).

ROIs are matched by bin and ROI number. Agreement is the fraction of matched ROIs given the same class on both sides;
ROIs that only one side holds are counted and reported, never silently dropped. Per-class totals and the bins whose
counts changed most (L1 distance between the two per-class count vectors) use every ROI of each side; the confusion
table (rows A, columns B) uses the matched ROIs.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from fsspec.core import url_to_fs

from model.decision import UNCLASSIFIED, UNCLASSIFIED_NAME
from pipeline.results.remap import ClassMap


@dataclass(frozen=True)
class BinWinners:
    """One bin as both results see it: ROI numbers and winner indices (-1: unclassified) into each side's classes."""

    bin: str
    rois_a: np.ndarray
    winners_a: np.ndarray
    rois_b: np.ndarray
    winners_b: np.ndarray


@dataclass
class Comparison:
    """The outcome of a comparison; `to_dict()` is what `compare --json` prints."""

    classes: list[str]
    bins: int
    rois_a: int
    rois_b: int
    matched: int
    agreeing: int
    only_a: int
    only_b: int
    totals_a: dict[str, int]
    totals_b: dict[str, int]
    confusion: np.ndarray  # matched ROIs, rows: class in A, columns: class in B, both in `classes` order
    changed_bins: list[dict[str, Any]]
    unmatched_bins: list[dict[str, Any]]
    bins_with_unmatched: int
    remap_a: str
    remap_b: str

    @property
    def agreement(self) -> float | None:
        """Fraction of matched ROIs with the same class on both sides; None when no ROI matched."""
        return self.agreeing / self.matched if self.matched else None

    def absorbed(self) -> dict[str, list[dict[str, Any]]]:
        """For each class of A with matched ROIs: the classes of B they went to, most first, with fractions."""
        summary = {}
        for i, name in enumerate(self.classes):
            row = self.confusion[i]
            total = int(row.sum())
            if total == 0:
                continue
            order = sorted(np.flatnonzero(row), key=lambda j: (-row[j], j))
            summary[name] = [
                {"class": self.classes[j], "rois": int(row[j]), "fraction": float(row[j] / total)} for j in order
            ]
        return summary

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "bins": self.bins,
            "rois_a": self.rois_a,
            "rois_b": self.rois_b,
            "matched": self.matched,
            "agreeing": self.agreeing,
            "agreement": self.agreement,
            "only_a": self.only_a,
            "only_b": self.only_b,
            "bins_with_unmatched": self.bins_with_unmatched,
            "unmatched_bins": self.unmatched_bins,
            "totals_a": self.totals_a,
            "totals_b": self.totals_b,
            "confusion": self.confusion.tolist(),
            "absorbed": self.absorbed(),
            "changed_bins": self.changed_bins,
            "remap_a": self.remap_a,
            "remap_b": self.remap_b,
        }


class Comparer:
    """Accumulates a comparison bin by bin: `add` each bin once, then `result`."""

    def __init__(
        self,
        classes_a: Sequence[str],
        classes_b: Sequence[str],
        map_a: ClassMap | None = None,
        map_b: ClassMap | None = None,
        top_n: int = 10,
    ) -> None:
        self.map_a = _checked(map_a, classes_a, "A")
        self.map_b = _checked(map_b, classes_b, "B")
        self.top_n = top_n
        self._classes = list(dict.fromkeys([*self.map_a.target, *self.map_b.target]))
        self._lut_a, self._lut_b = (_lookup(m, self._classes) for m in (self.map_a, self.map_b))
        width = len(self._classes) + 1  # the last is unclassified
        self._confusion = np.zeros((width, width), dtype=np.int64)
        self._totals_a = np.zeros(width, dtype=np.int64)
        self._totals_b = np.zeros(width, dtype=np.int64)
        self._bins = self._matched = self._only_a = self._only_b = self._bins_with_unmatched = 0
        self._changed: list[tuple[int, str, np.ndarray, int, int]] = []
        self._unmatched: list[tuple[int, str, int, int]] = []

    def add(self, record: BinWinners) -> None:
        """Fold one bin in."""
        rois_a, a = _side(record.bin, "A", record.rois_a, record.winners_a, self._lut_a)
        rois_b, b = _side(record.bin, "B", record.rois_b, record.winners_b, self._lut_b)
        width = len(self._totals_a)
        counts_a, counts_b = np.bincount(a, minlength=width), np.bincount(b, minlength=width)
        self._totals_a += counts_a
        self._totals_b += counts_b
        _, in_a, in_b = np.intersect1d(rois_a, rois_b, assume_unique=True, return_indices=True)
        self._confusion += np.bincount(a[in_a] * width + b[in_b], minlength=width * width).reshape(width, width)
        only_a, only_b = len(rois_a) - len(in_a), len(rois_b) - len(in_b)
        self._bins += 1
        self._matched += len(in_a)
        self._only_a += only_a
        self._only_b += only_b
        if only_a or only_b:
            self._bins_with_unmatched += 1
            self._unmatched = _keep_top(self._unmatched, (-(only_a + only_b), record.bin, only_a, only_b), self.top_n)
        change = counts_b - counts_a
        distance = int(np.abs(change).sum())
        if distance:
            entry = (-distance, record.bin, change, int(counts_a.sum()), int(counts_b.sum()))
            self._changed = _keep_top(self._changed, entry, self.top_n)

    def result(self) -> Comparison:
        """The comparison of every bin added so far."""
        keep = len(self._classes) + (1 if self._totals_a[-1] or self._totals_b[-1] else 0)
        classes = [*self._classes, UNCLASSIFIED_NAME][:keep]
        return Comparison(
            classes=classes,
            bins=self._bins,
            rois_a=int(self._totals_a.sum()),
            rois_b=int(self._totals_b.sum()),
            matched=self._matched,
            agreeing=int(np.trace(self._confusion)),
            only_a=self._only_a,
            only_b=self._only_b,
            totals_a=dict(zip(classes, self._totals_a[:keep].tolist(), strict=True)),
            totals_b=dict(zip(classes, self._totals_b[:keep].tolist(), strict=True)),
            confusion=self._confusion[:keep, :keep].copy(),
            changed_bins=[
                {
                    "bin": bin_id,
                    "l1": -negative,
                    "rois_a": rois_a,
                    "rois_b": rois_b,
                    "changes": {classes[i]: int(change[i]) for i in np.flatnonzero(change)},
                }
                for negative, bin_id, change, rois_a, rois_b in sorted(self._changed, key=_rank)[: self.top_n]
            ],
            unmatched_bins=[
                {"bin": bin_id, "only_a": only_a, "only_b": only_b}
                for _, bin_id, only_a, only_b in sorted(self._unmatched, key=_rank)[: self.top_n]
            ],
            bins_with_unmatched=self._bins_with_unmatched,
            remap_a=self.map_a.description,
            remap_b=self.map_b.description,
        )


def compare(
    records: Iterable[BinWinners],
    classes_a: Sequence[str],
    classes_b: Sequence[str],
    *,
    map_a: ClassMap | None = None,
    map_b: ClassMap | None = None,
    top_n: int = 10,
) -> Comparison:
    """Compare two results over a stream of bins (each bin once); see the module docstring for the rules."""
    comparer = Comparer(classes_a, classes_b, map_a, map_b, top_n)
    for record in records:
        comparer.add(record)
    return comparer.result()


def plot_confusion(
    comparison: Comparison,
    url: str,
    *,
    label_a: str = "A",
    label_b: str = "B",
    storage_options: dict[str, Any] | None = None,
) -> None:
    """A PNG heatmap of the confusion table (rows: fraction of each A class's ROIs; counts written in the cells)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    classes, matrix = comparison.classes, comparison.confusion
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    side = max(4.0, 0.6 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(side + 1, side), layout="constrained")
    image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(classes)), labels=classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), labels=classes)
    axes.set_xlabel(f"class in {label_b}")
    axes.set_ylabel(f"class in {label_a}")
    agreement = "n/a" if comparison.agreement is None else f"{comparison.agreement:.3f}"
    axes.set_title(f"agreement {agreement} over {comparison.matched} matched ROIs, {comparison.bins} bins")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            axes.text(j, i, str(count), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=axes, label=f"fraction of the class's ROIs in {label_a}")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    fs, path = url_to_fs(url, **(storage_options or {}))
    fs.pipe_file(path, buffer.getvalue())


def _checked(class_map: ClassMap | None, classes: Sequence[str], side: str) -> ClassMap:
    if class_map is None:
        return ClassMap.identity(classes)
    if list(class_map.source) != list(classes):
        raise ValueError(f"the remap of {side} was applied to other classes than {side}'s ({', '.join(classes)})")
    return class_map


def _lookup(class_map: ClassMap, common: list[str]) -> np.ndarray:
    """Source winner index -> common class index; position -1 (and a remap to -1) -> the trailing unclassified."""
    unclassified = len(common)
    target_to_common = np.array([common.index(name) for name in class_map.target] + [unclassified], dtype=np.int64)
    return np.append(target_to_common[class_map.index], unclassified)


def _side(bin_id: str, side: str, rois: np.ndarray, won: np.ndarray, lookup: np.ndarray) -> tuple[np.ndarray, ...]:
    rois, won = np.asarray(rois, dtype=np.int64), np.asarray(won, dtype=np.int64)
    if rois.shape != won.shape or rois.ndim != 1:
        raise ValueError(f"{bin_id}: {side} has {rois.shape} ROI numbers but {won.shape} winners")
    if won.size and (won.min() < UNCLASSIFIED or won.max() >= len(lookup) - 1):
        raise ValueError(f"{bin_id}: {side}'s winner indices must lie in [-1, {len(lookup) - 1})")
    if len(np.unique(rois)) != len(rois):
        raise ValueError(f"{bin_id}: {side} holds a ROI number twice")
    return rois, lookup[won]


def _rank(entry: tuple) -> tuple:
    """Most first (the key is negated), then by bin id, so ties always list the same way."""
    return entry[0], entry[1]


def _keep_top(entries: list, entry: tuple, top_n: int) -> list:
    """Append, trimming to the best `top_n` now and then: bounded memory however many bins stream by."""
    entries.append(entry)
    if len(entries) > 2 * top_n:
        entries = sorted(entries, key=_rank)[:top_n]
    return entries
