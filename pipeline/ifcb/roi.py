"""The `.roi` file: raw 8-bit pixels of every image of a bin, back to back.

The images of a bin are contiguous, so one ranged read (first start byte to the end of the last image) fetches
them all: one request per bin on object storage, whatever the number of ROIs. The answer to that read must be
exactly the bytes asked for (`check_range_answer`): a server that ignores HTTP Range requests answers with the whole
file, and its bytes taken as the range would be other pixels, or a `.roi` "truncated" that is not.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import numpy as np
from fsspec import AbstractFileSystem

from pipeline.faults import ConfigurationError, TransientError
from pipeline.ifcb.adc import AdcTable
from pipeline.ifcb.errors import IfcbFormatError
from pipeline.redact import redact_url

#: Servers known to honour HTTP Range requests, for the message to a user whose server does not.
RANGE_SERVERS = "nginx, Apache httpd, Caddy, or object storage (S3, GCS) over HTTPS"


def image_ranges(adc: AdcTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ROI numbers, start bytes, end bytes), int64 (n,) each, of the rows with an image, in file order: ROI k's
    pixels are the `.roi` bytes [start, end), end = start + width x height."""
    numbers = adc.roi_numbers
    rows = numbers - 1
    starts = adc.start_byte[rows]
    return numbers, starts, starts + adc.width[rows] * adc.height[rows]


def image_span(adc: AdcTable) -> tuple[int, int]:
    """The byte range [start, end) of the `.roi` that holds every image of the bin; (0, 0) when it has none."""
    numbers, starts, ends = image_ranges(adc)
    if numbers.size == 0:
        return 0, 0
    return int(starts.min()), int(ends.max())


def check_roi_size(adc: AdcTable, size: int) -> None:
    """Raise `IfcbFormatError` (stage "roi") when a `.roi` of `size` bytes ends before the images the `.adc` lists
    do, naming the first row whose image does not fit."""
    numbers, _, ends = image_ranges(adc)
    beyond = np.flatnonzero(ends > size)
    if beyond.size:
        first = int(beyond[0])
        raise IfcbFormatError(
            f".roi is truncated: images need bytes up to {int(ends.max())}, the file ends at {size} "
            f"(first image past the end: .adc line {int(numbers[first])}, ending at byte {int(ends[first])}; "
            f"{beyond.size} image(s) past the end)",
            stage="roi",
        )


def check_image_ranges(adc: AdcTable, size: int | None = None) -> None:
    """Refuse an `.adc` whose images cannot all be distinct bytes of the bin's `.roi`, before any pixel is read.

    The rule: the `.roi` holds the pixels of the bin's images back to back (IFCB-FORMAT.md, "The three files of a
    bin" and "Images"), and a ROI's pixels are the width x height bytes at its own start byte (pyifcb's reader,
    `ifcb/data/roi.py`: `RoiFile.get_image` reads exactly those bytes for each ROI). So every image's byte range
    [start, start + width x height) lies inside the file, and the ranges of two ROIs never overlap. Together the two
    bound the pixels of all images, hence the number of ROIs a worker allocates model inputs for, by the size of the
    `.roi`, whatever the number of `.adc` rows. Rows without an image (width or height 0) have no range: real newer
    bins give them the start byte of the next image, which is no overlap. The two rows of a stitched pair of an older
    bin (`pipeline.ifcb.stitching`) have their own bytes each, back to back, as in the real bin
    `IFCB5_2012_028_081515`. No instrument is known to write overlapping or repeated ranges, so none are allowed.

    `size`: bytes of the `.roi` when known (the listing's); None checks the overlap only (`read_images` then checks
    the end against the file before reading). Raises `IfcbFormatError`: stage "roi" when an image ends past `size`
    (a truncated `.roi`, `check_roi_size`), stage "adc" when two images overlap, naming the first two lines (by
    start byte) and their byte ranges, and how many overlapping pairs there are. Cost: one stable sort of the start
    bytes and one comparison per ROI.
    """
    if size is not None:
        check_roi_size(adc, size)
    numbers, starts, ends = image_ranges(adc)
    if numbers.size < 2:
        return
    order = np.argsort(starts, kind="stable")  # equal starts keep file order
    sorted_starts, sorted_ends = starts[order], ends[order]
    clashes = sorted_ends[:-1] > sorted_starts[1:]  # in start order, two ranges overlap iff a neighbouring pair does
    if not clashes.any():
        return
    i = int(np.argmax(clashes))
    a, b = order[i], order[i + 1]
    same = starts[a] == starts[b] and ends[a] == ends[b]
    what = "repeats the image bytes of" if same else "overlaps the image of"
    raise IfcbFormatError(
        f".adc line {int(numbers[b])} {what} line {int(numbers[a])} in the .roi (bytes [{int(starts[b])}, "
        f"{int(ends[b])}) and [{int(starts[a])}, {int(ends[a])})); {int(clashes.sum())} overlapping pair(s) of "
        f"images in all: each ROI's pixels are bytes of its own",
        stage="adc",
    )


def slice_images(block: bytes, block_start: int, adc: AdcTable) -> list[tuple[int, np.ndarray]]:
    """Cut the images out of `block` (the `.roi` bytes from `block_start`): (ROI number, uint8 (height, width)).

    Raises `IfcbFormatError` when `block` ends before the last image does (a truncated `.roi`).
    """
    numbers = adc.roi_numbers
    if numbers.size == 0:
        return []
    rows = numbers - 1
    widths, heights = adc.width[rows], adc.height[rows]
    offsets = adc.start_byte[rows] - block_start
    need = int((offsets + widths * heights).max())
    if offsets.min() < 0 or need > len(block):
        raise IfcbFormatError(
            f".roi is truncated: images need bytes up to {block_start + need}, the file ends at "
            f"{block_start + len(block)}",
            stage="roi",
        )
    pixels = np.frombuffer(bytearray(block), dtype=np.uint8)  # one writable copy shared by every image
    return [
        (int(number), pixels[offset : offset + width * height].reshape(height, width))
        for number, offset, width, height in zip(numbers, offsets, widths, heights, strict=True)
    ]


def check_range_answer(fs: AbstractFileSystem, path: str, block: bytes, start: int, end: int) -> None:
    """Refuse an answer to the ranged read of bytes [start, end) of `path` that is not `end - start` bytes long.

    The rule: a ranged read returns exactly the bytes asked for (RFC 9110, section 15.3.7: a server that honours
    `Range` answers `206 Partial Content` with those bytes; fsspec's `cat_file(path, start, end)` returns them), and
    the size of the `.roi` was checked against `end` before the read (`check_roi_size`), so the file holds them all.
    - More bytes than asked: the server ignored the `Range` header and answered `200 OK` with the whole file (RFC
      9110, section 14.2: a server MAY ignore Range). fsspec's HTTP filesystem passes such an answer on as it is
      (`HTTPFileSystem._cat_file` reads the body whatever the status), so every bin of the archive would be read
      wrong: a `ConfigurationError` that names the server's fault and stops the run with one message.
    - Fewer bytes: the file is shorter now than the size checked (it shrank: a truncated `.roi`, data, stage
      "roi"), or the transfer stopped short although the file is long enough: what cut it cannot be told, so
      `TransientError` (retried; a bin it outlasts is left incomplete, never recorded as bad).
    """
    want = end - start
    if len(block) == want:
        return
    shown = redact_url(path)
    if len(block) > want:
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if protocol in ("http", "https"):
            parts = urlsplit(shown)
            raise ConfigurationError(
                f"the server at {parts.scheme}://{parts.netloc} ignores HTTP Range requests (asked for bytes "
                f"{start}-{end - 1} of {parts.path}, {want} bytes, it answered {len(block)} bytes: the whole file); "
                "ifcbflow reads images by ranges, one request per bin: serve the archive with a server that honours "
                f"Range, e.g. {RANGE_SERVERS} (Python's `python -m http.server` does not)"
            )
        raise ConfigurationError(
            f"the filesystem of {shown} ({protocol}) answered a ranged read of bytes {start}-{end - 1} with "
            f"{len(block)} bytes instead of {want}: ifcbflow reads images by ranges and cannot read this archive"
        )
    size = fs.size(path)
    if size is not None and size < end:
        raise IfcbFormatError(
            f".roi is truncated: images need bytes up to {end}, the file ends at {size} now (it was shorter when "
            f"read than when its size was checked)",
            stage="roi",
        )
    raise TransientError(
        f"reading {shown}: bytes {start}-{end - 1} answered with {len(block)} of {want} bytes, although the file "
        f"holds {size if size is not None else 'an unknown number of'} bytes: the transfer stopped short"
    )


def read_images(
    fs: AbstractFileSystem, path: str | None, adc: AdcTable, size: int | None = None
) -> list[tuple[int, np.ndarray]]:
    """Read every image of a bin from its `.roi` at `path` on the fsspec filesystem `fs`, in one ranged read.

    `size`: bytes of the `.roi` as the listing gave them; None asks `fs` (one request). Images said to end past it
    are refused (`check_roi_size`) before the read, so an `.adc` cannot make the read ask for more than the file.
    The answer must be the bytes asked for (`check_range_answer`). Raises `IfcbFormatError` for a missing or
    truncated `.roi`, `ConfigurationError` for a server that ignores HTTP Range requests, `TransientError` for a
    transfer that stopped short.
    """
    start, end = image_span(adc)
    if end == start:
        return []
    if path is None:
        raise IfcbFormatError("missing .roi: the .adc lists images but the bin has no .roi file", stage="roi")
    try:
        size = fs.size(path) if size is None else size
        if size is not None:  # some filesystems (HTTP without Content-Length) cannot say
            check_roi_size(adc, size)
        block = fs.cat_file(path, start=start, end=end)
        check_range_answer(fs, path, block, start, end)
    except FileNotFoundError:
        raise IfcbFormatError(f"missing .roi: {path} not found", stage="roi") from None
    except OSError:  # object stores refuse a range that starts past the end of the object (a file that shrank)
        size = fs.size(path)
        if size is not None:
            check_roi_size(adc, size)
        raise
    return slice_images(block, start, adc)
