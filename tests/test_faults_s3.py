"""Transient faults on a real object store: with S3 throttling (40% of requests answered 503 SlowDown) or dropped
connections between ifcbflow and the store, a run still completes every bin, with results identical to a clean run.
The faults come from a proxy on the network path to a moto S3 server (`faulty_proxy`), for the client and the
workers alike."""

from __future__ import annotations

import pytest
from classify_support import assert_like_clean_run, clean_fault_run
from faulty_proxy import faulty_proxy

from pipeline.job.run import ClassifyRequest, run_classification

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clean(s3_server, dask_client) -> dict:
    """An archive, a bundle and the store of a run without faults."""
    bucket = s3_server.new_bucket()
    return {"bucket": bucket, **clean_fault_run(dask_client, f"s3://{bucket}", s3_server.storage_options)}


@pytest.mark.parametrize(("kind", "rate"), [("503", 0.4), ("drop", 0.2)], ids=["throttled-40pc", "dropped-20pc"])
def test_a_run_through_faults_completes_identically(s3_server, dask_client, clean, kind: str, rate: float) -> None:
    with faulty_proxy(s3_server.endpoint_url, kind, rate, seed=3) as proxy:
        options = {**s3_server.storage_options, "client_kwargs": {"endpoint_url": proxy.endpoint_url}}
        store = f"s3://{clean['bucket']}/faults-{kind}.zarr"
        request = ClassifyRequest(clean["archive"], clean["bundle"], store, options, partition_mb=0.01)
        summary = run_classification(dask_client, request)
        faults = proxy.counts[kind]
    assert faults > 10, f"only {faults} faults were injected: nothing was tested"
    assert_like_clean_run(summary, store, clean, s3_server.storage_options)
