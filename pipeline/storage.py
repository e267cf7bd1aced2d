"""fsspec options that keep object-storage requests to the necessary ones, for archives and stores alike."""

from __future__ import annotations

from typing import Any


def fs_options(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """The user's storage options, plus what saves requests on this URL's filesystem.

    s3fs asks for an object's size (a HEAD) before every whole-object read, in case it may split the read into
    concurrent ranges; the files ifcbflow reads whole (`.hdr`, `.adc`, zarr documents and chunks) are small, so
    `max_concurrency=1` makes each one a single GET. A value the user gives wins.
    """
    options = dict(storage_options or {})
    if url.split("://", 1)[0] in ("s3", "s3a"):
        options.setdefault("max_concurrency", 1)
    return options
