"""The archive commands through the real Typer app: `ls`, `extract`, `synth`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.ifcb.archive import bin_files_at
from pipeline.ifcb.bins import read_bin_images, read_bin_meta

runner = CliRunner()
NEW, OLD = "D20130526T095207_IFCB013", "IFCB5_2012_028_081515"
KEYS = ["bin", "instrument", "time", "rois", "ml_analyzed", "status", "reason"]


@pytest.fixture
def archive(ifcb_data: Path, tmp_path: Path) -> Path:
    """Both real bins, an empty bin and a bin without .roi."""
    root = tmp_path / "archive"
    shutil.copytree(ifcb_data / "bins", root / "bins")
    shutil.copytree(ifcb_data / "empty", root / "empty")
    for ext in ("hdr", "adc"):
        shutil.copy(ifcb_data / "partial" / f"{OLD}.{ext}", root / f"IFCB5_2012_029_081515.{ext}")
    return root


def test_ls_json(archive: Path) -> None:
    result = runner.invoke(app, ["ls", str(archive), "--json"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(list(r) == KEYS for r in records)
    by_bin = {r["bin"]: r for r in records}
    assert by_bin[NEW] == {
        "bin": NEW, "instrument": "IFCB013", "time": "2013-05-26T09:52:07+00:00", "rois": 19,
        "ml_analyzed": pytest.approx(4.8850699, rel=1e-7), "status": "ok", "reason": None,
    }  # fmt: skip
    assert by_bin[OLD]["rois"] == 6 and by_bin[OLD]["status"] == "ok"
    assert by_bin["D20150411T205456_IFCB012"]["rois"] == 0
    assert by_bin["D20150411T205456_IFCB012"]["ml_analyzed"] is None
    failed = by_bin["IFCB5_2012_029_081515"]
    assert failed["status"] == "failed" and failed["reason"] == "files: missing .roi"
    assert len(records) == 5


def test_ls_table_and_time_filter(archive: Path) -> None:
    result = runner.invoke(app, ["ls", str(archive), "--start", "2013-05-26", "--end", "2013-05-27T00:00:00"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["bin", "instrument"]
    assert len(lines) == 2 and lines[1].split()[:2] == [NEW, "IFCB013"] and lines[1].endswith("ok")
    assert "1 bins ok, 0 failed, 19 ROIs" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ls", "/nonexistent/archive"], "archive not found"),
        (["ls", ".", "--start", "yesterday"], "ISO 8601"),
        (["ls", ".", "--storage-options", "{bad"], "not valid JSON"),
        (["extract", "/tmp/not_a_bin.txt", "/tmp/out"], "not an IFCB bin id"),
    ],
)
def test_bad_input_exits_non_zero_with_a_message(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())


def test_extract_writes_lossless_png(ifcb_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "png"
    result = runner.invoke(app, ["extract", str(ifcb_data / "bins" / f"{NEW}.roi"), str(out)])
    assert result.exit_code == 0, result.output
    fs, files = bin_files_at(str(ifcb_data / "bins" / NEW))
    images = read_bin_images(fs, read_bin_meta(fs, files))
    assert sorted(p.name for p in out.iterdir()) == [f"{NEW}_{n:05d}.png" for n, _ in images]
    for number, image in images:
        with Image.open(out / f"{NEW}_{number:05d}.png") as png:
            assert png.mode == "L"
            np.testing.assert_array_equal(np.asarray(png), image)


def test_extract_incomplete_bin_fails(ifcb_data: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["extract", str(ifcb_data / "partial" / OLD), str(tmp_path / "png")])
    assert result.exit_code != 0 and "missing .roi" in result.output
    assert not (tmp_path / "png").exists()


def test_synth_then_ls(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/synth"
    result = runner.invoke(app, ["synth", url, "--bins", "3", "--rois", "7", "--classes", "3", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "synth" / "labels.csv").read_text().count("\n") == 1 + 3 * 7
    records = [json.loads(line) for line in runner.invoke(app, ["ls", url, "--json"]).stdout.splitlines()]
    assert [r["rois"] for r in records] == [7, 7, 7] and {r["status"] for r in records} == {"ok"}
    fs = fsspec.filesystem("file")
    assert len(fs.glob(f"{tmp_path}/synth/D2024/D20240101/*.roi")) == 3


def test_synth_rejects_bad_counts(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", str(tmp_path), "--classes", "11"])
    assert result.exit_code != 0 and "--classes" in result.output


@pytest.mark.parametrize("command", ["ls", "extract", "synth"])
def test_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "--storage-options" in result.output
