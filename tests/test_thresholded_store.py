"""Thresholded counts in the store without a cluster: commits, the summary, stores without thresholds, reports,
exports and remaps on a store written directly."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from model.decision import class_counts, winners
from pipeline.cli.app import app
from pipeline.results.export import class_file_bytes, export_csv, export_dashboard
from pipeline.results.partitions import partition_id
from pipeline.results.records import BinResult
from pipeline.results.report import store_report
from pipeline.results.store import COMMITS, ResultStore, open_summary

CLASSES = ["a", "b", "c"]
THRESHOLDS = {"a": 0.5, "b": 0.0, "c": 0.6}
ARRAY = np.array([0.5, 0.0, 0.6])
BINS = ["D20240101T000000_IFCB999", "D20240101T002000_IFCB999"]
REAL = "class_scores/D20220522T003051_IFCB134_class.h5"


def _results() -> list[BinResult]:
    rng = np.random.default_rng(0)
    out = []
    for i, bin_id in enumerate(BINS):
        scores = rng.dirichlet([1, 1, 1], size=20).astype(np.float32)
        out.append(BinResult(bin_id, datetime(2024, 1, 1, 0, 20 * i, tzinfo=UTC), np.arange(1, 21), scores, 2.0))
    return out


def _store(tmp_path: Path, thresholds: dict[str, float] | None, name: str = "out.zarr") -> ResultStore:
    store = ResultStore(str(tmp_path / name))
    info = {"classes": CLASSES, "content_hash": f"hash-{name}", "arch": "small-cnn"}
    if thresholds is not None:
        info["thresholds"] = thresholds
    store.prepare(bundle_info=info, bundle_url="b.zip", archive_url="archive")
    results = _results()
    store.commit_partition(partition_id(BINS, "r"), results, CLASSES, thresholds=None if thresholds is None else ARRAY)
    return store


def test_commits_and_summary_carry_both_sets_of_counts(tmp_path: Path) -> None:
    store = _store(tmp_path, THRESHOLDS)
    ledger = store.ledger()
    for result in _results():
        record = ledger.bins[result.bin]
        assert record.counts == class_counts(result.scores).tolist()
        # by hand: a ROI is unclassified when its top score is below its top class's threshold
        top = result.scores.argmax(axis=1)
        unclassified = int(np.sum(result.scores[np.arange(20), top] < ARRAY[top]))
        assert record.counts_thresholded[-1] == unclassified > 0
        assert sum(record.counts_thresholded) == sum(record.counts) == 20
    store.consolidate(ledger)
    summary = open_summary(store.url).load()
    assert list(summary.class_thresholded.values) == [*CLASSES, "unclassified"]
    assert summary.counts_thresholded.dims == ("bin", "class_thresholded")
    np.testing.assert_allclose(summary.concentration_thresholded.values, summary.counts_thresholded.values / 2.0)
    np.testing.assert_array_equal(summary.threshold.values, ARRAY)
    again = store.ledger()  # read back from the consolidated summary, not the commits
    assert {b: r.counts_thresholded for b, r in again.bins.items()} == {
        b: r.counts_thresholded for b, r in ledger.bins.items()
    }


def test_thresholds_cost_no_extra_object(tmp_path: Path) -> None:
    with_, without = _store(tmp_path, THRESHOLDS, "with.zarr"), _store(tmp_path, None, "without.zarr")
    for store in (with_, without):
        store.consolidate(store.ledger())
    assert _partition_files(tmp_path / "with.zarr") == _partition_files(tmp_path / "without.zarr")


def _partition_files(root: Path) -> list[str]:
    """What committing partitions wrote: every file but the summary's (written once per run, not per partition)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "summary" not in p.parts)


def test_a_store_without_thresholds_reports_argmax_only(tmp_path: Path) -> None:
    store = _store(tmp_path, None)
    # a commit of a store written before thresholded counts existed has no such key at all
    commit = next((tmp_path / "out.zarr" / COMMITS).glob("*/zarr.json"))
    document = json.loads(commit.read_text())
    for record in document["attributes"]["bins"]:
        del record["counts_thresholded"]
    commit.write_text(json.dumps(document))
    report = store_report(store)
    assert report["counts"] and report["counts_thresholded"] is None and report["thresholds"] is None
    store.consolidate(store.ledger())
    assert "counts_thresholded" not in open_summary(store.url)
    result = CliRunner().invoke(app, ["report", store.url])
    assert result.exit_code == 0 and "classes (argmax)" in result.stdout
    refused = CliRunner().invoke(app, ["report", store.url, "--counts", "thresholded"])
    assert refused.exit_code == 2 and "no thresholds" in refused.output
    rows = _csv(store, tmp_path)
    assert not any(name.endswith("_thresholded") for name in rows[0])


def test_report_counts_flag_and_json(tmp_path: Path) -> None:
    store = _store(tmp_path, THRESHOLDS)
    report = json.loads(CliRunner().invoke(app, ["report", store.url, "--json"]).stdout)
    assert report["classes_thresholded"] == [*CLASSES, "unclassified"]
    assert sum(report["counts"].values()) == sum(report["counts_thresholded"].values()) == 40
    assert report["counts_thresholded"]["unclassified"] > 0 and report["thresholds"] == THRESHOLDS
    default = CliRunner().invoke(app, ["report", store.url])
    assert "classes (thresholded)" in default.stdout and "unclassified" in default.stdout
    argmax = CliRunner().invoke(app, ["report", store.url, "--counts", "argmax"])
    assert "classes (argmax)" in argmax.stdout and "unclassified" not in argmax.stdout


def _csv(store: ResultStore, tmp_path: Path, **remap) -> list[dict[str, str]]:
    export_csv(store, str(tmp_path / "bins.csv"), **remap)
    return list(csv.DictReader((tmp_path / "bins.csv").open()))


def test_csv_has_both_sets_and_a_sidecar(tmp_path: Path) -> None:
    store = _store(tmp_path, THRESHOLDS)
    rows = _csv(store, tmp_path)
    ledger = store.ledger()
    for row in rows:
        record = ledger.bins[row["bin"]]
        assert [int(row[f"{c}_count"]) for c in CLASSES] == record.counts
        assert [int(row[f"{c}_count_thresholded"]) for c in [*CLASSES, "unclassified"]] == record.counts_thresholded
        assert float(row["unclassified_per_ml_thresholded"]) == record.counts_thresholded[-1] / 2.0
    sidecar = json.loads((tmp_path / "bins.csv.json").read_text())
    assert sidecar["thresholds"] == THRESHOLDS and sidecar["remap"] is None
    assert sidecar["count_sets"] == ["argmax", "thresholded"]


def test_class_files_name_unclassified_rois(tmp_path: Path, ifcb_data: Path) -> None:
    store = _store(tmp_path, THRESHOLDS)
    export_dashboard(store, str(tmp_path / "dash"))
    real = h5py.File(ifcb_data / REAL)
    for record, _, scores in store.iter_bins():
        path = next((tmp_path / "dash").rglob(f"{record.bin}_class.h5"))
        with h5py.File(path) as f:
            names = [v.decode() for v in f["class_name"][()]]
            auto = [v.decode() for v in f["class_name_auto"][()]]
            expected = ["unclassified" if w < 0 else CLASSES[w] for w in winners(scores, ARRAY)]
            assert names == expected and names.count("unclassified") == record.counts_thresholded[-1]
            assert auto == [CLASSES[w] for w in winners(scores)]  # argmax, never unclassified
            np.testing.assert_array_equal(f["output_scores"][()], scores)  # raw scores
            for key in ("thresholds", "class_name", "class_name_auto"):
                assert f[key].ndim == real[key].ndim and f[key].dtype.kind == real[key].dtype.kind, key
            assert f["thresholds"].dtype == real["thresholds"].dtype == np.float64
            np.testing.assert_array_equal(f["thresholds"][()], ARRAY)
    real.close()


def test_remaps_in_report_export_and_their_errors(tmp_path: Path) -> None:
    store = _store(tmp_path, THRESHOLDS)
    remap = tmp_path / "map.csv"
    remap.write_text("from,to\na,ab\nb,ab\n")
    runner = CliRunner(env={"COLUMNS": "400"})  # error boxes wide enough to keep messages on one line
    unmapped = runner.invoke(app, ["report", store.url, "--remap", str(remap)])
    assert unmapped.exit_code == 2 and "no row for ['c']" in unmapped.output
    report = json.loads(runner.invoke(app, ["report", store.url, "--remap", str(remap), "--keep-unmapped",
                                            "--json"]).stdout)  # fmt: skip
    assert report["classes"] == ["ab", "c"] and report["classes_thresholded"] == ["ab", "c", "unclassified"]
    plain = store_report(store)
    assert report["counts"]["ab"] == plain["counts"]["a"] + plain["counts"]["b"]
    assert report["counts_thresholded"]["unclassified"] == plain["counts_thresholded"]["unclassified"]
    assert report["remap"]["url"] == str(remap) and "unmapped kept" in report["remap"]["description"]

    out = tmp_path / "export"
    result = runner.invoke(app, ["export", store.url, "--csv", str(out / "bins.csv"), "--dashboard", str(out / "d"),
                                 "--remap", str(remap), "--keep-unmapped"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "bins.csv.json").read_text())["remap"]["sha256"] == report["remap"]["sha256"]
    assert "ab_count_thresholded" in next(csv.DictReader((out / "bins.csv").open()))
    with h5py.File(next(out.rglob("*_class.h5"))) as f:
        assert "unmapped kept" in f.attrs["remap"] and list(f["class_labels"].asstr()[()]) == CLASSES
        assert set(f["class_name_auto"].asstr()[()]) <= {"ab", "c"}

    for text, message in (
        ("source,target\na,x\n", "header 'from,to'"),
        ("from,to\nzz,x\n", "not classes"),
        ("from,to\na,x\na,y\n", "mapped to 'y', but to 'x'"),
    ):
        remap.write_text(text)
        bad = runner.invoke(app, ["export", store.url, "--csv", str(out / "x.csv"), "--remap", str(remap)])
        assert bad.exit_code == 2 and message in bad.output, bad.output
    missing = runner.invoke(app, ["report", store.url, "--remap", str(tmp_path / "none.csv")])
    assert missing.exit_code == 2 and "none.csv" in missing.output
    alone = runner.invoke(app, ["report", store.url, "--keep-unmapped"])
    assert alone.exit_code == 2 and "--remap" in alone.output


@pytest.mark.parametrize("thresholds", [None, ARRAY])
def test_class_file_without_a_remap_or_thresholds_names_argmax(thresholds) -> None:
    scores = np.array([[0.55, 0.45, 0.0], [0.1, 0.3, 0.6]], dtype=np.float32)
    data = class_file_bytes(np.array([1, 2]), scores, CLASSES, classifier_name="x", model_hash="h",
                            thresholds=thresholds)  # fmt: skip
    with h5py.File(io.BytesIO(data)) as f:
        assert list(f["class_name_auto"].asstr()[()]) == ["a", "c"]
        assert list(f["class_name"].asstr()[()]) == ["a", "c"]  # 0.55 >= 0.5 and 0.6 >= 0.6
        assert ("thresholds" in f) == (thresholds is not None) and "remap" not in f.attrs
