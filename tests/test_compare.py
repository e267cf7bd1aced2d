"""Comparing two results ROI by ROI: agreement, confusion table, unmatched ROIs, changed bins, remaps, plot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.results.compare import BinWinners, Comparer, compare, plot_confusion
from pipeline.results.remap import read_remap


def same_rois(bin_id: str, a: list[int], b: list[int]) -> BinWinners:
    rois = np.arange(1, len(a) + 1)
    return BinWinners(bin_id, rois, np.array(a), rois, np.array(b))


def random_bins(n_bins: int, n_classes: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    bins = []
    for i in range(n_bins):
        n = int(rng.integers(0, 50))
        bins.append((f"D20240101T{i:06d}_IFCB1", np.sort(rng.choice(500, n, replace=False)) + 1,
                     rng.integers(0, n_classes, n)))  # fmt: skip
    return bins


def test_results_compared_with_themselves_agree_fully() -> None:
    classes = ["a", "b", "c"]
    bins = random_bins(20, 3, seed=0)
    result = compare((BinWinners(b, rois, won, rois, won) for b, rois, won in bins), classes, classes)
    n = sum(len(rois) for _, rois, _ in bins)
    assert result.agreement == 1.0 and result.matched == result.agreeing == result.rois_a == result.rois_b == n
    assert result.classes == classes  # no unclassified column: no ROI is unclassified
    np.testing.assert_array_equal(result.confusion, np.diag(list(result.totals_a.values())))
    assert result.totals_a == result.totals_b
    assert (result.only_a, result.only_b, result.changed_bins, result.unmatched_bins) == (0, 0, [], [])
    assert result.bins == 20
    as_dict = result.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["remap_a"] == as_dict["remap_b"] == "none"


def test_a_hand_counted_comparison() -> None:
    # A says x, x, y, z; B says x, y, y, w: rows A, columns B over the common classes x, y, z, w
    result = compare([same_rois("bin1", [0, 0, 1, 2], [0, 1, 1, 2])], ["x", "y", "z"], ["x", "y", "w"])
    assert result.classes == ["x", "y", "z", "w"]
    assert (result.matched, result.agreeing, result.agreement) == (4, 2, 0.5)
    assert result.totals_a == {"x": 2, "y": 1, "z": 1, "w": 0}
    assert result.totals_b == {"x": 1, "y": 2, "z": 0, "w": 1}
    np.testing.assert_array_equal(result.confusion, [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    assert result.absorbed() == {
        "x": [{"class": "x", "rois": 1, "fraction": 0.5}, {"class": "y", "rois": 1, "fraction": 0.5}],
        "y": [{"class": "y", "rois": 1, "fraction": 1.0}],
        "z": [{"class": "w", "rois": 1, "fraction": 1.0}],
    }
    assert result.changed_bins == [
        {"bin": "bin1", "l1": 4, "rois_a": 4, "rois_b": 4, "changes": {"x": -1, "y": 1, "z": -1, "w": 1}}
    ]


def test_different_winners_keep_totals_and_bound_agreement() -> None:
    classes = ["a", "b", "c", "d"]
    bins = random_bins(30, 4, seed=1)
    rng = np.random.default_rng(2)
    records = [BinWinners(b, rois, won, rois, rng.integers(0, 4, len(won))) for b, rois, won in bins]
    result = compare(records, classes, classes)
    n = sum(len(rois) for _, rois, _ in bins)
    assert 0.0 <= result.agreement <= 1.0 and result.agreement < 1.0
    assert sum(result.totals_a.values()) == sum(result.totals_b.values()) == n == result.confusion.sum()
    np.testing.assert_array_equal(result.confusion.sum(axis=1), list(result.totals_a.values()))
    np.testing.assert_array_equal(result.confusion.sum(axis=0), list(result.totals_b.values()))
    agreeing = sum(int(np.sum(r.winners_a == r.winners_b)) for r in records)
    assert result.agreement == pytest.approx(agreeing / n)


def test_rois_in_only_one_side_are_counted_and_reported() -> None:
    records = [
        BinWinners("bin1", np.array([1, 2, 3]), np.array([0, 1, 1]), np.array([2, 3, 4, 5]), np.array([1, 0, 0, 0])),
        same_rois("bin2", [0, 0], [0, 0]),
        BinWinners("bin3", np.array([7]), np.array([1]), np.array([], dtype=int), np.array([], dtype=int)),
    ]
    result = compare(records, ["a", "b"], ["a", "b"])
    assert (result.rois_a, result.rois_b, result.matched, result.only_a, result.only_b) == (6, 6, 4, 2, 2)
    assert result.agreeing == 3 and result.agreement == 0.75  # ROI 2 b=b, ROI 3 b≠a, bin2 both
    assert result.bins_with_unmatched == 2
    assert result.unmatched_bins == [{"bin": "bin1", "only_a": 1, "only_b": 2}, {"bin": "bin3", "only_a": 1,
                                      "only_b": 0}]  # fmt: skip
    assert result.confusion.sum() == result.matched


def test_the_bins_that_changed_most_come_first_and_only_the_top_n() -> None:
    def bins() -> Iterator[BinWinners]:
        # bin k changes k ROIs from class 0 to class 1 (L1 2k); bins 100..199 do not change
        for k in range(100):
            yield same_rois(f"bin{k:03d}", [0] * 10, [1] * min(k, 10) + [0] * (10 - min(k, 10)))
        for k in range(100, 200):
            yield same_rois(f"bin{k:03d}", [0, 1], [0, 1])

    result = compare(bins(), ["a", "b"], ["a", "b"], top_n=3)
    # bins 10..99 all change 10 ROIs (L1 20): ties list by bin id
    assert [(b["bin"], b["l1"]) for b in result.changed_bins] == [("bin010", 20), ("bin011", 20), ("bin012", 20)]
    assert result.changed_bins[0]["changes"] == {"a": -10, "b": 10}
    comparer = Comparer(["a", "b"], ["a", "b"], top_n=2)
    for i, k in enumerate((3, 1, 4, 1, 5)):
        comparer.add(same_rois(f"bin{i}", [0] * 10, [1] * k + [0] * (10 - k)))
    assert [(b["bin"], b["l1"]) for b in comparer.result().changed_bins] == [("bin4", 10), ("bin2", 8)]


def test_remaps_bring_both_sides_to_common_classes(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("from,to\nChaetoceros,diatom\nSkeletonema,diatom\nDinophysis,dino\n")
    (tmp_path / "b.csv").write_text("from,to\nBacillariophyceae,diatom\nDinophyceae,dino\ndetritus,unclassified\n")
    classes_a = ["Chaetoceros", "Skeletonema", "Dinophysis"]
    classes_b = ["Dinophyceae", "Bacillariophyceae", "detritus"]
    map_a = read_remap(str(tmp_path / "a.csv")).apply(classes_a)
    map_b = read_remap(str(tmp_path / "b.csv")).apply(classes_b)
    # A: Chaetoceros, Skeletonema, Dinophysis, unclassified (below threshold), Skeletonema
    # B: Bacillariophyceae, Bacillariophyceae, Dinophyceae, detritus, Dinophyceae
    record = same_rois("bin1", [0, 1, 2, -1, 1], [1, 1, 0, 2, 0])
    result = compare([record], classes_a, classes_b, map_a=map_a, map_b=map_b)
    assert result.classes == ["diatom", "dino", "unclassified"]
    assert (result.agreeing, result.agreement) == (4, 0.8)
    assert result.totals_a == {"diatom": 3, "dino": 1, "unclassified": 1}
    assert result.totals_b == {"diatom": 2, "dino": 2, "unclassified": 1}
    np.testing.assert_array_equal(result.confusion, [[2, 1, 0], [0, 1, 0], [0, 0, 1]])
    assert result.remap_a == map_a.description and "a.csv (sha256 " in result.remap_a
    with pytest.raises(ValueError, match="remap of B was applied to other classes"):
        compare([record], classes_a, classes_a, map_a=map_a, map_b=map_b)


def test_bad_records_are_errors_naming_the_bin() -> None:
    with pytest.raises(ValueError, match=r"bin9: A's winner indices must lie in \[-1, 2\)"):
        compare([same_rois("bin9", [0, 2], [0, 1])], ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="bin9: B holds a ROI number twice"):
        compare([BinWinners("bin9", np.array([1]), np.array([0]), np.array([1, 1]), np.array([0, 0]))], ["a"], ["a"])
    with pytest.raises(ValueError, match="bin9: A has"):
        compare([BinWinners("bin9", np.array([1, 2]), np.array([0]), np.array([1]), np.array([0]))], ["a"], ["a"])


def test_nothing_matched_has_no_agreement() -> None:
    result = compare([], ["a"], ["a"])
    assert result.agreement is None and result.to_dict()["agreement"] is None


def test_the_confusion_table_is_written_as_a_png(tmp_path: Path) -> None:
    result = compare([same_rois("bin1", [0, 0, 1, 2, -1], [0, 1, 1, 2, 2])], ["x", "y", "z"], ["x", "y", "z"])
    path = tmp_path / "plots" / "confusion.png"
    path.parent.mkdir()
    plot_confusion(result, str(path), label_a="model A", label_b="model B")
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 200
