"""Bead runs known by their header are left out of `classify` (counted, never failed, not read again), and every
bin's sample metadata (run type, sample type, position) reaches `ls --json`, the store, the CSV and the report.

Inputs are the real bins of `../shared/data/ifcb/bins` with edited headers, in the ordinary day folders (no
`beads/` folder): the newer bin (`key: value` header, `runType: NORMAL`) under several names, and the old-style bin
(quoted header, none of these keys). The rules are `pipeline.ifcb.sample`'s: a bead run is iRfcb's `is_bead_run`
(`R/ifcb_qc_sample.R`: `runBeads` true, or a `sampleType` containing "bead"); a position is the IFCB Dashboard's
(`ifcbdb/dashboard/accession.py`, `add_bin`: `latitude` or else `gpsLatitude`, both coordinates numbers), never out
of range.
"""

from __future__ import annotations

import csv
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.ifcb.errors import BinFailure
from pipeline.ifcb.sample import SampleInfo
from pipeline.results.partitions import partition_id
from pipeline.results.records import BinResult
from pipeline.results.store import COMMITS, LEDGER, SUMMARY, ResultStore, open_summary

runner = CliRunner()
NEW, OLD = "D20130526T095207_IFCB013", "IFCB5_2012_028_081515"
ALT = "D20130526T115207_IFCB013"  # the newer bin again, an ALT run with a position out of range
BEADS_FLAG = "D20130526T105207_IFCB013"  # runBeads: True
BEADS_TYPE = "D20130526T125207_IFCB013"  # sampleType: Bead
#: The real values of iRfcb's test header D20230810T113059_IFCB134.hdr (a ship-borne IFCB134 with a GPS feed).
GPS = ("gpsLatitude: 58.25983722", "gpsLongitude: 11.43537362")
OUT_OF_RANGE = "the header's gpsLatitude 91.5 is outside -90..90: the bin has no position"


def _bin(ifcb_data: Path, folder: Path, name: str, *lines: str, replace: tuple[str, str] = ("", "")) -> None:
    """The real newer bin as `name` in `folder`, its header with `lines` added (and `replace` made)."""
    folder.mkdir(parents=True, exist_ok=True)
    for ext in ("adc", "roi"):
        shutil.copy(ifcb_data / "bins" / f"{NEW}.{ext}", folder / f"{name}.{ext}")
    text = (ifcb_data / "bins" / f"{NEW}.hdr").read_text()
    if replace[0]:
        text = text.replace(*replace)
    (folder / f"{name}.hdr").write_text(text + "".join(f"{line}\n" for line in lines))


@pytest.fixture
def archive(ifcb_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    day = root / "D2013" / "D20130526"
    _bin(ifcb_data, day, NEW, "sampleType: Normal", "runBeads: False", *GPS)
    _bin(ifcb_data, day, ALT, "gpsLatitude: 91.5", "gpsLongitude: 11.4", replace=("runType: NORMAL", "runType: ALT"))
    _bin(ifcb_data, day, BEADS_FLAG, "sampleType: Normal", "runBeads: True")
    _bin(ifcb_data, day, BEADS_TYPE, "sampleType: Bead", "runBeads: False")
    (root / "2012" / "IFCB5_2012_028").mkdir(parents=True)
    for ext in ("hdr", "adc", "roi"):
        shutil.copy(ifcb_data / "bins" / f"{OLD}.{ext}", root / "2012" / "IFCB5_2012_028" / f"{OLD}.{ext}")
    return root


def test_ls_json_rows_carry_the_sample_and_show_bead_runs(archive: Path) -> None:
    result = runner.invoke(app, ["ls", str(archive), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["bin"]: row for row in map(json.loads, result.stdout.splitlines())}
    sample = ("status", "reason", "run_type", "sample_type", "latitude", "longitude")
    assert tuple(rows[NEW][key] for key in sample) == ("ok", None, "NORMAL", "Normal", 58.25983722, 11.43537362)
    assert tuple(rows[ALT][key] for key in sample) == ("ok", None, "ALT", None, None, None)
    assert OUT_OF_RANGE in rows[ALT]["warnings"]
    assert tuple(rows[OLD][key] for key in sample) == ("ok", None, None, None, None, None)
    assert rows[BEADS_FLAG]["status"] == rows[BEADS_TYPE]["status"] == "beads"
    assert rows[BEADS_FLAG]["reason"] == "bead run: the header says runBeads: True"
    assert rows[BEADS_TYPE]["reason"] == "bead run: the header says sampleType: Bead"
    assert rows[BEADS_FLAG]["rois"] == rows[NEW]["rois"]  # a valid bin, listed whole
    assert "3 bins ok, 0 failed, 2 bead runs (left out of classify: --include-beads), " in result.stderr
    table = runner.invoke(app, ["ls", str(archive)]).stdout.splitlines()
    assert any(line.startswith(BEADS_TYPE) and line.endswith("beads: bead run: the header says sampleType: Bead "
                                                              "(left out of classify)") for line in table)  # fmt: skip


@pytest.mark.slow
def test_classify_leaves_bead_runs_out_counted_and_include_beads_classifies_them(
    archive: Path, tmp_path: Path, dask_client
) -> None:
    from classify_support import classify_json, make_bundle

    bundle, store = str(tmp_path / "m.zip"), tmp_path / "out.zarr"
    make_bundle(bundle)

    def classify(*extra: str) -> tuple[int, dict]:
        return classify_json(archive, bundle, store, dask_client.scheduler.address, *extra)

    # 1. bead runs are left out: counted, never failed, exit code 0
    code, first = classify()
    assert code == 0 and first["complete"]
    assert (first["bins_done"], first["bins_failed"], first["bins_bead_runs"]) == (3, 0, 2)
    assert [(run["bin"], run["kind"], run["stage"]) for run in first["bead_runs"]] == [
        (BEADS_FLAG, "beads", "hdr"), (BEADS_TYPE, "beads", "hdr")
    ]  # fmt: skip
    assert first["bead_runs"][0]["reason"] == "bead run: the header says runBeads: True"
    assert first["bead_runs"][0]["files"]  # the versions of its files: not read again while they are unchanged
    ledger = ResultStore(str(store)).ledger()
    assert set(ledger.bead_runs) == {BEADS_FLAG, BEADS_TYPE} and ledger.failures == {}
    assert set(ledger.complete) == {NEW, ALT, OLD}

    # 2. a rerun does not read them again and still counts them
    commits = sorted(path.name for path in (store / COMMITS).iterdir())
    code, rerun = classify()
    assert code == 0 and (rerun["bins_planned"], rerun["bins_bead_runs"], rerun["bins_failed"]) == (0, 2, 0)
    assert rerun["bins_already_complete"] == 3 and rerun["bins_listed"] == 5
    assert sorted(path.name for path in (store / COMMITS).iterdir()) == commits  # nothing read, nothing written

    # 3. the store, the CSV and the report carry each bin's sample metadata
    summary = open_summary(str(store)).load()
    assert summary.run_type.sel(bin=ALT).item() == "ALT" and summary.sample_type.sel(bin=NEW).item() == "Normal"
    assert summary.latitude.sel(bin=NEW).item() == 58.25983722 and np.isnan(summary.latitude.sel(bin=ALT).item())
    table = tmp_path / "bins.csv"
    assert runner.invoke(app, ["export", str(store), "--csv", str(table)]).exit_code == 0
    rows = {row["bin"]: row for row in csv.DictReader(table.open())}
    assert list(next(iter(rows.values())))[:9] == [
        "bin", "time", "ml_analyzed", "n_rois", "run_type", "sample_type", "bead_run", "latitude", "longitude"
    ]  # fmt: skip
    columns = ("run_type", "sample_type", "bead_run", "latitude", "longitude")
    assert [rows[NEW][c] for c in columns] == ["NORMAL", "Normal", "false", "58.25983722", "11.43537362"]
    assert [rows[ALT][c] for c in columns] == ["ALT", "", "false", "", ""]
    assert [rows[OLD][c] for c in columns] == ["", "", "false", "", ""]
    assert set(rows) == {NEW, ALT, OLD}
    report = json.loads(runner.invoke(app, ["report", str(store), "--json"]).stdout)
    assert report["bins_by_run_type"] == {"ALT": 1, "NORMAL": 1, "unknown": 1}
    assert report["bins_by_sample_type"] == {"Normal": 1, "unknown": 2}
    assert (report["bins_with_position"], report["bead_runs_left_out"], report["bead_runs_classified"]) == (1, 2, 0)
    assert report["bins_failed"] == 0 and {"bin": ALT, "warning": OUT_OF_RANGE} in report["warnings"]
    shown = runner.invoke(app, ["report", str(store)]).stdout
    assert "ALT 1, NORMAL 1, unknown 1" in shown and "2 / 0" in shown

    # 4. `include_beads` (a --config key, as --include-beads) classifies those the first run left out
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"include-beads": True}))
    code, included = classify("--config", str(config))
    assert code == 0 and (included["bins_done"], included["bins_bead_runs"], included["bins_planned"]) == (2, 0, 2)
    assert ResultStore(str(store)).ledger().bead_runs == {}
    assert runner.invoke(app, ["export", str(store), "--csv", str(table)]).exit_code == 0
    rows = {row["bin"]: row for row in csv.DictReader(table.open())}
    assert [rows[BEADS_TYPE][c] for c in columns] == ["NORMAL", "Bead", "true", "", ""]
    assert rows[BEADS_FLAG]["bead_run"] == "true" and rows[NEW]["bead_run"] == "false"
    report = json.loads(runner.invoke(app, ["report", str(store), "--json"]).stdout)
    assert (report["bins_complete"], report["bead_runs_left_out"], report["bead_runs_classified"]) == (5, 0, 2)


@pytest.mark.slow
def test_watch_leaves_bead_runs_out_once_and_include_beads_classifies_them(
    archive: Path, tmp_path: Path, dask_client
) -> None:
    from classify_support import make_bundle

    from pipeline.job.run import ClassifyRequest
    from pipeline.job.watch import Watcher

    bundle, store = str(tmp_path / "m.zip"), str(tmp_path / "out.zarr")
    make_bundle(bundle)
    request = ClassifyRequest(str(archive), bundle, store)
    watcher = Watcher(dask_client, request)
    assert watcher.poll().run is None  # the first poll learns the sizes
    second = watcher.poll()
    assert second.run is not None and (second.run.bins_done, second.run.bins_bead_runs) == (3, 2)
    assert second.run.complete and second.waiting == 0  # bead runs are not waiting to be classified
    assert watcher.poll().run is None  # and no poll starts a run for them again
    restarted = Watcher(dask_client, request)  # the store says which bins were left out
    assert [restarted.poll().run, restarted.poll().run] == [None, None]

    including = Watcher(dask_client, ClassifyRequest(str(archive), bundle, store, include_beads=True))
    assert including.poll().run is None
    poll = including.poll()
    assert poll.classified == [BEADS_FLAG, BEADS_TYPE] and poll.run is not None and poll.run.bins_done == 2
    assert poll.store_bins == 5 and ResultStore(store).ledger().bead_runs == {}


# --- stores written before the sample metadata and the failures' kind ---------------------------------------------
CLASSES = ["a", "b", "c"]
START = datetime(2024, 1, 1, tzinfo=UTC)


def _result(bin_id: str, sample: SampleInfo = SampleInfo()) -> BinResult:
    moment = datetime.strptime(bin_id[1:16], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    scores = np.random.default_rng(0).random((2, 3), np.float32)
    return BinResult(bin_id, moment, np.array([1, 2]), scores, 1.5, sample=sample)


def _ids(first: int, n: int) -> list[str]:
    return [f"D{START + timedelta(minutes=20 * i):%Y%m%dT%H%M%S}_IFCB999" for i in range(first, first + n)]


def test_a_store_of_before_reads_none_and_is_rewritten_once_with_the_new_arrays(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path / "out.zarr"))
    store.prepare(bundle_info={"classes": CLASSES, "content_hash": "h"}, bundle_url="b.zip", archive_url="archive")
    old = _ids(0, 2)
    store.commit_partition(partition_id(old, "run-1"), [_result(b) for b in old], CLASSES,
                           [BinFailure(_ids(9, 1)[0], "roi", "truncated", files="1:2")])  # fmt: skip
    store.consolidate(store.ledger())
    for key in ("run_type", "sample_type", "latitude", "longitude", "bead_run"):  # as a store of before
        shutil.rmtree(tmp_path / "out.zarr" / SUMMARY / key)
    shutil.rmtree(tmp_path / "out.zarr" / LEDGER / "failed_kind")

    ledger = store.ledger()
    assert [record.sample for record in ledger.bins.values()] == [SampleInfo(), SampleInfo()]  # None everywhere
    assert ledger.failures[_ids(9, 1)[0]].kind == "data" and ledger.bead_runs == {}
    assert open_summary(store.url).sizes["bin"] == 2

    new = _ids(3, 1)
    sample = SampleInfo("ALT", "Normal", -41.5, -70.25)
    bead_run = BinFailure(_ids(4, 1)[0], "hdr", "bead run: the header says runBeads: True", kind="beads", files="3:4")
    store.commit_partition(partition_id(new, "run-2"), [_result(new[0], sample)], CLASSES, [bead_run])
    store.consolidate(store.ledger())  # the tables lack arrays of the new rows: rewritten whole, once
    assert {"run_type", "latitude", "bead_run"} <= set(zarr.open_group(str(tmp_path / "out.zarr" / SUMMARY)).keys())
    ledger = store.ledger()
    assert ledger.bins[new[0]].sample == sample and ledger.bins[old[0]].sample == SampleInfo()
    assert ledger.bead_runs == {bead_run.bin: bead_run} and set(ledger.failures) == {_ids(9, 1)[0]}
    summary = open_summary(store.url).load()
    assert summary.latitude.sel(bin=new[0]).item() == -41.5 and summary.run_type.sel(bin=old[0]).item() == ""


def test_compaction_keeps_the_sample_metadata(tmp_path: Path) -> None:
    from pipeline.results.compact import compact_store

    store = ResultStore(str(tmp_path / "out.zarr"))
    store.prepare(bundle_info={"classes": CLASSES, "content_hash": "h"}, bundle_url="b.zip", archive_url="archive")
    samples = {}
    for i, bin_id in enumerate(_ids(0, 4)):  # one small partition per bin, as watch polls write them
        samples[bin_id] = SampleInfo("ALT" if i % 2 else "NORMAL", "Beads" if i == 3 else None, 10.0 + i, -i, i == 3)
        store.commit_partition(partition_id([bin_id], f"poll-{i}"), [_result(bin_id, samples[bin_id])], CLASSES)
    store.consolidate(store.ledger())
    assert compact_store(store).parts_written == 1
    ledger = store.ledger()
    assert len({record.part for record in ledger.bins.values()}) == 1
    assert {bin_id: record.sample for bin_id, record in ledger.bins.items()} == samples
