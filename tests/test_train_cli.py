"""`ifcbflow train`'s refusals that come before any training: each is one message and exit code 2."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.cli.exit_codes import USAGE
from pipeline.ifcb.synth import write_synthetic_archive


def _train(*args: str) -> tuple[int, str]:
    result = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["train", *args])
    return result.exit_code, " ".join(result.output.split())


def test_a_set_of_too_few_bins_for_the_split_says_what_it_needs_and_exits_2(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    write_synthetic_archive(str(archive), bins=1, rois=8, classes=2, seed=0)
    out, prepared = tmp_path / "m.zip", tmp_path / "prepared"
    code, text = _train(str(archive), "--labels", str(archive / "labels.csv"), "--out", str(out),
                        "--prepared", str(prepared))  # fmt: skip
    assert code == USAGE, text
    assert "has 1 bin(s)" in text and "validation 0.15 and test 0.15 needs at least 3" in text, text
    assert "--val 0" in text and "Traceback" not in text
    assert not prepared.exists() and not out.exists()  # refused before any image was read


def test_a_split_of_too_many_parts_for_a_prepared_set_exits_2(tmp_path: Path) -> None:
    from model.preprocess import PreprocessConfig
    from model.training.prepared import prepare
    from pipeline.ifcb.labelled import labelled_archive_source

    archive = tmp_path / "archive"
    write_synthetic_archive(str(archive), bins=2, rois=5, classes=2, seed=0)
    prepared = tmp_path / "prepared"
    source = labelled_archive_source(str(archive), str(archive / "labels.csv"))
    prepare(source, str(prepared), PreprocessConfig(size=16))
    code, text = _train(str(prepared), "--out", str(tmp_path / "m.zip"))
    assert code == USAGE and "has 2 bin(s)" in text and "needs at least 3" in text, text
    code, text = _train(str(prepared), "--out", str(tmp_path / "m.zip"), "--image-size", "32")
    assert code == USAGE and "a prepared set of size 16, not --image-size 32" in text, text
