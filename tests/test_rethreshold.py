"""Re-thresholding a store from its stored scores on a real LocalCluster: counts against a hand computation, the
record of which thresholds produced them, bundles of the same and of another model, an interrupted change finished
by a rerun, stores written before model hashes, and the CLI's exit codes."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.job.rethreshold import rethreshold_store
from pipeline.results.partitions import partition_id
from pipeline.results.records import BinResult
from pipeline.results.report import store_report
from pipeline.results.store import (
    COMMITS,
    PARTS,
    PENDING_DECISION,
    ResultStore,
    StoreLayoutError,
    StoreMismatchError,
    open_summary,
)

CLASSES = ["a", "b", "c"]
FIRST = {"a": 0.5, "b": 0.0, "c": 0.6}
SECOND = {"a": 0.7, "b": 0.45, "c": 0.0}
RUNNER = CliRunner(env={"COLUMNS": "400"})  # error boxes wide enough to keep messages on one line
INFO = {"classes": CLASSES, "content_hash": "bundle-1", "model_hash": "model-1", "arch": "small-cnn"}


def _results(first_hour: int, n_bins: int, seed: int) -> list[BinResult]:
    rng = np.random.default_rng(seed)
    return [
        BinResult(
            f"D20240101T{first_hour + i:02d}0000_IFCB999",
            datetime(2024, 1, 1, first_hour + i, tzinfo=UTC),
            np.arange(1, 31),
            rng.dirichlet([1, 1, 1], size=30).astype(np.float32),
            2.0,
        )
        for i in range(n_bins)
    ]


def _store(tmp_path: Path, info: dict[str, Any] = INFO) -> ResultStore:
    """Two committed partitions (3 and 2 bins) and one bin without ROIs, by the first thresholds, consolidated."""
    store = ResultStore(str(tmp_path / "out.zarr"))
    store.prepare(bundle_info={**info, "thresholds": FIRST}, bundle_url="b1.zip", archive_url="archive")
    array = np.array([FIRST[c] for c in CLASSES])
    empty = BinResult("D20240101T090000_IFCB999", datetime(2024, 1, 1, 9, tzinfo=UTC), np.zeros(0, int),
                      np.zeros((0, 3), np.float32), 1.0)  # fmt: skip
    for results in (_results(0, 3, 0), [*_results(5, 2, 1), empty]):
        store.commit_partition(partition_id([r.bin for r in results], "r"), results, CLASSES, thresholds=array)
    store.consolidate(store.ledger())
    return store


def _by_hand(store: ResultStore, thresholds: dict[str, float]) -> dict[str, list[int]]:
    """Each bin's counts by `thresholds`, from the partitions' arrays read with zarr, the rule written out."""
    classes = ResultStore(store.url).info()["classes"]
    root = zarr.open_group(store.root, mode="r")
    counts: dict[str, list[int]] = {}
    for part in root[PARTS].group_keys():
        group = root[f"{PARTS}/{part}"]
        scores, bins = group["scores"][...], group["bin"][...]
        for bin_id in dict.fromkeys(bins.tolist()):
            rows = scores[bins == bin_id]
            row = [0] * (len(classes) + 1)
            for roi in rows:
                top = int(np.argmax(roi))
                row[top if roi[top] >= thresholds[classes[top]] else len(classes)] += 1
            counts[str(bin_id)] = row
    return counts


def _summary_counts(store: ResultStore) -> dict[str, list[int]]:
    summary = open_summary(store.url).load()
    return {str(b): row.tolist() for b, row in zip(summary.bin.values, summary.counts_thresholded.values, strict=True)}


def test_counts_follow_the_new_thresholds_from_the_stored_scores(tmp_path: Path, dask_client: Any) -> None:
    store = _store(tmp_path)
    source = tmp_path / "second.json"
    source.write_text(json.dumps({"thresholds": SECOND}))
    before = _summary_counts(store)
    done = rethreshold_store(dask_client, store.url, {}, str(source))
    after = _summary_counts(store)
    expected = _by_hand(store, SECOND)
    assert {b: c for b, c in after.items() if b in expected} == expected
    assert after["D20240101T090000_IFCB999"] == [0, 0, 0, 0]  # a bin without ROIs
    assert after != before and before == {**_by_hand(store, FIRST), "D20240101T090000_IFCB999": [0, 0, 0, 0]}
    assert (done.bins, done.rois, done.partitions, done.tasks) == (6, 150, 2, 1)
    info = ResultStore(store.url).info()
    assert info["thresholds"] == SECOND and info["thresholds_sha256"] == done.thresholds_sha256
    assert PENDING_DECISION not in info
    assert [d["thresholds_sha256"] for d in info["decisions"]] == [done.thresholds_sha256]
    assert info["decisions"][0]["previous_sha256"] == done.previous_sha256 != done.thresholds_sha256
    assert open_summary(store.url).attrs["thresholds_sha256"] == done.thresholds_sha256
    report = store_report(ResultStore(store.url))
    assert report["thresholds"] == SECOND and report["thresholds_sha256"] == done.thresholds_sha256
    assert sum(report["counts_thresholded"].values()) == 150
    again = rethreshold_store(dask_client, store.url, {}, str(source))  # the same thresholds: nothing to do
    assert not again.changed and _summary_counts(store) == after


def test_an_interrupted_change_is_refused_until_a_rerun_finishes_it(tmp_path: Path, dask_client: Any) -> None:
    store = _store(tmp_path)
    source = tmp_path / "second.json"
    source.write_text(json.dumps(SECOND))
    part = sorted(p.name for p in (tmp_path / "out.zarr" / PARTS).iterdir() if p.is_dir())[0]
    metadata = tmp_path / "out.zarr" / PARTS / part / "scores" / "zarr.json"
    shutil.move(metadata, tmp_path / "aside")  # zarr itself fails on the worker that reads this partition
    with pytest.raises(KeyError, match="scores"):
        rethreshold_store(dask_client, store.url, {}, str(source))
    assert ResultStore(store.url).info()[PENDING_DECISION]["source"] == str(source)
    with pytest.raises(StoreLayoutError, match="was interrupted; finish it with `ifcbflow rethreshold"):
        ResultStore(store.url).ledger()
    shutil.move(tmp_path / "aside", metadata)
    rethreshold_store(dask_client, store.url, {}, str(source))
    assert {b: c for b, c in _summary_counts(store).items() if b in _by_hand(store, SECOND)} == _by_hand(store, SECOND)
    assert PENDING_DECISION not in ResultStore(store.url).info()


def test_a_store_written_before_model_hashes_opens_and_is_rethresholded(tmp_path: Path, dask_client: Any) -> None:
    store = _store(tmp_path)
    root = tmp_path / "out.zarr" / "zarr.json"
    document = json.loads(root.read_text())
    for key in ("model_hash", "thresholds_sha256", "thresholds_source"):
        del document["attributes"][key]
    root.write_text(json.dumps(document))
    for commit in (tmp_path / "out.zarr" / COMMITS).glob("*/zarr.json"):
        old = json.loads(commit.read_text())
        del old["attributes"]["thresholds_sha256"]
        commit.write_text(json.dumps(old))
    old_store = ResultStore(store.url)
    assert store_report(old_store)["counts_thresholded"] and len(old_store.ledger().bins) == 6
    with pytest.raises(StoreMismatchError, match="another model"):
        old_store.prepare(bundle_info={**INFO, "content_hash": "bundle-2"}, bundle_url="b2.zip", archive_url="a")
    info = old_store.prepare(bundle_info={**INFO, "thresholds": FIRST}, bundle_url="b1.zip", archive_url="archive")
    assert info["model_hash"] == "model-1" and len(info["thresholds_sha256"]) == 64  # recorded once, in place
    source = tmp_path / "second.json"
    source.write_text(json.dumps(SECOND))
    rethreshold_store(dask_client, store.url, {}, str(source))
    assert {b: c for b, c in _summary_counts(store).items() if b in _by_hand(store, SECOND)} == _by_hand(store, SECOND)


@pytest.mark.slow
def test_bundles_of_the_same_model_share_a_store_and_give_their_thresholds(tmp_path: Path, dask_client: Any) -> None:
    from classify_support import CLASSES as MODEL_CLASSES
    from classify_support import make_bundle

    from model.bundle import read_bundle_info, save_with_thresholds

    first, refitted, other = (str(tmp_path / name) for name in ("first.zip", "refitted.zip", "other.zip"))
    make_bundle(first)
    make_bundle(other, seed=1)
    save_with_thresholds(first, refitted, dict.fromkeys(MODEL_CLASSES, 0.5), {"note": "by hand"})
    a, b = read_bundle_info(first), read_bundle_info(refitted)
    assert a["content_hash"] != b["content_hash"] and a["model_hash"] == b["model_hash"]
    assert read_bundle_info(other)["model_hash"] != a["model_hash"]
    store = ResultStore(str(tmp_path / "out.zarr"))
    store.prepare(bundle_info=a, bundle_url=first, archive_url="archive")
    results = _results(0, 2, 3)  # three classes, as the bundle's
    store.commit_partition(partition_id([r.bin for r in results], "r"), results, MODEL_CLASSES)
    store.consolidate(store.ledger())
    assert store.prepare(bundle_info=b, bundle_url=refitted, archive_url="archive")["model_hash"] == a["model_hash"]
    with pytest.raises(StoreMismatchError, match="another model"):
        rethreshold_store(dask_client, store.url, {}, other)
    rethreshold_store(dask_client, store.url, {}, refitted)
    summary = open_summary(store.url).load()
    assert summary.threshold.values.tolist() == [0.5, 0.5, 0.5]
    expected = _by_hand(store, dict.fromkeys(MODEL_CLASSES, 0.5))
    assert {str(k): v.tolist() for k, v in zip(summary.bin.values, summary.counts_thresholded.values, strict=True)} == (
        expected
    )
    rethreshold_store(dask_client, store.url, {}, first)  # a bundle without thresholds: back to argmax
    assert "counts_thresholded" not in open_summary(store.url) and "thresholds" not in ResultStore(store.url).info()


def test_cli_applies_a_file_and_refuses_unknown_classes(tmp_path: Path, dask_client: Any) -> None:
    store = _store(tmp_path)
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(SECOND))
    bad.write_text(json.dumps({"diatom": 0.5}))
    address = dask_client.scheduler.address
    result = RUNNER.invoke(
        app, ["rethreshold", store.url, "--thresholds", str(good), "--cluster", address, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bins"] == 6
    refused = RUNNER.invoke(app, ["rethreshold", store.url, "--thresholds", str(bad), "--cluster", address])
    assert refused.exit_code == 2 and "not classes of the model" in refused.output
    missing = RUNNER.invoke(
        app, ["rethreshold", str(tmp_path / "none.zarr"), "--thresholds", str(good), "--cluster", address]
    )
    assert missing.exit_code == 2 and "no ifcbflow store" in missing.output
