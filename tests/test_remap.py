"""Class remaps from `from,to` CSV files over fsspec: checks, class order, counts and winners."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.results.remap import ClassMap, read_remap, remap_counts, remap_winners

CLASSES = ["Chaetoceros", "Skeletonema", "Dinophysis", "ciliate", "detritus"]


def write(tmp_path: Path, text: str, name: str = "remap.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_many_to_one_over_a_file_url(tmp_path: Path) -> None:
    text = (
        "from,to\n"
        "ciliate,Ciliophora\n"
        "\n"
        "Skeletonema,diatom\n"
        "Chaetoceros,diatom\n"
        "  \n"
        "Dinophysis,Dinophyceae\n"
        "detritus,other\n"
    )
    path = write(tmp_path, text)
    remap = read_remap(f"file://{path}", storage_options={"skip_instance_cache": True})
    assert remap.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert remap.description == f"file://{path} (sha256 {remap.sha256[:16]})"
    class_map = remap.apply(CLASSES)
    # ordered by the model's classes, not by the CSV rows
    assert class_map.target == ("diatom", "Dinophyceae", "Ciliophora", "other")
    np.testing.assert_array_equal(class_map.index, [0, 0, 1, 2, 3])
    assert class_map.description == remap.description


def test_counts_and_winners_are_remapped(tmp_path: Path) -> None:
    path = write(tmp_path, "from,to\nChaetoceros,diatom\nSkeletonema,diatom\nDinophysis,dino\nciliate,x\ndetritus,x\n")
    class_map = read_remap(str(path)).apply(CLASSES)
    counts = np.array([[1, 2, 3, 4, 5], [0, 0, 7, 0, 1]])
    np.testing.assert_array_equal(remap_counts(counts, class_map), [[3, 3, 9], [0, 7, 1]])
    assert class_map.columns(thresholded=False) == ["diatom", "dino", "x"]
    # a trailing unclassified column passes through
    thresholded = np.array([[1, 2, 3, 4, 5, 6]])
    np.testing.assert_array_equal(remap_counts(thresholded, class_map), [[3, 3, 9, 6]])
    assert class_map.columns(thresholded=True) == ["diatom", "dino", "x", "unclassified"]
    np.testing.assert_array_equal(remap_winners(np.array([0, 1, 2, 3, 4, -1]), class_map), [0, 0, 1, 2, 2, -1])
    with pytest.raises(ValueError, match="columns"):
        remap_counts(np.zeros((1, 3)), class_map)
    with pytest.raises(ValueError, match=r"\[-1, 5\)"):
        remap_winners(np.array([5]), class_map)


def test_a_target_named_unclassified_joins_the_unclassified_column(tmp_path: Path) -> None:
    path = write(tmp_path, "from,to\nChaetoceros,diatom\nSkeletonema,diatom\ndetritus,unclassified\n")
    class_map = read_remap(str(path)).apply(CLASSES, keep_unmapped=True)
    assert class_map.target == ("diatom", "Dinophysis", "ciliate")
    np.testing.assert_array_equal(remap_winners(np.array([4, 3, -1]), class_map), [-1, 2, -1])
    np.testing.assert_array_equal(remap_counts(np.array([1, 2, 3, 4, 5]), class_map), [3, 3, 4, 5])
    np.testing.assert_array_equal(remap_counts(np.array([1, 2, 3, 4, 5, 6]), class_map), [3, 3, 4, 11])
    assert class_map.columns(thresholded=False) == ["diatom", "Dinophysis", "ciliate", "unclassified"]


def test_unmapped_classes_are_an_error_unless_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "from,to\nChaetoceros,diatom\nSkeletonema,diatom\n")
    remap = read_remap(str(path))
    with pytest.raises(ValueError, match=r"no row for \['Dinophysis', 'ciliate', 'detritus'\]"):
        remap.apply(CLASSES)
    class_map = remap.apply(CLASSES, keep_unmapped=True)
    assert class_map.target == ("diatom", "Dinophysis", "ciliate", "detritus")
    np.testing.assert_array_equal(class_map.index, [0, 0, 1, 2, 3])
    assert class_map.description.endswith("unmapped kept")


def test_a_row_naming_an_unknown_class_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "from,to\nChaetoceros,diatom\nSkeletonem,diatom\n")  # a typo
    with pytest.raises(ValueError, match=r"names \['Skeletonem'\], which are not classes"):
        read_remap(str(path)).apply(CLASSES, keep_unmapped=True)


def test_one_class_mapped_to_two_targets_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "from,to\nChaetoceros,diatom\n\nChaetoceros,diatom\nChaetoceros,Chaetoceros\n")
    message = r"remap.csv, line 5: 'Chaetoceros' is mapped to 'Chaetoceros', but to 'diatom' on line 2"
    with pytest.raises(ValueError, match=message):
        read_remap(str(path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Chaetoceros,diatom\n", "the first row must be the header 'from,to'"),
        ("", "empty remap"),
        ("from,to\nChaetoceros\n", "line 2: expected 'from,to' with two class names"),
        ("from,to\nChaetoceros,\n", "line 2: expected 'from,to' with two class names"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_remap(str(write(tmp_path, text)))


def test_spreadsheet_csv_with_byte_order_mark_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes('\ufeffFrom,To\r\n"Chaetoceros", diatom\r\n'.encode())
    assert read_remap(str(path)).mapping == {"Chaetoceros": "diatom"}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_remap(str(tmp_path / "absent.csv"))


def test_credentials_in_a_url_are_not_recorded() -> None:
    from pipeline.results.remap import _without_credentials

    assert _without_credentials("https://user:secret@example.org/remap.csv") == "https://example.org/remap.csv"
    assert _without_credentials("s3://bucket/remap.csv") == "s3://bucket/remap.csv"


def test_identity_keeps_classes_and_order() -> None:
    class_map = ClassMap.identity(CLASSES)
    assert class_map.target == tuple(CLASSES)
    counts = np.arange(10).reshape(2, 5)
    np.testing.assert_array_equal(remap_counts(counts, class_map), counts)
