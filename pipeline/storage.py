"""fsspec options that keep object-storage requests to the necessary ones, for archives and stores alike; and the
filesystem of Azure Blob Storage URLs (`pipeline.azure_blob`)."""

from __future__ import annotations

from typing import Any

import fsspec

#: URL schemes of Azure Blob Storage (adlfs's, `abfss` for TLS to a Data Lake endpoint).
AZURE_PROTOCOLS = ("az", "abfs", "abfss")

for _protocol in AZURE_PROTOCOLS:  # imported only when such a URL is opened (it needs the azure extra)
    fsspec.register_implementation(
        _protocol,
        "pipeline.azure_blob.AzureBlobFileSystem",
        clobber=True,
        errtxt="Azure Blob Storage URLs need the azure extra: pip install 'ifcbflow[azure]'",
    )


def fs_options(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The user's storage options, plus what saves requests on this URL's filesystem.

    s3fs asks for an object's size (a HEAD) before every whole-object read, in case it may split the read into
    concurrent ranges; the files ifcbflow reads whole (`.hdr`, `.adc`, zarr documents and chunks) are small, so
    `max_concurrency=1` makes each one a single GET. A value the user gives wins.

    Azure (adlfs) needs no option for it: a whole-object read is one GET (the Azure SDK asks for the first 32 MiB
    without knowing the size, and the answer says the rest), a ranged read one GET, a write under 64 MiB one PUT,
    and none of them asks for the blob's properties first.
    """
    options = dict(storage_options or {})
    if url.split("://", 1)[0] in ("s3", "s3a"):
        options.setdefault("max_concurrency", 1)
    return options
