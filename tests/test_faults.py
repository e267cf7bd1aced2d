"""Failure kinds and retries: transient faults retried then reported, data and configuration faults passed on."""

from __future__ import annotations

import errno

import pytest

from pipeline import faults
from pipeline.faults import ConfigurationError, TransientError, is_configuration, is_transient, with_retries
from pipeline.ifcb.errors import BinFailure, IfcbFormatError
from pipeline.redact import redact_text, redact_url


class EndpointConnectionError(Exception):
    """Named like botocore's: recognised by name."""


class NoCredentialsError(Exception):
    """Named like botocore's."""


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EBUSY, "Please reduce your request rate (SlowDown)"),
        OSError(errno.EREMOTEIO, "We encountered an internal error"),
        OSError(errno.EIO, "An error occurred (503) when calling GetObject: Service Unavailable"),
        TimeoutError("read timed out"),
        ConnectionResetError("peer reset"),
        EndpointConnectionError("could not connect"),
    ],
)
def test_transient_faults(error: Exception) -> None:
    assert is_transient(error) and not is_configuration(error)


@pytest.mark.parametrize(
    "error",
    [FileNotFoundError("gone"), IfcbFormatError("bad adc"), ValueError("bad"), OSError(errno.EIO, "disk says no")],
)
def test_data_faults_are_not_retried(error: Exception) -> None:
    assert not is_transient(error) and not is_configuration(error)


@pytest.mark.parametrize("error", [PermissionError("AccessDenied"), NoCredentialsError(), ConfigurationError("x")])
def test_configuration_faults(error: Exception) -> None:
    assert is_configuration(error) and not is_transient(error)


def test_retries_absorb_a_burst_and_give_up_on_a_storm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faults, "BACKOFF_BASE_S", 0.001)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise OSError(errno.EBUSY, "SlowDown")
        return "ok"

    assert with_retries(flaky, "reading x") == "ok" and len(calls) == 4
    with pytest.raises(TransientError, match="still failing after 3 tries"):
        with_retries(lambda: (_ for _ in ()).throw(TimeoutError("slow")), "reading y", attempts=3)
    with pytest.raises(IfcbFormatError):  # not retried
        with_retries(lambda: (_ for _ in ()).throw(IfcbFormatError("bad")), "reading z")


def test_a_failure_record_says_its_kind() -> None:
    assert BinFailure.from_error("b", TransientError("x"), default_stage="roi").kind == "transient"
    assert BinFailure.from_error("b", IfcbFormatError("x", stage="adc"), default_stage="roi").kind == "data"


def test_urls_lose_their_secrets() -> None:
    presigned = "https://bucket.s3.amazonaws.com/a/b.zip?X-Amz-Credential=AKIAXYZ&X-Amz-Signature=deadbeef"
    assert redact_url(presigned) == "https://bucket.s3.amazonaws.com/a/b.zip?X-Amz-Credential=***&X-Amz-Signature=***"
    assert redact_url("https://user:hunter2@host:9000/m.zip") == "https://user:***@host:9000/m.zip"
    assert redact_url("s3://bucket/archive") == "s3://bucket/archive"
    assert redact_url("/local/path") == "/local/path"
    message = redact_text("cannot read https://u:pw@h/x?sig=abc: 403")
    assert "pw" not in message and "abc" not in message and "https://u:***@h/x" in message
