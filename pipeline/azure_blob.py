"""Azure Blob Storage (`az://container/path`, `abfs://container/path`): adlfs's filesystem, with two changes.

- **Retries on the project's backoff.** The Azure SDK retries a failed request itself (a 5xx, a dropped
  connection, a timeout), which is right, but its default policy (azure-storage-blob's `ExponentialRetry`) waits
  15 s before the first retry and 15 + 3**n s after: under throttling every object would cost a minute, and
  ifcbflow's own retries (`pipeline.faults.with_retries`) come on top of it. adlfs offers no option for it, so the
  client adlfs builds is rebuilt here with the same endpoint and credential and a policy that retries a few times
  (`SDK_RETRIES`, as botocore does for s3fs) with the project's backoff (`BACKOFF_BASE_S * 2**n`, capped, full
  jitter); a fault that outlasts them reaches `with_retries`, which knows the Azure SDK's errors (`pipeline.faults`).
- **`ls(..., refresh=True)` lists afresh**, as fsspec's other filesystems do: adlfs ignores `refresh` and answers
  from its listings cache, so a run would not see the partitions its workers committed since its last listing.
- **No failing clean-up at exit.** adlfs closes its client with `sync(self.loop, ...)` when the filesystem is
  collected or the interpreter exits; an asynchronous instance (the one zarr's `FsspecStore` opens) has no loop of
  its own (fsspec leaves it None), so that call can only raise, and every command that read a store printed a
  traceback as it ended. Such an instance leaves its connections to the process's end instead.

The credentials are adlfs's own (storage options or the environment: `AZURE_STORAGE_CONNECTION_STRING`,
`AZURE_STORAGE_ACCOUNT_NAME` with `AZURE_STORAGE_ACCOUNT_KEY` or `AZURE_STORAGE_SAS_TOKEN`, service principal
variables, or `DefaultAzureCredential`). `pipeline.storage` makes this class the filesystem of `az://`, `abfs://`
and `abfss://` URLs; it needs the `azure` extra (`pip install 'ifcbflow[azure]'`).
"""

from __future__ import annotations

import random
import weakref
from typing import Any

import adlfs
from azure.storage.blob.aio import BlobServiceClient, ExponentialRetry
from fsspec.asyn import sync

from pipeline.faults import BACKOFF_BASE_S, BACKOFF_CAP_S

#: Retries of one request by the Azure SDK itself before the error reaches ifcbflow's own retries.
SDK_RETRIES = 4


class ProjectBackoffRetry(ExponentialRetry):
    """The Azure SDK's retry policy (which requests, which statuses: its own rules) with the project's backoff."""

    def __init__(self, retry_total: int = SDK_RETRIES, **kwargs: Any) -> None:
        super().__init__(retry_total=retry_total, random_jitter_range=0, **kwargs)

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** settings["count"]))


class AzureBlobFileSystem(adlfs.AzureBlobFileSystem):
    """adlfs's `AzureBlobFileSystem` whose client retries on the project's backoff, whose `ls` honours `refresh`
    and whose asynchronous instances skip adlfs's failing clean-up (see the module's docstring); everything else,
    credentials included, is adlfs's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.asynchronous:  # adlfs's `sync(None, ...)` clean-ups: see the module's docstring
            for finalizer in list(weakref.finalize._registry):
                held = finalizer.peek()
                if held is not None and held[0] is self and held[1] is sync and held[2][0] is None:
                    finalizer.detach()

    def do_connect(self) -> None:
        super().do_connect()
        client = self.service_client  # not used yet: its HTTP session opens with its first request
        self.service_client = BlobServiceClient(
            client.primary_endpoint,  # with a SAS token in its query where the credential is one
            credential=client.credential,
            secondary_hostname=client.secondary_hostname or None,
            retry_policy=ProjectBackoffRetry(),
            user_agent=f"adlfs/{adlfs.__version__}",
            _location_mode=self.location_mode,
        )

    async def _ls(self, path: str, detail: bool = False, refresh: bool = False, **kwargs: Any) -> Any:
        if refresh:
            self.dircache.pop(self._strip_protocol(path).strip("/"), None)
        return await super()._ls(path, detail=detail, **kwargs)
