"""Preparing a labelled set from an archive on object storage (a moto S3 server behind a recording proxy, reached
through s3fs): each labelled bin costs its three reads (`.hdr`, `.adc`, one ranged read of the `.roi`), the listing
and the labels CSV a few requests for the whole set, and a second training on the prepared set reads nothing of the
archive again."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pytest
from faulty_proxy import faulty_proxy

from model.preprocess import PreprocessConfig
from model.training.prepared import prepare
from pipeline.ifcb.labelled import labelled_archive_source
from pipeline.ifcb.synth import write_synthetic_archive

pytestmark = pytest.mark.slow

N_BINS = 40
#: Requests for the whole set beside each bin's three: the labels CSV (its version, then its bytes), the listing.
SET_REQUESTS = 12


def _kinds(requests: list[tuple[str, str]], bucket: str) -> Counter[str]:
    """The requests for the archive by what they ask for: a file by its extension, or a listing."""
    kinds: Counter[str] = Counter()
    for method, target in requests:
        parts = urlsplit(target)
        path, query = unquote(parts.path).lstrip("/"), parse_qs(parts.query)
        if path == bucket and query.get("prefix", [""])[0].startswith("archive"):
            kinds[f"{method} (list)"] += 1
        elif path.startswith(f"{bucket}/archive/"):
            kinds[f"{method} .{path.rsplit('.', 1)[-1]}"] += 1
    return kinds


def test_preparing_from_s3_reads_each_labelled_bin_in_three_requests(s3_server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    archive = f"s3://{bucket}/archive"
    write_synthetic_archive(archive, bins=N_BINS, rois=6, classes=3, seed=4, storage_options=s3_server.storage_options)
    config = PreprocessConfig(size=16)
    out = str(tmp_path / "prepared")
    with faulty_proxy(s3_server.endpoint_url, "none", 0.0) as proxy:
        options = {**s3_server.storage_options, "client_kwargs": {"endpoint_url": proxy.endpoint_url}}
        source = labelled_archive_source(archive, f"{archive}/labels.csv", options)
        prepared = prepare(source, out, config, workers=4)
        kinds = _kinds(proxy.requests, bucket)
        proxy.requests.clear()
        reopened = prepare(labelled_archive_source(archive, f"{archive}/labels.csv", options), out, config)
        second = _kinds(proxy.requests, bucket)

    per_bin = sum(kinds.values()) / N_BINS
    print(f"\npreparing {N_BINS} labelled bins from S3: {dict(kinds)} = {per_bin:.2f} requests per bin")
    for extension in ("hdr", "adc", "roi"):
        assert kinds[f"GET .{extension}"] == N_BINS, kinds  # one each, never a second read of a bin
    assert sum(kinds.values()) <= 3 * N_BINS + SET_REQUESTS, kinds
    assert len(prepared) == N_BINS * 6 and len(prepared.classes) == 3

    assert len(reopened) == len(prepared)  # a second training of the same labels takes the set as it is
    assert not any(kind.endswith((".hdr", ".adc", ".roi")) for kind in second), second  # no bin read again
    np.testing.assert_array_equal(reopened.read_shard(0), prepared.read_shard(0))

