"""Failure kinds, and retries for the transient ones.

Three kinds, because each calls for a different answer:
- **transient** (network errors, timeouts, HTTP 5xx, throttling such as S3's `503 SlowDown`): retried with
  exponential backoff and jitter; if the fault outlasts the retries, the bin is left not complete (the next run
  redoes it) and reported as incomplete, never recorded as bad data;
- **data** (the bin's own files are bad or missing): recorded in the store with the stage and reason;
- **configuration** (credentials, permissions, a missing bucket, a bundle that does not fit its preprocessing):
  the run stops early with one clear message instead of failing every bin.

Object-store clients retry a little themselves (botocore retries a 503 a few times); a burst of throttling outlasts
that, which is what `with_retries` is for.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Attempts per operation, and the backoff: base * 2**attempt seconds, capped, with full jitter.
ATTEMPTS = 10
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 8.0

_TRANSIENT_ERRNOS = {
    errno.EAGAIN,
    errno.EBUSY,  # s3fs: SlowDown, ServiceUnavailable, 503
    errno.EREMOTEIO,  # s3fs: InternalError, 500
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ECONNREFUSED,
    errno.EPIPE,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
}
_TRANSIENT_WORDS = ("slowdown", "slow down", "throttl", "service unavailable", "internal error", "timed out",
                    "timeout", "connection reset", "connection was closed", "500", "502", "503", "504")  # fmt: skip
#: Exception class names of HTTP/S3 client libraries that mean "try again" (matched by name: no import needed).
_TRANSIENT_TYPES = {
    "ClientConnectionError", "ClientPayloadError", "ServerDisconnectedError", "ClientOSError", "ServerTimeoutError",
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "IncompleteRead", "ResponseParserError", "HTTPClientError", "FSTimeoutError",
}  # fmt: skip
_CONFIGURATION_TYPES = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                        "NoRegionError", "UnauthorizedSSOTokenError"}  # fmt: skip


class ConfigurationError(RuntimeError):
    """A fault no retry and no other bin can get past (credentials, permissions, a model that cannot run)."""


class TransientError(RuntimeError):
    """A fault that outlasted every retry; what it stopped is redone by the next run."""


def is_configuration(error: BaseException) -> bool:
    """Whether `error` means the run itself is set up wrongly (every bin would fail the same way)."""
    return isinstance(error, PermissionError | ConfigurationError) or any(
        cls.__name__ in _CONFIGURATION_TYPES for cls in type(error).__mro__
    )


def is_transient(error: BaseException) -> bool:
    """Whether retrying `error` later can succeed: network faults, timeouts, server errors, throttling."""
    if isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return False
    if is_configuration(error):
        return False
    if isinstance(error, TimeoutError | ConnectionError | TransientError):
        return True
    if any(cls.__name__ in _TRANSIENT_TYPES for cls in type(error).__mro__):
        return True
    if isinstance(error, OSError):
        if error.errno in _TRANSIENT_ERRNOS:
            return True
        message = str(error).lower()
        return error.errno in (None, errno.EIO) and any(word in message for word in _TRANSIENT_WORDS)
    cause = error.__cause__ or error.__context__
    return cause is not None and cause is not error and is_transient(cause)


def with_retries(operation: Callable[[], T], what: str, *, attempts: int = ATTEMPTS) -> T:
    """Run `operation`, retrying transient faults with backoff; raise `TransientError` when they outlast it.

    Any other exception passes through at once: retrying bad data or bad credentials only delays the answer.
    """
    for attempt in range(attempts):
        try:
            return operation()
        except Exception as err:
            if not is_transient(err):
                raise
            if attempt == attempts - 1:
                message = f"{what}: {type(err).__name__}: {err} (still failing after {attempts} tries)"
                raise TransientError(message) from err
            delay = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
            log.debug("%s: transient %s (%s), retry %d in %.2f s", what, type(err).__name__, err, attempt + 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises
