"""Labelled data: class folders (the real ROIs), labelled bins of an archive (local and S3), the grouped split, the
prepared training set (its layout, pixels, resumption and refusals)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.preprocess import PreprocessConfig, preprocess_batch
from model.training.data import SplitError, check_splittable, image_folder_source, load_image_folder, split_by_group
from model.training.prepared import PADDING, PreparedSet, PreparedSetError, plan_parts, prepare
from pipeline.ifcb.errors import IfcbFormatError
from pipeline.ifcb.identifiers import roi_group
from pipeline.ifcb.labelled import labelled_archive_source, labelled_images_from_archive
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


def _toy(groups: int, per_group: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = groups * per_group
    return rng.integers(classes, size=n), np.array([f"bin{i // per_group:03d}" for i in range(n)])


def test_split_keeps_groups_whole_and_is_seeded() -> None:
    labels, groups = _toy(groups=40, per_group=10)
    parts = split_by_group(labels, groups, val=0.15, test=0.15, seed=4)
    sides = [set(groups[part]) for part in parts]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
    _, val, test = (len(part) / len(labels) for part in parts)
    assert 0.08 <= test <= 0.25 and 0.08 <= val <= 0.25
    again = split_by_group(labels, groups, val=0.15, test=0.15, seed=4)
    assert all((a == b).all() for a, b in zip(again, parts, strict=True))
    other = split_by_group(labels, groups, val=0.15, test=0.15, seed=5)
    assert other[2].tolist() != parts[2].tolist()


def test_split_edge_cases() -> None:
    labels, groups = _toy(groups=10, per_group=3)
    train, val, test = split_by_group(labels, groups, val=0.2, test=0.0, seed=0)
    assert len(test) == 0 and len(val) > 0 and len(train) > 0
    with pytest.raises(SplitError, match="val \\+ test < 1"):
        split_by_group(labels, groups, val=0.5, test=0.5)
    with pytest.raises(SplitError, match=r"has 1 bin.*needs at least 3"):
        split_by_group(*_toy(groups=1, per_group=5), val=0.2, test=0.2)


def test_a_split_says_how_many_bins_it_needs() -> None:
    check_splittable(3, 0.15, 0.15)
    check_splittable(2, 0.15, 0.0)
    check_splittable(1, 0.0, 0.0)
    with pytest.raises(SplitError, match=r"has 2 bin\(s\).*validation 0.15 and test 0.15 needs at least 3.*about 7"):
        check_splittable(2, 0.15, 0.15)
    with pytest.raises(SplitError, match=r"test 0.2 needs at least 2"):
        check_splittable(1, 0.0, 0.2)


def test_parts_hold_whole_groups_and_start_on_shard_boundaries() -> None:
    parts = plan_parts([3, 5, 0, 9, 2, 30, 1], shard_rois=4, part_shards=3)
    assert [(p.start, p.rows, p.units) for p in parts] == [(0, 8, (0, 1)), (8, 12, (3, 4)), (20, 32, (5,)),
                                                           (52, 4, (6,))]  # fmt: skip
    assert all(p.start % 4 == 0 and p.rows % 4 == 0 for p in parts)


def test_a_prepared_set_holds_the_model_inputs_labels_groups_and_ids(tmp_path: Path) -> None:
    url = str(tmp_path / "archive")
    write_synthetic_archive(url, bins=5, rois=13, classes=3, seed=4)
    source = labelled_archive_source(url, f"{url}/labels.csv")
    config = PreprocessConfig(size=24)
    prepared = prepare(source, str(tmp_path / "prepared"), config, shard_rois=8, part_shards=2, workers=3)
    data = labelled_images_from_archive(url, f"{url}/labels.csv")
    labels = prepared.labels()
    rows = np.flatnonzero(labels != PADDING)
    assert len(prepared) == len(rows) == len(data) == 65 and prepared.n_rows % 8 == 0
    images = np.concatenate(list(prepared.iter_batches(rows, 10)))
    np.testing.assert_array_equal(images, preprocess_batch(data.images, config))  # the exact model input
    assert prepared.ids(rows) == data.ids and [prepared.classes[i] for i in labels[rows]] == data.labels
    names = prepared.group_names()
    assert [names[g] for g in prepared.groups()[rows]] == data.groups
    assert prepared.config == config and prepared.classes == data.classes
    assert not (tmp_path / "prepared" / "parts").exists()  # done markers go once the set is complete


def test_preparation_resumes_by_part_and_never_overwrites_another_set(tmp_path: Path, monkeypatch) -> None:
    import model.training.prepared as prepared_module

    url = str(tmp_path / "archive")
    write_synthetic_archive(url, bins=4, rois=10, classes=2, seed=1)
    source = labelled_archive_source(url, f"{url}/labels.csv")
    target, config = str(tmp_path / "prepared"), PreprocessConfig(size=16)
    real, calls = prepared_module._write_part, []

    def failing(images, part, *args):  # the second part to run fails: an interrupted preparation
        calls.append(part.index)
        if len(calls) == 2:
            raise OSError("interrupted")
        return real(images, part, *args)

    monkeypatch.setattr(prepared_module, "_write_part", failing)
    with pytest.raises(OSError, match="interrupted"):
        prepare(source, target, config, shard_rois=10, part_shards=1, workers=1)
    with pytest.raises(PreparedSetError, match="unfinished"):
        PreparedSet(target)
    done, failed = calls[0], calls[1]
    calls.clear()
    monkeypatch.setattr(prepared_module, "_write_part", lambda *args: calls.append(args[1].index) or real(*args))
    prepared = prepare(source, target, config, shard_rois=10, part_shards=1, workers=1)
    assert failed in calls and done not in calls and len(prepared) == 40  # the done part was kept
    calls.clear()
    assert prepare(source, target, config, shard_rois=10, part_shards=1).fingerprint == prepared.fingerprint
    assert calls == []  # complete: reused, nothing read
    with pytest.raises(PreparedSetError, match="another source or preprocessing"):
        prepare(source, target, PreprocessConfig(size=20))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(PreparedSetError, match="holds no prepared training set"):
        prepare(source, str(tmp_path / "other"), config)


def test_class_folders_prepare_grouped_by_bin(tmp_path: Path) -> None:
    from PIL import Image

    bin_id = "D20240101T002000_IFCB999"
    for label, names in (("a", (f"{bin_id}_00001", "loose")), ("b", (f"{bin_id}_00002",))):
        (tmp_path / "src" / label).mkdir(parents=True)
        for i, name in enumerate(names):
            Image.fromarray(np.full((5 + i, 7), 40 * (i + 1), np.uint8)).save(tmp_path / "src" / label / f"{name}.png")
    source = image_folder_source(str(tmp_path / "src"), group_of=roi_group)
    assert [unit.group for unit in source.units] == ["D20240101T002000_IFCB999", "loose"]
    prepared = prepare(source, str(tmp_path / "prepared"), PreprocessConfig(size=8))
    rows = np.flatnonzero(prepared.labels() != PADDING)
    assert prepared.ids(rows) == ["D20240101T002000_IFCB999_00001", "D20240101T002000_IFCB999_00002", "loose"]


def test_labelled_bins_from_an_archive_on_s3(s3_server) -> None:
    url = f"s3://{s3_server.new_bucket()}/archive"
    bins = write_synthetic_archive(url, bins=3, rois=6, classes=3, seed=2, storage_options=s3_server.storage_options)
    data = labelled_images_from_archive(url, f"{url}/labels.csv", s3_server.storage_options)
    assert len(data) == 18 and sorted(set(data.groups)) == sorted(bins)
    assert all(roi.startswith(group + "_") for roi, group in zip(data.ids, data.groups, strict=True))
    assert set(data.labels) <= {"round_cell", "chain", "needle"}
    assert all(image.dtype == np.uint8 and image.ndim == 2 and image.size > 100 for image in data.images)
    source = labelled_archive_source(url, f"{url}/labels.csv", s3_server.storage_options)
    config = PreprocessConfig(size=16)
    prepared = prepare(source, f"{url}-prepared", config, storage_options=s3_server.storage_options, shard_rois=8)
    rows = np.flatnonzero(prepared.labels() != PADDING)
    np.testing.assert_array_equal(np.concatenate(list(prepared.iter_batches(rows, 7))),
                                  preprocess_batch(data.images, config))  # fmt: skip
    assert prepared.ids(rows) == data.ids


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
