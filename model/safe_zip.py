"""Zip files from other people, opened with bounds: a bundle, the Keras 3 `.keras` file inside it or given to
`model import`, and the zip of a `zip://` archive.

A zip's central directory declares each member's compressed and inflated size, and Python's `zipfile` streams a
member and stops at its declared size (a member that inflates further fails its CRC check), so the declared sizes
bound what reading can allocate; but nothing in `zipfile` bounds the declared sizes themselves. A zip bomb declares a
large member that deflate or LZMA shrinks to almost nothing. `check_zip` refuses, before any member is read:

- a member that inflates to more than `MAX_EXPANSION` times its stored bytes, once it is over `EXPANSION_FLOOR`
  (bundles and Keras' own files store their members uncompressed, ratio 1; weights deflate by a few percent; deflate
  cannot exceed about 1032:1, so only a crafted member is refused: the rule Keras 3 applies to its own members, at a
  far lower floor);
- members that inflate to more than a limit in all (`max_model_bytes` for a model file).

`read_member` then reads one member by streaming, at most its declared size. The library's own checks are kept and
this adds what they leave out; a library that bounded zips this way would replace this module.
"""

from __future__ import annotations

import os
import zipfile

#: A member of more inflated bytes than this may expand at most `MAX_EXPANSION` times its stored bytes.
EXPANSION_FLOOR = 1 << 20  # 1 MiB
#: The largest ratio of inflated to stored bytes a member over `EXPANSION_FLOOR` may have.
MAX_EXPANSION = 100
#: The environment variable that raises (or lowers) the bound on a model file's inflated bytes.
MAX_MODEL_BYTES_ENV = "IFCBFLOW_MAX_MODEL_BYTES"
#: The default bound on a model file's inflated bytes: many times the largest CNNs the field shares (ifcbUTOPIA's
#: EfficientNet is about 50 MB, a ResNet-152 about 240 MB), far below a node's memory.
DEFAULT_MAX_MODEL_BYTES = 2 << 30  # 2 GiB
_CHUNK = 1 << 20


class UnsafeZipError(ValueError):
    """A zip whose declared sizes break a bound (a zip bomb, or larger than allowed), or a member that does not hold
    what the directory declares."""


def max_model_bytes() -> int:
    """The bound, in bytes, on what a model file (a bundle, a `.keras` file) may inflate to: `DEFAULT_MAX_MODEL_BYTES`
    unless `IFCBFLOW_MAX_MODEL_BYTES` says otherwise. ValueError for a value that is not a positive integer."""
    value = os.environ.get(MAX_MODEL_BYTES_ENV)
    if value is None:
        return DEFAULT_MAX_MODEL_BYTES
    if not value.isdigit() or int(value) <= 0:
        raise ValueError(f"{MAX_MODEL_BYTES_ENV} must be a positive number of bytes, not {value!r}")
    return int(value)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def check_zip(archive: zipfile.ZipFile, what: str, max_total: int | None) -> None:
    """Refuse (`UnsafeZipError`, naming the member and its sizes) a zip with a member that expands more than
    `MAX_EXPANSION` times past `EXPANSION_FLOOR`, or whose members inflate to more than `max_total` bytes in all
    (None: no total bound, for an archive of bins). Reads only the directory, already in memory."""
    total = 0
    for info in archive.infolist():
        size, stored = info.file_size, info.compress_size
        if size > EXPANSION_FLOOR and size > MAX_EXPANSION * max(stored, 1):
            raise UnsafeZipError(
                f"{what}: member {info.filename!r} declares {_mib(size)} inflated from {stored:,} stored bytes "
                f"(over {MAX_EXPANSION} times): a zip bomb, not read"
            )
        total += size
        if max_total is not None and total > max_total:
            raise UnsafeZipError(
                f"{what}: its members inflate to more than {max_total:,} bytes, the bound on a model file; not read "
                f"(set {MAX_MODEL_BYTES_ENV} to a larger number of bytes for a model that truly is this large)"
            )


def open_zip(data: object, what: str, max_total: int | None) -> zipfile.ZipFile:
    """`zipfile.ZipFile(data)` (a path or a binary file object), checked by `check_zip`; `zipfile.BadZipFile` for a
    file that is not a zip, `UnsafeZipError` for one that breaks a bound."""
    archive = zipfile.ZipFile(data)  # type: ignore[arg-type]
    try:
        check_zip(archive, what, max_total)
    except UnsafeZipError:
        archive.close()
        raise
    return archive


def read_member(archive: zipfile.ZipFile, name: str, what: str) -> bytes:
    """The bytes of member `name`, streamed in 1 MiB chunks and never more than the directory declares;
    `UnsafeZipError` when the member holds fewer bytes than declared, or other ones (its CRC check fails: what a
    member that inflates past its declared size gives)."""
    info = archive.getinfo(name)
    chunks, left = [], info.file_size
    try:
        with archive.open(info) as member:
            while left > 0:
                chunk = member.read(min(_CHUNK, left))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
    except zipfile.BadZipFile as err:  # a CRC mismatch: the member inflates to other bytes than declared
        raise UnsafeZipError(f"{what}: member {name!r} does not hold what the zip declares ({err})") from None
    if left != 0:
        raise UnsafeZipError(f"{what}: member {name!r} does not hold the {info.file_size:,} bytes the zip declares")
    return b"".join(chunks)
