"""The inference runtime: a Keras bundle's ONNX twin, the choice per device (`model.inference.runtimes`),
`--runtime`, and worker processes that import only the runtime they run (real bins of ../shared/data, through the
CLI)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from classify_support import CLASSES, make_bundle, session_survivors
from typer.testing import CliRunner

from model.bundle import BundleError, read_bundle_info, runtimes, save_with_thresholds
from model.inference.load import load_bundle
from model.inference.predictors import predict
from model.inference.runtimes import choose_runtime
from pipeline.cli.app import app
from pipeline.results.rois import open_rois

IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))
REAL_BINS = ("D20130526T095207_IFCB013", "IFCB5_2012_028_081515")  # new-style and old-style (stitched)
#: ONNX Runtime against TensorFlow on the same graph: float32 sums in another order.
SCORE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def twin_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(a Keras bundle without an ONNX twin, the same bundle with one, made by `model export --add-onnx`)."""
    root = tmp_path_factory.mktemp("twin")
    plain, twin = str(root / "plain.zip"), str(root / "twin.zip")
    make_bundle(plain)
    result = CliRunner().invoke(app, ["model", "export", plain, "--add-onnx", "--out", twin])
    assert result.exit_code == 0, result.output
    return plain, twin


def _archive(ifcb_data: Path, root: Path, ids: tuple[str, ...]) -> Path:
    root.mkdir()
    for bin_id in ids:
        for suffix in (".hdr", ".adc", ".roi"):
            shutil.copy(ifcb_data / "bins" / f"{bin_id}{suffix}", root)
    return root


def _classify(
    archive: Path, bundle: str, out: Path, *extra: str, workers: str | None = "2"
) -> subprocess.CompletedProcess:
    """`ifcbflow classify` in its own session (`--workers` unless None), each process's imports written to stderr
    (`-X importtime`, inherited by worker processes through PYTHONPROFILEIMPORTTIME); fails if a process of the run
    outlives it."""
    command = [IFCBFLOW, "classify", str(archive), "-m", bundle, "-o", str(out), "--json", *extra]
    if workers is not None:
        command += ["--workers", workers]
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    job = subprocess.Popen(command, start_new_session=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)  # fmt: skip
    stdout, stderr = job.communicate(timeout=300)
    assert not session_survivors(job.pid), "a process of the run outlived it"
    return subprocess.CompletedProcess(command, job.returncode, stdout, stderr)


def _imported(stderr: str) -> set[str]:
    """Top-level packages some process of the run imported, from `-X importtime`'s lines."""
    lines = re.finditer(r"^import time:.*\|\s*([A-Za-z_]\w*)(?:\.\w+)*\s*$", stderr, re.MULTILINE)
    return {match.group(1) for match in lines}


def _scores(store: Path) -> dict[tuple[str, int], np.ndarray]:
    rois = open_rois(str(store))
    return {
        (str(b), int(n)): row
        for b, n, row in zip(rois.bin.values, rois.roi_number.values, rois.scores.values, strict=True)
    }


def test_the_rule_runs_onnx_on_cpu_and_keras_on_gpu_unless_asked() -> None:
    assert choose_runtime(("keras", "onnx"), gpu=False) == "onnx"
    assert choose_runtime(("keras", "onnx"), gpu=True) == "keras"
    assert choose_runtime(("keras",), gpu=False) == "keras"
    assert choose_runtime(("onnx",), gpu=True) == "onnx"
    assert choose_runtime(("keras", "onnx"), gpu=False, requested="keras") == "keras"
    assert choose_runtime(("keras",), gpu=False, requested="onnx") == "onnx"  # for load_bundle to refuse
    with pytest.raises(ValueError, match="unknown runtime"):
        choose_runtime(("keras",), gpu=False, requested="torch")


def test_the_twin_is_the_same_model_checked_and_carried(twin_bundle: tuple[str, str], tmp_path: Path) -> None:
    plain, twin = twin_bundle
    plain_info, twin_info = read_bundle_info(plain), read_bundle_info(twin)
    assert runtimes(plain_info) == ("keras",) and runtimes(twin_info) == ("keras", "onnx")
    assert twin_info["model_hash"] == plain_info["model_hash"]  # one model to a store
    assert twin_info["content_hash"] != plain_info["content_hash"]
    assert twin_info["provenance"]["onnx_twin"]["max_score_difference"] <= 1e-4
    with pytest.raises(BundleError, match="--add-onnx"):
        load_bundle(plain, runtime="onnx")
    images = [np.random.default_rng(i).integers(0, 256, (40 + 7 * i, 60), dtype=np.uint8) for i in range(12)]
    keras_scores = predict(load_bundle(twin, runtime="keras"), images)
    onnx_bundle = load_bundle(twin, runtime="onnx")
    assert onnx_bundle.model.runtime == "onnx"
    np.testing.assert_allclose(predict(onnx_bundle, images), keras_scores, atol=SCORE_TOLERANCE)

    refitted = str(tmp_path / "refitted.zip")  # `model thresholds` copies the model and its twin
    save_with_thresholds(twin, refitted, dict.fromkeys(CLASSES, 0.5), {"method": "test"})
    assert runtimes(read_bundle_info(refitted)) == ("keras", "onnx")
    assert load_bundle(refitted, runtime="onnx").model.data == onnx_bundle.model.data

    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(twin) as source, zipfile.ZipFile(tampered, "w") as out:
        for item in source.infolist():
            data = source.read(item)
            out.writestr(item, data[:-1] + bytes([data[-1] ^ 1]) if item.filename == "model.onnx" else data)
    with pytest.raises(BundleError, match="ONNX twin's sha256"):
        load_bundle(str(tampered), runtime="onnx")


def test_workers_run_the_twin_without_tensorflow_and_agree_with_keras(
    ifcb_data: Path, twin_bundle: tuple[str, str], tmp_path: Path
) -> None:
    """Two real bins on two worker processes: by default (CPU) on ONNX Runtime, no process of the run importing
    TensorFlow or Keras; `--runtime keras` imports TensorFlow and gives the same scores."""
    _, twin = twin_bundle
    archive = _archive(ifcb_data, tmp_path / "archive", REAL_BINS)
    chosen = _classify(archive, twin, tmp_path / "auto.zarr")
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    imported = _imported(chosen.stderr)
    assert "onnxruntime" in imported and "distributed" in imported
    assert not imported & {"tensorflow", "keras"}, "a process of the run imported TensorFlow or Keras"
    forced = _classify(archive, twin, tmp_path / "keras.zarr", "--runtime", "keras")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert "tensorflow" in _imported(forced.stderr)
    assert json.loads(chosen.stdout)["dashboard"]  # two bins: worker processes, with the dashboard
    again = _classify(archive, twin, tmp_path / "auto.zarr")  # nothing to do: no cluster is started
    assert again.returncode == 0 and json.loads(again.stdout)["dashboard"] is None
    auto, keras = _scores(tmp_path / "auto.zarr"), _scores(tmp_path / "keras.zarr")
    assert sorted(auto) == sorted(keras) and {b for b, _ in auto} == set(REAL_BINS)
    assert len(auto) == 19 + 5  # the old-style bin's ROIs stitched
    for key, scores in auto.items():
        np.testing.assert_allclose(scores, keras[key], atol=SCORE_TOLERANCE, err_msg=str(key))


def test_a_one_bin_run_starts_no_worker_process_and_no_tensorflow(
    ifcb_data: Path, twin_bundle: tuple[str, str], tmp_path: Path
) -> None:
    _, twin = twin_bundle
    archive = _archive(ifcb_data, tmp_path / "one", REAL_BINS[:1])
    run = _classify(archive, twin, tmp_path / "one.zarr")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "1 worker thread in this process" in run.stderr
    assert not _imported(run.stderr) & {"tensorflow", "keras"}
    assert len(_scores(tmp_path / "one.zarr")) == 19


def test_a_small_job_runs_in_this_process_unless_workers_are_asked_for(
    ifcb_data: Path, twin_bundle: tuple[str, str], tmp_path: Path
) -> None:
    """Both real bins (new- and old-style) are a small job (`SMALL_JOB_BINS`): no worker process is started, and
    the scores are those of the same run on worker processes (`--workers 2`)."""
    _, twin = twin_bundle
    archive = _archive(ifcb_data, tmp_path / "two", REAL_BINS)
    here = _classify(archive, twin, tmp_path / "here.zarr", workers=None)
    assert here.returncode == 0, here.stderr[-3000:]
    assert "1 worker thread in this process" in here.stderr and json.loads(here.stdout)["bins_done"] == 2
    spread = _classify(archive, twin, tmp_path / "spread.zarr")
    assert spread.returncode == 0, spread.stderr[-3000:]
    assert "1 worker thread in this process" not in spread.stderr and json.loads(spread.stdout)["bins_done"] == 2
    ours, theirs = _scores(tmp_path / "here.zarr"), _scores(tmp_path / "spread.zarr")
    assert ours.keys() == theirs.keys() and len(ours) > 19
    for key, scores in ours.items():
        np.testing.assert_allclose(scores, theirs[key], atol=1e-6, err_msg=str(key))


def test_asking_for_a_runtime_the_bundle_lacks_is_a_configuration_error(
    ifcb_data: Path, twin_bundle: tuple[str, str], tmp_path: Path
) -> None:
    plain, _ = twin_bundle
    archive = _archive(ifcb_data, tmp_path / "archive", REAL_BINS[:1])
    run = _classify(archive, plain, tmp_path / "none.zarr", "--runtime", "onnx")
    assert run.returncode == 2 and "--add-onnx" in run.stderr, run.stderr[-3000:]
