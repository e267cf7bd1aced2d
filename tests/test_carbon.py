"""Carbon from biovolume: the Menden-Deuer & Lessard (2000) relations against hand computations, the diatom rules of
WHOI's ifcb-analysis and iRfcb, and one bin's carbon per litre worked out by hand from a few ROIs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.decision import UNCLASSIFIED
from pipeline.results.carbon import (
    bin_carbon,
    diatom_carbon_pg,
    large_diatom_carbon_pg,
    protist_carbon_pg,
    roi_carbon_pg,
)


def test_relations_by_hand():
    # log10 C = log a + b log10 V; e.g. V = 1000 µm³: log10 V = 3.
    assert protist_carbon_pg([1000.0])[0] == pytest.approx(10 ** (-0.665 + 0.939 * 3))  # 141.9 pg
    assert diatom_carbon_pg([1000.0])[0] == pytest.approx(10 ** (-0.541 + 0.811 * 3))  # 78.0 pg
    assert large_diatom_carbon_pg([10000.0])[0] == pytest.approx(10 ** (-0.933 + 0.881 * 4))  # 389.9 pg
    # The rounded coefficients of the paper's abstract form: 0.216 V^0.939, 0.288 V^0.811.
    assert protist_carbon_pg([500.0])[0] == pytest.approx(0.216 * 500**0.939, rel=2e-3)
    assert diatom_carbon_pg([500.0])[0] == pytest.approx(0.288 * 500**0.811, rel=2e-3)
    # iRfcb's documented examples: vol2C_lgdiatom(c(5000, 10000, 20000)) and vol2C_nondiatom(5000).
    assert large_diatom_carbon_pg([5000, 10000, 20000]) == pytest.approx([211.7350, 389.9420, 718.1372], abs=1e-4)
    assert protist_carbon_pg([5000])[0] == pytest.approx(643.1804, abs=1e-4)


def test_zero_nan_and_negative_volumes():
    carbon = protist_carbon_pg([0.0, np.nan])
    assert carbon[0] == 0 and math.isnan(carbon[1])
    with pytest.raises(ValueError, match="must be >= 0"):
        protist_carbon_pg([-1.0])


def test_diatom_rules():
    volume = np.array([1000.0, 3000.0, 5000.0])
    protist, diatom, large = protist_carbon_pg(volume), diatom_carbon_pg(volume), large_diatom_carbon_pg(volume)
    # ifcb-analysis biovol2carbon.m: protist relation, replaced by the large-diatom one for diatoms with V >= 3000.
    assert roi_carbon_pg(volume, True) == pytest.approx([protist[0], large[1], large[2]])
    # Non-diatoms take the protist relation under every rule.
    for rule in ("ifcb-analysis", "large", "all-sizes", "by-size"):
        assert roi_carbon_pg(volume, False, rule) == pytest.approx(protist)
    assert roi_carbon_pg(volume, True, "large") == pytest.approx(large)
    assert roi_carbon_pg(volume, True, "all-sizes") == pytest.approx(diatom)
    # iRfcb vol2C_diatom_auto: volume > 3000 large, else all-sizes (3000 itself is "small").
    assert roi_carbon_pg(volume, True, "by-size") == pytest.approx([diatom[0], diatom[1], large[2]])
    with pytest.raises(ValueError, match="unknown diatom rule"):
        roi_carbon_pg(volume, True, "menden")  # type: ignore[arg-type]


def test_one_bin_by_hand():
    classes = ["Diatom", "Dinoflagellate", "null"]
    diatom = [True, False, False]
    # Four ROIs: a small diatom, a large diatom, a dinoflagellate, a blob-less ROI (biovolume 0) of class null.
    winners = np.array([0, 0, 1, 2])
    volume = np.array([800.0, 12000.0, 2500.0, 0.0])
    ml = 2.5
    got = bin_carbon(winners, volume, classes, diatom, ml)
    # By hand (ifcb-analysis rule): the 800 µm³ diatom is below 3000 µm³, so it takes the protist relation.
    small = 10 ** (-0.665 + 0.939 * math.log10(800))  # 115.1 pg
    large = 10 ** (-0.933 + 0.881 * math.log10(12000))  # 457.9 pg
    dino = 10 ** (-0.665 + 0.939 * math.log10(2500))  # 335.5 pg
    assert got.classes == tuple(classes)
    assert got.count.tolist() == [2, 1, 1]
    assert got.biovolume_um3 == pytest.approx([12800.0, 2500.0, 0.0])
    assert got.carbon_pg == pytest.approx([small + large, dino, 0.0])
    assert got.biovolume_um3_per_ml == pytest.approx([12800 / 2.5, 2500 / 2.5, 0.0])
    # µg C per L: pg per mL / 1000. (115.08 + 457.89) pg / 2.5 mL = 229.19 pg/mL = 0.22919 µg/L.
    assert got.carbon_ug_per_l == pytest.approx([(small + large) / 2.5 / 1000, dino / 2.5 / 1000, 0.0])
    assert got.carbon_ug_per_l[0] == pytest.approx(0.22919, abs=1e-5)
    assert got.count_per_ml == pytest.approx([0.8, 0.4, 0.4])
    # Class names give the same result as indices.
    by_name = bin_carbon(["Diatom", "Diatom", "Dinoflagellate", "null"], volume, classes, diatom, ml)
    assert by_name.carbon_pg == pytest.approx(got.carbon_pg)


def test_unclassified_nan_biovolume_and_unknown_volume():
    classes = ["Diatom", "Other"]
    winners = np.array([0, UNCLASSIFIED, 1, 1])
    volume = np.array([4000.0, 1000.0, np.nan, 100.0])
    got = bin_carbon(winners, volume, classes, [True, False], None, thresholded=True)
    assert got.classes == ("Diatom", "Other", "unclassified")
    assert got.count.tolist() == [1, 2, 1]  # the NaN-biovolume ROI is counted ...
    assert got.biovolume_um3 == pytest.approx([4000.0, 100.0, 1000.0])  # ... but left out of the sums
    assert got.carbon_pg[2] == pytest.approx(10 ** (-0.665 + 0.939 * 3))  # unclassified: protist relation
    assert np.isnan(got.carbon_ug_per_l).all()  # unknown volume analysed: no concentrations
    with pytest.raises(ValueError, match="unclassified but the decision has no thresholds"):
        bin_carbon(winners, volume, classes, [True, False], 1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 ROI classes but 3 biovolumes"):
        bin_carbon([0, 1], [1.0, 2.0, 3.0], ["a", "b"], [False, False], 1.0)
    with pytest.raises(ValueError, match="one flag per class"):
        bin_carbon([0], [1.0], ["a", "b"], [False], 1.0)
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        bin_carbon([2], [1.0], ["a", "b"], [False, False], 1.0)
    with pytest.raises(ValueError, match=r"\['c'\] are not among"):
        bin_carbon(["c"], [1.0], ["a", "b"], [False, False], 1.0)
    empty = bin_carbon(np.zeros(0, dtype=np.int64), np.zeros(0), ["a"], [False], 1.0)
    assert empty.count.tolist() == [0] and empty.carbon_ug_per_l.tolist() == [0.0]
