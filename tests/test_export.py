"""Exports without a cluster: the Dashboard class file layout next to a real one, folders, the CSV table."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from pipeline.results.export import class_file_bytes, dashboard_path, export_csv, export_dashboard
from pipeline.results.partitions import partition_id
from pipeline.results.records import BinResult
from pipeline.results.store import ResultStore

REAL = "class_scores/D20220522T003051_IFCB134_class.h5"


def test_class_file_has_the_dashboard_layout(ifcb_data: Path) -> None:
    scores = np.array([[0.25, 0.75], [0.6, 0.4]], dtype=np.float32)
    data = class_file_bytes(np.array([2, 3]), scores, ["a", "b"], classifier_name="ifcbflow x", model_hash="h")
    with h5py.File(io.BytesIO(data)) as ours, h5py.File(ifcb_data / REAL) as real:
        for key in ("output_scores", "class_labels", "roi_numbers", "classifier_name", "class_name_auto"):
            assert ours[key].ndim == real[key].ndim, key
            assert ours[key].dtype.kind == real[key].dtype.kind or key == "roi_numbers", key
        assert h5py.check_string_dtype(ours["class_labels"].dtype).length is None  # variable length, like the real
        assert ours["roi_numbers"].dtype == np.uint32
        np.testing.assert_array_equal(ours["output_scores"][()], scores)
        assert [v.decode() for v in ours["class_name_auto"][()]] == ["b", "a"]
        assert ours.attrs["model_hash"] == "h"


def test_dashboard_folders_follow_the_bin_time() -> None:
    assert dashboard_path("D20130526T095207_IFCB013") == "D2013/D20130526/D20130526T095207_IFCB013_class.h5"
    assert dashboard_path("IFCB5_2012_028_081515") == "2012/IFCB5_2012_028/IFCB5_2012_028_081515_class.h5"


def test_exports_of_a_store(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path / "out.zarr"))
    store.prepare(bundle_info={"classes": ["a", "b"], "content_hash": "h"}, bundle_url="b", archive_url="a")
    time = datetime(2024, 1, 1, tzinfo=UTC)
    result = BinResult("D20240101T000000_IFCB999", time, np.array([1]), np.array([[0.1, 0.9]], "f4"), None)
    store.commit_partition(partition_id([result.bin], "r"), [result], ["a", "b"])
    written = export_dashboard(store, str(tmp_path / "dash"))
    assert [Path(p).relative_to(tmp_path / "dash").as_posix() for p in written] == [
        "D2024/D20240101/D20240101T000000_IFCB999_class.h5"
    ]
    assert export_csv(store, str(tmp_path / "t" / "bins.csv")) == 1
    row = next(csv.DictReader((tmp_path / "t" / "bins.csv").open()))
    assert row["ml_analyzed"] == "" and row["b_per_ml"] == "" and row["b_count"] == "1"
