"""Synthetic archives: valid bins read back by the one reader, labels that match, determinism, learnable classes."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

from pipeline.ifcb.adc import AdcSchemaV2
from pipeline.ifcb.archive import list_bins, scan_archive
from pipeline.ifcb.bins import BinMeta, read_bin_images
from pipeline.ifcb.identifiers import roi_id
from pipeline.ifcb.synth import SYNTH_CLASSES, draw_roi, write_synthetic_archive


def _labels(root: Path) -> dict[str, str]:
    with (root / "labels.csv").open(newline="") as f:
        return {row["roi_id"]: row["class"] for row in csv.DictReader(f)}


@pytest.mark.parametrize(("bins", "rois", "classes"), [(1, 1, 1), (2, 0, 2), (3, 40, 4), (2, 25, len(SYNTH_CLASSES))])
def test_roundtrip(tmp_path: Path, bins: int, rois: int, classes: int) -> None:
    ids = write_synthetic_archive(str(tmp_path), bins=bins, rois=rois, classes=classes, seed=3)
    assert len(ids) == bins
    metas = list(scan_archive(str(tmp_path)))
    assert all(isinstance(m, BinMeta) for m in metas)
    assert [m.bin.id for m in metas] == ids
    labels = _labels(tmp_path)
    assert len(labels) == bins * rois
    assert set(labels.values()) <= set(SYNTH_CLASSES[:classes])
    fs = fsspec.filesystem("file")
    for meta in metas:
        assert meta.bin.schema == "v2" and meta.n_rois == rois
        assert meta.adc.n_rows > rois or rois == 0  # some triggers without an image, like real bins
        assert meta.header.adc_columns is not None and len(meta.header.adc_columns) == AdcSchemaV2.N_COLUMNS
        images = read_bin_images(fs, meta)
        assert [roi_id(meta.bin.id, n) for n, _ in images] == [r for r in labels if r.startswith(meta.bin.id)]
        assert Path(meta.files.roi).stat().st_size == meta.roi_bytes  # offsets address the file exactly
        for _, image in images:
            assert image.min() < 150 < image.max()  # a dark object on a bright background
        if rois:
            s = AdcSchemaV2
            run, inh = meta.adc.column(s.RUN_TIME)[-1], meta.adc.column(s.INHIBIT_TIME)[-1]
            assert meta.ml_analyzed == pytest.approx(0.25 * (run - inh) / 60)
            assert 3 < meta.ml_analyzed < 6
        else:
            assert meta.ml_analyzed is None


def test_day_folders_and_flat(tmp_path: Path) -> None:
    start = datetime(2024, 12, 31, 23, 30, tzinfo=UTC)
    ids = write_synthetic_archive(str(tmp_path / "nested"), bins=3, rois=2, classes=2, seed=0, start=start)
    assert ids == ["D20241231T233000_IFCB999", "D20241231T235000_IFCB999", "D20250101T001000_IFCB999"]
    assert (tmp_path / "nested" / "D2025" / "D20250101" / f"{ids[2]}.roi").exists()
    assert (tmp_path / "nested" / "D2024" / "D20241231" / f"{ids[0]}.hdr").exists()
    write_synthetic_archive(str(tmp_path / "flat"), bins=3, rois=2, classes=2, seed=0, start=start, flat=True)
    assert sorted(p.name for p in (tmp_path / "flat").iterdir())[:2] == [f"{ids[0]}.adc", f"{ids[0]}.hdr"]


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    def files(seed: int, name: str) -> dict[str, bytes]:
        root = tmp_path / name
        write_synthetic_archive(str(root), bins=2, rois=10, classes=3, seed=seed)
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    assert files(7, "a") == files(7, "b")
    assert files(7, "a") != files(8, "c")


def test_bad_arguments(tmp_path: Path) -> None:
    for classes in (0, len(SYNTH_CLASSES) + 1):
        with pytest.raises(ValueError, match="classes must be between 1"):
            write_synthetic_archive(str(tmp_path), bins=1, rois=1, classes=classes, seed=0)
    with pytest.raises(ValueError, match=">= 0"):
        write_synthetic_archive(str(tmp_path), bins=-1, rois=1, classes=1, seed=0)


def _thumbnail(image: np.ndarray, size: int = 24) -> np.ndarray:
    """Aspect-preserving resize and centre pad, as a model's preprocessing does: sizes no longer tell classes."""
    height, width = image.shape
    scale = size / max(height, width)
    small = Image.fromarray(image).resize((max(1, round(width * scale)), max(1, round(height * scale))))
    pixels = np.asarray(small, dtype=np.float32)
    pixels = (pixels.max() - pixels) / (np.ptp(pixels) + 1e-6)
    canvas = np.zeros((size, size), dtype=np.float32)
    y, x = (size - pixels.shape[0]) // 2, (size - pixels.shape[1]) // 2
    canvas[y : y + pixels.shape[0], x : x + pixels.shape[1]] = pixels
    return canvas.ravel()


def test_classes_are_learnable_after_resize() -> None:
    """Even a 1-nearest-neighbour on 24x24 thumbnails tells the ten kinds apart: a small CNN has room to spare."""
    rng = np.random.default_rng(0)
    kinds = rng.integers(0, len(SYNTH_CLASSES), 700)
    features = np.stack([_thumbnail(draw_roi(SYNTH_CLASSES[k], rng)) for k in kinds])
    train, test = slice(0, 600), slice(600, None)
    distances = ((features[test, None, :] - features[None, train, :]) ** 2).sum(axis=-1)
    accuracy = (kinds[train][distances.argmin(axis=1)] == kinds[test]).mean()
    assert accuracy > 0.8, f"1-NN accuracy {accuracy:.2f}"


def test_listing_sees_only_bins_not_labels(tmp_path: Path) -> None:
    write_synthetic_archive(str(tmp_path), bins=2, rois=3, classes=2, seed=0)
    _, bins, failures = list_bins(str(tmp_path))
    assert len(bins) == 2 and failures == []
