"""`ifcbflow classify` options: a YAML run file supplies options, command-line flags win; CSV export."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from classify_support import CLASSES, make_bundle
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.ifcb.synth import write_synthetic_archive

pytestmark = pytest.mark.slow


def test_config_file_fills_options_and_flags_win(tmp_path: Path, dask_client) -> None:
    archive, bundle = str(tmp_path / "archive"), str(tmp_path / "bundle.zip")
    ids = write_synthetic_archive(archive, bins=4, rois=6, classes=len(CLASSES), seed=21)
    make_bundle(bundle)
    (tmp_path / "bins.txt").write_text("\n".join(ids[:3]) + "\n")
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": bundle,
                "out": str(tmp_path / "out.zarr"),
                "cluster": dask_client.scheduler.address,
                "partition-mb": 5,
                "bins": str(tmp_path / "bins.txt"),
                "batch_size": 4,
            }
        )
    )
    result = CliRunner().invoke(app, ["classify", archive, "--config", str(config), "--json", "--partition-mb", "1e-4"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["partition_mb"] == 1e-4  # the flag; the file's 5 would be balanced down to a share of the bins
    assert summary["partitions"] == 3  # a bin each
    assert summary["bins_done"] == 3  # the file's --bins list
    stages = summary["stage_seconds"]  # where the time went, by stage, for the benchmarks and the table
    assert set(stages) == {"start", "read", "preprocess", "morphology", "load", "feed_wait", "batch", "infer",
                           "commit", "consolidate"}  # fmt: skip
    assert all(stages[name] > 0 for name in ("start", "read", "preprocess", "load", "infer", "commit", "consolidate"))
    assert stages["morphology"] == 0  # not asked
    task_thread = sum(stages[name] for name in ("load", "feed_wait", "batch", "infer", "commit"))
    workers = len(dask_client.scheduler_info()["workers"])
    assert task_thread <= summary["seconds"] * workers  # each partition's own thread, partitions side by side

    table = tmp_path / "exports" / "bins.csv"
    result = CliRunner().invoke(app, ["export", str(tmp_path / "out.zarr"), "--csv", str(table)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(table.open()))
    assert [row["bin"] for row in rows] == ids[:3]
    for row in rows:
        counts = [int(row[f"{name}_count"]) for name in CLASSES]
        assert sum(counts) == int(row["n_rois"]) == 6
        assert float(row[f"{CLASSES[0]}_per_ml"]) == pytest.approx(counts[0] / float(row["ml_analyzed"]))


def test_config_file_with_unknown_keys_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("model: b.zip\nmodle: typo\n")
    result = CliRunner().invoke(app, ["classify", "archive", "--config", str(config)])
    assert result.exit_code != 0
    assert "unknown keys ['modle']" in result.output
