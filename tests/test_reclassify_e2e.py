"""Re-classification on real parts: thresholds refitted on labelled ROIs, classified on a LocalCluster, checked by
hand against the stored scores, and two models' stores of one archive compared."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from classify_support import make_bundle
from PIL import Image
from typer.testing import CliRunner

from model.bundle import read_bundle_info
from pipeline.cli.app import app
from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.job.run import ClassifyRequest, run_classification
from pipeline.results.report import store_report
from pipeline.results.store import ResultStore

pytestmark = pytest.mark.slow
RUNNER = CliRunner(env={"COLUMNS": "400"})  # error boxes wide enough to keep messages on one line


@pytest.fixture(scope="module")
def stores(tmp_path_factory, dask_client) -> dict[str, str]:
    """An archive with labels, bundle A with thresholds refitted by `model thresholds`, bundle B without, and the
    store of each."""
    root = tmp_path_factory.mktemp("reclassify")
    archive = str(root / "archive")
    write_synthetic_archive(archive, bins=4, rois=30, classes=3, seed=3)
    make_bundle(str(root / "a.zip"), seed=0)
    make_bundle(str(root / "b.zip"), seed=1)
    result = RUNNER.invoke(app, ["model", "thresholds", str(root / "a.zip"), archive, "--labels",
                                 f"{archive}/labels.csv", "--out", str(root / "a-t.zip")])  # fmt: skip
    assert result.exit_code == 0, result.output
    paths = {"root": str(root), "archive": archive, "a": str(root / "a.zip"), "a_t": str(root / "a-t.zip")}
    for name, bundle in (("store_a", paths["a_t"]), ("store_b", str(root / "b.zip"))):
        paths[name] = str(root / f"{name}.zarr")
        assert run_classification(dask_client, ClassifyRequest(archive, bundle, paths[name])).complete
    return paths


def test_model_thresholds_writes_the_same_model_with_new_thresholds(stores) -> None:
    info = json.loads(RUNNER.invoke(app, ["model", "info", stores["a_t"], "--json"]).stdout)
    fit = info["provenance"]["thresholds"]
    assert set(info["thresholds"]) == set(info["classes"]) and max(info["thresholds"].values()) > 0
    assert fit["n"] == 120 and fit["bundle"] == read_bundle_info(stores["a"])["content_hash"] != info["content_hash"]
    assert all({"threshold", "f1_argmax", "f1", "support"} <= set(row) for row in fit["per_class"].values())
    assert "thresholds" not in read_bundle_info(stores["a"])  # the source bundle is untouched
    with zipfile.ZipFile(stores["a"]) as a, zipfile.ZipFile(stores["a_t"]) as a_t:
        assert a.read("model.keras") == a_t.read("model.keras")  # the same model, byte for byte
    text = RUNNER.invoke(app, ["model", "info", stores["a_t"]]).stdout
    assert "F1 argmax" in text and "F1 thresholded" in text
    assert "argmax (no thresholds)" in RUNNER.invoke(app, ["model", "info", stores["a"]]).stdout

    labels = Path(stores["root"]) / "labels-other.csv"
    labels.write_text("roi_id,class\n" + Path(f"{stores['archive']}/labels.csv").read_text().splitlines()[1]
                      .split(",")[0] + ",not_a_class\n")  # fmt: skip
    refused = RUNNER.invoke(app, ["model", "thresholds", stores["a"], stores["archive"], "--labels", str(labels),
                                  "--out", str(Path(stores["root"]) / "x.zip")])  # fmt: skip
    assert refused.exit_code == 2 and "not_a_class" in refused.output


def test_unclassified_counts_match_a_hand_computation_over_the_stored_scores(stores) -> None:
    store = ResultStore(stores["store_a"])
    thresholds = store.info()["thresholds"]
    classes = store.info()["classes"]
    limit = np.array([thresholds[name] for name in classes])
    by_hand = 0
    for record, _, scores in store.iter_bins():
        top = scores.argmax(axis=1)
        below = int(np.sum(scores[np.arange(len(top)), top] < limit[top]))
        assert record.counts_thresholded[-1] == below
        by_hand += below
    report = store_report(store)
    assert report["counts_thresholded"]["unclassified"] == by_hand > 0
    assert sum(report["counts_thresholded"].values()) == sum(report["counts"].values()) == report["rois"] == 120
    assert store_report(ResultStore(stores["store_b"]))["counts_thresholded"] is None  # B has no thresholds


def _compare(*args: str) -> dict:
    result = RUNNER.invoke(app, ["compare", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_compare_two_models_and_a_store_with_itself(stores) -> None:
    a, b = stores["store_a"], stores["store_b"]
    result = _compare(a, b)
    assert (result["decision_a"], result["decision_b"]) == ("thresholded", "argmax")
    assert result["bins"] == 4 and result["bins_only_a"] == result["bins_only_b"] == 0
    assert sum(result["totals_a"].values()) == sum(result["totals_b"].values()) == result["matched"] == 120
    assert 0.0 <= result["agreement"] <= 1.0
    confusion = np.array(result["confusion"])
    assert confusion.sum() == 120 and result["totals_a"]["unclassified"] == confusion[-1].sum() > 0

    for store in (a, b):
        itself = _compare(store, store)
        assert itself["agreement"] == 1.0 and itself["changed_bins"] == []
        table = np.array(itself["confusion"])
        np.testing.assert_array_equal(table, np.diag(np.diag(table)))  # an identity table

    argmax = _compare(a, b, "--argmax")
    assert argmax["decision_a"] == "argmax" and "unclassified" not in argmax["classes"]

    remap = Path(stores["root"]) / "merge.csv"
    classes = ResultStore(a).info()["classes"]
    remap.write_text(f"from,to\n{classes[0]},merged\n{classes[1]},merged\n")
    merged = _compare(a, b, "--remap-a", str(remap), "--remap-b", str(remap), "--keep-unmapped")
    assert merged["classes"][:2] == ["merged", classes[2]] and str(remap) in merged["remap_a"]
    assert merged["agreement"] >= result["agreement"]  # merging classes can only agree more

    png = Path(stores["root"]) / "confusion.png"
    text = RUNNER.invoke(app, ["compare", a, b, "--plot", str(png), "--top", "2"])
    assert text.exit_code == 0 and "agreement" in text.stdout and "where A's classes went in B" in text.stdout
    with Image.open(png) as image:
        assert image.format == "PNG"

    remap.write_text(f"from,to\n{classes[0]},merged\n")
    refused = RUNNER.invoke(app, ["compare", a, b, "--remap-b", str(remap)])
    assert refused.exit_code == 2 and "--remap-b" in refused.output and "no row for" in refused.output
    missing = RUNNER.invoke(app, ["compare", a, str(Path(stores["root"]) / "nothing.zarr")])
    assert missing.exit_code == 2 and "no ifcbflow store" in missing.output
