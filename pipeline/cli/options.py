"""Option parsing shared by every command that touches object storage."""

from __future__ import annotations

import json
from typing import Any

import typer

STORAGE_OPTIONS_HELP = (
    "JSON object passed to fsspec for object stores, e.g. "
    '\'{"anon": true}\' or \'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}\'. '
    "Credentials are best left to the usual environment variables / config files of s3fs or gcsfs."
)


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """Turn the `--storage-options` JSON text into a dict, with a clear error for bad JSON."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise typer.BadParameter(f"--storage-options is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise typer.BadParameter("--storage-options must be a JSON object")
    return value
