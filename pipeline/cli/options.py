"""Option parsing shared by the commands: storage options, times."""

from __future__ import annotations

import json
from datetime import UTC, datetime
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


EXCLUDE_FOLDERS_HELP = (
    "Comma-separated folder names left out of the archive at any depth (default: bad,skip,beads,temp,data_temp, "
    "as WHOI's ifcb-inference does); an empty value '' reads every folder. Recycle bins, trash and hidden folders "
    "are always left out; the summary counts what was left out."
)


def parse_folder_list(text: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """`--exclude-folders` as folder names (a YAML config may already hold a list); None: the default list."""
    from pipeline.ifcb.archive import EXCLUDED_FOLDERS

    if text is None:
        return EXCLUDED_FOLDERS
    names = text.split(",") if isinstance(text, str) else [str(name) for name in text]
    folders = tuple(name.strip() for name in names if name.strip())
    bad = [name for name in folders if "/" in name]
    if bad:
        raise typer.BadParameter(f"--exclude-folders takes folder names, not paths: {', '.join(bad)}")
    return folders


def parse_time(value: str | datetime | None, flag: str) -> datetime | None:
    """An ISO 8601 date or time (`2024-01-31`, `2024-01-31T12:00`, `...Z`, `...+02:00`) as an aware datetime;
    a time without a zone is UTC. YAML configs may already hold a datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise typer.BadParameter(
                f"{flag} must be an ISO 8601 date or time, e.g. 2024-01-31 or 2024-01-31T12:00Z; got {value!r}"
            ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def parse_window(start: Any, end: Any) -> tuple[datetime | None, datetime | None]:
    """`--start`/`--end` as aware datetimes; an empty window (start not before end) is a usage error, not 0 bins."""
    low, high = parse_time(start, "--start"), parse_time(end, "--end")
    if low is not None and high is not None and low >= high:
        raise typer.BadParameter(f"--start {low.isoformat()} is not before --end {high.isoformat()}")
    return low, high


REMAP_HELP = (
    "CSV (path or URL) with a header `from,to` and one row per class: merges or renames classes (a target named "
    "unclassified sends them there). Recorded in what the command writes."
)
KEEP_UNMAPPED_HELP = "Keep classes the remap has no row for as they are (without it, every class needs a row)."


def load_class_map(
    url: str | None, keep_unmapped: bool, classes: list[str], storage_options: dict[str, Any], flag: str = "--remap"
) -> tuple[Any, dict[str, str] | None]:
    """The class map of a remap CSV over `classes` and its record, or (None, None) without one; a bad remap is a
    usage error (exit 2) that says what is wrong with it."""
    from pipeline.results.remap import read_remap

    if url is None:
        return None, None
    try:
        remap = read_remap(url, storage_options)
        class_map = remap.apply(classes, keep_unmapped)
    except (OSError, ValueError) as err:  # a missing file, bad CSV or text, unknown or unmapped classes
        raise typer.BadParameter(str(err), param_hint=flag) from None
    return class_map, remap.record(class_map)
