"""Transient faults on a real object store: with S3 throttling (40% of requests answered 503 SlowDown) or dropped
connections between ifcbflow and the store, a run still completes every bin, with results identical to a clean run.
The faults come from a proxy on the network path to a moto S3 server (`faulty_proxy`), for the client and the
workers alike."""

from __future__ import annotations

import numpy as np
import pytest
from classify_support import CLASSES, make_bundle
from faulty_proxy import faulty_proxy

from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.job.run import ClassifyRequest, run_classification
from pipeline.results.store import ResultStore

pytestmark = pytest.mark.slow
BINS, ROIS = 6, 8


@pytest.fixture(scope="module")
def clean(s3_server, dask_client) -> dict:
    """An archive, a bundle and the store of a run without faults."""
    bucket = s3_server.new_bucket()
    options = s3_server.storage_options
    archive, bundle = f"s3://{bucket}/archive", f"s3://{bucket}/bundle.zip"
    write_synthetic_archive(archive, bins=BINS, rois=ROIS, classes=len(CLASSES), seed=9, storage_options=options)
    make_bundle(bundle, options)
    store = f"s3://{bucket}/clean.zarr"
    summary = run_classification(dask_client, ClassifyRequest(archive, bundle, store, options, partition_mb=0.01))
    assert summary.complete and summary.bins_done == BINS
    return {"bucket": bucket, "archive": archive, "bundle": bundle, "store": store}


def _results(url: str, options: dict) -> dict[str, tuple[list[int], np.ndarray]]:
    store = ResultStore(url, options)
    return {record.bin: (numbers.tolist(), scores) for record, numbers, scores in store.iter_bins()}


@pytest.mark.parametrize(("kind", "rate"), [("503", 0.4), ("drop", 0.2)], ids=["throttled-40pc", "dropped-20pc"])
def test_a_run_through_faults_completes_identically(s3_server, dask_client, clean, kind: str, rate: float) -> None:
    with faulty_proxy(s3_server.endpoint_url, kind, rate, seed=3) as proxy:
        options = {**s3_server.storage_options, "client_kwargs": {"endpoint_url": proxy.endpoint_url}}
        store = f"s3://{clean['bucket']}/faults-{kind}.zarr"
        request = ClassifyRequest(clean["archive"], clean["bundle"], store, options, partition_mb=0.01)
        summary = run_classification(dask_client, request)
        faults = proxy.counts[kind]
    assert faults > 10, f"only {faults} faults were injected: nothing was tested"
    assert summary.complete and summary.bins_done == BINS and summary.bins_incomplete == 0
    got, want = _results(store, s3_server.storage_options), _results(clean["store"], s3_server.storage_options)
    assert sorted(got) == sorted(want)
    for bin_id, (numbers, scores) in want.items():
        assert got[bin_id][0] == numbers
        np.testing.assert_array_equal(got[bin_id][1], scores)
    summary_a = ResultStore(store, s3_server.storage_options).summary().drop_vars(["part", "roi_offset"])
    summary_b = ResultStore(clean["store"], s3_server.storage_options).summary().drop_vars(["part", "roi_offset"])
    assert summary_a.equals(summary_b)
