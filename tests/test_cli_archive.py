"""The archive commands through the real Typer app: `ls`, `extract`, `synth`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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
REPO = Path(__file__).resolve().parent.parent
NEW, OLD = "D20130526T095207_IFCB013", "IFCB5_2012_028_081515"
KEYS = ["bin", "instrument", "time", "rois", "ml_analyzed", "status", "reason", "warnings", "run_type", "sample_type",
        "latitude", "longitude"]  # fmt: skip


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
        "ml_analyzed": pytest.approx(4.8850699, rel=1e-7), "status": "ok", "reason": None, "warnings": [],
        "run_type": "NORMAL", "sample_type": None, "latitude": None, "longitude": None,
    }  # fmt: skip
    assert by_bin[OLD]["rois"] == 5 and by_bin[OLD]["status"] == "ok"  # rows 3 and 4 stitched into one ROI
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


def _bin_images(ifcb_data: Path, name: str) -> list[tuple[int, np.ndarray]]:
    fs, files = bin_files_at(str(ifcb_data / "bins" / name))
    return read_bin_images(fs, read_bin_meta(fs, files))


def _pngs(folder: Path) -> dict[str, np.ndarray]:
    found = {}
    for path in sorted(folder.iterdir()):
        with Image.open(path) as png:
            assert png.mode == "L"
            found[path.name] = np.asarray(png)
    return found


def test_extract_model_input_writes_what_the_default_model_sees(ifcb_data: Path, tmp_path: Path) -> None:
    from model.preprocess import PreprocessConfig, preprocess

    out = tmp_path / "seen"
    result = runner.invoke(app, ["extract", str(ifcb_data / "bins" / OLD), str(out), "--model-input"])
    assert result.exit_code == 0, result.output
    images = _bin_images(ifcb_data, OLD)
    written = _pngs(out)
    assert list(written) == [f"{OLD}_{n:05d}.png" for n, _ in images]
    for number, image in images:
        seen = written[f"{OLD}_{number:05d}.png"]
        assert seen.shape == (128, 128) and seen.dtype == np.uint8
        np.testing.assert_array_equal(seen, preprocess(image, PreprocessConfig())[:, :, 0])
    assert "model-input 128x128" in result.output


def test_extract_model_input_uses_the_bundles_preprocessing_without_tensorflow(ifcb_data: Path, tmp_path: Path) -> None:
    from model.architectures import build
    from model.bundle import Bundle, save_bundle
    from model.preprocess import PreprocessConfig, preprocess

    config = PreprocessConfig(size=48, pad_value=20, normalisation="none")
    bundle_path = tmp_path / "m.zip"
    save_bundle(Bundle(model=build("small-cnn", 2, 48), classes=["a", "b"], preprocess=config, arch="small-cnn"),
                str(bundle_path))  # fmt: skip
    out = tmp_path / "seen"
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from pipeline.cli.app import app\n"
        "result = CliRunner().invoke(app, sys.argv[1:])\n"
        "assert result.exit_code == 0, result.output\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    args = ["extract", str(ifcb_data / "bins" / NEW), str(out), "--model-input", "--model", str(bundle_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["False", "False"]  # only the bundle's metadata was read
    images = _bin_images(ifcb_data, NEW)
    written = _pngs(out)
    assert len(written) == len(images)
    for number, image in images:
        np.testing.assert_array_equal(written[f"{NEW}_{number:05d}.png"], preprocess(image, config)[:, :, 0])


def test_extract_model_input_of_an_onnx_bundle_with_a_float_contract(ifcb_data: Path, tmp_path: Path) -> None:
    from onnx_support import onnx_classifier

    from model.preprocess import preprocess, preset

    onnx_classifier(tmp_path / "m.onnx", size=40)
    result = runner.invoke(app, ["model", "import", str(tmp_path / "m.onnx"), "--classes", "a,b,c", "--preprocess",
                                 "smhi", "--out", str(tmp_path / "m.zip")])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "seen"
    args = ["extract", str(ifcb_data / "bins" / NEW), str(out), "--model-input", "--model", str(tmp_path / "m.zip")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    written = _pngs(out)
    for number, image in _bin_images(ifcb_data, NEW):
        grey = preprocess(image, preset("smhi", size=40))[:, :, 0]  # float32 grey levels: the PNG rounds them
        assert grey.dtype == np.float32
        np.testing.assert_array_equal(written[f"{NEW}_{number:05d}.png"], np.rint(grey).astype(np.uint8))


def test_extract_model_flags_are_checked(ifcb_data: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["extract", str(ifcb_data / "bins" / OLD), str(tmp_path / "a"), "--model", "m.zip"])
    assert result.exit_code == 2 and "--model-input" in result.output
    result = runner.invoke(app, ["extract", str(ifcb_data / "bins" / OLD), str(tmp_path / "b"), "--model-input",
                                 "--model", str(tmp_path / "absent.zip")])  # fmt: skip
    assert result.exit_code == 2 and "no model bundle at" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


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
