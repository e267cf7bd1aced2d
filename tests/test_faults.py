"""Retries: transient faults retried then reported, other faults passed on at once. The kinds of faults raised by
the real client libraries are tested in test_fault_kinds.py."""

from __future__ import annotations

import errno

import pytest

from pipeline import faults
from pipeline.faults import TransientError, with_retries
from pipeline.ifcb.errors import BinFailure, IfcbFormatError
from pipeline.redact import redact_text, redact_url


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
