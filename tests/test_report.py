"""The report of a store: JSON totals, rich tables and the concentration plot, from a store written directly."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.cli.tables import report_tables
from pipeline.ifcb.errors import BinFailure
from pipeline.results.partitions import partition_id
from pipeline.results.records import BinResult
from pipeline.results.report import plot_concentrations, store_report
from pipeline.results.store import ResultStore

CLASSES = ["diatom", "dinoflagellate"]


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    results = ResultStore(str(tmp_path / "out.zarr"))
    results.prepare(
        bundle_info={"classes": CLASSES, "content_hash": "abc123", "arch": "small-cnn"},
        bundle_url="b.zip",
        archive_url="archive",
    )
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], dtype=np.float32)
    bins = [
        BinResult(f"D20240101T0{hour}0000_IFCB999", datetime(2024, 1, 1, hour, tzinfo=UTC), np.array([1, 2, 5]),
                  scores, ml)
        for hour, ml in ((0, 2.0), (1, None))
    ]  # fmt: skip
    failure = BinFailure("D20240101T020000_IFCB999", "roi", "truncated .roi")
    results.commit_partition(partition_id([b.bin for b in bins], "r"), bins, CLASSES, [failure])
    return results


def test_report_totals(store: ResultStore) -> None:
    report = store_report(store)
    assert report["bins_complete"] == 2 and report["bins_failed"] == 1 and report["rois"] == 6
    assert report["counts"] == {"diatom": 4, "dinoflagellate": 2}
    assert report["mean_concentration_per_ml"] == {"diatom": 1.0, "dinoflagellate": 0.5}  # the bin with a volume
    assert report["bins_without_volume"] == 1
    assert report["failures"] == [
        {"bin": "D20240101T020000_IFCB999", "stage": "roi", "reason": "truncated .roi", "kind": "data", "files": ""}
    ]
    assert (report["first_bin_time"], report["last_bin_time"]) == ("2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z")
    console = Console(record=True, width=120)
    for table in report_tables(report):
        console.print(table)
    assert "truncated .roi" in console.export_text()


def test_plot_is_a_png(store: ResultStore, tmp_path: Path) -> None:
    png = tmp_path / "plot.png"
    plot_concentrations(store, str(png))
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 600


def test_report_command(store: ResultStore, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", store.url, "--json", "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["classes"] == CLASSES
    assert (tmp_path / "p.png").stat().st_size > 0
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nothing.zarr")])
    assert missing.exit_code != 0 and "no ifcbflow store" in missing.output


def test_report_counts_the_adc_rows_left_out(store: ResultStore, tmp_path: Path) -> None:
    """Rows left out are counted from each complete bin's warnings, across bins; other warnings count none."""
    assert store_report(store)["adc_rows_left_out"] == 0
    results = ResultStore(str(tmp_path / "warned.zarr"))
    results.prepare(bundle_info={"classes": CLASSES, "content_hash": "h"}, bundle_url="b.zip", archive_url="a")
    warnings = {
        0: (".adc: 1 row left out (no ROI): line 49, column 15 (ROI width): blank",),
        1: (
            ".adc: 5000 rows left out (no ROI): line 2, column 15 (ROI width): blank; and 4999 more",
            ".adc: 1 row not counted in the volume analysed: line 60, column 23 (inhibit time): blank",
        ),
        2: ("the header says 3 ROIs, the .adc lists 4: the .adc's are read",),
        3: (),
    }
    scores = np.array([[0.9, 0.1]], dtype=np.float32)
    bins = [
        BinResult(f"D20240101T0{hour}0000_IFCB999", datetime(2024, 1, 1, hour, tzinfo=UTC), np.array([1]), scores,
                  1.0, warned)
        for hour, warned in warnings.items()
    ]  # fmt: skip
    results.commit_partition(partition_id([b.bin for b in bins], "r"), bins, CLASSES)
    report = store_report(results)
    assert report["adc_rows_left_out"] == 5001
    assert len(report["warnings"]) == 4
    result = CliRunner().invoke(app, ["report", results.url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["adc_rows_left_out"] == 5001
