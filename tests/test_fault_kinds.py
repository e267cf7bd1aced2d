"""Failure kinds of faults raised by the real client libraries: S3 through s3fs (a moto server on loopback, the
fault proxy in front of it), HTTP through fsspec's HTTP filesystem (aiohttp, a server on loopback), local files,
numpy. A fault of one object is that bin's failure ("data" with scope "object"); the same fault of the listing or
the store stops the run ("configuration" with scope "store"); credentials and a missing bucket stop it wherever they
happen; server errors, throttling, dropped connections, TLS errors and a worker short of memory are retried."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fsspec
import numpy as np
import pytest
from faulty_proxy import faulty_proxy

from pipeline.faults import fault_kind


def _raised(operation: Callable[[], object]) -> BaseException:
    try:
        operation()
    except Exception as err:
        return err
    raise AssertionError("the operation did not fail")


def _kinds(error: BaseException) -> tuple[str, str]:
    return fault_kind(error, "object"), fault_kind(error, "store")


@pytest.fixture(scope="module")
def bucket(s3_server) -> str:
    """A bucket with an archived object (S3 Glacier storage class: a GET answers InvalidObjectState)."""
    import boto3

    name = s3_server.new_bucket()
    client = boto3.client(
        "s3", endpoint_url=s3_server.endpoint_url, aws_access_key_id="testing", aws_secret_access_key="testing",
        region_name="us-east-1",
    )  # fmt: skip
    client.put_object(Bucket=name, Key="archived.roi", Body=b"x" * 64, StorageClass="GLACIER")
    client.put_object(Bucket=name, Key="ok.roi", Body=b"x" * 64)
    return name


def test_s3_object_faults_are_that_bins_and_bucket_faults_the_runs(s3_server, bucket: str) -> None:
    fs = s3_server.filesystem()
    archived = _raised(lambda: fs.cat_file(f"{bucket}/archived.roi", start=0, end=8))
    assert isinstance(archived, PermissionError)  # what s3fs makes of InvalidObjectState
    assert _kinds(archived) == ("data", "configuration")
    missing = _raised(lambda: fs.cat_file(f"{bucket}/missing.roi"))
    assert isinstance(missing, FileNotFoundError) and _kinds(missing) == ("data", "configuration")
    no_bucket = _raised(lambda: fs.cat_file("no-such-bucket-18/x.roi"))
    assert isinstance(no_bucket, FileNotFoundError) and _kinds(no_bucket) == ("configuration", "configuration")


def test_s3_access_denied_to_one_object_is_that_bins_and_a_bad_key_the_runs(
    s3_server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With moto's IAM checks on: a user whose policy denies GetObject on one object gets AccessDenied for it (that
    bin's failure) and reads the rest; an access key the server does not know gets InvalidAccessKeyId when listing
    (the run's, which the client meets first)."""
    import json

    import boto3
    import s3fs
    from moto import settings

    iam = boto3.client("iam", endpoint_url=s3_server.endpoint_url, aws_access_key_id="testing",
                       aws_secret_access_key="testing", region_name="us-east-1")  # fmt: skip
    user = f"reader-{bucket}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/archived.roi"},
    ]}  # fmt: skip
    iam.put_user_policy(UserName=user, PolicyName="one-object-denied", PolicyDocument=json.dumps(policy))
    endpoint = {"endpoint_url": s3_server.endpoint_url}
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # every request from now on is checked
    fs = s3fs.S3FileSystem(key=key["AccessKeyId"], secret=key["SecretAccessKey"], client_kwargs=endpoint,
                           skip_instance_cache=True)  # fmt: skip
    assert fs.cat_file(f"{bucket}/ok.roi") == b"x" * 64
    denied = _raised(lambda: fs.cat_file(f"{bucket}/archived.roi"))
    assert isinstance(denied, PermissionError) and _kinds(denied) == ("data", "configuration"), repr(denied)
    stranger = s3fs.S3FileSystem(key="AKIAUNKNOWNKEY000000", secret="nope", client_kwargs=endpoint,
                                 skip_instance_cache=True)  # fmt: skip
    unknown = _raised(lambda: stranger.ls(bucket))  # the listing's answer names the code (a HEAD's cannot)
    assert isinstance(unknown, PermissionError) and _kinds(unknown) == ("configuration", "configuration")


@pytest.mark.parametrize("kind", ["503", "drop"], ids=["slow-down-503", "dropped-connection"])
def test_s3_throttling_and_dropped_connections_are_transient(s3_server, bucket: str, kind: str) -> None:
    import s3fs

    with faulty_proxy(s3_server.endpoint_url, kind, rate=1.0) as proxy:
        options = {**s3_server.storage_options, "client_kwargs": {"endpoint_url": proxy.endpoint_url}}
        fs = s3fs.S3FileSystem(**options, config_kwargs={"retries": {"max_attempts": 1}})
        error = _raised(lambda: fs.cat_file(f"{bucket}/ok.roi"))
    assert _kinds(error) == ("transient", "transient"), repr(error)


def test_missing_s3_credentials_stop_the_run(s3_server, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server.endpoint_url}, skip_instance_cache=True)
    error = _raised(lambda: fs.cat_file(f"{bucket}/ok.roi"))
    assert type(error).__name__ == "NoCredentialsError" and _kinds(error) == ("configuration", "configuration")


class _StatusHandler(BaseHTTPRequestHandler):
    """Answers GET /<status>/... with that HTTP status and no body."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(int(self.path.split("/")[1]))
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "kinds"),
    [
        (503, ("transient", "transient")),
        (500, ("transient", "transient")),
        (429, ("transient", "transient")),
        (403, ("data", "configuration")),
        (404, ("data", "configuration")),
        (401, ("configuration", "configuration")),
    ],
)
def test_http_statuses_through_fsspec(http_server: str, status: int, kinds: tuple[str, str]) -> None:
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    error = _raised(lambda: fs.cat_file(f"http://{http_server}/{status}/D20240101T000000_IFCB500.roi"))
    assert _kinds(error) == kinds, repr(error)


def test_a_tls_error_is_transient(http_server: str) -> None:
    """TLS spoken to a server that does not: the handshake fails with an `ssl.SSLError` (not a certificate that
    does not verify, which is configuration)."""
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    error = _raised(lambda: fs.cat_file(f"https://{http_server}/200/x.roi"))
    assert _kinds(error) == ("transient", "transient"), repr(error)


def test_local_io_errors_by_errno_whatever_the_file_is_called(tmp_path: Path) -> None:
    """A real EIO (reading an unmapped address of /proc/self/mem) through a bin file whose name holds "500": data.
    A real EACCES as root (/proc/1/mem: ptrace rules, not file modes, which root ignores): data for a bin's object,
    configuration for the store's."""
    fs = fsspec.filesystem("file")
    eio = tmp_path / "D20240101T000000_IFCB500.adc"
    eio.symlink_to("/proc/self/mem")
    error = _raised(lambda: fs.cat_file(str(eio)))
    assert isinstance(error, OSError) and _kinds(error) == ("data", "data"), repr(error)
    denied = tmp_path / "D20240101T000000_IFCB503.adc"
    denied.symlink_to("/proc/1/mem")
    if os.getpid() == 1 or (os.access("/proc/1/mem", os.R_OK) and _can_read("/proc/1/mem")):
        pytest.skip("this process may read /proc/1/mem: no real EACCES to raise here")
    error = _raised(lambda: fs.cat_file(str(denied)))
    assert isinstance(error, PermissionError) and _kinds(error) == ("data", "configuration")
    directory = _raised(lambda: fs.cat_file(str(tmp_path)))
    assert isinstance(directory, IsADirectoryError) and _kinds(directory) == ("data", "data")


def _can_read(path: str) -> bool:
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def test_a_worker_short_of_memory_is_a_fault_of_the_node() -> None:
    """Neither the bin's data nor endlessly transient: tried twice, then recorded (`tests/test_node_faults.py`)."""
    error = _raised(lambda: np.empty(2**62, np.uint8))
    assert isinstance(error, MemoryError) and _kinds(error) == ("node", "node")
