"""The class-to-taxon table: the example for ifcbUTOPIA's classes, and each validation error from a crafted CSV."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.results.taxa import COLUMNS, parse_taxon_table, read_taxon_table

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "docs" / "examples" / "utopia-taxa.csv"
#: The ifcbUTOPIA model's classes, in its output order (../shared/data/utopia/SOURCES.md).
UTOPIA_CLASSES = ["Chloro", "Cilliate", "Crypto", "Diatom", "Dictyo", "Dinoflagellate", "Eugleno", "Other",
                  "Prymnesio", "null"]  # fmt: skip
HEADER = ",".join(COLUMNS)


def test_example_covers_the_utopia_classes():
    table = read_taxon_table(EXAMPLE, classes=UTOPIA_CLASSES)
    assert table.classes == tuple(UTOPIA_CLASSES)
    diatom = table["Diatom"]
    assert (diatom.scientific_name, diatom.aphia_id, diatom.diatom) == ("Bacillariophyceae", 148899, True)
    assert diatom.scientific_name_id == "urn:lsid:marinespecies.org:taxname:148899"
    assert table["Dinoflagellate"].aphia_id == 19542 and table["Crypto"].aphia_id == 17639
    assert table["null"].aphia_id is None and table["null"].scientific_name_id is None
    assert table.diatom_flags(UTOPIA_CLASSES).tolist() == [name == "Diatom" for name in UTOPIA_CLASSES]


def test_comments_blank_lines_and_column_order():
    text = "# a comment\n\ndiatom,aphia_id,class,scientificName\n  # another\nTRUE,148899,Diatom,Bacillariophyceae\n"
    table = parse_taxon_table(text)
    assert table["Diatom"].diatom is True and table["Diatom"].aphia_id == 148899


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("# only a comment\n", "is empty"),
        (HEADER + ",source\nDiatom,Bacillariophyceae,148899,true,x\n", r"unknown columns \['source'\]"),
        ("class,scientificName,diatom\nDiatom,Bacillariophyceae,true\n", r"lacks the columns \['aphia_id'\]"),
        (HEADER + ",class\n", r"names the columns \['class'\] twice"),
        (HEADER + "\nDiatom,Bacillariophyceae,148899\n", "line 2 has 3 cells, the header 4"),
        (HEADER + "\n,Bacillariophyceae,148899,true\n", "line 2: the class is empty"),
        (
            HEADER + "\nDiatom,Bacillariophyceae,148899,true\n# x\nDiatom,Bacillariophyceae,148899,true\n",
            r"line 4: class 'Diatom' is listed twice \(first on line 2\)",
        ),
        (
            HEADER + "\nDiatom,Bacillariophyceae,148899.0,true\n",
            r"line 2 \(class 'Diatom'\): aphia_id '148899.0' is not",
        ),
        (HEADER + "\nDiatom,Bacillariophyceae,urn:lsid:marinespecies.org:taxname:148899,true\n", "is not a positive"),
        (HEADER + "\nnull,,-9999,false\n", r"class 'null'\): aphia_id '-9999' is not a positive integer"),
        (HEADER + "\nnull,,0,false\n", "aphia_id '0' is not a positive integer"),
        (HEADER + "\nDiatom,,148899,true\n", "AphiaID 148899 has no scientificName"),
        (HEADER + "\nDiatom,Bacillariophyceae,148899,yes\n", r"class 'Diatom'\): diatom 'yes' is neither true nor"),
        (HEADER + "\nDiatom,Bacillariophyceae,148899,\n", "diatom '' is neither true nor false"),
    ],
)
def test_errors_name_the_row(text, message):
    with pytest.raises(ValueError, match=message):
        parse_taxon_table(text, source="crafted.csv")


def test_classes_of_the_model_missing_from_the_table(tmp_path):
    path = tmp_path / "partial.csv"
    path.write_text(HEADER + "\nDiatom,Bacillariophyceae,148899,true\nExtra,Biota,1,false\n")
    with pytest.raises(ValueError, match=r"partial.csv has no row for the model's classes \['Chloro', 'null'\]"):
        read_taxon_table(path, classes=["Chloro", "Diatom", "null"])
    table = read_taxon_table(path, classes=["Diatom"])  # classes the model lacks are allowed
    assert "Extra" in table
    with pytest.raises(KeyError, match="not in the taxon table"):
        table["Chloro"]
