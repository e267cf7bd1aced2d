"""Labelled data: class folders (the real ROIs), labelled bins of an archive (local and S3), the grouped split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.data import LabelledImages, load_image_folder, split_by_group
from pipeline.ifcb.errors import IfcbFormatError
from pipeline.ifcb.identifiers import roi_group
from pipeline.ifcb.labelled import labelled_images_from_archive
from pipeline.ifcb.synth import write_synthetic_archive


def test_real_labelled_rois_load_as_grey_uint8(utopia_data: Path) -> None:
    data = load_image_folder(str(utopia_data / "labelled"))
    assert len(data) == 93
    assert data.classes == ["chloro", "ciliates", "crypto", "diatoms", "dictyo", "dinoflagellates", "eugleno",
                            "other", "pyrmnesio"]  # fmt: skip
    assert all(image.ndim == 2 and image.dtype == np.uint8 for image in data.images)
    assert data.groups == data.ids  # plain file names: each image is its own group
    assert len({image.shape for image in data.images}) > 10  # ROIs keep their own sizes


def test_roi_group_of_roi_ids_and_plain_names() -> None:
    assert roi_group("D20240101T002000_IFCB999_00042") == "D20240101T002000_IFCB999"
    assert roi_group("IFCB5_2012_028_081515_00003") == "IFCB5_2012_028_081515"
    assert roi_group("0693") == "0693"
    assert roi_group("D20240101T002000_IFCB999_042") == "D20240101T002000_IFCB999_042"  # not 5 digits


def test_image_folder_groups_by_the_given_function(tmp_path: Path) -> None:
    from PIL import Image

    for name in ("D20240101T002000_IFCB999_00001", "D20240101T002000_IFCB999_00002", "loose"):
        (tmp_path / "a").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "a" / f"{name}.png")
    data = load_image_folder(str(tmp_path), group_of=roi_group)
    assert data.groups == ["D20240101T002000_IFCB999", "D20240101T002000_IFCB999", "loose"]


def _toy(groups: int, per_group: int, classes: int = 3) -> LabelledImages:
    rng = np.random.default_rng(0)
    n = groups * per_group
    return LabelledImages(
        images=[np.zeros((2, 2), np.uint8)] * n,
        labels=[f"c{rng.integers(classes)}" for _ in range(n)],
        groups=[f"bin{i // per_group:03d}" for i in range(n)],
        ids=[f"roi{i}" for i in range(n)],
    )


def test_split_keeps_groups_whole_and_is_seeded() -> None:
    data = _toy(groups=40, per_group=10)
    train, val, test = split_by_group(data, val=0.15, test=0.15, seed=4)
    sides = [set(part.groups) for part in (train, val, test)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert sorted(train.ids + val.ids + test.ids) == sorted(data.ids)
    assert 0.08 <= len(test) / len(data) <= 0.25 and 0.08 <= len(val) / len(data) <= 0.25
    again = split_by_group(data, val=0.15, test=0.15, seed=4)
    assert [part.ids for part in again] == [part.ids for part in (train, val, test)]
    other = split_by_group(data, val=0.15, test=0.15, seed=5)
    assert other[2].ids != test.ids


def test_split_edge_cases() -> None:
    data = _toy(groups=10, per_group=3)
    train, val, test = split_by_group(data, val=0.2, test=0.0, seed=0)
    assert len(test) == 0 and len(val) > 0 and len(train) > 0
    with pytest.raises(ValueError, match="val \\+ test < 1"):
        split_by_group(data, val=0.5, test=0.5)
    with pytest.raises(ValueError, match="only 1 group"):
        split_by_group(_toy(groups=1, per_group=5), val=0.2, test=0.2)


def test_labelled_bins_from_an_archive_on_s3(s3_server) -> None:
    url = f"s3://{s3_server.new_bucket()}/archive"
    bins = write_synthetic_archive(url, bins=3, rois=6, classes=3, seed=2, storage_options=s3_server.storage_options)
    data = labelled_images_from_archive(url, f"{url}/labels.csv", s3_server.storage_options)
    assert len(data) == 18 and sorted(set(data.groups)) == sorted(bins)
    assert all(roi.startswith(group + "_") for roi, group in zip(data.ids, data.groups, strict=True))
    assert set(data.labels) <= {"round_cell", "chain", "needle"}
    assert all(image.dtype == np.uint8 and image.ndim == 2 and image.size > 100 for image in data.images)


def test_labels_that_the_archive_cannot_back_are_errors(tmp_path: Path) -> None:
    url = str(tmp_path / "archive")
    (bin_id,) = write_synthetic_archive(url, bins=1, rois=3, classes=2, seed=0)
    labels = tmp_path / "labels.csv"
    labels.write_text(f"roi_id,class\nD20250101T000000_IFCB999_00001,chain\n{bin_id}_00001,chain\n")
    with pytest.raises(IfcbFormatError, match=r"1 labelled bin\(s\) unusable.*D20250101T000000_IFCB999"):
        labelled_images_from_archive(url, str(labels))
    labels.write_text(f"roi_id,class\n{bin_id}_00099,chain\n")
    with pytest.raises(IfcbFormatError, match="no image for labelled ROI numbers 99"):
        labelled_images_from_archive(url, str(labels))
    labels.write_text(f"roi_id,class\n{bin_id}_00001,chain\n{bin_id}_00001,star\n")
    with pytest.raises(IfcbFormatError, match="labelled twice"):
        labelled_images_from_archive(url, str(labels))
    labels.write_text("id,label\nx,y\n")
    with pytest.raises(IfcbFormatError, match="columns roi_id and class"):
        labelled_images_from_archive(url, str(labels))
