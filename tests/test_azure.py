"""Azure Blob Storage on a real Azure API (Azurite, the Azure Storage emulator, on loopback; `azurite` in conftest):
archives and stores at `az://` and `abfs://` URLs through adlfs, the whole job through the CLI on real bins, what it
costs in requests, and the faults of a real network path (`faulty_proxy`, between the Azure SDK and Azurite)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import h5py
import numpy as np
import pytest
from classify_support import CLASSES, assert_like_clean_run, clean_fault_run, make_bundle
from conftest import AZURITE_KEY, AzureServer
from faulty_proxy import faulty_proxy
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.faults import fault_kind, with_retries
from pipeline.job.run import ClassifyRequest, run_classification
from pipeline.results.export import dashboard_path
from pipeline.results.lease import Lease, StoreBusyError
from pipeline.results.store import ResultStore, _modified

NEW, OLD = "D20130526T095207_IFCB013", "IFCB5_2012_028_081515"
NEW_ROIS = 19
#: Store requests per bin written that a first run may cost (the same budget as on S3: bench/bench_store_requests.py).
STORE_REQUESTS_PER_BIN = 3
#: A well-formed account key that is not the account's.
WRONG_KEY = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="


def _upload_bin(fs: Any, ifcb_data: Path, folder: str, bin_id: str, as_id: str | None = None) -> str:
    """One real bin's three files under `folder` (container/path), named `as_id` (a copy under another time)."""
    name = as_id or bin_id
    for ext in ("hdr", "adc", "roi"):
        fs.pipe_file(f"{folder}/{name}.{ext}", (ifcb_data / "bins" / f"{bin_id}.{ext}").read_bytes())
    return name


def _copy_id(i: int) -> str:
    """The real new-style bin's id at another time of the same day."""
    return f"D20130526T{i // 60:02d}{i % 60:02d}07_IFCB013"


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _classify(archive: str, bundle: str, store: str, options: dict[str, Any], scheduler: str) -> dict[str, Any]:
    result = _cli("classify", archive, "--model", bundle, "--out", store, "--json", "--cluster", scheduler,
                  "--storage-options", json.dumps(options))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert AZURITE_KEY not in result.output
    return json.loads(result.stdout)


# --- the job through the CLI, on real bins ---------------------------------------------------------------------
@pytest.mark.slow
def test_classify_resume_ls_and_export_on_azure(azurite: AzureServer, dask_client, ifcb_data: Path, tmp_path) -> None:
    container, fs, options = azurite.new_container(), azurite.filesystem(), azurite.storage_options
    day = f"{container}/archive/D2013/D20130526"
    first = [_upload_bin(fs, ifcb_data, day, NEW), _upload_bin(fs, ifcb_data, day, NEW, _copy_id(3))]
    archive, store = f"az://{container}/archive", f"az://{container}/scores/m.zarr"
    bundle = f"az://{container}/models/bundle.zip"
    make_bundle(bundle, options)
    scheduler = dask_client.scheduler.address

    summary = _classify(archive, bundle, store, options, scheduler)
    assert (summary["bins_planned"], summary["bins_done"], summary["rois"]) == (2, 2, 2 * NEW_ROIS)
    assert summary["complete"]
    again = _classify(archive, bundle, store, options, scheduler)  # nothing to do
    assert (again["bins_already_complete"], again["bins_planned"], again["bins_done"]) == (2, 0, 0)
    parts = set(fs.find(f"{container}/scores/m.zarr/parts"))

    added = _upload_bin(fs, ifcb_data, f"{container}/archive/2012/IFCB5_2012_028", OLD)
    grown = _classify(archive, bundle, store, options, scheduler)  # only the new bin
    assert (grown["bins_already_complete"], grown["bins_planned"], grown["bins_done"]) == (2, 1, 1)
    assert parts < set(fs.find(f"{container}/scores/m.zarr/parts"))  # added to, nothing rewritten away
    results = ResultStore(store, options)
    assert sorted(results.ledger().bins) == sorted([*first, added])
    numbers, scores = results.read_bin(NEW)
    assert len(numbers) == NEW_ROIS and scores.shape == (NEW_ROIS, len(CLASSES))
    np.testing.assert_array_equal(results.read_bin(first[1])[1], scores)  # the same bytes, the same scores

    listed = _cli("ls", archive, "--json", "--storage-options", json.dumps(options))
    assert listed.exit_code == 0, listed.output
    records = {r["bin"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert set(records) == {*first, added} and records[NEW]["rois"] == NEW_ROIS

    dashboard, csv = f"az://{container}/dashboard", tmp_path / "bins.csv"
    exported = _cli("export", store, "--dashboard", dashboard, "--csv", str(csv), "--storage-options",
                    json.dumps(options))  # fmt: skip
    assert exported.exit_code == 0, exported.output
    with fs.open(f"{container}/dashboard/{dashboard_path(NEW)}", "rb") as raw, h5py.File(raw) as f:
        np.testing.assert_array_equal(f["output_scores"][()], scores)
        assert [label.decode() for label in f["class_labels"][()]] == CLASSES
    assert len(csv.read_text().splitlines()) == 1 + 3

    attributes = fs.cat_file(f"{container}/scores/m.zarr/zarr.json").decode()
    assert f"az://{container}/archive" in attributes and AZURITE_KEY not in attributes


def test_credentials_from_the_environment_and_abfs_urls(azurite: AzureServer, ifcb_data: Path, monkeypatch) -> None:
    container, fs = azurite.new_container(), azurite.filesystem()
    _upload_bin(fs, ifcb_data, f"{container}/archive", NEW)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string())
    for scheme in ("az", "abfs"):
        result = _cli("ls", f"{scheme}://{container}/archive", "--json")
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["bin"] for line in result.stdout.splitlines()] == [NEW]


def test_no_secret_in_errors_or_logs(azurite: AzureServer, ifcb_data: Path, caplog) -> None:
    container, fs = azurite.new_container(), azurite.filesystem()
    _upload_bin(fs, ifcb_data, f"{container}/archive", NEW)
    wrong = json.dumps({"connection_string": azurite.connection_string(key=WRONG_KEY)})
    with caplog.at_level(logging.DEBUG):
        denied = _cli("export", f"az://{container}/store.zarr", "--csv", "bins.csv", "--storage-options", wrong)
        listed = _cli("ls", f"az://{container}/archive", "--storage-options", json.dumps(azurite.storage_options))
        not_listed = _cli("ls", f"az://{container}/archive", "--storage-options", wrong)
    assert denied.exit_code == 2, denied.output  # credentials: one message, no traceback
    assert "authenticate" in denied.output and "Traceback" not in denied.output
    assert listed.exit_code == 0, listed.output
    assert not_listed.exit_code != 0
    for text in (denied.output, listed.output, not_listed.output, str(not_listed.exception), caplog.text):
        assert WRONG_KEY not in text and AZURITE_KEY not in text


# --- the store's primitives on Azure ----------------------------------------------------------------------------
def test_the_lease_is_an_exclusive_create(azurite: AzureServer) -> None:
    container = azurite.new_container()
    path = f"{container}/s.zarr/lease.json"
    fs = azurite.filesystem()
    fs.pipe_file(path, b"first", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file(path, b"second", mode="create")  # If-None-Match: *
    assert fs.cat_file(path) == b"first"
    fs.rm_file(path)

    url = f"az://{container}/s.zarr"
    second = ResultStore(url, azurite.storage_options)
    with ResultStore(url, azurite.storage_options).lease("first run"):
        with pytest.raises(StoreBusyError, match="being written by another run"), second.lease("second run"):
            pass
        assert Lease(fs, path, local=False, label=url).holder()["owner"] == "first run"
    assert Lease(fs, path, local=False, label=url).holder() is None  # released


def test_listings_are_fresh_when_asked_and_entries_have_times(azurite: AzureServer) -> None:
    container = azurite.new_container()
    reader, writer = azurite.filesystem(), azurite.filesystem()
    writer.pipe_file(f"{container}/d/a", b"1")
    assert reader.ls(f"{container}/d", detail=False) == [f"{container}/d/a"]
    writer.pipe_file(f"{container}/d/b", b"2")  # by another process, say: the reader's cache does not know
    assert reader.ls(f"{container}/d", detail=False, refresh=True) == [f"{container}/d/a", f"{container}/d/b"]
    assert _modified(reader.info(f"{container}/d/a")) > 0  # abandoned partitions are timed by it


# --- requests ---------------------------------------------------------------------------------------------------
def _count(requests: list[tuple[str, str]], container: str) -> Counter[tuple[str, str]]:
    """(area, method) -> requests, from the proxy's record of `/<account>/<container>/<key>` requests (a listing is
    `GET /<account>/<container>?comp=list&prefix=...` and belongs to the area of its prefix)."""
    counts: Counter[tuple[str, str]] = Counter()
    for method, target in requests:
        parts = urlsplit(target)
        params = parse_qs(parts.query)
        path = unquote(parts.path).lstrip("/").partition("/")[2]  # without the account
        key = path[len(container) + 1 :] if path.startswith(f"{container}/") else params.get("prefix", [""])[0]
        area = next((name for name in ("archive", "store", "bundle") if key.startswith(name)), "other")
        counts[(area, "LIST" if params.get("comp") == ["list"] else method)] += 1
    return counts


@pytest.mark.slow
def test_store_requests_per_bin_within_the_s3_budget(azurite: AzureServer, dask_client, ifcb_data: Path) -> None:
    container, fs = azurite.new_container(), azurite.filesystem()
    n_bins = 60
    ids = [_upload_bin(fs, ifcb_data, f"{container}/archive/D2013/D20130526", NEW, _copy_id(i)) for i in range(n_bins)]
    bundle = f"az://{container}/bundle.zip"
    make_bundle(bundle, azurite.storage_options)
    with faulty_proxy(f"http://{azurite.host}", "none", 0.0) as proxy:
        options = azurite.options(proxy.endpoint_url)
        request = ClassifyRequest(f"az://{container}/archive", bundle, f"az://{container}/store.zarr", options)
        summary = run_classification(dask_client, request)
        first = _count(proxy.requests, container)
        proxy.requests.clear()
        rerun = run_classification(dask_client, request)
        second = _count(proxy.requests, container)
    assert summary.complete and summary.bins_done == n_bins and rerun.bins_done == 0
    store = {method: n for (area, method), n in first.items() if area == "store"}
    archive = {method: n for (area, method), n in first.items() if area == "archive"}
    per_bin = sum(store.values()) / n_bins
    print(f"\nAzure (Azurite), {n_bins} real bins: store {store} = {per_bin:.2f} requests per bin; archive {archive} = "
          f"{sum(archive.values()) / n_bins:.2f} per bin; rerun: store "
          f"{sum(n for (a, _), n in second.items() if a == 'store')} requests in all")  # fmt: skip
    assert per_bin <= STORE_REQUESTS_PER_BIN, store
    assert store.get("HEAD", 0) <= 4, store  # a few per run (a new store, the lease, a find), none per object
    assert archive.get("GET", 0) <= 3 * n_bins + 2, archive  # .hdr, .adc and one ranged read of .roi per bin
    assert sorted(ResultStore(request.store_url, azurite.storage_options).ledger().bins) == sorted(ids)


# --- faults -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean(azurite: AzureServer, dask_client) -> dict:
    """An archive, a bundle and the store of a run without faults."""
    container = azurite.new_container()
    return {"container": container, **clean_fault_run(dask_client, f"az://{container}", azurite.storage_options)}


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "rate"), [("503", 0.4), ("drop", 0.2)], ids=["throttled-40pc", "dropped-20pc"])
def test_a_run_through_faults_completes_identically(azurite: AzureServer, dask_client, clean, kind, rate) -> None:
    with faulty_proxy(f"http://{azurite.host}", kind, rate, seed=3) as proxy:
        options = azurite.options(proxy.endpoint_url)
        store = f"az://{clean['container']}/faults-{kind}.zarr"
        request = ClassifyRequest(clean["archive"], clean["bundle"], store, options, partition_mb=0.01)
        summary = run_classification(dask_client, request)
        faults = proxy.counts[kind]
        print(f"\n{kind} at {rate:.0%}: {faults} faults in {sum(proxy.counts.values())} requests")
    assert faults > 10, f"only {faults} faults were injected: nothing was tested"
    assert_like_clean_run(summary, store, clean, azurite.storage_options)


def _raised(operation) -> BaseException:
    try:
        operation()
    except Exception as err:
        return err
    raise AssertionError("no error was raised")


@pytest.mark.parametrize(
    ("kind", "error"),
    [("503", "HttpResponseError"), ("500", "HttpResponseError"), ("429", "HttpResponseError"),
     ("drop", "ServiceRequestError")],
)  # fmt: skip
def test_the_azure_clients_real_errors_are_transient(azurite: AzureServer, kind: str, error: str) -> None:
    container = azurite.new_container()
    azurite.filesystem().pipe_file(f"{container}/a/x", b"x")
    with faulty_proxy(f"http://{azurite.host}", kind, 1.0) as proxy:
        fs = azurite.filesystem(proxy.endpoint_url)
        for operation in (lambda: fs.cat_file(f"{container}/a/x"), lambda: fs.pipe_file(f"{container}/a/y", b"y"),
                          lambda: fs.ls(f"{container}/a", refresh=True)):  # fmt: skip
            raised = _raised(operation)
            assert type(raised).__name__ == error or error in {c.__name__ for c in type(raised).__mro__}, raised
            if kind != "drop":
                assert getattr(raised, "status_code", None) == int(kind)
            assert fault_kind(raised, "object") == "transient" and fault_kind(raised, "store") == "transient"
        assert proxy.counts[kind] >= 3


def test_the_azure_clients_real_errors_of_configuration_and_data(azurite: AzureServer) -> None:
    container = azurite.new_container()
    fs = azurite.filesystem()
    fs.pipe_file(f"{container}/a/x", b"x")
    wrong = azurite.filesystem(key=WRONG_KEY)
    denied = _raised(lambda: wrong.cat_file(f"{container}/a/x"))
    assert fault_kind(denied, "object") == "configuration"  # the account's key: no other object gets past it
    no_container = _raised(lambda: fs.ls(f"nowhere-{container}/a", refresh=True))
    assert isinstance(no_container, FileNotFoundError) and fault_kind(no_container, "store") == "configuration"
    missing = _raised(lambda: fs.cat_file(f"{container}/a/missing"))
    assert isinstance(missing, FileNotFoundError) and fault_kind(missing, "object") == "data"


def test_a_burst_of_throttling_is_retried(azurite: AzureServer) -> None:
    container = azurite.new_container()
    azurite.filesystem().pipe_file(f"{container}/x", b"x")
    with faulty_proxy(f"http://{azurite.host}", "503", 0.7, seed=1) as proxy:
        fs = azurite.filesystem(proxy.endpoint_url)
        assert [with_retries(lambda: fs.cat_file(f"{container}/x"), "reading x") for _ in range(5)] == [b"x"] * 5
        assert proxy.counts["503"] > 5
