"""Failure kinds, and retries for the transient ones.

Four kinds, because each calls for a different answer:
- **transient** (network errors, timeouts, HTTP 5xx, throttling such as S3's `503 SlowDown`): retried with
  exponential backoff and jitter; if the fault outlasts the retries, the bin is left not complete (the next run
  redoes it) and reported as incomplete, never recorded as bad data;
- **data** (the bin's own files are bad, missing, archived or not readable): recorded in the store with the stage
  and reason;
- **configuration** (credentials, the store or bucket itself, a bundle that does not fit its preprocessing, a GPU
  the backend cannot see, a server that ignores HTTP Range requests): the run stops early with one clear message
  instead of failing every bin;
- **node** (the node's own limits: `MemoryError`, `ENOMEM`, a feeder process killed by the kernel): neither the
  bin's fault nor a passing one. Retrying at once with backoff, as for the network, only fails again on the same
  node, and redoing the bin at every run would cost each run the same exhaustion forever. So `with_retries` leaves
  them alone; the feeders give such a bin a bounded number of attempts within the task
  (`pipeline.job.feeder.NODE_ATTEMPTS`, the last with no other bin in flight), then record it at stage "node" with
  a reason that names the limit. Like a bad bin it is then not read again while its files are unchanged, unless
  the run asks (`classify --retry-failed`, once the workers have more memory).

The kind is decided by exception types, errno values and the status codes of the clients this project reads through,
never by words in a message:
- s3fs turns a botocore `ClientError` into an `OSError` subclass and keeps the original as `__cause__`; its S3 error
  code (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html) and HTTP status decide;
- fsspec's HTTP filesystem raises aiohttp's `ClientResponseError` (with `status`) or connection errors;
- gcsfs raises `gcsfs.retry.HttpError` (with `code`) where it is installed;
- adlfs (Azure Blob Storage) passes on the Azure SDK's errors (`azure.core.exceptions`): `HttpResponseError` with
  the answer's `status_code` and the service's `error_code`
  (https://learn.microsoft.com/rest/api/storageservices/blob-service-error-codes), `ServiceRequestError` and
  `ServiceResponseError` for the network (no answer, or a connection lost before the whole answer), and
  `IncompleteReadError` for a body cut short; `ClientAuthenticationError` without an answer is azure-identity
  finding no credentials;
- local files raise `OSError` with an errno;
- the interpreter raises `MemoryError` when an allocation fails (`ulimit -v`, `vm.overcommit_memory=2`), and
  `ENOMEM` is the kernel's "cannot allocate memory" (errno(3)).

Where a fault happened matters as much as what it is: the same `AccessDenied` on one bin's object is that bin's
failure (`scope="object"`), on the archive's listing or the output store it stops the run (`scope="store"`).
Credentials, a missing bucket or a certificate that does not verify stop the run wherever they happen.

Object-store clients retry a little themselves (botocore retries a 503 a few times); a burst of throttling outlasts
that, which is what `with_retries` is for.
"""

from __future__ import annotations

import errno
import importlib
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Literal, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Kind = Literal["transient", "data", "configuration", "node"]
Scope = Literal["object", "store"]

#: Attempts per operation, and the backoff: base * 2**attempt seconds, capped, with full jitter.
ATTEMPTS = 10
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 8.0

#: S3 error codes that say "try again": throttling, server errors, a request the server gave up on.
_TRANSIENT_CODES = {
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "ThrottlingException",
    "RequestLimitExceeded", "TooManyRequestsException", "OperationAborted", "RequestThrottled",
}  # fmt: skip
#: S3 error codes that no retry and no other object gets past: credentials, the account, the bucket, the endpoint.
_CONFIGURATION_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException", "InvalidToken",
    "TokenRefreshRequired", "RequestTimeTooSkewed", "AccountProblem", "AllAccessDisabled", "NotSignedUp",
    "InvalidSecurity", "InvalidPayer", "NoSuchBucket", "PermanentRedirect", "AuthorizationHeaderMalformed",
    "InvalidBucketName", "InvalidBucketState",
}  # fmt: skip
#: botocore's own exceptions (raised before any request is answered) that mean the client is set up wrongly.
_CONFIGURATION_BOTOCORE = (
    "NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "NoRegionError", "ProfileNotFound",
    "UnauthorizedSSOTokenError", "SSOTokenLoadError", "TokenRetrievalError", "NoAuthTokenError",
)  # fmt: skip
#: Azure Storage error codes that no retry and no other object gets past: credentials, the account, the container.
#: `AuthorizationFailure` is the account's rules (network, shared key disabled, a SAS's permissions; Azurite also
#: answers it to a wrong key); a file's own ACL is `AuthorizationPermissionMismatch`, left to the scope like S3's
#: `AccessDenied`.
_AZURE_CONFIGURATION_CODES = {
    "AuthenticationFailed", "InvalidAuthenticationInfo", "NoAuthenticationInformation", "AuthorizationFailure",
    "KeyBasedAuthenticationNotPermitted", "AccountIsDisabled", "InsufficientAccountPermissions", "ContainerNotFound",
    "ContainerBeingDeleted", "ContainerDisabled", "FilesystemNotFound", "InvalidResourceName",
}  # fmt: skip
#: Azure Storage error codes that say "try again" (the service answers them with 500 or 503 as well).
_AZURE_TRANSIENT_CODES = {"ServerBusy", "OperationTimedOut", "InternalError"}
#: errno values of a fault that may pass: the network, a busy or stale resource, buffers or descriptors short.
_TRANSIENT_ERRNOS = {
    errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNABORTED,
    errno.ECONNREFUSED, errno.EPIPE, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETUNREACH, errno.ENETDOWN,
    errno.ENETRESET, errno.ESTALE, errno.ENOBUFS, errno.EMFILE, errno.ENFILE, errno.EREMOTEIO,
}  # fmt: skip
#: errno values of the node's own limit: "cannot allocate memory" (errno(3)), from mmap, fork or a driver.
_NODE_ERRNOS = {errno.ENOMEM}
#: HTTP statuses that say "try again" (RFC 9110: 408 Request Timeout, 429 Too Many Requests, 5xx server errors).
_TRANSIENT_STATUS = {408, 429}
#: HTTP 401: the request carries no valid credentials (RFC 9110): no object of this store is readable either.
_UNAUTHORIZED = 401


class ConfigurationError(RuntimeError):
    """A fault no retry and no other bin can get past (credentials, permissions, a model that cannot run)."""


class TransientError(RuntimeError):
    """A fault that outlasted every retry; what it stopped is redone by the next run."""


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what caused it (`raise ... from`, or the error being handled when it was raised)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _optional_class(module: str, name: str) -> type | None:
    """An exception class of a client library, or None where that library is not installed."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _by_status(status: int, scope: Scope) -> Kind:
    """The kind of an HTTP answer with this status, from any client."""
    if status >= 500 or status in _TRANSIENT_STATUS:
        return "transient"
    if status == _UNAUTHORIZED:
        return "configuration"
    return "data" if scope == "object" else "configuration"


def _client_kind(error: BaseException, scope: Scope) -> Kind | None:
    """The kind from an error of a client library in the chain (S3 code, HTTP status), or None if none is there."""
    s3_error = _optional_class("botocore.exceptions", "ClientError")
    http_error = _optional_class("aiohttp", "ClientResponseError")
    gcs_error = _optional_class("gcsfs.retry", "HttpError")
    azure_error = _optional_class("azure.core.exceptions", "HttpResponseError")
    for link in _chain(error):
        if s3_error is not None and isinstance(link, s3_error):
            response = getattr(link, "response", None) or {}
            code = str(response.get("Error", {}).get("Code", ""))
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in _TRANSIENT_CODES:
                return "transient"
            if code in _CONFIGURATION_CODES:
                return "configuration"
            if status:
                return _by_status(status, scope)
            return "data" if scope == "object" else "configuration"
        if http_error is not None and isinstance(link, http_error):
            return _by_status(int(link.status), scope)  # type: ignore[attr-defined]
        if gcs_error is not None and isinstance(link, gcs_error) and isinstance(getattr(link, "code", None), int):
            return _by_status(link.code, scope)  # type: ignore[attr-defined]
        if azure_error is not None and isinstance(link, azure_error):
            return _azure_kind(link, scope)
    return None


def _azure_kind(error: BaseException, scope: Scope) -> Kind:
    """The kind of an Azure SDK `HttpResponseError` (or subclass): its error code, else its HTTP status."""
    incomplete = _optional_class("azure.core.exceptions", "IncompleteReadError")
    if incomplete is not None and isinstance(error, incomplete):  # the answer's body was cut short: the network
        return "transient"
    code = getattr(error, "error_code", None) or ""
    code = str(getattr(code, "value", code))  # the SDK's StorageErrorCode enumeration, or the code as text
    status = getattr(error, "status_code", None)
    if code in _AZURE_TRANSIENT_CODES:
        return "transient"
    if code in _AZURE_CONFIGURATION_CODES:
        return "configuration"
    if isinstance(status, int) and status:
        return _by_status(status, scope)
    authentication = _optional_class("azure.core.exceptions", "ClientAuthenticationError")
    if authentication is not None and isinstance(error, authentication):
        return "configuration"  # no answer: azure-identity found no credential to send
    return "data" if scope == "object" else "configuration"


def fault_kind(error: BaseException, scope: Scope = "store") -> Kind:
    """What `error` means for the run: "transient" (retry), "data" (record it as the bin's failure),
    "configuration" (stop the run with one message) or "node" (the node's memory: a bounded number of attempts, then
    a failure at stage "node"; see the module's docstring).

    `scope` says what was being read or written: "object" for one bin's files (a denied, archived or missing object
    is that bin's failure), "store" for the archive's listing, the output store or the bundle (the same faults stop
    the run). For "store", anything else comes back as "data": not retried, and not the run's configuration either.
    """
    for link in _chain(error):
        if isinstance(link, ConfigurationError):
            return "configuration"
        if isinstance(link, TransientError):
            return "transient"
        if isinstance(link, ssl.SSLCertVerificationError):  # the endpoint or its CA is wrong, not the network
            return "configuration"
        if any(cls.__name__ in _CONFIGURATION_BOTOCORE for cls in type(link).__mro__):
            return "configuration"
    client = _client_kind(error, scope)
    if client is not None:
        return client
    network = tuple(
        cls
        for cls in (
            _optional_class("botocore.exceptions", "HTTPClientError"),
            _optional_class("botocore.exceptions", "ConnectionError"),
            _optional_class("aiohttp", "ClientConnectionError"),
            _optional_class("aiohttp", "ClientPayloadError"),
            _optional_class("azure.core.exceptions", "ServiceRequestError"),
            _optional_class("azure.core.exceptions", "ServiceResponseError"),
        )
        if cls is not None
    )
    if isinstance(error, MemoryError) or (isinstance(error, OSError) and error.errno in _NODE_ERRNOS):
        return "node"  # the node's memory: not the bin's fault, and no retry with backoff gets past it
    if isinstance(error, (TimeoutError, ConnectionError, ssl.SSLError, *network)):
        return "transient"
    if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
        return "transient"
    if scope == "store" and isinstance(error, PermissionError | FileNotFoundError):
        return "configuration"
    if scope == "store" and isinstance(error, OSError) and error.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):
        return "configuration"
    return "data"


def is_transient(error: BaseException) -> bool:
    """Whether retrying `error` later can succeed: network faults, timeouts, server errors, throttling."""
    return fault_kind(error) == "transient"


def is_node_fault(error: BaseException) -> bool:
    """Whether `error` is the node's own limit (`MemoryError`, `ENOMEM`): see the module's docstring."""
    return fault_kind(error) == "node"


def is_configuration(error: BaseException, scope: Scope = "store") -> bool:
    """Whether `error`, raised where `scope` says, means the run itself is set up wrongly (see `fault_kind`)."""
    return fault_kind(error, scope) == "configuration"


def with_retries(operation: Callable[[], T], what: str, *, attempts: int = ATTEMPTS) -> T:
    """Run `operation`, retrying transient faults with backoff; raise `TransientError` when they outlast it.

    Any other exception passes through at once: retrying bad data or bad credentials only delays the answer, and a
    node fault (memory) gets its bounded attempts from the feeders, not a backoff meant for the network.
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
