"""Honest exit codes of `ifcbflow classify`: 0 only when every selected bin is complete; 1 when some failed; 2 for a
request that cannot run (and then nothing is written)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from classify_support import CLASSES, make_bundle
from typer.testing import CliRunner

from model.bundle import content_hash
from pipeline.cli import exit_codes
from pipeline.cli.app import app
from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.results.store import ResultStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("codes")
    good, broken = root / "good", root / "broken"
    ids = write_synthetic_archive(str(good), bins=3, rois=4, classes=len(CLASSES), seed=1, flat=True)
    write_synthetic_archive(str(broken), bins=2, rois=4, classes=len(CLASSES), seed=2, flat=True)
    for roi in broken.glob("*.roi"):  # every bin of this archive is truncated
        roi.write_bytes(roi.read_bytes()[:10])
    make_bundle(str(root / "bundle.zip"))
    return {"root": root, "good": good, "broken": broken, "bundle": root / "bundle.zip", "first": Path(ids[0])}


def _classify(setup: dict[str, Path], archive: Path, out: str, cluster: str, *extra: str):
    args = ["classify", str(archive), "--model", str(setup["bundle"]), "--out", out, "--cluster", cluster, "--json"]
    return CliRunner().invoke(app, [*args, *extra])


def test_all_good_is_0_and_one_corrupt_bin_is_1(setup, dask_client, tmp_path: Path) -> None:
    cluster = dask_client.scheduler.address
    result = _classify(setup, setup["good"], str(tmp_path / "a.zarr"), cluster)
    assert result.exit_code == exit_codes.OK, result.output
    roi = next(setup["good"].glob("*.roi"))
    saved = roi.read_bytes()
    try:
        roi.write_bytes(saved[: len(saved) // 2])
        result = _classify(setup, setup["good"], str(tmp_path / "b.zarr"), cluster)
    finally:
        roi.write_bytes(saved)
    assert result.exit_code == exit_codes.NOT_COMPLETE, result.output
    summary = json.loads(result.stdout)
    assert summary["bins_done"] == 2 and summary["bins_failed"] == 1 and not summary["complete"]


def test_every_bin_failing_is_1(setup, dask_client, tmp_path: Path) -> None:
    result = _classify(setup, setup["broken"], str(tmp_path / "c.zarr"), dask_client.scheduler.address)
    assert result.exit_code == exit_codes.NOT_COMPLETE, result.output
    assert json.loads(result.stdout)["bins_failed"] == 2


def test_a_bundle_whose_input_does_not_fit_its_preprocessing_is_2(setup, dask_client, tmp_path: Path) -> None:
    bad = tmp_path / "mismatch.zip"
    with zipfile.ZipFile(setup["bundle"]) as original:
        metadata = json.loads(original.read("bundle.json"))
        model_bytes = original.read("model.keras")
    metadata["preprocess"]["size"] = 48  # the model takes 32x32 inputs
    metadata["content_hash"] = content_hash(model_bytes, metadata)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("bundle.json", json.dumps(metadata))
        archive.writestr("model.keras", model_bytes)
    bad.write_bytes(buffer.getvalue())
    args = ["classify", str(setup["good"]), "--model", str(bad), "--out", str(tmp_path / "d.zarr"),
            "--cluster", dask_client.scheduler.address]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == exit_codes.USAGE, result.output
    assert "48" in result.output and "32" in result.output and "Traceback" not in result.output
    assert ResultStore(str(tmp_path / "d.zarr")).ledger().bins == {}  # one message, no bin classified or failed


def test_start_after_end_is_2_and_writes_nothing(setup, dask_client, tmp_path: Path) -> None:
    out = tmp_path / "e.zarr"
    result = _classify(setup, setup["good"], str(out), dask_client.scheduler.address,
                       "--start", "2024-02-01", "--end", "2024-01-01")  # fmt: skip
    assert result.exit_code == exit_codes.USAGE and "is not before" in result.output
    assert not out.exists()
    ls = CliRunner().invoke(app, ["ls", str(setup["good"]), "--start", "2024-02-01", "--end", "2024-01-01"])
    assert ls.exit_code == exit_codes.USAGE and "is not before" in ls.output


def test_a_missing_archive_is_2_and_creates_no_store(setup, dask_client, tmp_path: Path) -> None:
    out = tmp_path / "f.zarr"
    result = _classify(setup, tmp_path / "no-such-archive", str(out), dask_client.scheduler.address)
    assert result.exit_code == exit_codes.USAGE and "archive not found" in result.output
    assert not out.exists()


def test_unknown_bins_are_2_and_create_no_store(setup, dask_client, tmp_path: Path) -> None:
    out, listing = tmp_path / "g.zarr", tmp_path / "bins.txt"
    listing.write_text("D20990101T000000_IFCB999\n")
    result = _classify(setup, setup["good"], str(out), dask_client.scheduler.address, "--bins", str(listing))
    assert result.exit_code == exit_codes.USAGE and "D20990101T000000_IFCB999" in result.output
    assert not out.exists()
