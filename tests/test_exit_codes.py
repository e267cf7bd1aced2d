"""Honest exit codes of `ifcbflow classify`: 0 only when every selected bin is complete; 1 when some failed; 2 for a
request that cannot run (and then nothing is written)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from classify_support import CLASSES, make_bundle, session_survivors
from typer.testing import CliRunner

from model.bundle import content_hash
from pipeline.cli import exit_codes
from pipeline.cli.app import app
from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.job.hold import HOLD_ENV
from pipeline.results.store import ResultStore

pytestmark = pytest.mark.slow
IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))


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


def test_a_store_that_cannot_be_written_is_2(setup, dask_client) -> None:
    """A real EPERM as root: /sys is mounted read-only for this process."""
    if os.access("/sys", os.W_OK) and _can_make("/sys/ifcbflow-probe"):
        pytest.skip("this process may write under /sys: no real permission fault to raise here")
    result = _classify(setup, setup["good"], "/sys/ifcbflow-test.zarr", dask_client.scheduler.address)
    assert result.exit_code == exit_codes.USAGE, result.output
    assert "PermissionError" in result.output and "Traceback" not in result.output


def _can_make(path: str) -> bool:
    try:
        os.makedirs(path)
    except OSError:
        return False
    os.rmdir(path)
    return True


def test_missing_credentials_for_the_archive_are_2(setup, dask_client, s3_server, tmp_path, monkeypatch) -> None:
    bucket = s3_server.new_bucket()
    write_synthetic_archive(f"s3://{bucket}/archive", bins=1, rois=2, classes=len(CLASSES), seed=3,
                            storage_options=s3_server.storage_options)  # fmt: skip
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    options = json.dumps({"client_kwargs": {"endpoint_url": s3_server.endpoint_url}, "skip_instance_cache": True})
    result = _classify(setup, f"s3://{bucket}/archive", str(tmp_path / "h.zarr"), dask_client.scheduler.address,
                       "--storage-options", options)  # fmt: skip
    assert result.exit_code == exit_codes.USAGE, result.output
    assert "NoCredentialsError" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "h.zarr").exists()


def test_unreadable_and_denied_bin_files_are_1_and_recorded(setup, dask_client, tmp_path: Path) -> None:
    """Real local faults of one bin each: EIO (an unmapped address of /proc/self/mem) and, as root too, EACCES
    (/proc/1/mem). Each is that bin's failure; the other bins are classified; no bin is lost."""
    archive = tmp_path / "faulty"
    ids = write_synthetic_archive(str(archive), bins=4, rois=4, classes=len(CLASSES), seed=4, flat=True)
    for bin_id, target in zip(ids[:2], ("/proc/self/mem", "/proc/1/mem"), strict=True):
        (archive / f"{bin_id}.adc").unlink()
        (archive / f"{bin_id}.adc").symlink_to(target)
    result = _classify(setup, archive, str(tmp_path / "i.zarr"), dask_client.scheduler.address)
    assert result.exit_code == exit_codes.NOT_COMPLETE, result.output
    summary = json.loads(result.stdout)
    assert summary["bins_done"] == 2 and summary["bins_incomplete"] == 0
    failed = {failure["bin"]: failure for failure in summary["failures"]}
    assert sorted(failed) == sorted(ids[:2])
    assert "OSError" in failed[ids[0]]["reason"] and failed[ids[0]]["stage"] == "adc"
    if os.getpid() != 1:
        assert "PermissionError" in failed[ids[1]]["reason"]


def test_an_archived_s3_object_is_that_bins_failure_and_1(setup, dask_client, s3_server, tmp_path: Path) -> None:
    """One `.roi` moved to the Glacier storage class: a GET answers InvalidObjectState; the run goes on."""
    import boto3

    bucket = s3_server.new_bucket()
    options = s3_server.storage_options
    ids = write_synthetic_archive(f"s3://{bucket}/archive", bins=3, rois=4, classes=len(CLASSES), seed=5,
                                  storage_options=options, flat=True)  # fmt: skip
    client = boto3.client("s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")  # fmt: skip
    key = f"archive/{ids[1]}.roi"
    client.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key}, StorageClass="GLACIER")
    out = f"s3://{bucket}/j.zarr"
    result = _classify(setup, f"s3://{bucket}/archive", out, dask_client.scheduler.address,
                       "--storage-options", json.dumps(options))  # fmt: skip
    assert result.exit_code == exit_codes.NOT_COMPLETE, result.output
    summary = json.loads(result.stdout)
    assert summary["bins_done"] == 2 and summary["bins_incomplete"] == 0
    assert [(f["bin"], f["stage"], f["kind"]) for f in summary["failures"]] == [(ids[1], "roi", "data")]


def test_a_worker_given_a_gpu_its_backend_cannot_see_is_2(setup, tmp_path: Path) -> None:
    """`CUDA_VISIBLE_DEVICES=0` on a machine whose Keras backend has no GPU: one message, exit 2, nothing left."""
    command = [IFCBFLOW, "classify", str(setup["good"]), "--model", str(setup["bundle"]),
               "--out", str(tmp_path / "k.zarr"), "--workers", "1"]  # fmt: skip
    job = subprocess.Popen(command, start_new_session=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": "0"},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _, stderr = job.communicate(timeout=300)
    if "sees none" not in stderr and job.returncode == exit_codes.OK:
        pytest.skip("the Keras backend here sees a GPU")
    assert job.returncode == exit_codes.USAGE, stderr
    assert "was given GPU 0 but the Keras backend" in stderr and "Traceback" not in stderr
    assert not session_survivors(job.pid)


def test_sigterm_is_128_plus_15_and_leaves_no_process(setup, tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    command = [IFCBFLOW, "classify", str(setup["good"]), "--model", str(setup["bundle"]),
               "--out", str(tmp_path / "l.zarr"), "--workers", "1", "--partition-mb", "0.0001"]  # fmt: skip
    job = subprocess.Popen(command, start_new_session=True, env={**os.environ, HOLD_ENV: str(hold)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not Path(f"{hold}.held").exists():
            assert time.monotonic() < deadline and job.poll() is None, "no partition reached the hold point"
            time.sleep(0.05)
        job.send_signal(signal.SIGTERM)
        _, stderr = job.communicate(timeout=120)
    finally:
        hold.unlink()
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == exit_codes.SIGNAL_BASE + signal.SIGTERM, stderr
    assert not session_survivors(job.pid)


