"""`watch`: bins landing one by one in a local folder and in an S3 bucket, half-written bins, bad bins, the metrics
endpoint against the store, SIGTERM and a restart. Polls are driven explicitly (`Watcher.poll`), or by the output
of the command, never by sleeping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from classify_support import make_bundle
from prometheus_client.parser import text_string_to_metric_families

from pipeline.ifcb.archive import list_bins
from pipeline.ifcb.bins import read_bin_meta
from pipeline.ifcb.identifiers import parse_bin_id
from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.job.run import ClassifyRequest
from pipeline.job.watch import Watcher
from pipeline.results.report import store_report
from pipeline.results.store import ResultStore

pytestmark = pytest.mark.slow
IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))
EXTENSIONS = ("hdr", "adc", "roi")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> dict:
    """A synthetic archive whose bins the tests copy into watched places, its bins' files and ROI counts, a bundle."""
    root = tmp_path_factory.mktemp("watch-source")
    archive = str(root / "archive")
    write_synthetic_archive(archive, bins=4, rois=8, classes=3, seed=5, flat=True)
    fs, bins, _ = list_bins(archive)
    files = {entry.bin.id: {ext: Path(getattr(entry, ext)).read_bytes() for ext in EXTENSIONS} for entry in bins}
    rois = {entry.bin.id: read_bin_meta(fs, entry).n_rois for entry in bins}
    bundle = str(root / "bundle.zip")
    make_bundle(bundle)
    return {"ids": [entry.bin.id for entry in bins], "files": files, "rois": rois, "bundle": bundle}


def _land(put, source: dict, bin_id: str, exts: tuple[str, ...] = EXTENSIONS) -> None:
    for ext in exts:
        put(f"{bin_id}.{ext}", source["files"][bin_id][ext])


def _metrics(port: int) -> dict[str, float]:
    """The endpoint's samples by name (labels folded into the name), as Prometheus scrapes them."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def _assert_metrics_match_the_store(port: int, store: ResultStore) -> dict[str, float]:
    samples = _metrics(port)
    report = store_report(store)
    assert samples["ifcbflow_bins_classified_total"] == report["bins_complete"]
    assert samples["ifcbflow_rois_classified_total"] == report["rois"]
    newest = max(parse_bin_id(bin_id).time for bin_id in store.ledger().bins)
    assert samples["ifcbflow_newest_classified_bin_timestamp_seconds"] == newest.timestamp()
    return samples


def test_bins_landing_in_a_local_folder(source, dask_client, tmp_path: Path) -> None:
    watched, first, second, bad = tmp_path / "watched", *source["ids"][:3]
    watched.mkdir()

    def put(name: str, data: bytes) -> None:
        (watched / name).write_bytes(data)

    store = ResultStore(str(tmp_path / "store.zarr"))
    watcher = Watcher(dask_client, ClassifyRequest(str(watched), source["bundle"], store.url))
    server = watcher.metrics.serve(0, "127.0.0.1")
    try:
        assert watcher.poll().classified is None  # nothing there yet
        _land(put, source, first)
        seen = watcher.poll()
        assert seen.classified is None and seen.waiting == 1  # sizes seen once: not settled yet
        assert watcher.poll().classified == [first]
        assert store_report(store)["rois"] == source["rois"][first]

        # a half-written bin: no .roi yet, then a .roi that grows, then settled
        _land(put, source, second, ("hdr", "adc"))
        assert watcher.poll().classified is None
        roi = source["files"][second]["roi"]
        put(f"{second}.roi", roi[: len(roi) // 2])
        assert watcher.poll().classified is None  # complete, seen once
        put(f"{second}.roi", roi)
        assert watcher.poll().classified is None  # its .roi grew since the previous poll
        settled = watcher.poll()
        assert settled.classified == [second] and settled.run.bins_done == 1
        assert store.ledger().bins[second].n_rois == source["rois"][second]  # every ROI: the whole .roi was read

        # a bin whose .roi stays truncated is bad data: recorded once, not retried while its files stay the same
        _land(put, source, bad, ("hdr", "adc"))
        put(f"{bad}.roi", source["files"][bad]["roi"][:100])
        watcher.poll()
        failed = watcher.poll()
        assert failed.classified == [bad] and failed.run.bins_failed == 1
        assert watcher.poll().classified is None
        restarted = Watcher(dask_client, ClassifyRequest(str(watched), source["bundle"], store.url))
        assert restarted.poll().classified is None and restarted.poll().classified is None  # the store's record
        request = ClassifyRequest(str(watched), source["bundle"], store.url, retry_failed=True)
        retrying = Watcher(dask_client, request)
        retrying.poll()
        again = retrying.poll()  # --retry-failed: read again once, although its files did not change
        assert again.classified == [bad] and again.run.bins_failed == 1 and again.run.bins_known_bad == 0
        assert retrying.poll().classified is None
        samples = _assert_metrics_match_the_store(server.server_port, store)
        assert samples["ifcbflow_bin_failures_total{kind=data}"] == store_report(store)["bins_failed"] == 1
        assert samples["ifcbflow_polls_total"] == watcher.polls == 10
        lag = parse_bin_id(bad).time - parse_bin_id(second).time  # the newest bin listed, the newest classified
        assert samples["ifcbflow_lag_seconds"] == lag.total_seconds() > 0

        # the bad bin's .roi is replaced by the whole file: it changed, so it is retried, and its failure is gone
        put(f"{bad}.roi", source["files"][bad]["roi"])
        watcher.poll()
        assert watcher.poll().classified == [bad]
        samples = _assert_metrics_match_the_store(server.server_port, store)
        assert store_report(store)["bins_failed"] == 0 and samples["ifcbflow_lag_seconds"] == 0
        assert samples["ifcbflow_bin_failures_total{kind=data}"] == 1  # failures seen, not failures standing
    finally:
        server.shutdown()


def test_bins_landing_in_an_s3_bucket(source, s3_server, dask_client) -> None:
    bucket = s3_server.new_bucket()
    fs, options = s3_server.filesystem(), s3_server.storage_options
    first, second = source["ids"][:2]

    def put(name: str, data: bytes) -> None:
        fs.pipe_file(f"{bucket}/ifcb/D2024/{name}", data)

    store = ResultStore(f"s3://{bucket}/results.zarr", options)
    request = ClassifyRequest(f"s3://{bucket}/ifcb", source["bundle"], store.url, options)
    watcher = Watcher(dask_client, request)
    assert watcher.poll().classified is None  # an empty prefix: nothing yet, not an error
    _land(put, source, first)
    watcher.poll()
    assert watcher.poll().classified == [first]
    _land(put, source, second, ("hdr", "adc"))  # the .roi is still uploading
    assert watcher.poll().classified is None
    _land(put, source, second, ("roi",))
    assert watcher.poll().classified is None
    assert watcher.poll().classified == [second]
    report = store_report(store)
    assert report["bins_complete"] == 2 and report["rois"] == source["rois"][first] + source["rois"][second]


def test_sigterm_stops_cleanly_and_a_restart_resumes(source, dask_client, tmp_path: Path) -> None:
    watched, store = tmp_path / "watched", ResultStore(str(tmp_path / "store.zarr"))
    watched.mkdir()

    def put(name: str, data: bytes) -> None:
        (watched / name).write_bytes(data)

    for bin_id in source["ids"][:2]:
        _land(put, source, bin_id)
    command = [IFCBFLOW, "watch", str(watched), "--model", source["bundle"], "--out", store.url, "--interval", "0.1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    stderr = (tmp_path / "stderr.txt").open("w")
    job = subprocess.Popen(
        [*command, "--cluster", dask_client.scheduler.address, "--metrics-port", "0", "--metrics-address",
         "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
    )  # fmt: skip
    watchdog = threading.Timer(300, job.kill)  # a hung watch fails the test instead of blocking the suite
    watchdog.start()
    try:
        started = job.stdout.readline()
        assert started.startswith("watching "), started
        port = int(started.rsplit(":", 1)[1].split("/")[0])
        line = job.stdout.readline()
        while not line.startswith("poll") or "classified" not in line:  # the first poll only learns the sizes
            assert line, (tmp_path / "stderr.txt").read_text()[-3000:]
            line = job.stdout.readline()
        assert "classified 2 bins" in line, line
        _assert_metrics_match_the_store(port, store)
        job.send_signal(signal.SIGTERM)
        assert job.wait(60) == 0
        rest = job.stdout.read()
        assert "stopped after" in rest and "the store holds 2 bins" in rest, rest
    finally:
        watchdog.cancel()
        job.kill()
        stderr.close()

    # a restart on the embedded LocalCluster skips what the store holds and classifies the bin that landed since
    _land(put, source, source["ids"][2])
    again = subprocess.run([*command, "--workers", "1", "--max-polls", "2"], capture_output=True, text=True, env=env,
                           timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "classified 1 bins" in again.stdout and "the store holds 3 bins" in again.stdout, again.stdout
    assert sorted(store.ledger().bins) == sorted(source["ids"][:3])


def test_polls_list_the_newest_days_and_a_full_pass_finds_late_bins(source, dask_client, tmp_path: Path) -> None:
    watched, first = tmp_path / "watched", source["ids"][0]
    moment = parse_bin_id(first).time
    late = f"D{moment - timedelta(days=10):%Y%m%dT%H%M%S}_{parse_bin_id(first).instrument}"  # a backlog's bin

    def land_in_day(bin_id: str, files_of: str) -> None:
        time = parse_bin_id(bin_id).time
        folder = watched / f"D{time:%Y}" / f"D{time:%Y%m%d}"
        folder.mkdir(parents=True, exist_ok=True)
        for ext in EXTENSIONS:
            (folder / f"{bin_id}.{ext}").write_bytes(source["files"][files_of][ext])

    land_in_day(first, first)
    store = ResultStore(str(tmp_path / "store.zarr"))
    watcher = Watcher(dask_client, ClassifyRequest(str(watched), source["bundle"], store.url), full_pass_every=4)
    polls = [watcher.poll(), watcher.poll()]
    assert polls[1].classified == [first]
    land_in_day(late, source["ids"][1])
    polls += [watcher.poll() for _ in range(2)]  # the newest days only: the backlog's day is not listed
    assert [p.waiting for p in polls[2:]] == [0, 0] and all(p.classified is None for p in polls[2:])
    found = watcher.poll()  # poll 5: a full pass finds it (its sizes seen once)
    assert found.waiting == 1 and found.classified is None
    taken = watcher.poll()  # poll 6 lists from the backlog's first day until it is classified
    assert taken.classified == [late] and not taken.full_pass
    assert [p.full_pass for p in [*polls, found, taken]] == [True, False, False, False, True, False]
    assert sorted(store.ledger().bins) == sorted([first, late]) and watcher.bins_in_store == 2
