"""`.roi` reads: the span of one ranged read, slicing, and truncated or missing files."""

from __future__ import annotations

from pathlib import Path

import fsspec
import numpy as np
import pytest

from pipeline.ifcb.adc import parse_adc
from pipeline.ifcb.errors import IfcbFormatError
from pipeline.ifcb.roi import image_span, read_images, slice_images

ROW = "{n},0.1,0,0,0,0,0,0,0,0,-999,0.1,0.2,0,0,{w},{h},{start},-999,0,0,0,{t},{i}"


def _adc(rows: list[tuple[int, int, int]]):
    lines = [ROW.format(n=n, w=w, h=h, start=s, t=n * 0.5, i=n * 0.1) for n, (w, h, s) in enumerate(rows, start=1)]
    return parse_adc("\n".join(lines), "v2")


def test_span_and_slices_follow_the_adc() -> None:
    adc = _adc([(0, 0, 10), (3, 2, 10), (0, 0, 16), (2, 2, 16)])
    assert image_span(adc) == (10, 20)
    block = bytes(range(10, 20))
    images = slice_images(block, 10, adc)
    assert [n for n, _ in images] == [2, 4]
    np.testing.assert_array_equal(images[0][1], np.array([[10, 11, 12], [13, 14, 15]], dtype=np.uint8))
    np.testing.assert_array_equal(images[1][1], np.array([[16, 17], [18, 19]], dtype=np.uint8))
    assert images[0][1].flags.writeable


def test_truncated_block_is_an_error() -> None:
    adc = _adc([(3, 2, 0), (2, 2, 6)])
    with pytest.raises(IfcbFormatError, match="truncated: images need bytes up to 10, the file ends at 9") as info:
        slice_images(bytes(9), 0, adc)
    assert info.value.stage == "roi"


def test_no_images_reads_nothing() -> None:
    adc = _adc([(0, 0, 0)])
    assert image_span(adc) == (0, 0)
    assert read_images(None, None, adc) == []  # no filesystem call at all


def test_missing_roi_file(tmp_path: Path) -> None:
    adc = _adc([(2, 2, 0)])
    fs = fsspec.filesystem("file")
    with pytest.raises(IfcbFormatError, match=r"missing \.roi"):
        read_images(fs, None, adc)
    with pytest.raises(IfcbFormatError, match=r"missing \.roi"):
        read_images(fs, str(tmp_path / "nope.roi"), adc)


def test_short_file_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "x.roi"
    path.write_bytes(bytes(5))
    with pytest.raises(IfcbFormatError, match="truncated"):
        read_images(fsspec.filesystem("file"), str(path), _adc([(2, 2, 0), (2, 2, 4)]))
