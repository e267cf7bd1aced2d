"""Training on real parts: 2-replica MirroredStrategy on logical CPUs, resume after a kill, the real ROIs.

Logical CPU devices can only be set before TensorFlow starts, so multi-replica runs happen in fresh processes
(the `ifcbflow` CLI, as a user would run it); the single-replica smoke test runs in this process.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from model.inference.load import load_bundle
from model.inference.predictors import predict
from model.training.data import image_folder_source, load_image_folder
from pipeline.cli.app import app
from pipeline.ifcb.synth import write_synthetic_archive

pytestmark = pytest.mark.slow

IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}  # CPU replicas, even on a GPU host
SMALL = ["--arch", "small-cnn", "--image-size", "32", "--batch-size", "16", "--seed", "0"]


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A labelled synthetic archive to train on, and a second one of bins the model never sees."""
    root = tmp_path_factory.mktemp("synth")
    seen, unseen = str(root / "train"), str(root / "unseen")
    write_synthetic_archive(seen, bins=10, rois=36, classes=4, seed=11)
    write_synthetic_archive(unseen, bins=3, rois=30, classes=4, seed=99, start=datetime(2025, 6, 1, tzinfo=UTC))
    return seen, unseen


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([IFCBFLOW, *args], env=ENV, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_make_strategy_gives_two_cpu_replicas_in_a_fresh_process() -> None:
    script = (
        "from model.training.train import make_strategy\n"
        "s = make_strategy(2)\n"
        "assert s.num_replicas_in_sync == 2, s.num_replicas_in_sync\n"
        "try:\n"
        "    make_strategy(3)\n"
        "except RuntimeError as err:\n"
        "    assert 'already started with 2 logical CPU' in str(err), err\n"
        "else:\n"
        "    raise AssertionError('3 replicas after start must fail')\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_two_replica_training_learns_and_generalises_to_unseen_bins(archives, tmp_path: Path) -> None:
    seen, unseen = archives
    out = tmp_path / "synth.ifcbmodel"
    _run("train", seen, "--labels", f"{seen}/labels.csv", *SMALL, "--replicas", "2", "--epochs", "10",
         "--patience", "10", "--out", str(out))  # fmt: skip
    bundle = load_bundle(str(out))
    training = bundle.provenance["training"]
    assert training["replicas"] == 2 and training["global_batch_size"] == 32
    assert [d.rsplit("/", 1)[-1] for d in training["devices"]] == ["device:CPU:0", "device:CPU:1"]
    split = bundle.provenance["split"]
    assert split["n_test"] > 0 and not set(split["test_groups"]) & set(split["val_groups"])
    assert bundle.provenance["metrics"]["test"]["accuracy"] > 0.6  # 4 classes: chance is 0.25
    fit = bundle.provenance["thresholds"]  # fitted on the validation split, shown by `model info`
    assert set(bundle.thresholds) == set(bundle.classes) and fit["fitted_on"] == "validation split"
    assert fit["n"] == split["n_val"] and set(fit["per_class"]) == set(bundle.classes)

    report_dir = tmp_path / "report"  # evaluation needs no replicas: run the CLI in this process
    result = CliRunner().invoke(
        app, ["evaluate", str(out), unseen, "--labels", f"{unseen}/labels.csv", "--json", "--out", str(report_dir)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"accuracy", "macro_f1", "weighted_f1", "per_class", "confusion_matrix", "top_k"} <= set(report)
    assert report["n"] == 90 and report["accuracy"] > 0.6, report["confusion_matrix"]
    assert (report_dir / "confusion_matrix.png").stat().st_size > 1000
    assert (report_dir / "confusion_matrix.csv").read_text().startswith("true \\ predicted,")


def _epochs_started(output: str) -> list[int]:
    return [int(n) for n in re.findall(r"^Epoch (\d+)/\d+", output, flags=re.MULTILINE)]


def _checkpointed_epochs(metadata: Path) -> int | None:
    """Epochs that Keras' BackupAndRestore has finished and saved (its metadata is written last), or None yet."""
    try:
        return int(json.loads(metadata.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return None


def test_a_killed_run_resumes_from_its_last_checkpoint(archives, tmp_path: Path) -> None:
    """The first run asks for far more epochs than it could finish before the kill, which comes as soon as one epoch is
    checkpointed; the resumed run asks for two more than were checkpointed, whatever that number is."""
    seen, _ = archives
    ckpt, out = tmp_path / "ckpt", tmp_path / "resumed.ifcbmodel"
    common = ["train", seen, "--labels", f"{seen}/labels.csv", *SMALL, "--replicas", "2", "--patience", "1000",
              "--checkpoint-dir", str(ckpt), "--out", str(out)]  # fmt: skip
    metadata, log = ckpt / "backup" / "training_metadata.json", tmp_path / "first.log"
    with log.open("w") as stderr:
        first = subprocess.Popen([IFCBFLOW, *common, "--epochs", "1000"], env=ENV, stdout=subprocess.DEVNULL,
                                 stderr=stderr)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while _checkpointed_epochs(metadata) is None and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL, f"the first run ended by itself:\n{log.read_text()[-3000:]}"
    done = _checkpointed_epochs(metadata)  # epochs finished and checkpointed before the kill
    assert done is not None and done >= 1, f"no epoch checkpoint appeared:\n{log.read_text()[-3000:]}"
    assert not out.exists()

    total = done + 2
    second = _run(*common, "--epochs", str(total))
    started = _epochs_started(second.stdout)
    assert started == [done + 1, done + 2], second.stdout[-2000:]  # continues; no epoch before is redone
    assert f"resuming at epoch {done + 1}" in second.stderr
    with (ckpt / "history.csv").open() as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == list(range(total))
    bundle = load_bundle(str(out))
    assert [int(row["epoch"]) for row in bundle.provenance["history"]] == list(range(total))
    assert not (ckpt / "backup").exists()  # a finished run leaves only its history


def test_real_labelled_rois_train_one_epoch_of_the_deployed_architecture(utopia_data: Path, tmp_path: Path) -> None:
    from model.preprocess import PreprocessConfig
    from model.training.prepared import prepare
    from model.training.train import train

    data = load_image_folder(str(utopia_data / "labelled"))
    prepared = prepare(image_folder_source(str(utopia_data / "labelled")), str(tmp_path / "p"), PreprocessConfig())
    bundle = train(prepared, arch="utopia-b3", epochs=1, replicas=1, batch_size=16,
                   out_url=str(tmp_path / "u.ifcbmodel"), verbose=0)  # fmt: skip
    assert bundle.classes == data.classes and bundle.model.count_params() == 2_919_409  # 9 classes
    provenance = bundle.provenance
    assert len(provenance["history"]) == 1 and provenance["training"]["epochs_run"] == 1
    (epoch,) = provenance["history"]  # what a trainer watches, beside loss and accuracy
    assert epoch["images_per_s_per_replica"] > 0 and epoch["input_stall_s"] >= 0
    assert provenance["split"]["n_train"] + provenance["split"]["n_val"] + provenance["split"]["n_test"] == 93
    assert provenance["metrics"]["test"]["n"] == provenance["split"]["n_test"] > 0
    assert set(provenance["versions"]) >= {"tensorflow", "keras", "ifcbflow"}
    loaded = load_bundle(str(tmp_path / "u.ifcbmodel"))
    assert predict(loaded, data.images[:5]).shape == (5, 9)


def test_a_second_training_reuses_the_prepared_set_and_reads_nothing_from_the_archive(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    write_synthetic_archive(str(archive), bins=6, rois=20, classes=3, seed=5)
    prepared = tmp_path / "prepared"
    common = [*SMALL, "--replicas", "1", "--epochs", "1", "--prepared", str(prepared)]
    _run("train", str(archive), "--labels", str(archive / "labels.csv"), *common, "--out", str(tmp_path / "a.zip"))
    for roi in archive.rglob("*.roi"):  # the bins are gone: only the labels file is left to look at
        roi.unlink()
    second = _run("train", str(archive), "--labels", str(archive / "labels.csv"), *common, "--seed", "1",
                  "--out", str(tmp_path / "b.zip"))  # fmt: skip
    assert f"training on the prepared set at {prepared}" in second.stdout
    bundle = load_bundle(str(tmp_path / "b.zip"))
    assert bundle.provenance["data"]["prepared"] == str(prepared) and bundle.provenance["data"]["n_images"] == 120
    assert {"loss", "accuracy", "images_per_s_per_replica", "input_stall_s"} <= set(bundle.provenance["history"][0])
    _run("train", str(prepared), *SMALL, "--replicas", "1", "--epochs", "1", "--out", str(tmp_path / "c.zip"))
    changed = subprocess.run(
        [IFCBFLOW, "train", str(archive), "--labels", str(archive / "labels.csv"), *common, "--image-size", "40",
         "--out", str(tmp_path / "d.zip")], env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert changed.returncode == 2 and "another source or preprocessing" in changed.stdout, changed.stdout


def test_checkpoint_dir_is_derived_and_never_shared_by_two_different_runs(tmp_path: Path) -> None:
    from model.training.train import _claim_checkpoint_dir, default_checkpoint_dir

    assert default_checkpoint_dir("/data/m.ifcbmodel") == Path("/data/m.ifcbmodel.ckpt")
    assert default_checkpoint_dir("file:///data/m.ifcbmodel") == Path("/data/m.ifcbmodel.ckpt")
    remote = default_checkpoint_dir("s3://bucket/m.ifcbmodel")
    assert remote.parent.name == "checkpoints" and remote != default_checkpoint_dir("s3://bucket/other.ifcbmodel")
    ckpt = tmp_path / "ckpt"
    _claim_checkpoint_dir(ckpt, {"arch": "small-cnn", "seed": 0})
    _claim_checkpoint_dir(ckpt, {"arch": "small-cnn", "seed": 0})  # the same run may resume
    (ckpt / "backup").mkdir()
    with pytest.raises(ValueError, match="holds an unfinished run with other settings"):
        _claim_checkpoint_dir(ckpt, {"arch": "small-cnn", "seed": 1})


def test_the_decision_rule_is_in_the_help_of_the_commands_that_fit_thresholds() -> None:
    for command in (["train"], ["model", "thresholds"]):
        text = " ".join(CliRunner(env={"COLUMNS": "200"}).invoke(app, [*command, "--help"]).stdout.split())
        assert "otherwise the ROI is \"unclassified\"" in text and "maximise that class's F1" in text, command
