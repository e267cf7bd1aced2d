"""The whole job on real parts: archive, bundle and store on a moto S3 server, a LocalCluster of 2 processes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from classify_support import CLASSES, make_bundle, reference_scores
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.job.run import ClassifyRequest, run_classification
from pipeline.results.export import dashboard_path, export_dashboard
from pipeline.results.report import store_report
from pipeline.results.store import ResultStore, StoreMismatchError

pytestmark = pytest.mark.slow
GOOD_BINS, BAD_BINS, ROIS = 5, 3, 15
REAL_CLASS_FILE = "class_scores/D20220522T003051_IFCB134_class.h5"


def _archive_with_bad_bins(s3_server, bucket: str) -> tuple[str, list[str], dict[str, str]]:
    """Good bins plus one truncated .roi, one malformed .adc and one missing .hdr; returns url, good ids, bad ids."""
    url = f"s3://{bucket}/archive"
    options = s3_server.storage_options
    good = write_synthetic_archive(
        url, bins=GOOD_BINS, rois=ROIS, classes=len(CLASSES), seed=1, storage_options=options
    )
    bad = write_synthetic_archive(
        f"s3://{bucket}/archive/more",
        bins=BAD_BINS,
        rois=ROIS,
        classes=len(CLASSES),
        seed=2,
        storage_options=options,
        start=datetime(2024, 3, 1, tzinfo=UTC),
        flat=True,
    )
    fs = s3_server.filesystem()
    base = f"{bucket}/archive/more"
    roi = fs.cat_file(f"{base}/{bad[0]}.roi")
    fs.pipe_file(f"{base}/{bad[0]}.roi", roi[: len(roi) // 2])
    fs.pipe_file(f"{base}/{bad[1]}.adc", b"1,2,3\nthis is not an adc file\n")
    fs.rm_file(f"{base}/{bad[2]}.hdr")
    return url, good, {bad[0]: "roi", bad[1]: "adc", bad[2]: "files"}


@pytest.fixture(scope="module")
def s3_run(s3_server, dask_client):
    """One classification of an S3 archive (with bad bins) into an S3 store, and what it should equal."""
    bucket = s3_server.new_bucket()
    options = s3_server.storage_options
    archive, good, bad = _archive_with_bad_bins(s3_server, bucket)
    bundle = f"s3://{bucket}/models/bundle.zip"
    make_bundle(bundle, options)
    request = ClassifyRequest(archive, bundle, f"s3://{bucket}/results.zarr", options, partition_mb=0.05)
    summary = run_classification(dask_client, request)
    reference = reference_scores(archive, bundle, options)
    return {
        "bucket": bucket,
        "request": request,
        "summary": summary,
        "good": good,
        "bad": bad,
        "reference": reference,
        "store": ResultStore(request.store_url, options),
    }


def test_scores_equal_a_single_process_reference(s3_run) -> None:
    store: ResultStore = s3_run["store"]
    assert sorted(store.ledger().bins) == sorted(s3_run["good"])
    for bin_id in s3_run["good"]:
        numbers, scores = store.read_bin(bin_id)
        want_numbers, want_scores = s3_run["reference"][bin_id]
        np.testing.assert_array_equal(numbers, want_numbers)
        assert scores.dtype == np.float32 and scores.shape == (ROIS, len(CLASSES))
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
    assert s3_run["summary"].bins_done == GOOD_BINS and s3_run["summary"].rois == GOOD_BINS * ROIS
    assert s3_run["summary"].bins_incomplete == 0 and not s3_run["summary"].complete  # 3 bad bins


def test_bad_bins_are_recorded_and_reported(s3_run) -> None:
    recorded = {f.bin: f.stage for f in s3_run["store"].ledger().failures.values()}
    assert recorded == s3_run["bad"]
    assert {f["bin"]: f["stage"] for f in s3_run["summary"].failures} == s3_run["bad"]
    report = store_report(s3_run["store"])
    assert report["bins_complete"] == GOOD_BINS and report["bins_failed"] == BAD_BINS
    assert "missing .hdr" in next(f["reason"] for f in report["failures"] if f["stage"] == "files")


def test_summary_opens_with_xarray_from_s3(s3_run, s3_server) -> None:
    summary = xr.open_zarr(
        s3_run["request"].store_url, group="summary", consolidated=False, storage_options=s3_server.storage_options
    )
    assert list(summary.bin.values) == s3_run["good"]
    assert list(summary["class"].values) == CLASSES
    counts = summary.counts.values
    assert counts.sum() == GOOD_BINS * ROIS
    np.testing.assert_allclose(summary.concentration.values, counts / summary.ml_analyzed.values[:, None])
    for i, bin_id in enumerate(s3_run["good"]):
        winners = s3_run["reference"][bin_id][1].argmax(axis=1)
        np.testing.assert_array_equal(counts[i], np.bincount(winners, minlength=len(CLASSES)))


def test_dashboard_files_match_the_store(s3_run, s3_server, ifcb_data: Path) -> None:
    target = f"s3://{s3_run['bucket']}/dashboard"
    written = export_dashboard(s3_run["store"], target, s3_server.storage_options)
    assert len(written) == GOOD_BINS
    fs = s3_server.filesystem()
    with h5py.File(ifcb_data / REAL_CLASS_FILE) as real:
        real_keys = {key: real[key] for key in ("output_scores", "class_labels", "roi_numbers", "classifier_name")}
        real_string = h5py.check_string_dtype(real_keys["class_labels"].dtype)
        for bin_id in s3_run["good"]:
            path = f"{s3_run['bucket']}/dashboard/{dashboard_path(bin_id)}"
            assert dashboard_path(bin_id).startswith("D2024/D20240101/")
            with fs.open(path, "rb") as raw, h5py.File(raw) as f:
                for key, real_dataset in real_keys.items():
                    assert f[key].ndim == real_dataset.ndim, key
                assert h5py.check_string_dtype(f["class_labels"].dtype).length == real_string.length  # variable
                numbers, scores = s3_run["store"].read_bin(bin_id)
                np.testing.assert_array_equal(f["output_scores"][()], scores)
                assert f["roi_numbers"].dtype == np.uint32
                np.testing.assert_array_equal(f["roi_numbers"][()], numbers)
                assert [label.decode() for label in f["class_labels"][()]] == CLASSES
                assert f.attrs["model_hash"] == s3_run["summary"].bundle_hash


def test_report_json_on_the_command_line(s3_run, s3_server) -> None:
    result = CliRunner().invoke(
        app,
        ["report", s3_run["request"].store_url, "--json", "--storage-options", json.dumps(s3_server.storage_options)],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("bins_complete", "bins_failed", "rois", "classes", "counts", "failures"):
        assert key in report
    assert report["rois"] == GOOD_BINS * ROIS and sum(report["counts"].values()) == GOOD_BINS * ROIS


def test_another_bundle_on_the_store_is_refused(s3_run, s3_server, dask_client) -> None:
    options = s3_server.storage_options
    other = f"s3://{s3_run['bucket']}/models/other.zip"
    make_bundle(other, options, seed=7)
    request = s3_run["request"]
    with pytest.raises(StoreMismatchError, match="One store holds one model's results"):
        run_classification(dask_client, ClassifyRequest(request.archive_url, other, request.store_url, options))
    result = CliRunner().invoke(
        app,
        [
            "classify",
            request.archive_url,
            "--model",
            other,
            "--out",
            request.store_url,
            "--cluster",
            dask_client.scheduler.address,
            "--storage-options",
            json.dumps(options),
        ],
    )
    assert result.exit_code == 2
    assert "refusing to write" in result.output


def _part_stamps(fs, bucket: str) -> dict[str, str]:
    return {path: fs.info(path)["LastModified"] for path in fs.find(f"{bucket}/r.zarr/parts")}


def test_growing_archive_classifies_only_new_bins_and_the_summary_follows(s3_server, dask_client) -> None:
    bucket = s3_server.new_bucket()
    options = s3_server.storage_options
    archive, bundle, store_url = f"s3://{bucket}/a", f"s3://{bucket}/b.zip", f"s3://{bucket}/r.zarr"
    first = write_synthetic_archive(archive, bins=3, rois=8, classes=len(CLASSES), seed=4, storage_options=options)
    make_bundle(bundle, options)
    request = ClassifyRequest(archive, bundle, store_url, options, partition_mb=0.001)
    assert run_classification(dask_client, request).bins_done == 3
    fs = s3_server.filesystem()
    stamps = _part_stamps(fs, bucket)
    new = write_synthetic_archive(
        archive, bins=2, rois=8, classes=len(CLASSES), seed=5, storage_options=options,
        start=datetime(2024, 1, 2, tzinfo=UTC),
    )  # fmt: skip
    again = run_classification(dask_client, request)
    assert (again.bins_already_complete, again.bins_planned, again.bins_done) == (3, 2, 2)
    assert sorted(ResultStore(store_url, options).ledger().bins) == sorted(first + new)
    assert {path: stamp for path, stamp in _part_stamps(fs, bucket).items() if path in stamps} == stamps
    summary = xr.open_zarr(store_url, group="summary", consolidated=False, storage_options=options)
    assert list(summary.bin.values) == first + new  # the new bins are in the summary as soon as the run ends


def test_summary_on_s3_after_a_resumed_run(s3_server, dask_client) -> None:
    bucket = s3_server.new_bucket()
    options = s3_server.storage_options
    archive, bundle, store_url = f"s3://{bucket}/a", f"s3://{bucket}/b.zip", f"s3://{bucket}/r.zarr"
    ids = write_synthetic_archive(archive, bins=6, rois=5, classes=len(CLASSES), seed=8, storage_options=options)
    make_bundle(bundle, options)
    for wanted in (ids[:3], ids):  # a run that stopped after half the archive, then the rerun that completes it
        run_classification(dask_client, ClassifyRequest(archive, bundle, store_url, options, bin_ids=wanted))
        summary = xr.open_zarr(store_url, group="summary", consolidated=False, storage_options=options)
        assert list(summary.bin.values) == wanted
        assert int(summary.n_rois.sum()) == 5 * len(wanted)
